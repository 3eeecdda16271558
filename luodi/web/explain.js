/* Explanation views for predictions answered with `explanation`: a heat map over an image (integrated gradients
   summed into a coarse grid), a bar strip over time for a recording (each frame's effect), and one line of the
   main effects for every kind (table features, words, image blocks, speech segments). */
import { el, fmtValue } from "./lib.js";

const TOWARDS = [192, 57, 43]; // red: pushes towards the predicted class
const AGAINST = [46, 109, 180]; // blue: pushes away from it

const signed = (v) => `${v >= 0 ? "+" : ""}${fmtValue(v)}`;
const color = (v, alpha) => `rgba(${(v >= 0 ? TOWARDS : AGAINST).join(",")},${alpha.toFixed(3)})`;

/** One line of the main effects: features or words (table, text apps), blocks (images), segments (speech). */
export function mainEffects(ex, n = 3) {
  if (!ex) return "";
  if (Array.isArray(ex.effects)) return ex.effects.slice(0, n).map((e) => `${e.feature ?? e.token} ${signed(e.effect)}`).join(", ");
  if (Array.isArray(ex.regions)) return ex.regions.slice(0, n).map((r) => `block ${r.row},${r.col} ${signed(r.effect)}`).join(", ");
  if (Array.isArray(ex.segments)) return ex.segments.slice(0, n).map((s) => `${s.start.toFixed(2)}–${s.end.toFixed(2)} s ${signed(s.effect)}`).join(", ");
  return "";
}

/** The picture of an explanation, when it has one: a heat map (images; drawn over `source`, the uploaded file
    or the request's pixel array, when given) or a bar strip over time (speech); null for table and text
    explanations. */
export function explanationView(ex, source) {
  if (!ex) return null;
  if (Array.isArray(ex.grid) && ex.grid.length) return heatMap(ex, source);
  if (Array.isArray(ex.effect) && Array.isArray(ex.time) && ex.time.length) return frameStrip(ex);
  return null;
}

/** A bitmap of a request's pixel array: rows of gray values or of [r, g, b] (0-1, or 0-255). */
function pixelBitmap(rows) {
  const h = rows.length;
  const w = Array.isArray(rows[0]) ? rows[0].length : 0;
  if (!h || !w) return Promise.reject(new Error("no pixels"));
  const scale = Math.max(...rows.flat(2).map(Number)) > 1 ? 1 : 255;
  const data = new ImageData(w, h);
  rows.forEach((row, i) => row.forEach((v, j) => {
    const [r, g, b] = Array.isArray(v) ? (v.length >= 3 ? v : [v[0], v[0], v[0]]) : [v, v, v];
    data.data.set([r * scale, g * scale, b * scale, 255], 4 * (i * w + j));
  }));
  return createImageBitmap(data);
}

/** A canvas with the image (an uploaded file the browser can decode, or a request's pixel array) and the grid
    of summed attributions over it: red blocks push towards the predicted class, blue ones against, the
    stronger the more opaque. `data-drawn` says what was drawn ("grid", then "image" once the picture is under
    it). */
export function heatMap(ex, source, width = 168) {
  const [h, w] = ex.input_size || [ex.grid.length, ex.grid[0].length];
  const height = Math.max(1, Math.round((width * h) / w));
  const rows = ex.grid.length;
  const cols = ex.grid[0].length;
  const canvas = el("canvas", { class: "explain-heat", width, height, dataset: { cells: `${rows}x${cols}` },
    title: `integrated gradients (${ex.steps} steps, completeness error ${fmtValue(ex.completeness_error)}): red pushes towards ${ex.target}` });
  const ctx = canvas.getContext("2d");
  const max = Math.max(...ex.grid.flat().map(Math.abs)) || 1;
  const overlay = () => {
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        const v = ex.grid[i][j];
        ctx.fillStyle = color(v, (0.7 * Math.abs(v)) / max);
        ctx.fillRect((j * width) / cols, (i * height) / rows, width / cols, height / rows);
      }
    }
  };
  ctx.fillStyle = "#eee";
  ctx.fillRect(0, 0, width, height);
  overlay();
  canvas.dataset.drawn = "grid";
  if (source && typeof createImageBitmap === "function") {
    const bitmap = Array.isArray(source) ? pixelBitmap(source) : createImageBitmap(source);
    bitmap.then((img) => {
      ctx.imageSmoothingEnabled = false; // small images (8x8 digits) stay crisp blocks
      ctx.drawImage(img, 0, 0, width, height);
      overlay();
      canvas.dataset.drawn = "image";
    }).catch(() => { canvas.dataset.drawn = "grid"; }); // not decodable here: the grid alone
  }
  const legend = el("figcaption", { class: "small muted" }, `red: towards ${ex.target}; blue: against`,
    ex.regions && ex.regions.length ? ` · top: ${mainEffects(ex)}` : "");
  return el("figure", { class: "explain-view" }, canvas, legend);
}

/** A bar strip of each frame's effect over the recording's time (seconds): up and red towards the predicted
    word, down and blue against; the top segments below it. */
export function frameStrip(ex, width = 320, height = 56) {
  const times = ex.time;
  const step = ex.frame_seconds || (times.length > 1 ? times[1] - times[0] : 0.01);
  const t0 = Math.max(0, times[0] - step / 2);
  const t1 = times[times.length - 1] + step / 2;
  const span = Math.max(t1 - t0, 1e-6);
  const canvas = el("canvas", { class: "explain-strip", width, height, dataset: { frames: String(times.length) },
    title: `integrated gradients (${ex.steps} steps, completeness error ${fmtValue(ex.completeness_error)}): each frame's effect on ${ex.target}` });
  const ctx = canvas.getContext("2d");
  const max = Math.max(...ex.effect.map(Math.abs)) || 1;
  const mid = height / 2;
  ctx.fillStyle = "#fafafa";
  ctx.fillRect(0, 0, width, height);
  times.forEach((t, k) => {
    const v = ex.effect[k];
    const x = ((t - step / 2 - t0) / span) * width;
    const bar = (Math.abs(v) / max) * (mid - 2);
    ctx.fillStyle = color(v, 0.9);
    ctx.fillRect(x, v >= 0 ? mid - bar : mid, Math.max(1, (step / span) * width - 0.5), bar);
  });
  ctx.fillStyle = "#999";
  ctx.fillRect(0, mid, width, 1);
  canvas.dataset.drawn = "frames";
  const caption = el("figcaption", { class: "small muted" },
    `${t0.toFixed(2)} s … ${t1.toFixed(2)} s; red: towards ${ex.target}`, ex.segments && ex.segments.length ? ` · top: ${mainEffects(ex)}` : "");
  return el("figure", { class: "explain-view" }, canvas, caption);
}
