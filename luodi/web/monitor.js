/* Monitor of one app (GET /v1/apps/NAME/monitor, as `luodi monitor APP.yaml`): a bar per input feature with its
   drift score against the training data and its threshold, then per version the predictions, latency and live
   quality from feedback. Shown under an app's runs in Apps & runs. */
import { guarded } from "./errors.js";
import { api } from "./http.js";
import { el, enc, fmtValue } from "./lib.js";

/** One feature's bar: its score against a scale where the threshold sits at two thirds; red when drifted. */
function driftBar(f) {
  const scale = Math.max(f.threshold * 1.5, f.score ?? 0);
  const pct = (v) => `${Math.min(100, (100 * v) / scale).toFixed(1)}%`;
  return el("div", { class: "drift-row", dataset: { feature: f.feature, drifted: String(f.drifted) } },
    el("span", { class: "drift-name mono", title: `${f.kind}, ${f.rows} rows` }, f.feature),
    el("span", { class: "drift-track" },
      el("span", { class: `drift-bar${f.drifted ? " drifted" : ""}`, style: `width:${pct(f.score ?? 0)}` }),
      el("span", { class: "drift-threshold", style: `left:${pct(f.threshold)}`, title: `threshold ${f.threshold}` })),
    el("span", { class: "drift-score mono" }, f.score === null ? "—" : fmtValue(f.score)));
}

function versionsTable(rep) {
  return el("table", { id: "monitor-versions" },
    el("thead", {}, el("tr", {}, ["Version", "Share", "Predictions", "p50 ms", "p95 ms", "Feedback", "Live quality"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rep.versions.map((v) => el("tr", { dataset: { version: v.version } },
      el("td", { class: "mono" }, v.version),
      el("td", {}, rep.traffic && rep.traffic[v.version] !== undefined ? `${rep.traffic[v.version]}` : ""),
      el("td", {}, String(v.predictions)), el("td", {}, fmtValue(v.latency_ms.p50)), el("td", {}, fmtValue(v.latency_ms.p95)),
      el("td", {}, String(v.feedback)),
      el("td", {}, v.quality ? `${v.quality.metric} ${fmtValue(v.quality.value)}` : "—")))));
}

/** The monitor card of app `name`; reloads on its button (window: the last `hours`). */
export function monitorCard(name) {
  const body = el("div", { id: "app-monitor" });
  const hours = el("input", { id: "monitor-hours", type: "number", min: "0.1", step: "any", value: "24", style: "width:6em" });
  const load = () => guarded(body, async () => {
    const rep = await api(`/v1/apps/${enc(name)}/monitor?hours=${enc(hours.value)}`);
    const d = rep.drift;
    body.replaceChildren(
      el("p", { class: "muted small" }, `${rep.window.rows} logged predictions in the last ${rep.window.hours} h; `
        + `drift against ${d.reference_version || "?"}'s training data (scores flagged from ${d.min_rows} rows)`
        + (rep.traffic ? `; traffic ${Object.entries(rep.traffic).map(([v, w]) => `${v} ${w}`).join(" / ")}` : "")),
      d.note ? el("p", { class: "muted small" }, d.note) : "",
      d.drifted.length ? el("p", { class: "pill err" }, `drifted: ${d.drifted.join(", ")}`) : "",
      el("div", { class: "drift-chart", id: "monitor-drift" }, d.features.map(driftBar)),
      rep.versions.length ? versionsTable(rep) : el("div", { class: "empty" }, "No logged predictions in this window."));
  });
  const card = el("div", { class: "card" },
    el("div", { class: "row" }, el("h3", { class: "grow", style: "margin:0" }, `${name}: monitor`),
      el("label", { class: "small" }, "hours ", hours), el("button", { id: "monitor-reload", class: "ghost", onclick: load }, "Reload")),
    body);
  load();
  return card;
}
