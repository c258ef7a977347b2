// Drill-down into one node: its definition (inputs and where they come from, outputs, resources) and,
// for a run, every shard's execution (state, attempts, device, times, resource use, error, log tail).

import { el } from "./registry.js";

function json(value) {
  const text = JSON.stringify(value, null, 2);
  return text && text.length > 4000 ? `${text.slice(0, 4000)}\n…` : text ?? "null";
}

function time(seconds) {
  return typeof seconds === "number" && seconds > 0 ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 23) : "–";
}

function dl(pairs) {
  const list = el("dl");
  for (const [key, value] of pairs) list.append(el("dt", {}, key), el("dd", {}, value === null || value === undefined || value === "" ? "–" : String(value)));
  return list;
}

/**
 * Fill `panel` with node `i` of `graph`; `run` is the run record (GET /api/v1/runs/{id}) or null.
 * @returns {HTMLElement} panel
 */
export function renderDetail(panel, graph, i, run, state) {
  const node = graph.nodes[i];
  const id = graph.ids[i];
  const task = node.taskDefinition ?? {};
  const close = el("button", { type: "button", className: "close", textContent: "✕", title: "close (Esc)" });
  close.addEventListener("click", () => { panel.hidden = true; });
  panel.replaceChildren(
    close,
    el("h2", {}, graph.names[i]),
    dl([
      ["node", id],
      ["type", node.type],
      ["runtime", `${task.runtime ?? ""} ${task.entrypoint ?? task.className ?? ""}`.trim()],
      ["state", state],
      ["priority", node.priority],
      ["resources", `${node.resourceRequirements?.cpuCores ?? 1} cores, ${node.resourceRequirements?.memoryMB ?? 0} MB`],
      ["parallelism", graph.shards[i]],
    ]),
  );
  panel.querySelector("dd:nth-of-type(4)")?.classList.add(`state-${state}`);

  const incoming = graph.edges.filter((e) => e.to === id);
  const inputs = el("h3", {}, "Inputs");
  const inputRows = [];
  for (const [name, spec] of Object.entries(task.inputSchema ?? {})) {
    const source = incoming.find((e) => e.dataMapping && name in e.dataMapping);
    inputRows.push([name, `${spec?.type ?? ""}${source ? ` ← ${source.from}.${source.dataMapping[name]}` : ""}`]);
  }
  for (const e of incoming) if (!e.dataMapping || !Object.keys(e.dataMapping).length) inputRows.push([`after ${e.from}`, e.condition ?? "SUCCESS"]);
  panel.append(inputs, inputRows.length ? dl(inputRows) : el("p", {}, "none"));
  if (task.params && Object.keys(task.params).length) panel.append(el("h3", {}, "Parameters"), el("pre", {}, json(task.params)));

  const executions = (run?.nodes ?? []).filter((r) => r.nodeId === id);
  panel.append(el("h3", {}, executions.length ? `Executions (${executions.length})` : "Executions"));
  if (!executions.length) panel.append(el("p", {}, run ? "not finished yet" : "no run selected"));
  for (const r of executions) {
    const box = el("div", { className: "execution", dataset: { shard: r.shard } });
    box.append(
      dl([
        ["shard", r.shard],
        ["state", r.state],
        ["attempt", r.attempt],
        ["device", r.device],
        ["started", time(r.startedAt)],
        ["finished", time(r.finishedAt)],
        ["duration", typeof r.durationS === "number" ? `${r.durationS.toFixed(3)} s` : "–"],
        ["cpu", typeof r.cpuS === "number" ? `${r.cpuS.toFixed(3)} s` : "–"],
        ["peak memory", r.peakMemoryMb ? `${r.peakMemoryMb.toFixed(1)} MB` : "–"],
        ["bytes in / out", `${r.bytesIn ?? 0} / ${r.bytesOut ?? 0}`],
      ]),
    );
    if (r.error) box.append(el("h3", {}, "Error"), el("pre", { className: "error node-error" }, r.error));
    box.append(el("h3", {}, "Outputs"), el("pre", { className: "outputs" }, json(r.output)));
    if (r.logTail) box.append(el("h3", {}, "Log tail"), el("pre", { className: "log" }, r.logTail));
    panel.append(box);
  }
  panel.hidden = false;
  return panel;
}

/** The hover tooltip's content for node i. */
export function renderTooltip(tooltip, graph, i, runState) {
  const r = [...(runState?.records[i]?.values() ?? [])];
  const duration = runState?.duration(i);
  const res = graph.nodes[i].resourceRequirements ?? {};
  tooltip.replaceChildren(
    el("h3", {}, graph.names[i]),
    dl([
      ["node", graph.ids[i]],
      ["state", runState ? runState.nodeState(i) : "defined"],
      ["duration", duration === null || duration === undefined ? "–" : `${duration.toFixed(3)} s`],
      ["cpu", r.length ? `${r.reduce((s, x) => s + (Number(x.cpuS) || 0), 0).toFixed(3)} s` : "–"],
      ["device", r.map((x) => x.device).filter(Boolean).join(", ")],
      ["bytes out", runState ? runState.bytesOut(i) : "–"],
      ["request", `${res.cpuCores ?? 1} cores, ${res.memoryMB ?? 0} MB`],
    ]),
  );
}
