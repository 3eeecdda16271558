/* Apps & runs: trained apps, their runs and reports, which version is served, and predictions (JSON or files). */
import { guarded } from "./errors.js";
import { explanationView, mainEffects } from "./explain.js";
import { api, failure, request } from "./http.js";
import { asList, el, enc, fmtTime, fmtValue } from "./lib.js";
import { monitorCard } from "./monitor.js";

/** How a run's model was made: trained, or optimized (`luodi optimize`) from a base version, with its size and speed. */
function modelCell(run) {
  const o = run.optimized;
  if (!o) return el("span", { class: "muted" }, "trained");
  const speed = o.speedup_batch1 ? ` · ${fmtValue(o.speedup_batch1)}x at batch 1` : "";
  return el("span", { class: "optimized", title: `agreement with ${o.from}: ${fmtValue(o.agreement)}` },
    `${o.methods.join(" + ")} from ${o.from} · ${fmtValue(o.size_mb)} MB · p50 ${fmtValue(o.p50_ms)} ms${speed}`);
}

function metricChips(metrics) {
  const entries = Object.entries(metrics || {}).filter(([, v]) => v !== null && typeof v !== "object");
  if (!entries.length) return el("span", { class: "muted" }, "—");
  return el("div", { class: "metrics" }, entries.slice(0, 12).map(([k, v]) => el("span", { title: k }, `${k} ${fmtValue(v)}`)));
}

export const Apps = {
  selected: null,

  render(root) {
    const status = el("div");
    const table = el("div", { id: "apps-table" });
    const detail = el("div", { id: "app-detail" });
    root.append(el("h2", {}, "Apps & runs"),
      el("p", { class: "muted" }, "Apps are trained from YAML with `luodi train APP.yaml`; the newest finished run of each is served at /v1/apps/NAME/predict, unless another version was chosen (Serve, or `luodi promote APP VERSION`)."),
      status, el("div", { class: "card" }, table), detail);
    this.reload = () => this.load(table, status, detail);
    this.load(table, status, detail);
  },

  async load(table, status, detail) {
    await guarded(status, async () => {
      const apps = asList(await api("/v1/apps"), "apps");
      if (!apps.length) { table.replaceChildren(el("div", { class: "empty" }, "No trained app yet: run `luodi train examples/diagnosis.yaml` (or `luodi demo`).")); return; }
      table.replaceChildren(el("table", {},
        el("thead", {}, el("tr", {}, ["App", "Task", "Version", "Metrics"].map((h) => el("th", {}, h)))),
        el("tbody", {}, apps.map((a) => {
          const name = a.name ?? a.app;
          return el("tr", { class: `selectable${name === this.selected ? " selected" : ""}`, dataset: { app: name },
            onclick: () => { this.selected = name; this.load(table, status, detail); } },
          el("td", {}, el("strong", {}, name)), el("td", {}, a.task ?? ""),
          el("td", { class: "mono" }, a.version ?? a.latest ?? (a.latest_run && a.latest_run.version) ?? ""),
          el("td", {}, metricChips(a.metrics ?? (a.latest_run && a.latest_run.metrics))));
        }))));
      if (this.selected) this.showDetail(this.selected, apps.find((a) => (a.name ?? a.app) === this.selected) || {}, detail);
    });
  },

  showDetail(name, app, detail) {
    const runs = el("div", { id: "app-runs" });
    const report = el("div", { id: "app-report" });
    const input = el("textarea", { id: "app-input", rows: 5, class: "mono",
      value: JSON.stringify(app.example ?? app.example_input ?? {}, null, 2) });
    const out = el("div", { id: "app-output" });
    const files = el("input", { id: "app-files", type: "file", multiple: true });
    const explain = el("input", { id: "app-explain", type: "checkbox" });
    const schemaHint = app.input_schema || app.request_schema;
    detail.replaceChildren(
      el("div", { class: "card" }, el("h3", { style: "margin-top:0" }, `${name}: runs`), runs, report),
      el("div", { class: "card" }, el("h3", { style: "margin-top:0" }, `${name}: predict`),
        schemaHint ? el("details", {}, el("summary", { class: "muted small" }, "input schema"), el("pre", {}, JSON.stringify(schemaHint, null, 2))) : "",
        el("label", {}, "Request body (JSON): one record, or {\"inputs\": [...]} for a batch"), input,
        el("div", { class: "row" }, el("button", { id: "app-predict", onclick: () => this.predict(name, input.value, out, explain.checked) }, "Predict")),
        el("label", {}, "…or files, read as `luodi predict --input` reads them (CSV / JSON rows, the dataset's own lines, texts, images, wavs)"),
        el("div", { class: "row" }, files,
          el("label", { class: "small" }, explain, " explain"),
          el("button", { id: "app-predict-files", onclick: () => this.predictFiles(name, files, explain.checked, out) }, "Predict files")),
        out),
      monitorCard(name));
    this.loadRuns(name, runs, report);
  },

  async loadRuns(name, box, report) {
    await guarded(box, async () => {
      const runs = asList(await api(`/v1/apps/${enc(name)}/runs`), "runs");
      if (!runs.length) { box.replaceChildren(el("div", { class: "empty" }, "No runs.")); return; }
      const pinned = runs.some((r) => r.pinned);
      const served = (r) => r.served
        ? el("span", { class: "pill ok served" }, r.pinned ? "served (pinned)" : "served")
        : r.status === "done"
          ? [r.held ? el("span", { class: "pill warn held", title: r.held }, `held: ${r.held}`) : "",
            el("button", { class: "ghost serve", title: "serve this version from now on (admin key)",
              onclick: () => this.promote(name, r.version, box, report, Boolean(r.held && r.held.includes("--force"))) }, "Serve")]
          : "";
      box.replaceChildren(
        pinned ? el("div", { class: "row" }, el("span", { class: "muted grow" }, "A pinned version is served; new training does not change it."),
          el("button", { id: "app-follow-latest", class: "ghost", onclick: () => this.promote(name, null, box, report) }, "Follow latest")) : "",
        el("table", {},
          el("thead", {}, el("tr", {}, ["Version", "Status", "Served", "Started", "Finished", "Model", "Metrics", ""].map((h) => el("th", {}, h)))),
          el("tbody", {}, runs.map((r) => el("tr", { dataset: { version: r.version } },
            el("td", { class: "mono" }, r.version), el("td", {}, el("span", { class: `pill ${r.status === "done" ? "ok" : r.status === "failed" ? "err" : "warn"}` }, r.status)),
            el("td", {}, served(r)),
            el("td", {}, fmtTime(r.created_at)), el("td", {}, fmtTime(r.finished_at)), el("td", {}, modelCell(r)),
            el("td", {}, metricChips(r.metrics)),
            el("td", {}, el("button", { class: "ghost", onclick: () => this.showReport(name, r, report) }, "Report"),
              r.audit_url ? el("button", { class: "ghost audit", onclick: () => this.showReport(name, r, report, "audit") }, "Audit") : ""))))));
    });
  },

  /** Serve `version` (null: the newest finished run again), then refresh the runs and the apps table. */
  async promote(name, version, box, report, force = false) {
    if (force && !window.confirm(`${name} ${version} missed its evaluate.goal. Serve it anyway?`)) return;
    await guarded(box, async () => {
      await api(`/v1/apps/${enc(name)}/promote`, { method: "POST", json: force ? { version, force } : { version } });
      if (this.reload) this.reload(); else this.loadRuns(name, box, report);
    });
  },

  /** Fetch the run's HTML report (or its audit: `luodi audit`) with the API key and show it in a sandboxed frame. */
  async showReport(name, run, box, kind = "report") {
    box.replaceChildren(el("div", { class: "muted" }, `Loading ${kind}…`));
    await guarded(box, async () => {
      const url = run[`${kind}_url`] || `/v1/apps/${enc(name)}/runs/${enc(run.version)}/${kind}`;
      const resp = await request(url);
      const html = await resp.text();
      if (!resp.ok) throw failure(resp.status, html);
      const frame = el("iframe", { id: `app-${kind}-frame`, sandbox: "", title: `${name} ${run.version} ${kind}`,
        style: "width:100%;height:70vh;border:1px solid var(--line);border-radius:6px;background:#fff" });
      frame.srcdoc = html;
      box.replaceChildren(el("div", { class: "row" }, el("strong", { class: "grow" }, `${kind === "audit" ? "Audit" : "Report"} ${run.version}`),
        el("button", { class: "ghost", onclick: () => box.replaceChildren() }, "Close")), frame);
    });
  },

  /** Upload the chosen files to /predict/files; a table of the outputs (file, label or value, probability). */
  async predictFiles(name, input, explain, out) {
    await guarded(out, async () => {
      if (!input.files.length) throw new Error("Choose one or more files first.");
      const form = new FormData();
      for (const f of input.files) form.append("files", f, f.name);
      const r = await api(`/v1/apps/${enc(name)}/predict/files${explain ? "?explain=true" : ""}`, { method: "POST", form });
      const rows = r.outputs || [];
      const byName = new Map([...input.files].map((f) => [f.name, f]));
      const why = (o) => (o.explanation ? explanationView(o.explanation, byName.get(o.input)) || mainEffects(o.explanation) : "");
      out.replaceChildren(el("p", { class: "muted small" }, `${rows.length} predictions by ${r.app} ${r.version}`),
        el("table", { id: "app-file-predictions" },
          el("thead", {}, el("tr", {}, ["File", "Prediction", "Score", explain ? "Main effects" : ""].map((h) => el("th", {}, h)))),
          el("tbody", {}, rows.map((o) => el("tr", {},
            el("td", { class: "mono" }, o.input), el("td", {}, String(o.label ?? o.value ?? o.text ?? "")),
            el("td", {}, o.probability !== undefined ? fmtValue(o.probability) : o.anomaly_score !== undefined ? fmtValue(o.anomaly_score) : o.score !== undefined ? fmtValue(o.score) : ""),
            el("td", { class: "small" }, why(o)))))));
    });
  },

  /** Predict for the JSON body; with `explain`, ask for the explanation and draw it when it has a picture. */
  async predict(name, text, out, explain = false) {
    await guarded(out, async () => {
      let body;
      try { body = JSON.parse(text); } catch (e) { throw new Error(`The request body is not valid JSON: ${e.message}`); }
      const r = await api(`/v1/apps/${enc(name)}/predict${explain ? "?explain=true" : ""}`, { method: "POST", json: body });
      const records = Array.isArray(body && body.inputs) ? body.inputs : [body];
      const views = (r.outputs || [r]).map((o, i) => explanationView(o.explanation, records[i] && records[i].image)).filter(Boolean);
      out.replaceChildren(...views, el("pre", { id: "app-prediction" }, JSON.stringify(r, null, 2)));
    });
  },
};
