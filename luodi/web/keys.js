/* API keys: list, create (the secret is shown once) and revoke (GET/POST /v1/keys, DELETE /v1/keys/{id}).
 * A user key may be scoped to some apps, knowledge bases and route groups (comma-separated; empty: no limit). */
import { guarded } from "./errors.js";
import { api } from "./http.js";
import { $, asList, el, fmtTime } from "./lib.js";

export const Keys = {
  render(root) {
    const status = el("div");
    const created = el("div", { id: "key-created" });
    const table = el("div", { id: "keys-table" });
    const name = el("input", { id: "key-name", placeholder: "name, e.g. my-laptop", required: true });
    const rpm = el("input", { id: "key-rpm", type: "number", min: 1, placeholder: "default", style: "width:110px" });
    const scope = {
      apps: el("input", { id: "key-apps", placeholder: "any app" }),
      kbs: el("input", { id: "key-kbs", placeholder: "any knowledge base" }),
      routes: el("input", { id: "key-routes", placeholder: "chat, apps, kb, …" }),
    };
    root.append(
      el("h2", {}, "API keys"),
      el("form", { class: "card", onsubmit: (e) => { e.preventDefault(); this.create(name, rpm, scope, created, table); } },
        el("div", { class: "row" },
          el("label", { class: "grow" }, "Name", name),
          el("label", {}, "Requests / minute", rpm),
          el("button", { id: "key-create", type: "submit" }, "Create key")),
        el("details", {}, el("summary", { class: "muted small" }, "Scope (optional): limit the key"),
          el("div", { class: "row" },
            el("label", { class: "grow" }, "Apps", scope.apps),
            el("label", { class: "grow" }, "Knowledge bases", scope.kbs),
            el("label", { class: "grow", title: "chat, completions, embeddings, apps, kb, agents, assistant, tickets" },
              "Route groups", scope.routes))),
        created),
      status, table);
    this.load(table);
  },

  async create(name, rpm, scope, created, table) {
    created.replaceChildren();
    await guarded(created, async () => {
      const body = { name: name.value.trim() };
      if (rpm.value) body.rate_limit_rpm = Number(rpm.value);
      for (const [field, input] of Object.entries(scope)) {
        if (input.value.trim()) body[field] = input.value.split(",").map((v) => v.trim());
      }
      const k = await api("/v1/keys", { method: "POST", json: body });
      const secret = k.key || k.api_key || k.secret;
      const copy = el("button", { type: "button", class: "ghost", onclick: async () => {
        try { await navigator.clipboard.writeText(secret); copy.textContent = "Copied"; } catch { copy.textContent = "Select and copy"; }
      } }, "Copy");
      const use = el("button", { type: "button", class: "ghost", onclick: () => {
        $("#auth-key").value = secret; $("#auth-form").requestSubmit();
      } }, "Use in this console");
      created.replaceChildren(el("div", { class: "notice" }, `Key "${k.name}" created. It is shown only once: store it now.`),
        el("div", { class: "row" }, el("code", { id: "key-secret", class: "secret grow" }, secret), copy, use));
      name.value = ""; rpm.value = "";
      for (const input of Object.values(scope)) input.value = "";
      await this.load(table);
    });
  },

  async load(table) {
    await guarded(table, async () => {
      const keys = asList(await api("/v1/keys"), "keys");
      if (!keys.length) { table.replaceChildren(el("div", { class: "empty" }, "No API keys yet.")); return; }
      table.replaceChildren(el("table", {},
        el("thead", {}, el("tr", {}, ["ID", "Name", "Prefix", "Scope", "Limit (rpm)", "Created", "Status", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, keys.map((k) => {
          const active = k.active ?? !k.revoked_at;
          return el("tr", { dataset: { keyId: k.id, keyName: k.name } },
            el("td", {}, k.id), el("td", {}, k.name), el("td", { class: "mono" }, `${k.prefix}…`),
            el("td", { class: "small" }, k.role === "admin" ? "admin" : scopeText(k.scope)),
            el("td", {}, k.rate_limit_rpm ?? "default"), el("td", {}, fmtTime(k.created_at)),
            el("td", {}, active ? el("span", { class: "pill ok" }, "active")
              : el("span", { class: "pill err", title: fmtTime(k.revoked_at) }, "revoked")),
            el("td", {}, active ? el("button", { class: "danger", onclick: () => this.revoke(k, table) }, "Revoke") : ""));
        }))));
    });
  },

  async revoke(k, table) {
    if (!window.confirm(`Revoke key "${k.name}" (${k.prefix}…)? Clients using it get 401 from now on.`)) return;
    await guarded(table, async () => {
      await api(`/v1/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
      await this.load(table);
    });
  },
};

/** "apps a, b · kbs x · routes chat" for a scoped key, "any" for an unscoped user key. */
function scopeText(scope) {
  if (!scope) return "any";
  return Object.entries(scope).map(([field, names]) => `${field} ${names.join(", ")}`).join(" · ");
}
