// The designer: a library of task standards, artifacts and built-in tasks dragged onto a 2D canvas,
// edges drawn by dragging from a step's port onto another step, a side panel to edit the selection, the
// cheap checks live (cycles, unconnected required inputs), "save" as a new version through the define
// API with its warnings shown on the steps, and undo/redo (Ctrl+Z, Ctrl+Shift+Z).

import {
  CommandStack, addNode, check, edgeRefusal, emptyDoc, fromDefinition, removeNode, renameNode, toDefinition,
} from "./designer-model.js";
import { el } from "./panels/registry.js";
import { define, knownVersions, nextVersion } from "./versions.js";

const W = 150;
const H = 54;
const SVG = "http://www.w3.org/2000/svg";
const BUILT_INS = [
  { id: "echo", name: "echo", group: "built-in", taskDefinition: { runtime: "SWARM", entrypoint: "echo", params: {} } },
  { id: "sleep", name: "sleep", group: "built-in", taskDefinition: { runtime: "SWARM", entrypoint: "sleep", params: { seconds: 1 } } },
  { id: "eval", name: "python_eval", group: "built-in", taskDefinition: { runtime: "SWARM", entrypoint: "python_eval", params: { expression: "1 + 1" } } },
];
const RUNTIMES = ["SWARM", "PYTHON", "SHELL", "JAVA", "MAPREDUCE"];
const KIND_RUNTIME = { python: "PYTHON", shell: "SHELL", jar: "JAVA" };

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function curve(x1, y1, x2, y2) {
  const dx = Math.max(40, Math.abs(x2 - x1) / 2);
  return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
}

export class Designer {
  constructor(root, cockpit) {
    this.root = root;
    this.cockpit = cockpit;
    this.stack = new CommandStack(emptyDoc(), () => this.render());
    this.selected = null; // {node: id} | {edge: index}
    this.serverIssues = new Map();
    this.standards = new Map();
    this.templates = [...BUILT_INS];
    this.build();
    this.render();
  }

  get doc() { return this.stack.doc; }

  build() {
    this.dagId = el("input", { name: "dagId", value: "new-dag", "aria-label": "DAG id", spellcheck: false });
    this.name = el("input", { name: "name", placeholder: "name", "aria-label": "DAG name" });
    this.version = el("input", { name: "version", value: "1.0.0", size: 7, "aria-label": "version" });
    const button = (text, title, fn, className = "") => {
      const b = el("button", { type: "button", title, className }, text);
      b.addEventListener("click", fn);
      return b;
    };
    this.undoButton = button("↶ undo", "undo (Ctrl+Z)", () => this.stack.undo(), "undo");
    this.redoButton = button("↷ redo", "redo (Ctrl+Shift+Z)", () => this.stack.redo(), "redo");
    this.saveButton = button("save version", "define this DAG as a new version", () => this.save(), "primary save");
    this.status = el("span", { className: "d-status", "aria-live": "polite" });
    for (const [input, key] of [[this.dagId, "dagId"], [this.name, "name"], [this.version, "version"]]) {
      input.addEventListener("change", () => this.stack.change(`set ${key}`, (d) => { d[key] = input.value.trim(); }));
    }
    const toolbar = el("div", { className: "d-toolbar" }, this.dagId, this.name, this.version, this.undoButton, this.redoButton,
      button("edit shown DAG", "load the DAG shown in the universe", () => this.loadShown()),
      button("clear", "start a new DAG", () => this.stack.change("clear", (d) => { d.nodes = []; d.edges = []; })),
      this.saveButton, this.status);
    this.library = el("div", { className: "d-library", "aria-label": "library" });
    this.edgesLayer = svg("svg", { class: "d-edges" });
    this.nodesLayer = el("div", { className: "d-nodes" });
    this.canvas = el("div", { className: "d-canvas", tabIndex: 0, "aria-label": "design canvas" }, this.edgesLayer, this.nodesLayer);
    this.side = el("div", { className: "d-side", "aria-label": "properties" });
    this.result = el("pre", { className: "define-result" });
    this.root.replaceChildren(toolbar, el("div", { className: "d-body" }, this.library, this.canvas, this.side), this.result);
    this.canvas.addEventListener("pointerdown", (event) => {
      if (event.target === this.canvas || event.target === this.nodesLayer || event.target === this.edgesLayer) this.select(null);
    });
    document.addEventListener("keydown", (event) => this.key(event));
  }

  key(event) {
    if (this.root.hidden) return;
    const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement;
    const mod = event.ctrlKey || event.metaKey;
    if (mod && (event.key === "z" || event.key === "Z") && !typing) {
      event.preventDefault();
      if (event.shiftKey) this.stack.redo(); else this.stack.undo();
    } else if (mod && event.key === "y" && !typing) {
      event.preventDefault();
      this.stack.redo();
    } else if ((event.key === "Delete" || event.key === "Backspace") && !typing && this.selected) {
      event.preventDefault();
      this.removeSelected();
    }
  }

  // --- library -----------------------------------------------------------------------------------

  /** Reload the library: task standards and artifacts from the API, plus the built-in tasks. */
  async loadLibrary() {
    const api = this.cockpit.api;
    const [standards, artifacts] = await Promise.all([
      api.get("/api/v1/standards").catch(() => ({ standards: [] })),
      api.get("/api/v1/artifacts").catch(() => ({ artifacts: [] })),
    ]);
    this.standards = new Map((standards.standards ?? []).map((s) => [`${s.name}@${s.version}`, s.standard]));
    this.templates = [
      ...BUILT_INS,
      ...(standards.standards ?? []).map((s) => ({
        id: s.name, name: s.standard?.description || s.name, group: "standards", label: `${s.name}@${s.version}`,
        taskDefinition: { runtime: "SWARM", entrypoint: "echo", standard: `${s.name}@${s.version}`, params: {} },
      })),
      ...(artifacts.artifacts ?? []).map((a) => ({
        id: a.name, name: a.name, group: "artifacts", label: `${a.name} ${a.version}`,
        taskDefinition: { runtime: KIND_RUNTIME[a.kind] ?? "PYTHON", artifactId: a.artifactId, entrypoint: a.kind === "shell" ? a.filename : "", params: {} },
      })),
    ];
    this.renderLibrary();
  }

  renderLibrary() {
    const groups = new Map();
    for (const t of this.templates) {
      if (!groups.has(t.group)) groups.set(t.group, []);
      groups.get(t.group).push(t);
    }
    this.library.replaceChildren(
      ...[...groups].flatMap(([group, items]) => [
        el("h3", {}, group),
        ...items.map((t) => {
          const item = el("div", { className: "lib-item", tabIndex: 0, dataset: { template: t.label ?? t.id, group }, title: "drag onto the canvas (or press Enter)" }, t.label ?? t.name);
          item.addEventListener("pointerdown", (event) => this.dragTemplate(event, t));
          item.addEventListener("keydown", (event) => { if (event.key === "Enter") this.place(t, 40 + 30 * this.doc.nodes.length, 40 + 30 * this.doc.nodes.length); });
          return item;
        }),
      ]),
    );
  }

  /** Drag a library item: a ghost follows the pointer; dropped on the canvas, it becomes a step. */
  dragTemplate(event, template) {
    event.preventDefault();
    const ghost = el("div", { className: "lib-ghost holo" }, template.label ?? template.name);
    document.body.append(ghost);
    const move = (e) => { ghost.style.left = `${e.clientX + 6}px`; ghost.style.top = `${e.clientY + 6}px`; };
    move(event);
    const up = (e) => {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      ghost.remove();
      const rect = this.canvas.getBoundingClientRect();
      if (e.clientX >= rect.left && e.clientX <= rect.right && e.clientY >= rect.top && e.clientY <= rect.bottom) {
        this.place(template, e.clientX - rect.left + this.canvas.scrollLeft - W / 2, e.clientY - rect.top + this.canvas.scrollTop - H / 2);
      }
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }

  place(template, x, y) {
    let id = null;
    this.stack.change(`add ${template.id}`, (d) => { id = addNode(d, template, Math.max(0, x), Math.max(0, y)); });
    this.select({ node: id });
    return id;
  }

  // --- canvas ------------------------------------------------------------------------------------

  render() {
    const d = this.doc;
    this.dagId.value = d.dagId;
    this.name.value = d.name;
    this.version.value = d.version;
    this.problems = check(d, this.standards);
    this.nodesLayer.replaceChildren(...d.nodes.map((n) => this.nodeElement(n)));
    this.renderEdges();
    this.undoButton.disabled = !this.stack.done.length;
    this.redoButton.disabled = !this.stack.undone.length;
    const count = [...this.problems.values()].reduce((s, p) => s + p.length, 0);
    this.status.textContent = `${d.nodes.length} steps · ${d.edges.length} edges · ${count ? `${count} problem${count > 1 ? "s" : ""}` : "no problems found"}`;
    this.status.classList.toggle("error", count > 0);
    this.renderSide();
  }

  nodeElement(n) {
    const issues = [...(this.problems.get(n.nodeId) ?? []), ...(this.serverIssues.get(n.nodeId) ?? []).map((w) => `${w.severity}: ${w.message}`)];
    const selected = this.selected?.node === n.nodeId;
    const port = el("div", { className: "d-port", title: "drag onto another step to connect" });
    const box = el("div", {
      className: `d-node${selected ? " selected" : ""}${issues.length ? " has-issues" : ""}${(this.serverIssues.get(n.nodeId) ?? []).length ? " server-issues" : ""}`,
      dataset: { nodeId: n.nodeId }, tabIndex: 0, title: issues.join("\n"),
    },
    el("div", { className: "title" }, n.name || n.nodeId),
    el("div", { className: "sub" }, `${n.nodeId} · ${n.taskDefinition?.runtime ?? ""} ${n.taskDefinition?.entrypoint ?? ""}`),
    issues.length ? el("div", { className: "badge" }, String(issues.length)) : null,
    port);
    box.style.left = `${n.x}px`;
    box.style.top = `${n.y}px`;
    box.addEventListener("pointerdown", (event) => (event.target === port ? this.dragEdge(event, n) : this.dragNode(event, n, box)));
    box.addEventListener("keydown", (event) => { if (event.key === "Enter") this.select({ node: n.nodeId }); });
    return box;
  }

  renderEdges(extra = null) {
    const at = new Map(this.doc.nodes.map((n) => [n.nodeId, n]));
    const paths = [];
    this.doc.edges.forEach((e, k) => {
      const a = at.get(e.from);
      const b = at.get(e.to);
      if (!a || !b) return;
      const dpath = curve(a.x + W, a.y + H / 2, b.x, b.y + H / 2);
      const selected = this.selected?.edge === k;
      const hit = svg("path", { d: dpath, class: "hit", "data-edge": k });
      hit.addEventListener("pointerdown", (event) => { event.stopPropagation(); this.select({ edge: k }); });
      paths.push(hit, svg("path", { d: dpath, class: `edge${selected ? " selected" : ""}${e.condition && e.condition !== "SUCCESS" ? " conditional" : ""}` }));
    });
    if (extra) paths.push(svg("path", { d: extra, class: "edge drawing" }));
    const right = Math.max(800, ...this.doc.nodes.map((n) => n.x + W + 40));
    const bottom = Math.max(500, ...this.doc.nodes.map((n) => n.y + H + 40));
    this.edgesLayer.setAttribute("width", right);
    this.edgesLayer.setAttribute("height", bottom);
    this.nodesLayer.style.width = `${right}px`;
    this.nodesLayer.style.height = `${bottom}px`;
    this.edgesLayer.replaceChildren(...paths);
  }

  dragNode(event, n, box) {
    event.preventDefault();
    this.select({ node: n.nodeId });
    box = this.nodesLayer.querySelector(`[data-node-id="${CSS.escape(n.nodeId)}"]`) ?? box;
    const start = { x: event.clientX, y: event.clientY, nx: n.x, ny: n.y };
    const live = this.doc.nodes.find((x) => x.nodeId === n.nodeId);
    const move = (e) => {
      live.x = Math.max(0, start.nx + e.clientX - start.x);
      live.y = Math.max(0, start.ny + e.clientY - start.y);
      box.style.left = `${live.x}px`;
      box.style.top = `${live.y}px`;
      this.renderEdges();
    };
    const up = () => {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      const to = { x: live.x, y: live.y };
      if (to.x === start.nx && to.y === start.ny) return;
      live.x = start.nx;
      live.y = start.ny;
      this.stack.change(`move ${n.nodeId}`, (d) => { Object.assign(d.nodes.find((x) => x.nodeId === n.nodeId), to); });
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }

  dragEdge(event, n) {
    event.preventDefault();
    event.stopPropagation();
    const rect = this.canvas.getBoundingClientRect();
    const local = (e) => [e.clientX - rect.left + this.canvas.scrollLeft, e.clientY - rect.top + this.canvas.scrollTop];
    const move = (e) => { const [x, y] = local(e); this.renderEdges(curve(n.x + W, n.y + H / 2, x, y)); };
    const up = (e) => {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      const target = document.elementFromPoint(e.clientX, e.clientY)?.closest(".d-node");
      const to = target?.dataset.nodeId;
      const refusal = to ? edgeRefusal(this.doc, n.nodeId, to) : null;
      if (to && !refusal) {
        this.stack.change(`connect ${n.nodeId} -> ${to}`, (d) => { d.edges.push({ from: n.nodeId, to }); });
        this.select({ edge: this.doc.edges.length - 1 });
      } else {
        if (refusal) this.cockpit.toast(refusal);
        this.renderEdges();
      }
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }

  select(selection) {
    this.selected = selection;
    for (const box of this.nodesLayer.children) box.classList.toggle("selected", box.dataset.nodeId === selection?.node);
    this.renderEdges();
    this.renderSide();
  }

  removeSelected() {
    const s = this.selected;
    if (s?.node) this.stack.change(`remove ${s.node}`, (d) => removeNode(d, s.node));
    else if (s?.edge !== undefined) this.stack.change("remove edge", (d) => { d.edges.splice(s.edge, 1); });
    this.select(null);
  }

  // --- side panel --------------------------------------------------------------------------------

  renderSide() {
    const s = this.selected;
    const node = s?.node ? this.doc.nodes.find((n) => n.nodeId === s.node) : null;
    const edge = s?.edge !== undefined && s?.edge !== null ? this.doc.edges[s.edge] : null;
    if (node) this.side.replaceChildren(...this.nodeForm(node));
    else if (edge) this.side.replaceChildren(...this.edgeForm(edge, s.edge));
    else this.side.replaceChildren(el("p", { className: "muted" }, "Drag a library item onto the canvas; drag from a step's right port onto another step to connect them; select a step or an edge to edit it. Ctrl+Z undoes, Ctrl+Shift+Z redoes, Delete removes."));
  }

  field(label, input, apply) {
    const error = el("span", { className: "error" });
    input.addEventListener("change", () => {
      const refusal = apply(input.type === "checkbox" ? input.checked : input.value);
      error.textContent = typeof refusal === "string" ? refusal : "";
    });
    return el("label", { className: "field" }, el("span", {}, label), input, error);
  }

  edit(label, fn) {
    let refusal = null;
    this.stack.change(label, (d) => { refusal = fn(d); return typeof refusal === "string" ? false : undefined; });
    return refusal;
  }

  nodeForm(n) {
    const id = n.nodeId;
    const find = (d) => d.nodes.find((x) => x.nodeId === id);
    const json = (value) => JSON.stringify(value ?? {}, null, 2);
    const parse = (text) => { try { const v = JSON.parse(text || "{}"); return v && typeof v === "object" && !Array.isArray(v) ? v : null; } catch { return null; } };
    const runtime = el("select", { name: "runtime" }, ...RUNTIMES.map((r) => el("option", { value: r }, r)));
    runtime.value = RUNTIMES.includes(n.taskDefinition?.runtime) ? n.taskDefinition.runtime : "SWARM";
    const number = (name, value) => el("input", { type: "number", name, min: 0, step: "any", value: value ?? "" });
    const issues = [...(this.problems.get(id) ?? []), ...(this.serverIssues.get(id) ?? []).map((w) => `${w.severity}: ${w.message}`)];
    const remove = el("button", { type: "button", className: "danger" }, "remove step");
    remove.addEventListener("click", () => this.removeSelected());
    return [
      el("h3", {}, `step ${id}`),
      this.field("id", el("input", { name: "nodeId", value: id }), (v) => {
        const refusal = this.edit(`rename ${id}`, (d) => renameNode(d, id, v.trim()));
        if (!refusal) this.select({ node: v.trim() });
        return refusal;
      }),
      this.field("name", el("input", { name: "name", value: n.name ?? "" }), (v) => this.edit(`name ${id}`, (d) => { find(d).name = v; })),
      this.field("runtime", runtime, (v) => this.edit(`runtime ${id}`, (d) => { find(d).taskDefinition.runtime = v; })),
      this.field("entrypoint", el("input", { name: "entrypoint", value: n.taskDefinition?.entrypoint ?? "" }), (v) => this.edit(`entrypoint ${id}`, (d) => { find(d).taskDefinition.entrypoint = v.trim(); })),
      this.field("params (JSON)", el("textarea", { name: "params", rows: 4, spellcheck: false, value: json(n.taskDefinition?.params) }), (v) => {
        const value = parse(v);
        return value ? this.edit(`params ${id}`, (d) => { find(d).taskDefinition.params = value; }) : "params must be a JSON object";
      }),
      this.field("cpu cores", number("cpuCores", n.resourceRequirements?.cpuCores), (v) => this.edit(`cores ${id}`, (d) => { find(d).resourceRequirements = { ...find(d).resourceRequirements, cpuCores: Number(v) || 1 }; })),
      this.field("memory MB", number("memoryMB", n.resourceRequirements?.memoryMB), (v) => this.edit(`memory ${id}`, (d) => { find(d).resourceRequirements = { ...find(d).resourceRequirements, memoryMB: Number(v) || 0 }; })),
      this.field("parallelism", number("parallelism", n.executionConfig?.parallelism ?? 1), (v) => this.edit(`parallelism ${id}`, (d) => { find(d).executionConfig = { ...find(d).executionConfig, parallelism: Math.max(1, Math.round(Number(v)) || 1) }; })),
      issues.length ? el("ul", { className: "issues" }, ...issues.map((i) => el("li", {}, i))) : el("p", { className: "muted" }, "no problems"),
      remove,
    ];
  }

  edgeForm(e, k) {
    const find = (d) => d.edges[k];
    const remove = el("button", { type: "button", className: "danger" }, "remove edge");
    remove.addEventListener("click", () => this.removeSelected());
    return [
      el("h3", {}, `edge ${e.from} → ${e.to}`),
      this.field("condition", el("input", { name: "condition", value: e.condition ?? "SUCCESS", spellcheck: false }), (v) => this.edit("condition", (d) => { find(d).condition = v.trim() || "SUCCESS"; })),
      this.field("dataMapping (input ← output)", el("textarea", { name: "dataMapping", rows: 3, spellcheck: false, value: JSON.stringify(e.dataMapping ?? {}, null, 2) }), (v) => {
        let value;
        try { value = JSON.parse(v || "{}"); } catch { return "dataMapping must be a JSON object"; }
        if (!value || typeof value !== "object" || Array.isArray(value) || Object.values(value).some((x) => typeof x !== "string")) return "dataMapping maps input names to output names";
        return this.edit("dataMapping", (d) => { find(d).dataMapping = value; });
      }),
      remove,
    ];
  }

  // --- load and save -----------------------------------------------------------------------------

  async loadShown() {
    const g = this.cockpit.graph;
    if (!g?.dagId || g.dagId.startsWith("bench-")) { this.cockpit.toast("select a DAG first"); return; }
    const definition = await this.cockpit.definition(g.dagId, g.version);
    const doc = fromDefinition(definition);
    doc.version = nextVersion(definition.version, await knownVersions(this.cockpit.api, g.dagId));
    this.serverIssues = new Map();
    this.stack.reset(doc);
  }

  /** Define the document as a new version; the API's warnings go onto the steps. The define answer. */
  async save() {
    const definition = toDefinition(this.doc);
    this.saveButton.disabled = true;
    try {
      const answer = await define(this.cockpit.api, definition);
      const results = answer.validationResults ?? {};
      this.serverIssues = new Map();
      for (const w of [...(results.errors ?? []), ...(results.warnings ?? [])]) {
        const key = w.nodeId ?? "";
        if (!this.serverIssues.has(key)) this.serverIssues.set(key, []);
        this.serverIssues.get(key).push(w);
      }
      const general = this.serverIssues.get("") ?? [];
      this.result.textContent = `${answer.dagId} v${answer.version}: ${answer.status}${general.map((w) => `\n${w.severity}: ${w.message}`).join("")}`;
      this.result.dataset.status = answer.status;
      this.cockpit.refreshListsSoon();
      if (answer.status === "CREATED") {
        const saved = answer.version;
        this.stack.change("next version", (d) => { d.version = nextVersion(saved, [saved]); });
      } else {
        this.render();
      }
      return answer;
    } catch (err) {
      this.result.textContent = `refused (${err.status}): ${err.message}${err.path ? ` at ${err.path}` : ""}`;
      this.result.dataset.status = "REFUSED";
      return { error: err.message, status: err.status };
    } finally {
      this.saveButton.disabled = !this.cockpit.canSubmit;
    }
  }
}
