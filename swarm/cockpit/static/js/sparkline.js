// A small duration-trend chart on a canvas: one point per run (oldest left), failures as red dots.

const GOOD = "#00ff9d";
const BAD = "#ff4d4f";
const LINE = "#00d1ff";

/**
 * Draw `points` ([{value: seconds | null, ok: boolean}]) into `canvas`.
 * @returns {HTMLCanvasElement} canvas
 */
export function sparkline(canvas, points, width = 120, height = 26) {
  canvas.width = width;
  canvas.height = height;
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, width, height);
  const values = points.map((p) => p.value).filter((v) => typeof v === "number" && Number.isFinite(v));
  if (!values.length) return canvas;
  const top = Math.max(...values) || 1;
  const x = (i) => (points.length === 1 ? width / 2 : 3 + (i * (width - 6)) / (points.length - 1));
  const y = (v) => height - 3 - (v / top) * (height - 6);
  g.strokeStyle = LINE;
  g.lineWidth = 1.5;
  g.shadowColor = LINE;
  g.shadowBlur = 4;
  g.beginPath();
  let started = false;
  points.forEach((p, i) => {
    if (typeof p.value !== "number") return;
    if (started) g.lineTo(x(i), y(p.value)); else g.moveTo(x(i), y(p.value));
    started = true;
  });
  g.stroke();
  g.shadowBlur = 0;
  points.forEach((p, i) => {
    if (typeof p.value !== "number") return;
    g.fillStyle = p.ok ? GOOD : BAD;
    g.fillRect(x(i) - 1.5, y(p.value) - 1.5, 3, 3);
  });
  return canvas;
}
