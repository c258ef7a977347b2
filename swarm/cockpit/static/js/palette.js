// The command palette (Ctrl+K): type a few letters of a command ("open run …", "start DAG …",
// "toggle 2D", "show devices", "show designer"), arrows to choose, Enter to run, Escape to close. Voice:
// where the browser has the Web Speech API, the microphone button turns a spoken phrase into the query
// and runs the best match (seed 004's voice control); the palette itself is the tested path.

import { el } from "./panels/registry.js";

/** Commands whose title contains every word of `query` (case-insensitive), best first. */
export function filterCommands(commands, query) {
  const words = String(query).toLowerCase().split(/\s+/).filter(Boolean);
  const scored = [];
  for (const c of commands) {
    const text = `${c.title} ${c.keywords ?? ""}`.toLowerCase();
    if (!words.every((w) => text.includes(w))) continue;
    const title = c.title.toLowerCase();
    const score = (words.length && title.startsWith(words[0]) ? 0 : 1) + title.length / 1000;
    scored.push([score, c]);
  }
  return scored.sort((a, b) => a[0] - b[0]).map(([, c]) => c);
}

/** The speech recogniser of this browser, or null (Chromium prefixes it; many browsers lack it). */
export function speechRecognition(win = window) {
  return win.SpeechRecognition ?? win.webkitSpeechRecognition ?? null;
}

export class Palette {
  /**
   * @param {HTMLElement} root the overlay element
   * @param {() => {id: string, title: string, keywords?: string, run: () => void}[]} commands
   */
  constructor(root, commands) {
    this.root = root;
    this.commands = commands;
    this.input = el("input", { type: "text", placeholder: "type a command… (open run, start DAG, show devices, toggle 2D)", "aria-label": "command", spellcheck: false, autocomplete: "off" });
    this.list = el("ul", { className: "palette-list", role: "listbox" });
    this.mic = el("button", { type: "button", className: "mic", title: "speak a command", hidden: !speechRecognition() }, "🎤");
    this.box = el("div", { className: "palette holo", role: "dialog", "aria-label": "command palette" }, el("div", { className: "palette-row" }, this.input, this.mic), this.list);
    root.replaceChildren(this.box);
    root.hidden = true;
    this.index = 0;
    this.shown = [];
    this.input.addEventListener("input", () => { this.index = 0; this.render(); });
    this.input.addEventListener("keydown", (event) => this.key(event));
    root.addEventListener("pointerdown", (event) => { if (event.target === root) this.close(); });
    this.mic.addEventListener("click", () => this.listen());
  }

  get isOpen() { return !this.root.hidden; }

  open(query = "") {
    this.returnFocus = document.activeElement;
    this.root.hidden = false;
    this.input.value = query;
    this.index = 0;
    this.render();
    this.input.focus();
  }

  close() {
    this.root.hidden = true;
    this.recognition?.abort?.();
    if (this.returnFocus instanceof HTMLElement) this.returnFocus.focus();
  }

  render() {
    this.shown = filterCommands(this.commands(), this.input.value).slice(0, 12);
    this.index = Math.min(this.index, Math.max(0, this.shown.length - 1));
    this.list.replaceChildren(
      ...this.shown.map((c, i) => {
        const item = el("li", { role: "option", className: i === this.index ? "active" : "", dataset: { command: c.id } }, c.title);
        item.setAttribute("aria-selected", String(i === this.index));
        item.addEventListener("pointerdown", (event) => { event.preventDefault(); this.run(c); });
        return item;
      }),
    );
    if (!this.shown.length) this.list.replaceChildren(el("li", { className: "muted" }, "no command matches"));
  }

  key(event) {
    if (event.key === "ArrowDown") { this.index = Math.min(this.shown.length - 1, this.index + 1); this.render(); event.preventDefault(); }
    else if (event.key === "ArrowUp") { this.index = Math.max(0, this.index - 1); this.render(); event.preventDefault(); }
    else if (event.key === "Enter") { event.preventDefault(); if (this.shown[this.index]) this.run(this.shown[this.index]); }
    else if (event.key === "Escape") { event.preventDefault(); this.close(); }
  }

  run(command) {
    this.close();
    command.run();
  }

  /** Run the best command for a spoken (or typed) phrase; whether one matched. */
  runPhrase(phrase) {
    const text = String(phrase).toLowerCase().replace(/[.,!?]/g, " ").replace(/\b(please|the|a|an|go to|switch to)\b/g, " ");
    const best = filterCommands(this.commands(), text)[0];
    if (best) { this.run(best); return true; }
    this.open(text.trim());
    return false;
  }

  listen() {
    const Recognition = speechRecognition();
    if (!Recognition) return;
    const recognition = new Recognition();
    recognition.lang = document.documentElement.lang || navigator.language || "en-US";
    recognition.interimResults = false;
    recognition.maxAlternatives = 1;
    recognition.onresult = (event) => {
      const phrase = event.results?.[0]?.[0]?.transcript ?? "";
      this.input.value = phrase;
      this.runPhrase(phrase);
    };
    recognition.onerror = (event) => { this.input.placeholder = `voice: ${event.error}`; };
    this.recognition = recognition;
    recognition.start();
  }
}
