/* luodi console: one plain script, no build step, no network beyond this server.
 * Every panel calls the public /v1/* routes with the API key kept in localStorage (sent as Bearer). */
"use strict";

const KEY_STORAGE = "luodi.apiKey";

/* ---------- small helpers ---------- */

/** Build an element: el("div", {class: "x", onclick: fn}, "text", child, ...). Text is never parsed as HTML. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "value") node.value = v;
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const $ = (sel, root = document) => root.querySelector(sel);

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

function fmtValue(v) {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(4);
  if (v && typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** Accept the shapes list routes answer with: a bare array, {data: [...]}, or {<name>: [...]}. */
function asList(body, ...names) {
  if (Array.isArray(body)) return body;
  if (!body || typeof body !== "object") return [];
  for (const n of ["data", ...names]) if (Array.isArray(body[n])) return body[n];
  const arrays = Object.values(body).filter(Array.isArray);
  return arrays.length === 1 ? arrays[0] : [];
}

/* ---------- HTTP ---------- */

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function authHeaders() {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** The server's own words for an error body: OpenAI-style {error: {message}}, FastAPI {detail}, or text. */
function errorMessage(status, body, text) {
  if (body && typeof body === "object") {
    const e = body.error;
    if (e) return typeof e === "string" ? e : e.message || JSON.stringify(e);
    const d = body.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) {
      return d.map((x) => `${(x.loc || []).filter((p) => p !== "body").join(".") || "request"}: ${x.msg}`).join("\n");
    }
    if (d) return JSON.stringify(d);
    if (body.message) return body.message;
  }
  if (status === 0) return "cannot reach the luodi server: is `luodi serve` still running?";
  return (text && text.slice(0, 500)) || `HTTP ${status}`;
}

async function request(path, { method = "GET", json, form, signal } = {}) {
  const headers = { ...authHeaders() };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers, body, signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, errorMessage(0));
  }
  if (resp.status === 401) Auth.failed(resp);
  return resp;
}

/** Call a JSON route; throws ApiError carrying the server's message on any non-2xx answer. */
async function api(path, opts = {}) {
  const resp = await request(path, opts);
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!resp.ok) throw new ApiError(resp.status, errorMessage(resp.status, body, text), body);
  return body ?? text;
}

/** POST `json` and yield each server-sent event as {event, data} (data parsed as JSON when it is JSON). */
async function* sse(path, json, signal) {
  const resp = await request(path, { method: "POST", json, signal });
  if (!resp.ok) {
    const text = await resp.text();
    let body = null;
    try { body = JSON.parse(text); } catch { body = null; }
    throw new ApiError(resp.status, errorMessage(resp.status, body, text), body);
  }
  const ctype = resp.headers.get("content-type") || "";
  if (!ctype.includes("text/event-stream")) {  // a route that answered in one piece
    const text = await resp.text();
    let data = text;
    try { data = JSON.parse(text); } catch { /* keep text */ }
    yield { event: "message", data, whole: true };
    return;
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = "message";
      const lines = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("data:")) lines.push(line.slice(5).replace(/^ /, ""));
        else if (line.startsWith("event:")) event = line.slice(6).trim();
      }
      if (!lines.length) continue;
      const raw = lines.join("\n");
      if (raw === "[DONE]") return;
      let data = raw;
      try { data = JSON.parse(raw); } catch { /* plain text event */ }
      if (event === "error" || (data && typeof data === "object" && data.error && !data.choices)) {
        throw new ApiError(500, errorMessage(500, typeof data === "object" ? data : { error: data }), data);
      }
      yield { event, data };
    }
  }
}

/* ---------- visible errors ---------- */

function showBanner(message) {
  const b = $("#banner");
  b.replaceChildren(el("span", {}, message), el("button", { class: "ghost", onclick: () => { b.hidden = true; } }, "×"));
  b.hidden = false;
}

function errorBox(err) {
  const msg = err instanceof ApiError && err.status ? `${err.message} (HTTP ${err.status})` : err.message || String(err);
  return el("div", { class: "error", role: "alert" }, msg);
}

/** Run `fn`, showing any error inside `slot` (an element) instead of failing silently. */
async function guarded(slot, fn) {
  if (slot) slot.replaceChildren();
  try {
    return await fn();
  } catch (err) {
    if (err.name === "AbortError") return undefined;
    if (slot) slot.replaceChildren(errorBox(err));
    else showBanner(err.message || String(err));
    return undefined;
  }
}

window.addEventListener("error", (e) => showBanner(`console error: ${e.message}`));
window.addEventListener("unhandledrejection", (e) => {
  if (e.reason && e.reason.name === "AbortError") return;
  showBanner(`console error: ${(e.reason && e.reason.message) || e.reason}`);
});

/* ---------- authentication (API key in localStorage) ---------- */

const Auth = {
  set(state, text) {
    const pill = $("#auth-status");
    pill.dataset.state = state;
    pill.textContent = text;
  },
  failed(resp) {
    const has = !!localStorage.getItem(KEY_STORAGE);
    this.set("error", has ? "key rejected" : "key needed");
  },
  /** Probe /v1/models: tells whether the server needs a key and whether ours works. */
  async check() {
    const has = !!localStorage.getItem(KEY_STORAGE);
    try {
      await api("/v1/models");
      this.set("ok", has ? "key ok" : "no key needed");
      $("#banner").hidden = true;
    } catch (err) {
      if (err.status === 401) {
        this.set("error", has ? "key rejected" : "key needed");
        showBanner(has ? `The saved API key was refused: ${err.message}` :
          "This server requires an API key: paste it at the top right (`luodi keys create NAME` makes one).");
      } else {
        this.set("warn", err.status ? `HTTP ${err.status}` : "offline");
      }
    }
  },
  init() {
    const input = $("#auth-key");
    input.value = localStorage.getItem(KEY_STORAGE) || "";
    $("#auth-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const v = input.value.trim();
      if (v) localStorage.setItem(KEY_STORAGE, v);
      else localStorage.removeItem(KEY_STORAGE);
      this.check().then(() => Router.show(Router.current, true));
    });
    $("#auth-forget").addEventListener("click", () => {
      localStorage.removeItem(KEY_STORAGE);
      input.value = "";
      this.check();
    });
    this.check();
  },
};

/* ---------- chat panel ---------- */

const Chat = {
  messages: [],  // [{role, content}]
  models: null,
  options: { model: "", system: "You are a helpful assistant.", temperature: 0.7, max_tokens: 256 },
  controller: null,

  async loadModels(select, slot) {
    await guarded(slot, async () => {
      const body = await api("/v1/models");
      const all = asList(body, "models");
      const isEmbed = (m) => /embed|minilm/i.test(`${m.id} ${m.type || ""} ${m.kind || ""}`);
      this.models = all.filter((m) => !isEmbed(m)).concat(all.filter(isEmbed));
      select.replaceChildren(...this.models.map((m) => el("option", { value: m.id }, m.id)));
      if (!this.options.model && this.models.length) this.options.model = this.models[0].id;
      select.value = this.options.model;
    });
  },

  render(root) {
    const o = this.options;
    const status = el("div");
    const model = el("select", { id: "chat-model", onchange: (e) => { o.model = e.target.value; } });
    const log = el("div", { id: "chat-log", class: "chat-log" });
    const stats = el("div", { id: "chat-stats", class: "stats" });
    const input = el("textarea", { id: "chat-input", rows: 2, placeholder: "Message (Enter sends, Shift+Enter new line)" });
    const send = el("button", { id: "chat-send", type: "submit" }, "Send");
    const stop = el("button", { id: "chat-stop", type: "button", class: "ghost", disabled: true,
      onclick: () => this.controller && this.controller.abort() }, "Stop");
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
    });
    const form = el("form", { class: "composer", onsubmit: (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text || this.controller) return;
      input.value = "";
      this.send(text, log, stats, send, stop);
    } }, input, el("div", { class: "row" }, send, stop));

    root.append(
      el("h2", {}, "Chat"),
      el("div", { class: "card" },
        el("div", { class: "row" },
          el("label", {}, "Model", model),
          el("label", {}, "Temperature", el("input", { id: "chat-temperature", type: "number", min: 0, max: 2, step: 0.1,
            value: o.temperature, style: "width:90px", onchange: (e) => { o.temperature = Number(e.target.value); } })),
          el("label", {}, "Max tokens", el("input", { id: "chat-max-tokens", type: "number", min: 1, step: 1,
            value: o.max_tokens, style: "width:100px", onchange: (e) => { o.max_tokens = Number(e.target.value); } })),
          el("button", { type: "button", class: "ghost", onclick: () => { this.messages = []; log.replaceChildren(); stats.textContent = ""; } },
            "New chat")),
        el("label", {}, "System prompt"),
        el("textarea", { id: "chat-system", rows: 2, value: o.system, oninput: (e) => { o.system = e.target.value; } })),
      status, log, stats, form);
    for (const m of this.messages) log.append(this.bubble(m.role, m.content));
    this.loadModels(model, status);
    input.focus();
  },

  bubble(role, content) {
    return el("div", { class: `msg ${role}` }, el("span", { class: "who" }, role), el("span", { class: "text" }, content));
  },

  async send(text, log, stats, send, stop) {
    this.messages.push({ role: "user", content: text });
    log.append(this.bubble("user", text));
    const reply = this.bubble("assistant", "");
    reply.classList.add("streaming");
    reply.dataset.chunks = "0";
    log.append(reply);
    log.scrollTop = log.scrollHeight;
    const out = $(".text", reply);
    const o = this.options;
    const messages = (o.system.trim() ? [{ role: "system", content: o.system.trim() }] : []).concat(this.messages);
    const body = { model: o.model || undefined, messages, stream: true, stream_options: { include_usage: true },
      temperature: o.temperature, max_tokens: o.max_tokens };
    this.controller = new AbortController();
    send.disabled = true; stop.disabled = false;
    const t0 = performance.now();
    let tFirst = null, usage = null, finish = null, chunks = 0;
    stats.textContent = "waiting for the first token…";
    try {
      for await (const { data } of sse("/v1/chat/completions", body, this.controller.signal)) {
        if (data && data.usage) usage = data.usage;
        const choice = data && data.choices && data.choices[0];
        if (!choice) continue;
        const delta = (choice.delta && choice.delta.content) || (choice.message && choice.message.content) || "";
        if (delta) {
          if (tFirst === null) tFirst = performance.now();
          out.textContent += delta;
          chunks += 1;
          reply.dataset.chunks = String(chunks);
          log.scrollTop = log.scrollHeight;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      this.messages.push({ role: "assistant", content: out.textContent });
      const secs = (performance.now() - t0) / 1000;
      const parts = [`${secs.toFixed(1)} s`];
      if (tFirst !== null) parts.push(`first token ${((tFirst - t0) / 1000).toFixed(2)} s`);
      if (usage) {
        parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
        if (tFirst !== null && usage.completion_tokens > 1) {
          parts.push(`${(usage.completion_tokens / Math.max(0.001, (performance.now() - tFirst) / 1000)).toFixed(1)} tok/s`);
        }
      }
      if (finish) parts.push(`finish: ${finish}`);
      stats.textContent = parts.join(" · ");
    } catch (err) {
      if (err.name === "AbortError") {
        stats.textContent = "stopped";
        if (out.textContent) this.messages.push({ role: "assistant", content: out.textContent });
      } else {
        reply.classList.add("error");
        reply.append(errorBox(err));
        stats.textContent = "";
        this.messages.pop();  // the failed turn is not part of the history
      }
    } finally {
      reply.classList.remove("streaming");
      reply.dataset.done = "1";
      this.controller = null;
      send.disabled = false; stop.disabled = true;
    }
  },
};

/* ---------- API keys panel ---------- */

const Keys = {
  render(root) {
    const status = el("div");
    const created = el("div", { id: "key-created" });
    const table = el("div", { id: "keys-table" });
    const name = el("input", { id: "key-name", placeholder: "name, e.g. my-laptop", required: true });
    const rpm = el("input", { id: "key-rpm", type: "number", min: 1, placeholder: "default", style: "width:110px" });
    root.append(
      el("h2", {}, "API keys"),
      el("form", { class: "card", onsubmit: (e) => { e.preventDefault(); this.create(name, rpm, created, table); } },
        el("div", { class: "row" },
          el("label", { class: "grow" }, "Name", name),
          el("label", {}, "Requests / minute", rpm),
          el("button", { id: "key-create", type: "submit" }, "Create key")),
        created),
      status, table);
    this.load(table);
  },

  async create(name, rpm, created, table) {
    await guarded(created, async () => {
      const body = { name: name.value.trim() };
      if (rpm.value) body.rate_limit_rpm = Number(rpm.value);
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
      await this.load(table);
    });
  },

  async load(table) {
    await guarded(table, async () => {
      const keys = asList(await api("/v1/keys"), "keys");
      if (!keys.length) { table.replaceChildren(el("div", { class: "empty" }, "No API keys yet.")); return; }
      table.replaceChildren(el("table", {},
        el("thead", {}, el("tr", {}, ["ID", "Name", "Prefix", "Limit (rpm)", "Created", "Status", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, keys.map((k) => {
          const active = k.active ?? !k.revoked_at;
          return el("tr", { dataset: { keyId: k.id, keyName: k.name } },
            el("td", {}, k.id), el("td", {}, k.name), el("td", { class: "mono" }, `${k.prefix}…`),
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

/* ---------- placeholder for sections whose routes are not on this server ---------- */

function unavailable(root, title, route, err) {
  root.append(el("h2", {}, title),
    el("div", { class: "card" },
      err && err.status !== 404 ? errorBox(err)
        : el("p", { class: "muted" }, `This server has no ${route} routes (the feature is not installed or not enabled).`)));
}

/* ---------- router ---------- */

const PANELS = { chat: Chat, keys: Keys };

const Router = {
  current: "chat",
  show(name, force = false) {
    if (!PANELS[name]) name = "chat";
    if (name === this.current && !force && $("#panel").childElementCount) return;
    this.current = name;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.panel === name);
    const root = $("#panel");
    root.replaceChildren();
    root.dataset.panel = name;
    try {
      PANELS[name].render(root);
    } catch (err) {
      root.append(errorBox(err));
    }
  },
  init() {
    window.addEventListener("hashchange", () => this.show(location.hash.slice(1)));
    this.show(location.hash.slice(1) || "chat", true);
  },
};

document.addEventListener("DOMContentLoaded", () => {
  Auth.init();
  Router.init();
});
