// History of the shown DAG (GET /api/v1/dags/{id}/history): per step a duration trend across runs, its
// success rate and mean; and a comparison of mean durations between two versions.

import { sparkline } from "../sparkline.js";
import { el } from "./registry.js";

const OK = new Set(["SUCCESS", "done"]);
const BAD = new Set(["FAILED", "failed", "CANCELLED", "cancelled"]);

/** Per node: the runs' durations (oldest first) and outcomes, from a history answer. */
export function perNode(runs) {
  const byNode = new Map();
  const oldestFirst = [...runs].reverse();
  oldestFirst.forEach((run, r) => {
    const slowest = new Map();
    for (const x of run.nodes ?? []) {
      const before = slowest.get(x.nodeId) ?? { value: null, ok: true, skipped: true };
      const d = Number(x.startedAt) > 0 && Number.isFinite(Number(x.durationS)) ? Number(x.durationS) : null;
      slowest.set(x.nodeId, {
        value: d === null ? before.value : Math.max(before.value ?? 0, d),
        ok: before.ok && !BAD.has(x.state),
        skipped: before.skipped && !OK.has(x.state) && !BAD.has(x.state),
      });
    }
    for (const [node, point] of slowest) {
      if (!byNode.has(node)) byNode.set(node, []);
      byNode.get(node).push({ ...point, run: r, version: run.version, runId: run.runId });
    }
  });
  return byNode;
}

/** Mean duration per node of the runs of one version. */
export function meansOf(byNode, version) {
  const out = new Map();
  for (const [node, points] of byNode) {
    const values = points.filter((p) => p.version === version && p.ok && typeof p.value === "number").map((p) => p.value);
    if (values.length) out.set(node, values.reduce((a, b) => a + b, 0) / values.length);
  }
  return out;
}

const fmt = (s) => (typeof s === "number" ? `${s < 10 ? s.toFixed(2) : s.toFixed(1)} s` : "–");

export const historyPanel = {
  id: "history",
  title: "History",
  view: "insight",
  mount(section, cockpit) {
    const head = el("div", { className: "muted" }, "select a DAG to see its history");
    const table = el("table", { className: "history" });
    const pickA = el("select", { "aria-label": "version A" });
    const pickB = el("select", { "aria-label": "version B" });
    const compare = el("table", { className: "compare" });
    section.append(head, table, el("h3", {}, "Version comparison"), el("div", { className: "row" }, pickA, " vs ", pickB), compare);
    let byNode = new Map();

    function drawCompare() {
      const a = meansOf(byNode, pickA.value);
      const b = meansOf(byNode, pickB.value);
      const rows = [...new Set([...a.keys(), ...b.keys()])].sort().map((node) => {
        const delta = a.has(node) && b.has(node) && a.get(node) > 0 ? (b.get(node) - a.get(node)) / a.get(node) : null;
        const cell = el("td", { className: delta === null ? "" : delta > 0.1 ? "worse" : delta < -0.1 ? "better" : "" },
          delta === null ? "–" : `${delta > 0 ? "+" : ""}${Math.round(100 * delta)} %`);
        return el("tr", { dataset: { nodeId: node } }, el("td", {}, node), el("td", {}, fmt(a.get(node))), el("td", {}, fmt(b.get(node))), cell);
      });
      compare.replaceChildren(
        el("tr", {}, el("th", {}, "step"), el("th", {}, `v${pickA.value}`), el("th", {}, `v${pickB.value}`), el("th", {}, "Δ")),
        ...rows,
      );
    }

    async function load(dagId) {
      try {
        const answer = await cockpit.api.get(`/api/v1/dags/${cockpit.api.path(dagId)}/history?limit=50`);
        const runs = answer.runs ?? [];
        byNode = perNode(runs);
        const finished = runs.filter((r) => r.state !== "RUNNING" && r.state !== "QUEUED");
        const ok = finished.filter((r) => r.state === "SUCCESS").length;
        head.textContent = `${dagId}: ${runs.length} runs · ${finished.length ? Math.round((100 * ok) / finished.length) : 0} % succeeded`;
        table.replaceChildren(
          el("tr", {}, el("th", {}, "step"), el("th", {}, "trend"), el("th", {}, "ok"), el("th", {}, "mean")),
          ...[...byNode].map(([node, points]) => {
            const done = points.filter((p) => !p.skipped);
            const good = done.filter((p) => p.ok);
            const values = good.map((p) => p.value).filter((v) => typeof v === "number");
            const canvas = sparkline(el("canvas", { className: "spark" }), points);
            canvas.title = points.map((p) => `${p.runId}: ${fmt(p.value)}${p.ok ? "" : " failed"}`).join("\n");
            return el(
              "tr", { dataset: { nodeId: node } },
              el("td", {}, node), el("td", {}, canvas),
              el("td", {}, done.length ? `${Math.round((100 * good.length) / done.length)} %` : "–"),
              el("td", {}, fmt(values.length ? values.reduce((a, b) => a + b, 0) / values.length : null)),
            );
          }),
        );
        const versions = [...new Set(runs.map((r) => r.version))];
        const options = (pick) => pick.replaceChildren(...versions.map((v) => el("option", { value: v }, `v${v}`)));
        options(pickA);
        options(pickB);
        pickA.value = versions[Math.min(1, versions.length - 1)] ?? "";
        pickB.value = versions[0] ?? "";
        drawCompare();
      } catch (err) {
        head.textContent = `no history for ${dagId}: ${err.message}`;
      }
    }

    pickA.addEventListener("change", drawCompare);
    pickB.addEventListener("change", drawCompare);
    let current = null;
    cockpit.on("dag", ({ dagId }) => { current = dagId; load(dagId); });
    cockpit.on("run", (event) => {
      if (event.dagId === current && ["SUCCESS", "FAILED", "CANCELLED"].includes(event.state)) setTimeout(() => load(current), 800);
    });
  },
};
