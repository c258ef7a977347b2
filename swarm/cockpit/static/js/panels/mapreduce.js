// MapReduce configuration of a stage of the shown DAG: maps (the map stage's parallelism), reduces (its
// reduce stage's), partition strategy, combiner, compression and spill threshold. Saving defines a new
// version (patch bumped) and shows the define answer, including what the engine does not apply.

import { isMapReduce } from "../model.js";
import { clone, define, describeDefine, knownVersions, nextVersion } from "../versions.js";
import { el } from "./registry.js";

const PARTITIONS = ["HASH", "RANGE", "ROUND_ROBIN", "KEY_GROUP"];
const COMBINERS = ["", "sum", "count", "min", "max"];

/** The nodes that are MapReduce stages (flagged map/reduce or of the MAPREDUCE runtime). */
export function stages(definition) {
  return (definition?.nodes ?? []).filter(
    (n) => n.executionConfig?.isMapStage || n.executionConfig?.isReduceStage || isMapReduce(n),
  );
}

/** The reduce stage fed by a map stage (its first child flagged as a reduce stage), or null. */
export function reduceOf(definition, mapId) {
  const children = (definition.edges ?? []).filter((e) => e.from === mapId).map((e) => e.to);
  return (definition.nodes ?? []).find((n) => children.includes(n.nodeId) && n.executionConfig?.isReduceStage) ?? null;
}

/** The form's values for stage `nodeId`. */
export function readConfig(definition, nodeId) {
  const node = definition.nodes.find((n) => n.nodeId === nodeId);
  const mr = definition.mapReduceConfig ?? {};
  const common = {
    partitionStrategy: node.executionConfig?.partitionStrategy ?? "",
    combiner: node.taskDefinition?.params?.combiner ?? "",
    compressionEnabled: Boolean(mr.compressionEnabled),
    spillThresholdMB: mr.spillThresholdMB ?? "",
  };
  if (isMapReduce(node)) {
    // One step runs both stages of its engine job: maps from `parallelism`, reduces of its own.
    return {
      maps: Number(node.executionConfig?.parallelism ?? mr.mapParallelismDefault ?? 1),
      reduces: Number(node.executionConfig?.reduceParallelism ?? mr.reduceParallelismDefault ?? 1),
      ...common,
    };
  }
  const reduce = node.executionConfig?.isReduceStage ? node : reduceOf(definition, nodeId);
  const map = node.executionConfig?.isReduceStage ? null : node;
  return {
    maps: map ? Number(map.executionConfig?.parallelism ?? mr.mapParallelismDefault ?? 1) : null,
    reduces: reduce ? Number(reduce.executionConfig?.parallelism ?? mr.reduceParallelismDefault ?? 1) : null,
    ...common,
  };
}

/** `definition` with the form's values written back (a new object); the version is left to the caller. */
export function writeConfig(definition, nodeId, values) {
  const next = clone(definition);
  const node = next.nodes.find((n) => n.nodeId === nodeId);
  const whole = isMapReduce(node);
  const reduceId = whole || node.executionConfig?.isReduceStage ? nodeId : reduceOf(next, nodeId)?.nodeId;
  const mapId = node.executionConfig?.isReduceStage ? null : nodeId;
  const set = (id, key, value) => {
    const n = next.nodes.find((x) => x.nodeId === id);
    n.executionConfig = { ...(n.executionConfig ?? {}), [key]: value };
  };
  if (mapId && values.maps) set(mapId, "parallelism", Number(values.maps));
  if (reduceId && values.reduces) set(reduceId, whole ? "reduceParallelism" : "parallelism", Number(values.reduces));
  if (values.partitionStrategy) set(nodeId, "partitionStrategy", values.partitionStrategy);
  else if (node.executionConfig) delete node.executionConfig.partitionStrategy;
  const params = { ...(node.taskDefinition.params ?? {}) };
  if (values.combiner) params.combiner = values.combiner; else delete params.combiner;
  node.taskDefinition = { ...node.taskDefinition, params };
  const mr = { enabled: true, ...(next.mapReduceConfig ?? {}) };
  mr.compressionEnabled = Boolean(values.compressionEnabled);
  if (values.spillThresholdMB) mr.spillThresholdMB = Number(values.spillThresholdMB); else delete mr.spillThresholdMB;
  next.mapReduceConfig = mr;
  return next;
}

function field(label, input) {
  return el("label", { className: "field" }, el("span", {}, label), input);
}

export const mapReducePanel = {
  id: "mapreduce",
  title: "MapReduce stage",
  view: "insight",
  mount(section, cockpit) {
    const pick = el("select", { "aria-label": "stage" });
    const maps = el("input", { type: "number", min: 1, name: "maps" });
    const reduces = el("input", { type: "number", min: 1, name: "reduces" });
    const partition = el("select", { name: "partitionStrategy" }, el("option", { value: "" }, "(default)"), ...PARTITIONS.map((p) => el("option", { value: p }, p)));
    const combiner = el("select", { name: "combiner" }, ...COMBINERS.map((c) => el("option", { value: c }, c || "(none)")));
    const compression = el("input", { type: "checkbox", name: "compressionEnabled" });
    const spill = el("input", { type: "number", min: 1, name: "spillThresholdMB", placeholder: "MB" });
    const save = el("button", { type: "button", className: "primary" }, "save as new version");
    const result = el("pre", { className: "define-result" });
    const form = el("div", { className: "mr-form" },
      field("stage", pick), field("maps", maps), field("reduces", reduces), field("partition", partition),
      field("combiner", combiner), field("compression", compression), field("spill threshold", spill), save);
    const empty = el("p", { className: "muted" }, "the shown DAG has no map or reduce stage");
    section.append(empty, form, result);
    let definition = null;

    function fill() {
      const values = readConfig(definition, pick.value);
      maps.value = values.maps ?? ""; maps.disabled = values.maps === null;
      reduces.value = values.reduces ?? ""; reduces.disabled = values.reduces === null;
      partition.value = values.partitionStrategy;
      combiner.value = values.combiner;
      compression.checked = values.compressionEnabled;
      spill.value = values.spillThresholdMB;
      save.disabled = !cockpit.canSubmit;
    }

    function show(def, nodeId) {
      definition = def;
      const found = stages(def);
      empty.hidden = found.length > 0;
      form.hidden = found.length === 0;
      if (!found.length) return;
      const role = (n) => (isMapReduce(n) ? " (MapReduce job)" : n.executionConfig?.isReduceStage ? " (reduce)" : " (map)");
      pick.replaceChildren(...found.map((n) => el("option", { value: n.nodeId }, `${n.name || n.nodeId}${role(n)}`)));
      pick.value = found.some((n) => n.nodeId === nodeId) ? nodeId : found[0].nodeId;
      fill();
    }

    pick.addEventListener("change", fill);
    save.addEventListener("click", async () => {
      const next = writeConfig(definition, pick.value, {
        maps: maps.value, reduces: reduces.value, partitionStrategy: partition.value, combiner: combiner.value,
        compressionEnabled: compression.checked, spillThresholdMB: spill.value,
      });
      next.version = nextVersion(definition.version, await knownVersions(cockpit.api, definition.dagId));
      try {
        const answer = await define(cockpit.api, next);
        const notes = (answer.notApplied ?? []).map((n) => `not applied: ${n.path}: ${n.reason}`);
        result.textContent = [describeDefine(answer), ...notes].join("\n");
        cockpit.refreshListsSoon();
        if (answer.status === "CREATED") cockpit.selectDag(next.dagId, next.version);
      } catch (err) {
        result.textContent = `refused (${err.status}): ${err.message}${err.path ? ` at ${err.path}` : ""}`;
      }
    });
    cockpit.on("dag", ({ definition: def }) => show(def, null));
    cockpit.on("step", ({ definition: def, nodeId }) => { if (stages(def).some((n) => n.nodeId === nodeId)) show(def, nodeId); });
    form.hidden = true;
  },
};
