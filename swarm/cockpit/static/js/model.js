// The cockpit's view of a DAG and of one run of it: node indices, resources, live step states, the
// critical path and the bottleneck. Pure (no DOM, no three.js).
//
// The stream reports a step's start (a `node` event with state RUNNING when the coordinator announces
// the attempt) and its final state (SUCCESS, FAILED, SKIPPED, CANCELLED). A step whose parents are all
// final but that has no record yet is still drawn as "running": a fallback for the moment between its
// parents finishing and its start being announced (or for a node whose API missed the announcement).

const PRIORITY_LIFT = { urgent: 2, high: 1, normal: 0, low: -1, background: -2 };
const ENGINE_STATES = {
  done: "SUCCESS", failed: "FAILED", skipped: "SKIPPED", cancelled: "CANCELLED",
  running: "RUNNING", queued: "QUEUED", waiting: "WAITING",
};
const FINAL = new Set(["SUCCESS", "FAILED", "SKIPPED", "CANCELLED"]);
export const FINAL_RUN_STATES = new Set(["SUCCESS", "FAILED", "CANCELLED"]);
/** What the universe draws: a display state per node. */
export const DISPLAY = ["waiting", "running", "success", "failure", "skipped"];

/** A state of either vocabulary (the engine's `done`, the seed's `SUCCESS`) in the seed's. */
export function normaliseState(state) {
  const text = String(state ?? "");
  return ENGINE_STATES[text] ?? text.toUpperCase();
}

/**
 * The graph of a definition (the `definition` of GET /api/v1/dags/{id}/versions/{v}).
 * @returns {{dagId: string, version: string, ids: string[], index: Map<string, number>, names: string[],
 *   nodes: object[], src: Int32Array, dst: Int32Array, edges: object[], lift: Float32Array,
 *   size: Float32Array, shards: Int32Array, parents: number[][]}}
 */
export function graphFromDefinition(definition) {
  const nodes = Array.isArray(definition?.nodes) ? definition.nodes : [];
  const ids = nodes.map((node, i) => String(node.nodeId ?? `#${i}`));
  const index = new Map(ids.map((id, i) => [id, i]));
  const edges = (Array.isArray(definition?.edges) ? definition.edges : []).filter(
    (e) => index.has(e.from) && index.has(e.to),
  );
  const src = Int32Array.from(edges, (e) => index.get(e.from));
  const dst = Int32Array.from(edges, (e) => index.get(e.to));
  const n = nodes.length;
  const lift = new Float32Array(n);
  const size = new Float32Array(n);
  const shards = new Int32Array(n);
  const parents = Array.from({ length: n }, () => []);
  for (let k = 0; k < edges.length; k++) parents[dst[k]].push(src[k]);
  nodes.forEach((node, i) => {
    lift[i] = PRIORITY_LIFT[node.priority] ?? 0;
    size[i] = nodeSize(node.resourceRequirements);
    // A MAPREDUCE step's parallelism is its maps; the step itself has one record, its collector's.
    shards[i] = isMapReduce(node) ? 1 : Math.max(1, Number(node.executionConfig?.parallelism) || 1);
  });
  return {
    dagId: String(definition?.dagId ?? ""),
    version: String(definition?.version ?? ""),
    ids, index, nodes, src, dst, edges, lift, size, shards, parents,
    names: nodes.map((node, i) => String(node.name || ids[i])),
  };
}

/** Whether a definition node runs the MAPREDUCE runtime (`MAPREDUCE`, `MAP_REDUCE`, with a version). */
export function isMapReduce(node) {
  return /^MAP_?REDUCE/i.test(String(node?.taskDefinition?.runtime ?? ""));
}

/** A node's radius from its resource request: grows with cores and memory, within 0.6..2. */
export function nodeSize(resources) {
  const cores = Math.max(0, Number(resources?.cpuCores) || 1);
  const memoryMB = Math.max(0, Number(resources?.memoryMB) || 0);
  const r = 0.45 * (0.75 + 0.25 * Math.sqrt(cores)) * (1 + 0.12 * Math.log2(1 + memoryMB / 1024));
  return Math.min(2, Math.max(0.6 * 0.5, r));
}

/** The live state of one run of a graph: every shard's record, from the snapshot and the stream. */
export class RunState {
  constructor(graph, runId) {
    this.graph = graph;
    this.runId = runId;
    this.state = "QUEUED";
    this.records = Array.from({ length: graph.ids.length }, () => new Map());
    // The map and reduce tasks of MAPREDUCE steps (`step.map`, `step.reduce`): they show the step running.
    this.parts = Array.from({ length: graph.ids.length }, () => new Map());
    this.version = 0;
  }

  /** Apply a run snapshot (GET /api/v1/runs/{id}). */
  applySnapshot(run) {
    if (run?.state) this.setRunState(run.state);
    for (const record of run?.nodes ?? []) this.applyNode(record);
  }

  /** Apply one step record or `node` event; final states are never taken back. */
  applyNode(record) {
    const i = this.graph.index.get(record.nodeId);
    if (i === undefined) return this.applyPart(record);
    const shard = Number(record.shard) || 0;
    const shards = this.records[i];
    const before = shards.get(shard);
    const state = normaliseState(record.state);
    if (before && FINAL.has(before.state) && !FINAL.has(state)) return false;
    shards.set(shard, { ...before, ...record, state });
    // A step's record means the run's job was accepted (there is no event for that step itself).
    if (this.state === "QUEUED") this.state = "RUNNING";
    this.version++;
    return true;
  }

  /** A map or reduce task of a MAPREDUCE step (`<step>.map`, `<step>.reduce`); false for anything else. */
  applyPart(record) {
    const match = /^(.+)\.(map|reduce)$/.exec(String(record.nodeId ?? ""));
    const i = match ? this.graph.index.get(match[1]) : undefined;
    if (i === undefined) return false;
    this.parts[i].set(`${match[2]}:${Number(record.shard) || 0}`, normaliseState(record.state));
    if (this.state === "QUEUED") this.state = "RUNNING";
    this.version++;
    return true;
  }

  setRunState(state) {
    const next = normaliseState(state);
    if (FINAL_RUN_STATES.has(this.state) && !FINAL_RUN_STATES.has(next)) return;
    if (next !== this.state) { this.state = next; this.version++; }
  }

  /** The seed-facing state of a node: its shards' final state when all are final, else RUNNING or WAITING. */
  nodeState(i) {
    const shards = [...this.records[i].values()];
    const final = shards.filter((r) => FINAL.has(r.state));
    if (final.some((r) => r.state === "FAILED")) return "FAILED";
    if (final.some((r) => r.state === "CANCELLED")) return "CANCELLED";
    if (final.length >= this.graph.shards[i]) {
      return final.every((r) => r.state === "SKIPPED") ? "SKIPPED" : "SUCCESS";
    }
    return shards.length || this.parts[i].size ? "RUNNING" : "WAITING";
  }

  isFinal(i) { return FINAL.has(this.nodeState(i)); }

  /** What to draw for node i (see the module doc for "running"). */
  display(i) {
    const state = this.nodeState(i);
    if (state === "SUCCESS") return "success";
    if (state === "FAILED" || state === "CANCELLED") return "failure";
    if (state === "SKIPPED") return "skipped";
    if (FINAL_RUN_STATES.has(this.state)) return "waiting";
    if (state === "RUNNING") return "running";
    return this.graph.parents[i].every((p) => this.isFinal(p)) ? "running" : "waiting";
  }

  /** Seconds a node took (its slowest shard), or null when unknown. */
  duration(i) {
    let best = null;
    for (const r of this.records[i].values()) {
      // A record without a start time (0: the engine did not report one) has no meaningful duration.
      if (!(Number(r.startedAt) > 0)) continue;
      const d = Number(r.durationS ?? (r.finishedAt != null ? r.finishedAt - r.startedAt : NaN));
      if (Number.isFinite(d) && (best === null || d > best)) best = d;
    }
    return best;
  }

  /** Bytes a node's shards sent out (what its outgoing edges carried). */
  bytesOut(i) {
    let sum = 0;
    for (const r of this.records[i].values()) sum += Number(r.bytesOut) || Number(r.outputSize) || 0;
    return sum;
  }

  /** How many nodes are final, for progress. */
  finalCount() {
    let count = 0;
    for (let i = 0; i < this.graph.ids.length; i++) if (this.isFinal(i)) count++;
    return count;
  }
}

/**
 * The critical path: the heaviest source-to-sink path, weighing a node by `weight(i)` (its measured
 * duration, or 1 when unknown), over the topological order `topo`.
 * @returns {{nodes: Set<number>, edges: Uint8Array, bottleneck: number}} edges flags the edges on the path;
 *   the bottleneck is the heaviest node on it (-1 for an empty graph).
 */
export function criticalPath(graph, topo, weight) {
  const n = graph.ids.length;
  const best = new Float64Array(n);
  const via = new Int32Array(n).fill(-1);
  const viaEdge = new Int32Array(n).fill(-1);
  const incoming = Array.from({ length: n }, () => []);
  for (let k = 0; k < graph.src.length; k++) incoming[graph.dst[k]].push(k);
  for (const v of topo) {
    let top = 0;
    for (const k of incoming[v]) {
      const u = graph.src[k];
      if (via[v] === -1 || best[u] > top) { top = best[u]; via[v] = u; viaEdge[v] = k; }
    }
    best[v] = top + weight(v);
  }
  let end = -1;
  for (let v = 0; v < n; v++) if (end === -1 || best[v] > best[end]) end = v;
  const nodes = new Set();
  const edges = new Uint8Array(graph.src.length);
  let bottleneck = -1;
  for (let v = end; v !== -1; v = via[v]) {
    nodes.add(v);
    if (viaEdge[v] !== -1) edges[viaEdge[v]] = 1;
    if (bottleneck === -1 || weight(v) > weight(bottleneck)) bottleneck = v;
  }
  return { nodes, edges, bottleneck };
}
