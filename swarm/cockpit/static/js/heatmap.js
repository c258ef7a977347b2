// A utilisation heat map over time on a canvas: one row per device, one column per sample (a few
// seconds), the colour running/slots (or the load when a device reports no slots). A ring of columns:
// the newest is on the right.

const COLUMNS = 60;

/** Busy share of a device in 0..1 (running/slots, else its load per core, else its load). */
export function utilisation(device) {
  if (!device || device.state === "forgotten") return null;
  const slots = Number(device.slots) || 0;
  if (slots > 0) return Math.min(1, (Number(device.running) || 0) / slots);
  const load = Number(device.load) || 0;
  const cores = Number(device.cores) || 0;
  return Math.min(1, cores > 0 && load > 1 ? load / cores : load);
}

/** Seed 004's palette: dim blue (idle) through circuit blue to energy green, alert red when saturated. */
export function heatColour(u) {
  if (u === null || u === undefined) return "#0d1020";
  if (u >= 0.95) return "#ff4d4f";
  const t = Math.max(0, Math.min(1, u));
  const mix = (a, b, f) => Math.round(a + (b - a) * f);
  const [r, g, b] = t < 0.5
    ? [mix(0x10, 0x00, t * 2), mix(0x24, 0xd1, t * 2), mix(0x3a, 0xff, t * 2)]
    : [mix(0x00, 0x00, (t - 0.5) * 2), mix(0xd1, 0xff, (t - 0.5) * 2), mix(0xff, 0x9d, (t - 0.5) * 2)];
  return `rgb(${r},${g},${b})`;
}

export class HeatMap {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas, columns = COLUMNS) {
    this.canvas = canvas;
    this.columns = columns;
    this.rows = []; // device ids, in drawing order
    this.samples = new Map(); // device id -> Float32Array ring (NaN: no sample)
    this.head = 0;
    this.taken = 0;
  }

  /** Record one column: every device's utilisation now. */
  sample(devices) {
    this.head = (this.head + 1) % this.columns;
    this.taken++;
    this.update(devices);
  }

  /** Rewrite the newest column from `devices` (a member joined or changed between two samples). */
  update(devices) {
    const present = new Set();
    for (const d of devices) {
      present.add(d.nodeId);
      let ring = this.samples.get(d.nodeId);
      if (!ring) { ring = new Float32Array(this.columns).fill(NaN); this.samples.set(d.nodeId, ring); }
      const u = utilisation(d);
      ring[this.head] = u === null ? NaN : u;
    }
    for (const [id, ring] of this.samples) if (!present.has(id)) ring[this.head] = NaN;
    this.rows = devices.map((d) => d.nodeId);
  }

  /** The row height for n devices: readable for a few, one pixel each for thousands. */
  rowHeight() {
    const n = Math.max(1, this.rows.length);
    return Math.max(1, Math.min(12, Math.floor(240 / n)));
  }

  draw() {
    const h = this.rowHeight();
    const cell = Math.max(2, Math.floor((this.canvas.clientWidth || 240) / this.columns));
    const width = cell * this.columns;
    const height = Math.max(h, h * this.rows.length);
    if (this.canvas.width !== width) this.canvas.width = width;
    if (this.canvas.height !== height) this.canvas.height = height;
    const g = this.canvas.getContext("2d");
    g.fillStyle = "#080a12";
    g.fillRect(0, 0, width, height);
    this.rows.forEach((id, row) => {
      const ring = this.samples.get(id);
      for (let c = 0; c < this.columns; c++) {
        const v = ring[(this.head + 1 + c) % this.columns];
        if (Number.isNaN(v)) continue;
        g.fillStyle = heatColour(v);
        g.fillRect(c * cell, row * h, cell - (cell > 3 ? 1 : 0), h - (h > 3 ? 1 : 0));
      }
    });
  }

  /** The device and value under a point of the canvas (offset coordinates), or null. */
  at(x, y) {
    const h = this.rowHeight();
    const cell = this.canvas.width / this.columns;
    const row = Math.floor(y / h);
    const c = Math.floor(x / cell);
    const id = this.rows[row];
    if (id === undefined || c < 0 || c >= this.columns) return null;
    const v = this.samples.get(id)[(this.head + 1 + c) % this.columns];
    return { nodeId: id, value: Number.isNaN(v) ? null : v, secondsAgo: this.columns - 1 - c };
  }
}
