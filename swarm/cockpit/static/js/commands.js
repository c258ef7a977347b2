// The command palette's commands, built from what the cockpit knows at the moment it opens: views, the
// 2D/3D toggle, every DAG (open, start) and the newest runs (open).

import { VIEWS } from "./views.js";

/** @returns {{id: string, title: string, keywords?: string, run: () => void}[]} */
export function paletteCommands(cockpit, detail) {
  const out = [
    { id: "toggle-view", title: `toggle 2D / 3D (now ${cockpit.universe?.mode ?? "–"})`, keywords: "2d 3d view switch", run: () => cockpit.toggleView() },
    ...VIEWS.map((v) => ({ id: `show-${v.id}`, title: `show ${v.title.toLowerCase()}`, keywords: v.id, run: () => cockpit.showView(v.id) })),
    { id: "edit-shown", title: "edit the shown DAG in the designer", keywords: "designer", run: () => { cockpit.showView("designer"); cockpit.designer.loadShown(); } },
    { id: "refresh", title: "refresh lists", run: () => cockpit.refreshLists() },
    { id: "close-detail", title: "close node details", run: () => { detail.hidden = true; } },
  ];
  for (const dag of cockpit.dags ?? []) {
    out.push({ id: `open-dag:${dag.dagId}`, title: `open DAG ${dag.dagId}`, keywords: dag.name ?? "", run: () => cockpit.selectDag(dag.dagId, dag.latestVersion) });
    if (cockpit.canSubmit) out.push({ id: `start-dag:${dag.dagId}`, title: `start DAG ${dag.dagId}`, keywords: `run ${dag.name ?? ""}`, run: () => cockpit.startRun(dag.dagId) });
  }
  for (const run of (cockpit.runs ?? []).slice(0, 50)) {
    out.push({ id: `open-run:${run.runId}`, title: `open run ${run.runId}`, keywords: `${run.dagId} ${run.state}`, run: () => cockpit.selectRun(run.runId) });
  }
  return out;
}
