// The designer's document and its command stack (pure: no DOM). A document is a DAG being drawn:
// {dagId, name, version, nodes: [{nodeId, name, x, y, taskDefinition, resourceRequirements,
// executionConfig, priority}], edges: [{from, to, condition?, dataMapping?}]}.
//
// Undo/redo keeps whole snapshots: documents are small (a designer draws tens of nodes, not thousands),
// and a snapshot cannot drift from the state it restores the way inverse commands can.

import { clone } from "./versions.js";

const HISTORY = 200;
const ID = /^[A-Za-z0-9_.:=-]+$/;

export function emptyDoc() {
  return { dagId: "new-dag", name: "", version: "1.0.0", nodes: [], edges: [] };
}

/** A command stack over a document: `change(label, fn)` mutates it undoably. */
export class CommandStack {
  constructor(doc, onChange = () => {}) {
    this.doc = doc;
    this.done = [];
    this.undone = [];
    this.onChange = onChange;
  }

  /** Run `fn(doc)`; keep the state before it for undo. `fn` returning false cancels the change. */
  change(label, fn) {
    const before = clone(this.doc);
    if (fn(this.doc) === false) { this.doc = before; return false; }
    this.done.push({ label, before });
    if (this.done.length > HISTORY) this.done.shift();
    this.undone = [];
    this.onChange(label);
    return true;
  }

  undo() {
    const step = this.done.pop();
    if (!step) return null;
    this.undone.push({ label: step.label, before: clone(this.doc) });
    this.doc = step.before;
    this.onChange(`undo ${step.label}`);
    return step.label;
  }

  redo() {
    const step = this.undone.pop();
    if (!step) return null;
    this.done.push({ label: step.label, before: clone(this.doc) });
    this.doc = step.before;
    this.onChange(`redo ${step.label}`);
    return step.label;
  }

  /** Replace the document (loading another DAG); the history starts over. */
  reset(doc) {
    this.doc = doc;
    this.done = [];
    this.undone = [];
    this.onChange("load");
  }
}

/** An unused node id from a base name: "echo" -> "echo", "echo2", ... */
export function freshId(doc, base) {
  const clean = String(base || "step").replace(/[^A-Za-z0-9_.:=-]+/g, "-").replace(/^-+|-+$/g, "") || "step";
  const taken = new Set(doc.nodes.map((n) => n.nodeId));
  if (!taken.has(clean)) return clean;
  for (let i = 2; ; i++) if (!taken.has(`${clean}${i}`)) return `${clean}${i}`;
}

/** Add a node from a library template at (x, y); its id. */
export function addNode(doc, template, x, y) {
  const nodeId = freshId(doc, template.id);
  doc.nodes.push({
    nodeId,
    name: template.name ?? nodeId,
    x: Math.round(x),
    y: Math.round(y),
    taskDefinition: clone(template.taskDefinition),
    resourceRequirements: clone(template.resourceRequirements ?? { cpuCores: 1, memoryMB: 256 }),
    executionConfig: clone(template.executionConfig ?? { parallelism: 1 }),
    priority: "normal",
  });
  return nodeId;
}

/** Remove a node and its edges. */
export function removeNode(doc, nodeId) {
  doc.nodes = doc.nodes.filter((n) => n.nodeId !== nodeId);
  doc.edges = doc.edges.filter((e) => e.from !== nodeId && e.to !== nodeId);
}

/** Why an edge from -> to cannot be drawn, or null when it can. */
export function edgeRefusal(doc, from, to) {
  if (from === to) return "a step cannot depend on itself";
  if (!doc.nodes.some((n) => n.nodeId === from) || !doc.nodes.some((n) => n.nodeId === to)) return "no such step";
  if (doc.edges.some((e) => e.from === from && e.to === to)) return `${from} -> ${to} exists already`;
  return null;
}

/** Rename a node, its edges following; the refusal or null. */
export function renameNode(doc, from, to) {
  if (from === to) return null;
  if (!ID.test(to)) return `${to || "(empty)"} is not a valid id (letters, digits and _ . : = -)`;
  if (doc.nodes.some((n) => n.nodeId === to)) return `${to} exists already`;
  const node = doc.nodes.find((n) => n.nodeId === from);
  if (!node) return "no such step";
  node.nodeId = to;
  for (const e of doc.edges) {
    if (e.from === from) e.from = to;
    if (e.to === from) e.to = to;
  }
  return null;
}

/**
 * The cheap checks, live: nodes on a cycle, required inputs nothing feeds (no param, no mapping), steps
 * without an entrypoint. `standards` maps "name@version" to a standard (its inputSchema counts too).
 * @returns {Map<string, string[]>} problems per node id
 */
export function check(doc, standards = new Map()) {
  const problems = new Map(doc.nodes.map((n) => [n.nodeId, []]));
  const say = (id, message) => problems.get(id)?.push(message);
  const indegree = new Map(doc.nodes.map((n) => [n.nodeId, 0]));
  for (const e of doc.edges) indegree.set(e.to, (indegree.get(e.to) ?? 0) + 1);
  const queue = [...indegree].filter(([, d]) => d === 0).map(([id]) => id);
  while (queue.length) {
    const id = queue.pop();
    for (const e of doc.edges) {
      if (e.from !== id) continue;
      indegree.set(e.to, indegree.get(e.to) - 1);
      if (indegree.get(e.to) === 0) queue.push(e.to);
    }
  }
  for (const [id, d] of indegree) if (d > 0) say(id, "on a cycle: a DAG cannot loop");
  for (const node of doc.nodes) {
    const task = node.taskDefinition ?? {};
    const schema = { ...(standards.get(task.standard)?.inputSchema ?? {}), ...(task.inputSchema ?? {}) };
    const fed = new Set(Object.keys(task.params ?? {}));
    for (const e of doc.edges) if (e.to === node.nodeId) for (const k of Object.keys(e.dataMapping ?? {})) fed.add(k);
    for (const [name, spec] of Object.entries(schema)) {
      if (spec?.required && spec.default === undefined && !fed.has(name)) say(node.nodeId, `required input ${name} is not connected`);
    }
    if (!task.entrypoint && !task.className) say(node.nodeId, "no entrypoint");
  }
  return problems;
}

/** The document as a seed-004 definition for POST /api/v1/dag/define. */
export function toDefinition(doc) {
  return {
    ...clone(doc.rest ?? {}),
    dagId: doc.dagId,
    name: doc.name || doc.dagId,
    version: doc.version,
    nodes: doc.nodes.map((n) => ({
      nodeId: n.nodeId,
      name: n.name || n.nodeId,
      type: "TASK",
      position: { x: n.x, y: n.y },
      taskDefinition: n.taskDefinition,
      resourceRequirements: n.resourceRequirements,
      executionConfig: n.executionConfig,
      priority: n.priority ?? "normal",
    })),
    edges: doc.edges.map((e) => {
      const edge = { from: e.from, to: e.to };
      if (e.condition && e.condition !== "SUCCESS") edge.condition = e.condition;
      if (e.dataMapping && Object.keys(e.dataMapping).length) edge.dataMapping = e.dataMapping;
      return edge;
    }),
  };
}

/** A definition as a document (positions from the definition, else a simple grid by depth). */
export function fromDefinition(definition) {
  const nodes = definition.nodes ?? [];
  const edges = definition.edges ?? [];
  const depth = new Map();
  const parents = (id) => edges.filter((e) => e.to === id).map((e) => e.from);
  const depthOf = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const d = Math.max(-1, ...parents(id).map((p) => depthOf(p, seen))) + 1;
    depth.set(id, d);
    return d;
  };
  const rows = new Map();
  const { dagId, name, version, nodes: _n, edges: _e, ...rest } = definition;
  return {
    rest: clone(rest),
    dagId,
    name: name ?? "",
    version,
    nodes: nodes.map((n) => {
      const d = depthOf(n.nodeId);
      const row = rows.get(d) ?? 0;
      rows.set(d, row + 1);
      return {
        nodeId: n.nodeId,
        name: n.name ?? n.nodeId,
        x: n.position?.x ?? 40 + d * 200,
        y: n.position?.y ?? 40 + row * 90,
        taskDefinition: clone(n.taskDefinition ?? {}),
        resourceRequirements: clone(n.resourceRequirements ?? {}),
        executionConfig: clone(n.executionConfig ?? {}),
        priority: n.priority ?? "normal",
      };
    }),
    edges: edges.map((e) => ({ from: e.from, to: e.to, condition: e.condition, dataMapping: clone(e.dataMapping) })),
  };
}
