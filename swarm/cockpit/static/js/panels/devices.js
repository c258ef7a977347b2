// Devices: every member of the swarm with its state, capabilities, load and battery, and a utilisation
// heat map over time. The list comes from GET /api/v1/devices and stays current with `device` events;
// drawing is throttled (a cluster of a thousand members sends many events).

import { HeatMap, utilisation } from "../heatmap.js";
import { el } from "./registry.js";

const SAMPLE_MS = 2000;
const MAX_ROWS = 200;

function battery(d) {
  if (d.batteryPercent === null || d.batteryPercent === undefined) return "mains";
  return `${Math.round(d.batteryPercent)} %${d.charging ? " charging" : ""}`;
}

function row(d) {
  const u = utilisation(d);
  const caps = [
    `${d.cores ?? "?"} cores`,
    d.memoryMB ? `${Math.round(d.memoryMB / 1024)} GB` : null,
    d.gpu ? "GPU" : null,
    d.isolation ? `${d.isolation}` : null,
  ].filter(Boolean).join(" · ");
  const meter = el("div", { className: "energy" }, el("i"));
  meter.firstChild.style.width = `${Math.round(100 * (u ?? 0))}%`;
  return el(
    "li",
    { className: `device ${d.state}`, dataset: { nodeId: d.nodeId }, title: `${d.hostname ?? ""} ${d.platform ?? ""} ${d.arch ?? ""}`.trim() },
    el("div", { className: "name" }, `${d.name || d.nodeId}`, el("span", { className: "state" }, ` ${d.state}`)),
    el("div", { className: "meta" }, `${caps} · load ${Number(d.load ?? 0).toFixed(2)} · ${d.running ?? 0}/${d.slots ?? 0} slots · battery ${battery(d)}`),
    el("div", { className: "meta runtimes" }, (d.runtimes ?? []).join(" ")),
    meter,
  );
}

export const devicesPanel = {
  id: "devices",
  title: "Devices",
  view: "devices",
  mount(section, cockpit) {
    const summary = el("div", { className: "summary" });
    const canvas = el("canvas", { className: "heatmap", width: 240, height: 40 });
    canvas.setAttribute("aria-label", "utilisation heat map: one row per device, newest on the right");
    const hint = el("div", { className: "heat-hint muted" }, "utilisation over the last 2 minutes (newest right)");
    const filter = el("input", { type: "search", placeholder: "filter devices", className: "filter" });
    const list = el("ul", { className: "devices" });
    const more = el("p", { className: "muted" });
    section.append(summary, canvas, hint, filter, list, more);

    const devices = new Map();
    const heat = new HeatMap(canvas);
    let dirty = false;
    let timer = null;

    function ordered() {
      return [...devices.values()].sort((a, b) => String(a.name || a.nodeId).localeCompare(String(b.name || b.nodeId)));
    }

    function draw() {
      timer = null;
      dirty = false;
      const all = ordered();
      const live = all.filter((d) => d.state !== "dead");
      const busy = live.reduce((s, d) => s + (Number(d.running) || 0), 0);
      const slots = live.reduce((s, d) => s + (Number(d.slots) || 0), 0);
      summary.textContent = `${all.length} members · ${live.length} alive · ${busy}/${slots} slots busy`;
      summary.dataset.count = String(all.length);
      const words = filter.value.trim().toLowerCase();
      const shown = words ? all.filter((d) => JSON.stringify(d).toLowerCase().includes(words)) : all;
      list.replaceChildren(...shown.slice(0, MAX_ROWS).map(row));
      more.textContent = shown.length > MAX_ROWS ? `… and ${shown.length - MAX_ROWS} more (filter to find one)` : "";
      heat.update(all);
      heat.draw();
      cockpit.emit("devices", all);
    }

    function later() {
      dirty = true;
      if (timer === null) timer = setTimeout(draw, 250);
    }

    function take() {
      heat.sample(ordered());
      later();
    }

    async function load() {
      try {
        const answer = await cockpit.api.get("/api/v1/devices");
        devices.clear();
        for (const d of answer.devices ?? []) devices.set(d.nodeId, d);
        take();
      } catch (err) {
        summary.textContent = `cannot list devices: ${err.message}`;
      }
    }

    cockpit.on("device", (event) => {
      if (event.state === "forgotten") devices.delete(event.nodeId);
      else devices.set(event.nodeId, { ...devices.get(event.nodeId), ...event });
      later();
    });
    cockpit.on("ready", load);
    cockpit.on("reconnect", load);
    filter.addEventListener("input", later);
    canvas.addEventListener("mousemove", (event) => {
      const hit = heat.at(event.offsetX * (canvas.width / canvas.clientWidth), event.offsetY * (canvas.height / canvas.clientHeight));
      canvas.title = hit ? `${devices.get(hit.nodeId)?.name || hit.nodeId}: ${hit.value === null ? "–" : `${Math.round(100 * hit.value)} %`} ${hit.secondsAgo * (SAMPLE_MS / 1000)} s ago` : "";
    });
    setInterval(take, SAMPLE_MS);
    // For the benchmark and tests: how long drawing took, without waiting for the throttle.
    section.drawNow = () => { const t = performance.now(); heat.sample(ordered()); draw(); return performance.now() - t; };
    section.isDirty = () => dirty;
  },
};
