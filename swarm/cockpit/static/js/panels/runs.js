// The run list: DAGs (with a run button, disabled for a viewer) and the newest runs; a click shows one
// in the universe.

import { el } from "./registry.js";

function when(seconds) {
  return typeof seconds === "number" ? new Date(seconds * 1000).toLocaleTimeString() : "";
}

export const runsPanel = {
  id: "runs",
  title: "Runs",
  mount(section, cockpit) {
    const dagList = el("div", { className: "dags" });
    const runList = el("ul", { className: "runs" });
    section.append(dagList, el("h2", {}, "Newest runs"), runList);

    function renderDags(dags) {
      dagList.replaceChildren(
        ...dags.map((dag) => {
          const runButton = el("button", {
            type: "button", className: "run-dag", textContent: "▶ run",
            title: cockpit.canSubmit ? `start a run of ${dag.dagId}` : "a viewer token cannot start runs",
            disabled: !cockpit.canSubmit,
          });
          runButton.dataset.dagId = dag.dagId;
          runButton.addEventListener("click", (event) => { event.stopPropagation(); cockpit.startRun(dag.dagId); });
          const row = el(
            "div",
            { className: "dag-row", tabIndex: 0, dataset: { dagId: dag.dagId }, title: "show this DAG; follow its runs" },
            el("span", { className: "name" }, dag.name ? `${dag.name} (${dag.dagId})` : dag.dagId),
            runButton,
          );
          const open = () => cockpit.selectDag(dag.dagId, dag.latestVersion);
          row.addEventListener("click", open);
          row.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
          return row;
        }),
      );
    }

    function renderRuns(runs) {
      runList.replaceChildren(
        ...runs.map((run) => {
          const item = el(
            "li",
            { className: `${run.state}${run.runId === cockpit.selectedRunId ? " selected" : ""}`, tabIndex: 0,
              dataset: { runId: run.runId } },
            el("div", { className: "id" }, run.runId),
            el("div", { className: "meta" }, `${run.dagId} v${run.version} · ${run.state} · ${when(run.triggeredAt)}`),
          );
          const open = () => cockpit.selectRun(run.runId);
          item.addEventListener("click", open);
          item.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
          return item;
        }),
      );
    }

    cockpit.on("dags", renderDags);
    cockpit.on("runs", renderRuns);
  },
};
