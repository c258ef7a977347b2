// New DAG versions from the cockpit: the patch number bumped, a suggestion applied to a definition, and
// the define call. Definitions are the API's JSON (GET /api/v1/dags/{id}); nothing here mutates its input.

/** The next patch version: 1.2.3 -> 1.2.4, 1.2 -> 1.2.1, 1.2.3-rc1 -> 1.2.4 (a pre-release is dropped). */
export function bumpPatch(version) {
  const match = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(String(version ?? ""));
  if (!match) return "1.0.0";
  return `${match[1]}.${match[2]}.${match[3] === undefined ? 1 : Number(match[3]) + 1}`;
}

/** The next patch version that is not in `taken` (versions are immutable, so never reuse one). */
export function nextVersion(version, taken = []) {
  const used = new Set(taken);
  let next = bumpPatch(version);
  while (used.has(next)) next = bumpPatch(next);
  return next;
}

/** A deep copy of a JSON value. */
export function clone(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

const APPLICABLE = new Set(["INCREASE_PARALLELISM", "SPLIT_BY_KEY", "RIGHTSIZE_CPU", "RIGHTSIZE_MEMORY"]);

/** Whether the cockpit can apply a suggestion's action by itself (the others need a person). */
export function canApply(suggestion) {
  return APPLICABLE.has(suggestion?.action) && Boolean(suggestion?.nodeId);
}

/**
 * `definition` with `suggestion` applied and its version bumped, plus a sentence saying what changed;
 * null when the suggestion cannot be applied (unknown node or action). The target figures come from the
 * suggestion's message ("raise parallelism from 2 to 4", "split it by key into 4 shards", "request 2",
 * "request 512 MB"); without one, parallelism doubles.
 * @returns {{definition: object, change: string} | null}
 */
export function applySuggestion(definition, suggestion, taken = []) {
  if (!canApply(suggestion)) return null;
  const next = clone(definition);
  const node = (next.nodes ?? []).find((n) => n.nodeId === suggestion.nodeId);
  if (!node) return null;
  const message = String(suggestion.message ?? "");
  let change;
  if (suggestion.action === "INCREASE_PARALLELISM" || suggestion.action === "SPLIT_BY_KEY") {
    const before = Math.max(1, Number(node.executionConfig?.parallelism) || 1);
    const stated = /(?:to|into) (\d+)/.exec(message);
    const after = stated ? Number(stated[1]) : before * 2;
    node.executionConfig = { ...(node.executionConfig ?? {}), parallelism: Math.max(after, before + 1) };
    change = `${node.nodeId}: parallelism ${before} -> ${node.executionConfig.parallelism}`;
  } else if (suggestion.action === "RIGHTSIZE_CPU") {
    const stated = /request ([\d.]+)\s*$/.exec(message);
    if (!stated) return null;
    node.resourceRequirements = { ...(node.resourceRequirements ?? {}), cpuCores: Number(stated[1]) };
    change = `${node.nodeId}: cpuCores -> ${stated[1]}`;
  } else {
    const stated = /request (\d+) MB/.exec(message);
    if (!stated) return null;
    node.resourceRequirements = { ...(node.resourceRequirements ?? {}), memoryMB: Number(stated[1]) };
    change = `${node.nodeId}: memoryMB -> ${stated[1]}`;
  }
  next.version = nextVersion(definition.version, taken);
  return { definition: next, change };
}

/** The versions of a DAG the API knows (for `nextVersion`). */
export async function knownVersions(api, dagId) {
  try {
    const answer = await api.get(`/api/v1/dags/${api.path(dagId)}/versions`);
    return (answer.versions ?? []).map((v) => String(v.version));
  } catch {
    return [];
  }
}

/** Define `definition` (POST /api/v1/dag/define); the API's answer (validationResults, status...). */
export function define(api, definition) {
  return api.post("/api/v1/dag/define", definition);
}

/** A define answer as one line: status, errors and warnings per node. */
export function describeDefine(answer) {
  const results = answer?.validationResults ?? {};
  const issues = [...(results.errors ?? []), ...(results.warnings ?? [])].map(
    (w) => `${w.severity ?? ""} ${w.nodeId ?? "dag"}: ${w.message}`.trim(),
  );
  return [`${answer?.dagId} v${answer?.version}: ${answer?.status}`, ...issues].join("\n");
}
