// The execution monitor: active and recent runs with an energy-fill progress bar, the queue (queued
// runs, busy slots of the cluster), a live stream of step events and the duration alerts.
//
// The stream can bring a thousand events a second: they are counted as they come and drawn at most once
// per animation frame, keeping the newest rows only.

import { el } from "./registry.js";

const FINAL = new Set(["SUCCESS", "FAILED", "SKIPPED", "CANCELLED", "done", "failed", "skipped", "cancelled"]);
const STREAM_ROWS = 40;
const ALERT_ROWS = 8;

function clock(ms = Date.now()) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

export const monitorPanel = {
  id: "monitor",
  title: "Execution monitor",
  view: "monitor",
  mount(section, cockpit) {
    const queue = el("div", { className: "queue", "aria-live": "polite" });
    const runList = el("ul", { className: "monitor-runs" });
    const streamList = el("ol", { className: "task-stream", "aria-label": "live task stream" });
    const alertList = el("ul", { className: "alerts" });
    section.append(queue, runList, el("h3", {}, "Live task stream"), streamList, el("h3", {}, "Alerts"), alertList);

    const progress = new Map(); // runId -> Map(nodeId#shard -> state)
    const totals = new Map(); // dagId@version -> shards in the DAG
    let runs = [];
    let devices = [];
    const pending = [];
    const alerts = [];
    let drawQueued = false;

    async function total(run) {
      const key = `${run.dagId}@${run.version}`;
      if (totals.has(key)) return totals.get(key);
      totals.set(key, null);
      try {
        const definition = await cockpit.definition(run.dagId, run.version);
        const sum = (definition.nodes ?? []).reduce((s, n) => s + Math.max(1, Number(n.executionConfig?.parallelism) || 1), 0);
        totals.set(key, sum);
        schedule();
      } catch { /* a run of a DAG this node does not know: no bar */ }
      return null;
    }

    function fraction(run) {
      if (run.state === "SUCCESS") return 1;
      const seen = progress.get(run.runId);
      const all = totals.get(`${run.dagId}@${run.version}`);
      if (!all) { total(run); return FINAL.has(run.state) ? 1 : 0; }
      let done = 0;
      for (const state of seen?.values() ?? []) if (FINAL.has(state)) done++;
      return FINAL.has(run.state) ? 1 : Math.min(1, done / all);
    }

    function drawRuns() {
      const active = runs.filter((r) => r.state === "RUNNING" || r.state === "QUEUED");
      const recent = runs.filter((r) => !active.includes(r)).slice(0, Math.max(0, 6 - active.length));
      runList.replaceChildren(
        ...[...active, ...recent].map((run) => {
          const f = fraction(run);
          const bar = el("div", { className: "energy", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 });
          bar.setAttribute("aria-valuenow", String(Math.round(100 * f)));
          const fill = el("i");
          fill.style.width = `${(100 * f).toFixed(1)}%`;
          bar.append(fill);
          const item = el(
            "li",
            { className: `${run.state}`, tabIndex: 0, dataset: { runId: run.runId } },
            el("div", { className: "id" }, `${run.runId}`),
            el("div", { className: "meta" }, `${run.state} · ${Math.round(100 * f)} %`),
            bar,
          );
          item.addEventListener("click", () => cockpit.selectRun(run.runId));
          item.addEventListener("keydown", (e) => { if (e.key === "Enter") cockpit.selectRun(run.runId); });
          return item;
        }),
      );
      const queued = runs.filter((r) => r.state === "QUEUED").length;
      const running = runs.filter((r) => r.state === "RUNNING").length;
      const live = devices.filter((d) => d.state !== "forgotten" && d.state !== "dead");
      const busy = live.reduce((s, d) => s + (Number(d.running) || 0), 0);
      const slots = live.reduce((s, d) => s + (Number(d.slots) || 0), 0);
      queue.textContent = `queue: ${queued} queued · ${running} running · slots ${busy}/${slots} busy`;
      queue.dataset.queued = String(queued);
    }

    function drawStream() {
      const rows = pending.splice(0, pending.length).slice(-STREAM_ROWS);
      for (const event of rows) {
        const state = String(event.state ?? "");
        const row = el(
          "li",
          { className: `state-${state.toUpperCase()}` },
          el("time", {}, clock(event.at)),
          ` ${event.nodeId}${Number(event.shard) ? `#${event.shard}` : ""} ${state}`,
          event.device ? el("span", { className: "device" }, ` @${event.device}`) : null,
        );
        row.title = `${event.runId}${event.error ? `\n${event.error}` : ""}`;
        streamList.prepend(row);
      }
      while (streamList.childElementCount > STREAM_ROWS) streamList.lastElementChild.remove();
    }

    function drawAlerts() {
      alertList.replaceChildren(
        ...(alerts.length ? alerts.slice(0, ALERT_ROWS) : [null]).map((a) =>
          a
            ? el("li", { className: `alert ${a.kind ?? ""}`, title: a.runId ?? "" }, `⚠ ${a.message ?? `${a.nodeId}: ${a.kind}`}`)
            : el("li", { className: "muted" }, "no alerts"),
        ),
      );
    }

    function schedule() {
      if (drawQueued) return;
      drawQueued = true;
      requestAnimationFrame(() => {
        drawQueued = false;
        drawRuns();
        drawStream();
      });
    }

    function addAlert(alert) {
      const key = `${alert.runId}/${alert.nodeId}/${alert.kind}`;
      if (alerts.some((a) => `${a.runId}/${a.nodeId}/${a.kind}` === key)) return;
      alerts.unshift(alert);
      alerts.length = Math.min(alerts.length, 50);
      drawAlerts();
    }

    cockpit.on("runs", (list) => { runs = list ?? []; schedule(); });
    cockpit.on("devices", (list) => { devices = list; schedule(); });
    cockpit.on("run", (event) => {
      const known = runs.find((r) => r.runId === event.runId);
      if (known) known.state = event.state;
      else runs.unshift({ runId: event.runId, dagId: event.dagId, version: event.version ?? "", state: event.state });
      schedule();
    });
    cockpit.on("node", (event) => {
      let seen = progress.get(event.runId);
      if (!seen) {
        seen = new Map();
        progress.set(event.runId, seen);
        if (progress.size > 100) progress.delete(progress.keys().next().value);
      }
      const key = `${event.nodeId}#${event.shard ?? 0}`;
      if (!FINAL.has(seen.get(key))) seen.set(key, event.state);
      pending.push({ ...event, at: Date.now() });
      if (pending.length > 4 * STREAM_ROWS) pending.splice(0, pending.length - STREAM_ROWS);
      schedule();
    });
    cockpit.on("alert", addAlert);
    cockpit.on("dag", async ({ dagId }) => {
      try {
        const analytics = await cockpit.api.get(`/api/v1/dags/${cockpit.api.path(dagId)}/analytics`);
        for (const alert of (analytics.alerts ?? []).slice(-ALERT_ROWS)) addAlert(alert);
      } catch { /* no history yet */ }
    });
    drawAlerts();
  },
};
