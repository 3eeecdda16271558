/* The audit log, for admin keys: who called what (GET /v1/audit-log), newest first.
 * Rows hold the key, method, route template, app or knowledge base, status and duration; never bodies.
 * The route pages with `after` (rows newer than an id), so "Newer rows" adds what arrived since the first load. */
import { guarded } from "./errors.js";
import { api } from "./http.js";
import { el, enc, fmtTime } from "./lib.js";

export const AuditLog = {
  limit: 100,

  render(root) {
    const status = el("div");
    const box = el("div", { id: "audit-table" });
    const limit = el("select", { id: "audit-limit", onchange: () => { this.limit = Number(limit.value); this.load(box, status); } },
      [50, 100, 500].map((n) => el("option", { value: n, selected: n === this.limit }, `${n} rows`)));
    const keyId = el("input", { id: "audit-key", type: "number", min: 1, placeholder: "any key", style: "width:110px" });
    const security = el("div", { id: "security-settings" });
    root.append(el("h2", {}, "Security settings"),
      el("p", { class: "muted" }, "What this server runs with (GET /v1/security): keys, limits, TLS, the PII and injection guards, and which apps and knowledge bases redact PII. Secrets are never shown."),
      security);
    this.loadSecurity(security, status);
    root.append(el("h2", {}, "Audit log"),
      el("p", { class: "muted" }, "Every /v1 call (and ticket / approval events): who, what, status, time. Bodies, query strings and headers are never logged."),
      el("form", { class: "row", onsubmit: (e) => { e.preventDefault(); this.load(box, status, keyId.value); } },
        el("label", {}, "Key id", keyId), el("label", {}, "Show", limit),
        el("button", { id: "audit-refresh", type: "submit" }, "Refresh"),
        el("button", { id: "audit-newer", type: "button", class: "ghost", onclick: () => this.newer(box, status, keyId.value) }, "Newer rows")),
      status, box);
    this.load(box, status);
  },

  async loadSecurity(box, status) {
    await guarded(status, async () => {
      let data;
      try {
        data = await api("/v1/security");
      } catch (err) {
        if (err.status !== 403) throw err;
        return;  // the audit log below says the panel is for admin keys
      }
      box.replaceChildren(this.securityTables(data));
    });
  },

  securityTables(data) {
    const guard = (cfg) => (cfg ? `on: ${Object.entries(cfg).filter(([, v]) => v !== null && !(Array.isArray(v) && v.length > 6)).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("|") : v}`).join(", ")}` : "off");
    const row = (k, v) => el("tr", { dataset: { setting: k } }, el("td", { class: "mono" }, k), el("td", {}, String(v)));
    const server = Object.entries(data.server).map(([k, v]) => row(k, k.startsWith("guard_") ? guard(v) : v));
    const apps = (data.apps || []).map((a) => row(`app ${a.app}${a.version ? ` (${a.version})` : ""}: guard.pii`, guard(a.guard_pii)));
    const kbs = (data.kbs || []).map((k) => row(`knowledge base ${k.kb}: pii`, guard(k.pii)));
    return el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Setting"), el("th", {}, "Value"))),
      el("tbody", {}, [...server, ...apps, ...kbs]));
  },

  query(keyId, after = 0) {
    return `/v1/audit-log?limit=${enc(this.limit)}${after ? `&after=${enc(after)}` : ""}${keyId ? `&key_id=${enc(keyId)}` : ""}`;
  },

  async load(box, status, keyId = "") {
    await guarded(status, async () => {
      try {
        this.rows = (await api(this.query(keyId))).data ?? [];
      } catch (err) {
        if (err.status !== 403) throw err;
        box.replaceChildren(el("div", { class: "notice", id: "audit-admin-only" }, "The audit log is for admin keys: use an admin key (`luodi keys create NAME --admin`)."));
        return;
      }
      this.draw(box);
    });
  },

  async newer(box, status, keyId = "") {
    if (!this.rows) return this.load(box, status, keyId);
    await guarded(status, async () => {
      const top = this.rows.length ? this.rows[0].id : 0;
      const fresh = (await api(this.query(keyId, top))).data ?? [];
      this.rows = [...fresh, ...this.rows];
      this.draw(box);
    });
  },

  draw(box) {
    if (!this.rows.length) { box.replaceChildren(el("div", { class: "empty" }, "No audit rows yet.")); return; }
    box.replaceChildren(el("table", {},
      el("thead", {}, el("tr", {}, ["Time", "Key", "Method", "Route", "App / KB", "Status", "ms"].map((h) => el("th", {}, h)))),
      el("tbody", {}, this.rows.map((r) => {
        const d = r.detail || {};
        const key = d.key_name ? `${d.key_name} (${d.key_prefix}…)` : r.actor;
        const bad = d.status >= 400;
        return el("tr", { dataset: { auditId: r.id, route: d.route ?? r.action } },
          el("td", {}, fmtTime(r.at)), el("td", { class: "mono" }, key), el("td", {}, d.method ?? ""),
          el("td", { class: "mono" }, d.route ?? r.action), el("td", {}, d.app ?? d.kb ?? ""),
          el("td", {}, d.status !== undefined ? el("span", { class: `pill ${bad ? "err" : "ok"}` }, d.status) : ""),
          el("td", {}, d.ms ?? ""));
      }))));
  },
};
