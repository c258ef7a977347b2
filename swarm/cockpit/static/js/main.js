// The cockpit's entry point: login, the API and the stream, the universe and the panels.
//
// `window.__cockpit` is a small hook for tests and benchmarks (states read back without pixels, timings
// measured in the page); it exposes nothing the page's own user could not see.

import { createApi } from "./api.js";
import { canSubmit, forgetToken, storeToken, takeToken, tokenIdentity } from "./auth.js";
import { layoutDag, randomDag } from "./layout.js";
import { FINAL_RUN_STATES, RunState, criticalPath, graphFromDefinition } from "./model.js";
import { paletteCommands } from "./commands.js";
import { Designer } from "./designer.js";
import { Palette } from "./palette.js";
import { artifactsPanel } from "./panels/artifacts.js";
import { renderDetail, renderTooltip } from "./panels/detail.js";
import { devicesPanel } from "./panels/devices.js";
import { historyPanel } from "./panels/history.js";
import { mapReducePanel } from "./panels/mapreduce.js";
import { monitorPanel } from "./panels/monitor.js";
import { mountPanels } from "./panels/registry.js";
import { runsPanel } from "./panels/runs.js";
import { suggestionsPanel } from "./panels/suggestions.js";
import { connectStream } from "./stream.js";
import { VIEWS, applyView, mountTabs } from "./views.js";

/** The panels on the left, in order (see panels/registry.js to add one); `view` says which tab shows it. */
const PANELS = [
  Object.assign(Object.create(runsPanel), { view: "monitor" }),
  monitorPanel, devicesPanel, suggestionsPanel, historyPanel, mapReducePanel, artifactsPanel,
];
const $ = (id) => document.getElementById(id);
/** The least time between two analyses of the shown run (critical path, edges, particles, title). */
const ANALYSE_MS = 200;

class Cockpit {
  constructor() {
    this.listeners = new Map();
    this.token = null;
    this.api = createApi(() => this.token);
    this.identity = null;
    this.canSubmit = true;
    this.universe = null;
    this.webgl = false;
    this.graph = null;
    this.layout = null;
    this.runState = null;
    this.run = null;
    this.selectedRunId = null;
    this.followDag = null;
    this.buffered = new Map();
    this.shown = [];
    this.seen = new Map();
    this.stale = false;
    this.analysedAt = -Infinity;
    this.analysis = null;
    this.eventTimes = [];
    this.latencies = [];
    this.timings = {};
    this.stream = null;
    this.mounted = false;
    this.view = "monitor";
    this.palette = null;
    this.designer = null;
    this.definitionShown = null;
  }

  on(name, fn) {
    if (!this.listeners.has(name)) this.listeners.set(name, []);
    this.listeners.get(name).push(fn);
  }

  emit(name, value) {
    for (const fn of this.listeners.get(name) ?? []) {
      try { fn(value); } catch (err) { console.warn(`cockpit: a ${name} listener failed`, err); }
    }
  }

  // --- start and login -----------------------------------------------------------------------------

  async start() {
    this.token = takeToken();
    await this.initUniverse();
    this.bindKeys();
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      storeToken($("login-token").value);
      this.token = takeToken();
      this.enter();
    });
    $("logout").addEventListener("click", () => {
      forgetToken();
      this.stream?.close();
      location.reload();
    });
    if (!this.token) { this.showLogin(""); return; }
    await this.enter();
  }

  showLogin(message) {
    $("login").hidden = false;
    $("login-error").textContent = message;
    $("login-token").focus();
  }

  async enter() {
    try {
      await this.api.get("/api/v1/status");
    } catch (err) {
      forgetToken();
      this.token = null;
      this.showLogin(err.status === 401 ? `the token was refused: ${err.message}` : err.message);
      return;
    }
    $("login").hidden = true;
    this.identity = await tokenIdentity(this.token);
    this.canSubmit = canSubmit(this.identity?.role ?? null);
    $("who").textContent = this.identity ? `${this.identity.id} · ${this.identity.role}` : "";
    if (!this.mounted) { this.mount(); this.mounted = true; }
    this.stream = connectStream(() => this.token, {
      onEvent: (event) => this.onEvent(event),
      onStatus: (status) => { $("conn").textContent = status; $("conn").classList.toggle("live", status === "live"); },
      onReconnect: () => { this.refreshLists(); this.emit("reconnect"); if (this.selectedRunId) this.selectRun(this.selectedRunId); },
    });
    await this.refreshLists();
    // `#run=ID` (what `swarm demo sales --cockpit` prints) opens that run and follows its DAG.
    const runId = new URLSearchParams(location.hash.replace(/^#/, "")).get("run");
    if (runId) await this.selectRun(runId, { follow: true });
    this.emit("ready");
    this.ready = true;
  }

  /** The panels, the view tabs, the designer and the command palette (once, after login). */
  mount() {
    mountPanels($("panels"), PANELS, this);
    for (const panel of PANELS) $(`panel-${panel.id}`).dataset.view = panel.view ?? "monitor";
    mountTabs($("views"), (id) => this.showView(id));
    this.designer = new Designer($("designer"), this);
    this.designer.saveButton.disabled = !this.canSubmit;
    this.palette = new Palette($("palette"), () => this.commands());
    $("open-palette").addEventListener("click", () => this.palette.open());
    this.showView(this.view);
  }

  /** Switch the view (tabs, keys 1-5, the palette); the designer reloads its library when shown. */
  showView(id) {
    this.view = applyView(id, { nav: $("views"), panels: $("panels"), designer: $("designer") });
    if (this.view === "designer") this.designer?.loadLibrary();
    this.emit("view", this.view);
    return this.view;
  }

  /** The command palette's commands (see commands.js). */
  commands() { return paletteCommands(this, $("detail")); }

  async initUniverse() {
    const { Universe, webgl2Available } = await import("./universe.js");
    if (!webgl2Available()) {
      const notice = $("no-webgl");
      notice.textContent =
        "WebGL2 is not available in this browser, so the 3D universe cannot be drawn. " +
        "Runs, states and node details still work; enable hardware acceleration or use another browser for the 3D view.";
      notice.hidden = false;
      this.webgl = false;
      return;
    }
    this.universe = new Universe($("scene"), $("labels"));
    this.webgl = true;
    const canvas = $("scene");
    let lastPick = 0;
    canvas.addEventListener("pointermove", (event) => {
      const now = performance.now();
      if (now - lastPick < 40 || !this.graph) return;
      lastPick = now;
      this.hover(event.clientX, event.clientY);
    });
    canvas.addEventListener("pointerleave", () => { $("tooltip").hidden = true; });
    canvas.addEventListener("dblclick", (event) => {
      const i = this.universe.pick(event.clientX, event.clientY);
      if (i >= 0) this.drill(this.graph.ids[i]);
    });
    $("toggle-view").addEventListener("click", () => this.toggleView());
  }

  bindKeys() {
    document.addEventListener("keydown", (event) => {
      if ((event.ctrlKey || event.metaKey) && (event.key === "k" || event.key === "K")) {
        event.preventDefault();
        if (this.palette?.isOpen) this.palette.close(); else this.palette?.open();
        return;
      }
      const t = event.target;
      if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement) return;
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key === "Escape") $("detail").hidden = true;
      if (event.key === "v" || event.key === "V") this.toggleView();
      const view = VIEWS.find((v) => v.key === event.key);
      if (view) this.showView(view.id);
    });
  }

  toggleView() {
    if (!this.universe) return;
    const mode = this.universe.setMode(this.universe.mode === "3d" ? "2d" : "3d");
    $("toggle-view").textContent = mode === "3d" ? "2D" : "3D";
  }

  toast(message) {
    const toast = $("toast");
    toast.textContent = message;
    toast.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => { toast.hidden = true; }, 8000);
  }

  // --- lists, selection, runs ----------------------------------------------------------------------

  async refreshLists() {
    try {
      const [dags, runs] = await Promise.all([this.api.get("/api/v1/dags"), this.api.get("/api/v1/runs?limit=50")]);
      this.dags = dags.dags;
      this.runs = runs.runs;
      this.emit("dags", dags.dags);
      this.emit("runs", runs.runs);
    } catch (err) {
      this.toast(`cannot list runs: ${err.message}`);
    }
  }

  refreshListsSoon() {
    clearTimeout(this.listTimer);
    this.listTimer = setTimeout(() => this.refreshLists(), 250);
  }

  async definition(dagId, version) {
    const path = version
      ? `/api/v1/dags/${this.api.path(dagId)}/versions/${this.api.path(version)}`
      : `/api/v1/dags/${this.api.path(dagId)}`;
    return (await this.api.get(path)).definition;
  }

  /** Show a DAG's definition (no run) and follow its next runs. */
  async selectDag(dagId, version) {
    try {
      const definition = await this.definition(dagId, version);
      this.selectedRunId = null;
      this.run = null;
      this.followDag = dagId;
      this.showGraph(definition);
      this.runState = null;
      this.recolour();
      this.emit("dag", { dagId, version: definition.version, definition });
      $("run-title").textContent = `${dagId} v${definition.version} · defined · following its runs`;
    } catch (err) {
      this.toast(`cannot load ${dagId}: ${err.message}`);
    }
  }

  /** Show a run: its DAG version laid out, its states live. */
  async selectRun(runId, { follow = false } = {}) {
    try {
      this.selectedRunId = runId;
      if (!follow) this.followDag = null;
      const run = await this.api.get(`/api/v1/runs/${this.api.path(runId)}`);
      if (this.selectedRunId !== runId) return;
      const key = `${run.dagId}@${run.version}`;
      if (!this.graph || this.graphKey !== key) {
        const definition = await this.definition(run.dagId, run.version);
        this.showGraph(definition);
        this.graphKey = key;
        this.emit("dag", { dagId: run.dagId, version: run.version, definition });
      }
      this.run = run;
      this.runState = new RunState(this.graph, runId);
      this.runState.applySnapshot(run);
      for (const event of this.buffered.get(runId) ?? []) this.applyEvent(event);
      this.recolour();
      this.emit("runs", this.runs ?? []);
      this.emit("select", run);
    } catch (err) {
      this.toast(`cannot load run ${runId}: ${err.message}`);
    }
  }

  async startRun(dagId, params = {}) {
    try {
      const started = await this.api.post(`/api/v1/dags/${this.api.path(dagId)}/runs`, { params });
      this.followDag = dagId;
      await this.selectRun(started.runId, { follow: true });
      this.refreshListsSoon();
      return started;
    } catch (err) {
      this.toast(err.status === 403 ? `refused (403): ${err.message}` : `cannot start a run: ${err.message}`);
      return { error: err.message, status: err.status };
    }
  }

  async drill(nodeId) {
    const i = this.graph?.index.get(nodeId);
    if (i === undefined) return;
    let run = this.run;
    if (this.selectedRunId) {
      try { run = await this.api.get(`/api/v1/runs/${this.api.path(this.selectedRunId)}`); this.run = run; } catch (err) { this.toast(err.message); }
      this.runState?.applySnapshot(run);
    }
    renderDetail($("detail"), this.graph, i, run, this.runState ? this.runState.nodeState(i) : "DEFINED");
    if (this.definitionShown) this.emit("step", { definition: this.definitionShown, nodeId });
  }

  hover(x, y) {
    const tooltip = $("tooltip");
    const i = this.universe.pick(x, y);
    if (i < 0) { tooltip.hidden = true; return; }
    renderTooltip(tooltip, this.graph, i, this.runState);
    tooltip.style.left = `${x + 14}px`;
    tooltip.style.top = `${y + 14}px`;
    tooltip.hidden = false;
  }

  // --- the stream ----------------------------------------------------------------------------------

  onEvent(event) {
    if (event.type === "run") {
      this.refreshListsSoon();
      if (event.runId === this.selectedRunId) {
        this.runState?.setRunState(event.state);
        this.markStale();
        if (FINAL_RUN_STATES.has(event.state)) this.selectRunSoon(event.runId);
      } else if (this.followDag && event.dagId === this.followDag && event.state === "QUEUED") {
        this.selectRun(event.runId, { follow: true });
      }
    } else if (event.type === "node") {
      const list = this.buffered.get(event.runId) ?? [];
      if (list.length < 20000) list.push(event);
      this.buffered.set(event.runId, list);
      if (this.buffered.size > 50) this.buffered.delete(this.buffered.keys().next().value);
      if (event.runId === this.selectedRunId && this.runState) {
        this.applyEvent(event);
        this.eventTimes.push(performance.now());
        this.markStale();
        this.selectRunSoon(event.runId);
      }
    }
    this.emit(event.type, event);
  }

  applyEvent(event) {
    this.runState?.applyNode({ nodeId: event.nodeId, shard: event.shard, state: event.state, device: event.device, error: event.error });
  }

  /** Reload the selected run's records (durations, bytes, outputs) a moment after its events. */
  selectRunSoon(runId) {
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(async () => {
      if (this.selectedRunId !== runId) return;
      try {
        const run = await this.api.get(`/api/v1/runs/${this.api.path(runId)}`);
        if (this.selectedRunId !== runId) return;
        this.run = run;
        this.runState?.applySnapshot(run);
        this.markStale();
      } catch { /* the next event tries again */ }
    }, 600);
  }

  markStale() {
    if (this.stale) return;
    this.stale = true;
    requestAnimationFrame(() => { this.stale = false; this.recolour(); });
  }

  // --- drawing -------------------------------------------------------------------------------------

  /** Lay out and draw a definition; the timings go to `this.timings`. */
  showGraph(definition) {
    const t0 = performance.now();
    const graph = graphFromDefinition(definition);
    const layout = layoutDag(graph.ids.length, graph.src, graph.dst, { lift: graph.lift });
    const t1 = performance.now();
    this.graph = graph;
    this.layout = layout;
    this.definitionShown = definition;
    this.graphKey = `${graph.dagId}@${graph.version}`;
    this.shown = new Array(graph.ids.length).fill(null);
    this.seen = new Map();
    $("detail").hidden = true;
    if (this.universe) {
      this.universe.setGraph(graph, layout);
      const t2 = performance.now();
      this.universe.renderNow();
      this.universe.finish();
      const t3 = performance.now();
      this.timings = { nodes: graph.ids.length, edges: graph.src.length, layoutMs: t1 - t0, buildMs: t2 - t1, renderMs: t3 - t2, firstFrameMs: t3 - t0 };
    } else {
      this.timings = { nodes: graph.ids.length, edges: graph.src.length, layoutMs: t1 - t0, firstFrameMs: null };
    }
    return this.timings;
  }

  /** Apply the run's states to the universe: colours now, the rest by `analyse`. */
  recolour() {
    if (!this.graph) return;
    const g = this.graph;
    const n = g.ids.length;
    const rs = this.runState;
    for (let i = 0; i < n; i++) {
      const d = rs ? rs.display(i) : "waiting";
      if (this.shown[i] !== d) {
        this.shown[i] = d;
        this.universe?.setState(i, d);
        const trail = this.seen.get(g.ids[i]) ?? [];
        trail.push(d);
        this.seen.set(g.ids[i], trail);
      }
    }
    const now = performance.now();
    for (const t of this.eventTimes) this.latencies.push(now - t);
    this.eventTimes = [];
    if (this.latencies.length > 1000) this.latencies.splice(0, this.latencies.length - 1000);
    // The critical path, edges, particles and title follow at most every ANALYSE_MS: under a stream of
    // events they would be recomputed for the whole graph every frame, for changes no one could see.
    if (now - this.analysedAt >= ANALYSE_MS) this.analyse();
    else if (!this.analysis) this.analysis = setTimeout(() => this.analyse(), ANALYSE_MS - (now - this.analysedAt));
  }

  /** The run's critical path, bottleneck, edge brightness, flowing particles and title. */
  analyse() {
    clearTimeout(this.analysis);
    this.analysis = null;
    this.analysedAt = performance.now();
    if (!this.graph) return;
    const g = this.graph;
    const n = g.ids.length;
    const rs = this.runState;
    const measured = rs ? g.ids.some((_, i) => rs.duration(i) > 0) : false;
    const weight = (i) => (rs?.duration(i) ?? 0) + 1e-3;
    const critical = criticalPath(g, this.layout.topo, measured ? weight : () => 1);
    if (this.universe) {
      const bytes = rs ? Float64Array.from(g.src, (a) => rs.bytesOut(a)) : null;
      this.universe.setEdges(critical.edges, bytes);
      this.universe.setBottleneck(measured && rs.duration(critical.bottleneck) > 0 ? critical.bottleneck : -1);
      const flowing = [];
      for (let k = 0; k < g.src.length; k++) if (this.shown[g.dst[k]] === "running") flowing.push(k);
      this.universe.setFlowing(flowing);
    }
    this.critical = critical;
    if (rs) {
      const done = rs.finalCount();
      $("run-title").replaceChildren(
        `${rs.runId} · ${g.dagId} v${g.version} · ${rs.state} · ${done}/${n} steps`,
        Object.assign(document.createElement("div"), { className: "energy", innerHTML: `<i style="width:${(100 * done) / Math.max(1, n)}%"></i>` }),
      );
    }
  }

  /** Benchmark: lay out and draw a random DAG of `n` nodes; the timings. */
  bench(n, seed = 7) {
    const { src, dst } = randomDag(n, seed);
    const definition = {
      dagId: `bench-${n}`, version: "0.0.0",
      nodes: Array.from({ length: n }, (_, i) => ({
        nodeId: `n${i}`, name: i % 7 === 0 ? `节点${i}` : `step ${i}`,
        resourceRequirements: { cpuCores: 1 + (i % 4), memoryMB: (i % 5) * 512 },
        priority: ["low", "normal", "high"][i % 3],
      })),
      edges: Array.from(src, (a, k) => ({ from: `n${a}`, to: `n${dst[k]}` })),
    };
    this.selectedRunId = null;
    this.runState = null;
    return this.showGraph(definition);
  }
}

const cockpit = new Cockpit();
window.__cockpit = {
  cockpit,
  layoutDag,
  randomDag,
  get ready() { return Boolean(cockpit.ready); },
  get webgl() { return cockpit.webgl; },
  get timings() { return cockpit.timings; },
  get latencyMs() { return cockpit.latencies.length ? Math.max(...cockpit.latencies) : null; },
  get frames() { return cockpit.universe?.frames ?? 0; },
  stateOf: (nodeId) => {
    const i = cockpit.graph?.index.get(nodeId);
    return i === undefined ? null : cockpit.shown[i];
  },
  seen: (nodeId) => cockpit.seen.get(nodeId) ?? [],
  screenOf: (nodeId) => {
    const i = cockpit.graph?.index.get(nodeId);
    return i === undefined || !cockpit.universe ? null : cockpit.universe.screenOf(i);
  },
  critical: () => [...(cockpit.critical?.nodes ?? [])].map((i) => cockpit.graph.ids[i]),
  selectRun: (runId) => cockpit.selectRun(runId),
  selectDag: (dagId, version) => cockpit.selectDag(dagId, version),
  startRun: (dagId, params) => cockpit.startRun(dagId, params),
  bench: (n, seed) => cockpit.bench(n, seed),
  setMode: (mode) => { cockpit.universe?.setMode(mode); return cockpit.universe?.mode; },
  /** Feed events through the page's own stream path (benchmarks: no cluster needed). */
  inject: (events) => { for (const event of events) cockpit.onEvent(event); return events.length; },
  showView: (id) => cockpit.showView(id),
  get view() { return cockpit.view; },
  get designer() { return cockpit.designer; },
  get palette() { return cockpit.palette; },
  panel: (id) => document.getElementById(`panel-${id}`),
};
cockpit.start().catch((err) => {
  console.error("cockpit failed to start", err);
  cockpit.toast(`the cockpit failed to start: ${err.message}`);
});
