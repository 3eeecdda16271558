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
  if (!resp.ok) {
    let msg = errorMessage(resp.status, body, text);
    if (resp.status === 404 && msg === "Not Found") {
      msg = `this server has no route ${opts.method || "GET"} ${path.split("?")[0]} (that feature is not installed here)`;
    }
    throw new ApiError(resp.status, msg, body);
  }
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
      // an error after the stream started: an "error" event, or an OpenAI-style {"error": {...}} chunk
      const isErr = event === "error" || (data && typeof data === "object" && data.error && typeof data.error === "object"
        && !data.type && !data.event && !data.choices);
      if (isErr) throw new ApiError(null, errorMessage(500, typeof data === "object" ? data : { error: data }), data);
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
  if (slot) for (const e of slot.querySelectorAll(":scope > .error")) e.remove();  // old errors go; content stays
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
      const isChat = (m) => (m.role ? m.role === "chat" : !/embed|minilm/i.test(m.id));
      this.models = all.filter(isChat);
      if (!this.models.length) throw new Error("this server lists no chat model (GET /v1/models)");
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
    created.replaceChildren();
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

/* ---------- knowledge bases panel ---------- */

const enc = encodeURIComponent;

const KB = {
  selected: null,

  render(root) {
    const list = el("ul", { id: "kb-list", class: "list" });
    const listStatus = el("div");
    const detail = el("div", { id: "kb-detail" });
    const name = el("input", { id: "kb-name", placeholder: "new knowledge base name", class: "grow" });
    root.append(el("h2", {}, "Knowledge bases"),
      el("div", { class: "split" },
        el("div", { class: "card" },
          el("form", { class: "row", onsubmit: (e) => { e.preventDefault(); this.create(name, list, listStatus, detail); } },
            name, el("button", { id: "kb-create", type: "submit" }, "Create")),
          listStatus, list),
        detail));
    this.loadList(list, listStatus, detail);
  },

  async loadList(list, status, detail) {
    await guarded(status, async () => {
      const kbs = asList(await api("/v1/kb"), "kbs", "knowledge_bases");
      list.replaceChildren(...kbs.map((kb) => {
        const n = kb.name ?? kb;
        const docs = kb.documents ?? kb.n_documents ?? kb.docs;
        return el("li", { class: n === this.selected ? "selected" : "", dataset: { kb: n },
          onclick: () => { this.selected = n; this.loadList(list, status, detail); } },
        el("span", {}, n), docs !== undefined ? el("span", { class: "small" }, `${docs} doc${docs === 1 ? "" : "s"}`) : "");
      }));
      if (!kbs.length) list.replaceChildren(el("li", { class: "empty" }, "No knowledge base yet: create one."));
      if (this.selected && kbs.some((kb) => (kb.name ?? kb) === this.selected)) this.showDetail(detail, list, status);
      else detail.replaceChildren(el("div", { class: "card muted" }, "Select a knowledge base to upload documents and ask questions."));
    });
  },

  async create(input, list, status, detail) {
    const n = input.value.trim();
    await guarded(status, async () => {
      await api("/v1/kb", { method: "POST", json: { name: n } });
      input.value = "";
      this.selected = n;
      await this.loadList(list, status, detail);
    });
  },

  showDetail(detail, list, listStatus) {
    const n = this.selected;
    const docs = el("div", { id: "kb-docs" });
    const upStatus = el("div", { id: "kb-upload-status" });
    const files = el("input", { id: "kb-files", type: "file", multiple: true, accept: ".txt,.md,.markdown,.html,.htm,.pdf,.docx" });
    const question = el("input", { id: "kb-question", class: "grow", placeholder: "Ask a question about these documents" });
    const k = el("input", { id: "kb-k", type: "number", min: 1, max: 50, value: 5, style: "width:70px", title: "passages to retrieve" });
    const maxTokens = el("input", { id: "kb-max-tokens", type: "number", min: 1, max: 1024, value: 96, style: "width:80px", title: "longest answer, in tokens" });
    const answer = el("div", { id: "kb-answer" });
    detail.replaceChildren(
      el("div", { class: "card" },
        el("div", { class: "row" }, el("h3", { class: "grow", style: "margin:0" }, n),
          el("button", { class: "danger", id: "kb-delete", onclick: () => this.remove(n, list, listStatus, detail) }, "Delete")),
        el("form", { class: "row", onsubmit: (e) => { e.preventDefault(); this.upload(n, files, upStatus, docs); } },
          files, el("button", { id: "kb-upload", type: "submit" }, "Upload")),
        upStatus),
      el("div", { class: "card" },
        el("form", { class: "row", onsubmit: (e) => { e.preventDefault(); this.ask(n, question.value, Number(k.value), Number(maxTokens.value), answer); } },
          question, el("label", {}, "Passages", k), el("label", {}, "Max tokens", maxTokens),
          el("button", { id: "kb-ask", type: "submit" }, "Ask"),
          el("button", { id: "kb-search", type: "button", class: "ghost",
            onclick: () => this.search(n, question.value, Number(k.value), answer) }, "Search only")),
        answer),
      el("div", { class: "card" }, el("h3", { style: "margin-top:0" }, "Documents"), docs));
    this.loadDocs(n, docs);
  },

  async loadDocs(n, box) {
    await guarded(box, async () => {
      const docs = asList(await api(`/v1/kb/${enc(n)}/documents`), "documents");
      if (!docs.length) { box.replaceChildren(el("div", { class: "empty" }, "No documents yet: upload txt, md, html, pdf or docx files.")); return; }
      const err = el("div");
      box.replaceChildren(err, el("table", {},
        el("thead", {}, el("tr", {}, ["Source", "Chunks", "Status", "Added", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, docs.map((d) => el("tr", { dataset: { source: d.source ?? "" } },
          el("td", {}, d.source ?? d.id), el("td", {}, d.chunks ?? d.n_chunks ?? ""),
          el("td", {}, el("span", { class: `pill ${d.status === "indexed" ? "ok" : "warn"}` }, d.status ?? "")),
          el("td", {}, fmtTime(d.added_at)),
          el("td", {}, el("button", { class: "ghost small", title: "remove this document from the knowledge base",
            onclick: async () => {
              if (!window.confirm(`Remove "${d.source}" from ${n}?`)) return;
              await guarded(err, async () => { await api(`/v1/kb/${enc(n)}/documents/${enc(d.id)}`, { method: "DELETE" }); await this.loadDocs(n, box); });
            } }, "Remove")))))));
    });
  },

  async upload(n, files, status, docs) {
    if (!files.files.length) { status.replaceChildren(el("div", { class: "error" }, "Choose one or more files first.")); return; }
    const form = new FormData();
    for (const f of files.files) form.append("files", f, f.name);
    status.replaceChildren(el("div", { class: "muted" }, `Uploading and indexing ${files.files.length} file(s)…`));
    await guarded(status, async () => {
      const r = await api(`/v1/kb/${enc(n)}/documents`, { method: "POST", form });
      const count = (x) => (Array.isArray(x) ? x.length : 0);
      const parts = [`added ${count(r.added)}`];
      if (count(r.skipped)) parts.push(`${count(r.skipped)} unchanged (already indexed)`);
      if (count(r.replaced)) parts.push(`${count(r.replaced)} replaced by a new version`);
      if (r.chunks !== undefined) parts.push(`${r.chunks} chunks`);
      const failed = Object.entries(r.failed || {});
      status.replaceChildren(el("div", { id: "kb-upload-result", class: "notice" }, `Indexed: ${parts.join(", ")}.`),
        ...failed.map(([src, why]) => el("div", { class: "error" }, `${src}: ${why}`)));
      files.value = "";
      await this.loadDocs(n, docs);
    });
  },

  citationList(items, cls = "citations") {
    return el("ol", { class: cls }, items.map((c) => {
      const span = c.start !== undefined && c.end !== undefined ? ` [chars ${c.start}–${c.end}]` : "";
      const score = typeof c.score === "number" ? ` · score ${c.score.toFixed(3)}` : "";
      return el("li", { class: "citation" },
        el("span", { class: "mono source" }, `${c.source ?? "?"}${span}`),
        el("span", { class: "muted small" }, score), c.text ? el("pre", {}, c.text) : "");
    }));
  },

  /** Ask with `stream: true`: passages arrive first, then the answer token by token, then its citations. */
  async ask(n, q, k, maxTokens, box) {
    if (!q.trim()) { box.replaceChildren(el("div", { class: "error" }, "Type a question first.")); return; }
    const who = el("span", { class: "who" }, "answer");
    const text = el("span", { class: "text" });
    const bubble = el("div", { id: "kb-answer-text", class: "msg assistant streaming", style: "max-width:100%" }, who, text);
    const cites = el("div", { id: "kb-citations" });
    const passages = el("details", { id: "kb-passages" });
    const progress = el("div", { class: "muted small" }, "Retrieving…");
    const err = el("div");
    box.replaceChildren(progress, bubble, err, cites, passages);
    await guarded(err, async () => {
      for await (const { event, data } of sse(`/v1/kb/${enc(n)}/ask`, { question: q, k, max_tokens: maxTokens, stream: true })) {
        const kind = (data && data.event) || event;
        if (kind === "passages") {
          progress.textContent = data.found ? `Retrieved ${data.passages.length} passage(s); answering…`
            : "Nothing relevant retrieved.";
          passages.replaceChildren(el("summary", { class: "muted small" }, `retrieved passages (${data.passages.length})`),
            this.citationList(data.passages, "citations passages"));
        } else if (kind === "delta") {
          text.textContent += data.text || "";
        } else if (kind === "done" || (data && data.answer && data.question)) {
          const a = data.answer && typeof data.answer === "object" ? data.answer : data;
          text.textContent = a.answer;
          bubble.dataset.found = String(!!a.found);
          who.textContent = a.found ? "answer" : "not found in the knowledge base";
          progress.textContent = "";
          const c = a.citations || [];
          cites.replaceChildren(c.length ? el("div", {}, el("h3", {}, "Citations"), this.citationList(c)) : "");
        }
      }
    });
    bubble.classList.remove("streaming");
    bubble.dataset.done = "1";
  },

  async search(n, q, k, box) {
    if (!q.trim()) { box.replaceChildren(el("div", { class: "error" }, "Type a query first.")); return; }
    await guarded(box, async () => {
      const r = await api(`/v1/kb/${enc(n)}/search`, { method: "POST", json: { query: q, k } });
      const hits = asList(r, "results", "hits");
      const head = r.found === false ? el("div", { class: "muted" }, `Weak match (best similarity ${Number(r.best_dense).toFixed(3)} < threshold ${Number(r.min_score).toFixed(3)}): an answer would be "not found".`) : "";
      box.replaceChildren(head, hits.length ? this.citationList(hits, "citations hits") : el("div", { class: "empty" }, "No passage matched."));
    });
  },

  async remove(n, list, status, detail) {
    if (!window.confirm(`Delete knowledge base "${n}" and all its documents?`)) return;
    await guarded(status, async () => {
      await api(`/v1/kb/${enc(n)}`, { method: "DELETE" });
      this.selected = null;
      await this.loadList(list, status, detail);
    });
  },
};

/* ---------- apps and runs panel ---------- */

function metricChips(metrics) {
  const entries = Object.entries(metrics || {}).filter(([, v]) => v !== null && typeof v !== "object");
  if (!entries.length) return el("span", { class: "muted" }, "—");
  return el("div", { class: "metrics" }, entries.slice(0, 12).map(([k, v]) => el("span", { title: k }, `${k} ${fmtValue(v)}`)));
}

const Apps = {
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
        el("div", { class: "row" }, el("button", { id: "app-predict", onclick: () => this.predict(name, input.value, out) }, "Predict")),
        el("label", {}, "…or files, read as `luodi predict --input` reads them (CSV / JSON rows, the dataset's own lines, texts, images, wavs)"),
        el("div", { class: "row" }, files,
          el("label", { class: "small" }, explain, " explain"),
          el("button", { id: "app-predict-files", onclick: () => this.predictFiles(name, files, explain.checked, out) }, "Predict files")),
        out));
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
          ? el("button", { class: "ghost serve", title: "serve this version from now on (admin key)",
            onclick: () => this.promote(name, r.version, box, report) }, "Serve")
          : "";
      box.replaceChildren(
        pinned ? el("div", { class: "row" }, el("span", { class: "muted grow" }, "A pinned version is served; new training does not change it."),
          el("button", { id: "app-follow-latest", class: "ghost", onclick: () => this.promote(name, null, box, report) }, "Follow latest")) : "",
        el("table", {},
          el("thead", {}, el("tr", {}, ["Version", "Status", "Served", "Started", "Finished", "Metrics", ""].map((h) => el("th", {}, h)))),
          el("tbody", {}, runs.map((r) => el("tr", { dataset: { version: r.version } },
            el("td", { class: "mono" }, r.version), el("td", {}, el("span", { class: `pill ${r.status === "done" ? "ok" : r.status === "failed" ? "err" : "warn"}` }, r.status)),
            el("td", {}, served(r)),
            el("td", {}, fmtTime(r.created_at)), el("td", {}, fmtTime(r.finished_at)), el("td", {}, metricChips(r.metrics)),
            el("td", {}, el("button", { class: "ghost", onclick: () => this.showReport(name, r, report) }, "Report")))))));
    });
  },

  /** Serve `version` (null: the newest finished run again), then refresh the runs and the apps table. */
  async promote(name, version, box, report) {
    await guarded(box, async () => {
      await api(`/v1/apps/${enc(name)}/promote`, { method: "POST", json: { version } });
      if (this.reload) this.reload(); else this.loadRuns(name, box, report);
    });
  },

  /** Fetch the run's HTML report with the API key and show it in a sandboxed frame. */
  async showReport(name, run, box) {
    box.replaceChildren(el("div", { class: "muted" }, "Loading report…"));
    await guarded(box, async () => {
      const url = run.report_url || `/v1/apps/${enc(name)}/runs/${enc(run.version)}/report`;
      const resp = await request(url);
      const html = await resp.text();
      if (!resp.ok) {
        let body = null;
        try { body = JSON.parse(html); } catch { body = null; }
        throw new ApiError(resp.status, errorMessage(resp.status, body, html), body);
      }
      const frame = el("iframe", { id: "app-report-frame", sandbox: "", title: `${name} ${run.version} report`,
        style: "width:100%;height:70vh;border:1px solid var(--line);border-radius:6px;background:#fff" });
      frame.srcdoc = html;
      box.replaceChildren(el("div", { class: "row" }, el("strong", { class: "grow" }, `Report ${run.version}`),
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
      const why = (o) => (o.explanation ? o.explanation.effects.slice(0, 3).map((e) => `${e.feature} ${e.effect >= 0 ? "+" : ""}${fmtValue(e.effect)}`).join(", ") : "");
      out.replaceChildren(el("p", { class: "muted small" }, `${rows.length} predictions by ${r.app} ${r.version}`),
        el("table", { id: "app-file-predictions" },
          el("thead", {}, el("tr", {}, ["File", "Prediction", "Score", explain ? "Main effects" : ""].map((h) => el("th", {}, h)))),
          el("tbody", {}, rows.map((o) => el("tr", {},
            el("td", { class: "mono" }, o.input), el("td", {}, String(o.label ?? o.value ?? o.text ?? "")),
            el("td", {}, o.probability !== undefined ? fmtValue(o.probability) : o.anomaly_score !== undefined ? fmtValue(o.anomaly_score) : ""),
            el("td", { class: "small" }, why(o)))))));
    });
  },

  async predict(name, text, out) {
    await guarded(out, async () => {
      let body;
      try { body = JSON.parse(text); } catch (e) { throw new Error(`The request body is not valid JSON: ${e.message}`); }
      const r = await api(`/v1/apps/${enc(name)}/predict`, { method: "POST", json: body });
      out.replaceChildren(el("pre", { id: "app-prediction" }, JSON.stringify(r, null, 2)));
    });
  },
};

/* ---------- human hand-off queue (tickets) ---------- */

const Tickets = {
  filter: "open",

  render(root) {
    const status = el("div");
    const box = el("div", { id: "tickets" });
    const tabs = el("div", { class: "tabs" }, ["open", "answered", "closed", "all"].map((f) =>
      el("button", { type: "button", class: f === this.filter ? "active" : "", dataset: { filter: f },
        onclick: () => { this.filter = f; Router.show("tickets", true); } }, f)));
    root.append(el("h2", {}, "Hand-off queue"),
      el("p", { class: "muted" }, "Conversations the assistant handed to a human. Your answer is appended to the customer's conversation, where their chat shows it."),
      el("div", { class: "row" }, tabs, el("button", { id: "tickets-refresh", class: "ghost", onclick: () => this.load(box, status) }, "Refresh")),
      status, box);
    this.load(box, status);
  },

  async load(box, status) {
    await guarded(status, async () => {
      const tickets = asList(await api(`/v1/tickets?status=${enc(this.filter)}`), "tickets");
      if (!tickets.length) { box.replaceChildren(el("div", { class: "empty" }, `No ${this.filter === "all" ? "" : this.filter + " "}tickets.`)); return; }
      box.replaceChildren(...tickets.map((t) => this.card(t, box, status)));
    });
  },

  card(t, box, status) {
    const answer = el("textarea", { rows: 3, class: "ticket-answer", placeholder: "Write the answer the customer will see" });
    const close = el("input", { type: "checkbox", class: "ticket-close" });
    const err = el("div");
    const conversation = el("div", { class: "chat-log" });
    const details = el("details", { class: "ticket-conversation", ontoggle: async () => {
      if (!details.open || conversation.childElementCount) return;
      await guarded(err, async () => {
        const r = await api(`/v1/assistants/threads/${enc(t.thread_id)}/messages`);
        conversation.replaceChildren(...asList(r, "messages").map((m) => Chat.bubble(m.role, m.content)));
      });
    } }, el("summary", { class: "muted small" }, "conversation"), conversation);
    const pill = { open: "warn", answered: "ok", closed: "" }[t.status] ?? "";
    return el("div", { class: "card ticket", dataset: { ticketId: t.id, status: t.status } },
      el("div", { class: "row" }, el("strong", { class: "grow" }, `#${t.id} ${t.subject ?? ""}`),
        el("span", { class: `pill ${pill}` }, t.status ?? ""),
        el("span", { class: "small muted" }, fmtTime(t.created_at))),
      t.body ? el("pre", {}, t.body) : "",
      t.thread_id ? details : "",
      t.answer ? el("div", { class: "msg human_agent" }, el("span", { class: "who" }, `answered ${fmtTime(t.answered_at)}`), t.answer) : "",
      t.status !== "closed" ? el("form", { onsubmit: async (e) => {
        e.preventDefault();
        await guarded(err, async () => {
          await api(`/v1/tickets/${enc(t.id)}/answer`, { method: "POST", json: { answer: answer.value, close: close.checked } });
          await this.load(box, status);
        });
      } }, answer, el("div", { class: "row" }, el("button", { type: "submit", class: "ticket-send" }, t.answer ? "Answer again" : "Send answer"),
        el("label", { style: "flex-direction:row;gap:4px;align-items:center" }, close, "close the ticket"))) : "",
      err);
  },
};

/* ---------- agents and assistants ---------- */

/** One line of an agent's trace (events from luodi.agent.runtime: start, plan, model, tool_call, ...). */
function traceItem(ev) {
  const kind = ev.type || ev.event || "event";
  let body;
  switch (kind) {
    case "start": body = `goal: ${ev.goal}${ev.tools && ev.tools.length ? `\ntools: ${ev.tools.join(", ")}` : ""}`; break;
    case "plan": body = (ev.tasks || []).map((t) => `${{ done: "✓", doing: "▸" }[t.status] ?? "○"} ${t.text}`).join("\n")
      + (ev.revisions ? `\n(revision ${ev.revisions})` : ""); break;
    case "model": body = ev.text; break;
    case "invalid": body = ev.error; break;
    case "tool_call": body = `${ev.name}(${JSON.stringify(ev.arguments ?? {})})`; break;
    case "observation": body = `${ev.name ? `${ev.name} → ` : ""}${ev.text}`; break;
    case "approval_required": body = `${ev.name}(${JSON.stringify(ev.arguments ?? {})}) needs a human's approval (#${ev.approval_id})`; break;
    case "memory": body = (ev.recalled || []).join("\n") || "nothing recalled"; break;
    case "resume": body = `approval ${ev.approval ? `#${ev.approval.id} ${ev.approval.status}` : ""}`; break;
    case "final": body = `${ev.answer}${ev.stop_reason && ev.stop_reason !== "final_answer" ? `\n(stopped: ${ev.stop_reason})` : ""}`; break;
    default: body = JSON.stringify(ev);
  }
  return el("li", { dataset: { kind } }, el("div", { class: "kind" }, kind.replace(/_/g, " ")), el("pre", {}, body ?? ""));
}

const Agent = {
  mode: "agent",
  toolNames: ["calculator", "sql", "kb_search", "current_time", "create_ticket"],
  chosen: new Set(["calculator", "sql", "kb_search", "current_time"]),
  needApproval: new Set(["create_ticket"]),
  kb: "bank-faq",
  threadId: null,
  controller: null,
  assistant: { app: "customer-service", threadId: null, lastId: 0, timer: null },

  render(root) {
    clearInterval(this.assistant.timer);
    const box = el("div");
    const tabs = el("div", { class: "tabs" }, [["agent", "Agent"], ["assistant", "Customer-service assistant"]].map(([m, label]) =>
      el("button", { type: "button", class: m === this.mode ? "active" : "", dataset: { mode: m },
        onclick: () => { this.mode = m; Router.show("agent", true); } }, label)));
    root.append(el("h2", {}, "Agents & assistants"), tabs, box);
    if (this.mode === "agent") this.renderAgent(box);
    else this.renderAssistant(box);
  },

  renderAgent(box) {
    const goal = el("textarea", { id: "agent-goal", rows: 2, placeholder: "A goal, e.g. What is 17 * 23 + 4?  or  What is the status of order A1002?" });
    const toolRow = (t) => el("tr", {},
      el("td", { class: "mono" }, t),
      el("td", {}, el("input", { type: "checkbox", class: "tool-use", value: t, checked: this.chosen.has(t), "aria-label": `use ${t}`,
        onchange: (e) => { if (e.target.checked) this.chosen.add(t); else this.chosen.delete(t); } })),
      el("td", {}, el("input", { type: "checkbox", class: "tool-approval", value: t, checked: this.needApproval.has(t), "aria-label": `${t} needs approval`,
        onchange: (e) => { if (e.target.checked) this.needApproval.add(t); else this.needApproval.delete(t); } })));
    const tools = el("table", { id: "agent-tools", style: "width:auto" },
      el("thead", {}, el("tr", {}, el("th", {}, "Tool"), el("th", {}, "Use"), el("th", {}, "Needs approval"))),
      el("tbody", {}, this.toolNames.map(toolRow)));
    const kb = el("input", { id: "agent-kb", value: this.kb, style: "width:160px", onchange: (e) => { this.kb = e.target.value.trim(); } });
    const maxSteps = el("input", { id: "agent-max-steps", type: "number", min: 1, max: 50, value: 6, style: "width:80px" });
    const maxSeconds = el("input", { id: "agent-max-seconds", type: "number", min: 1, max: 3600, value: 120, style: "width:80px" });
    const thread = el("span", { id: "agent-thread", class: "small muted" }, this.threadId ? `thread ${this.threadId}` : "new thread");
    const trace = el("ol", { id: "agent-trace", class: "trace" });
    const status = el("div", { id: "agent-status" });
    const pending = el("div", { id: "agent-approvals" });
    const run = el("button", { id: "agent-run", type: "submit" }, "Run");
    const stop = el("button", { type: "button", class: "ghost", disabled: true, onclick: () => this.controller && this.controller.abort() }, "Stop");
    const ui = { trace, status, run, stop, thread, pending };
    const form = el("form", { class: "card", onsubmit: (e) => {
      e.preventDefault();
      if (!goal.value.trim() || this.controller) return;
      trace.replaceChildren();
      this.stream("/v1/agents/runs", {
        goal: goal.value.trim(), tools: [...this.chosen], approval: [...this.needApproval].filter((t) => this.chosen.has(t)),
        kb: this.kb || undefined, thread_id: this.threadId || undefined, max_steps: Number(maxSteps.value) || 6,
        max_seconds: Number(maxSeconds.value) || 120, stream: true,
      }, ui);
    } },
    el("label", {}, "Goal"), goal,
    el("div", { class: "row", style: "align-items:flex-start;gap:24px" }, tools,
      el("div", {}, el("label", {}, "Knowledge base for kb_search"), el("div", {}, kb),
        el("label", {}, "Max steps"), el("div", {}, maxSteps),
        el("label", {}, "Max seconds"), el("div", {}, maxSeconds))),
    el("div", { class: "row" }, run, stop,
      el("button", { type: "button", class: "ghost", onclick: () => { this.threadId = null; thread.textContent = "new thread"; trace.replaceChildren(); } }, "New thread"),
      thread));
    box.append(form, pending, status, trace);
    this.loadApprovals(ui);
  },

  /** Tool calls waiting for a human (from any agent run, e.g. one started over the API). */
  async loadApprovals(ui) {
    await guarded(ui.pending, async () => {
      const rows = asList(await api("/v1/agents/approvals?status=pending"), "approvals");
      ui.pending.replaceChildren(...(rows.length ? [el("div", { class: "card" },
        el("h3", { style: "margin-top:0" }, `Waiting for approval (${rows.length})`),
        el("table", {}, el("tbody", {}, rows.map((a) => el("tr", { dataset: { approvalId: a.id } },
          el("td", {}, `#${a.id}`), el("td", { class: "mono" }, `${a.tool}(${JSON.stringify(a.args ?? a.arguments ?? {})})`),
          el("td", { class: "small muted" }, a.thread_id), el("td", {}, this.approvalButtons(a.id, a.thread_id, ui)))))))] : []));
    });
  },

  async stream(path, body, ui) {
    this.controller = new AbortController();
    ui.run.disabled = true; ui.stop.disabled = false;
    ui.status.replaceChildren(el("div", { class: "muted" }, "running…"));
    try {
      for await (const { data } of sse(path, body, this.controller.signal)) {
        const events = Array.isArray(data && data.events) ? data.events : [data];  // a non-streaming answer
        for (const ev of events) {
          if (!ev || typeof ev !== "object") continue;
          if (ev.thread_id) { this.threadId = ev.thread_id; ui.thread.textContent = `thread ${ev.thread_id}`; }
          const item = traceItem(ev);
          if (ev.type === "approval_required") item.append(this.approvalButtons(ev.approval_id, this.threadId, ui));
          ui.trace.append(item);
          if (ev.type === "final") ui.trace.dataset.done = "1";
        }
      }
      ui.status.replaceChildren();
    } catch (err) {
      if (err.name === "AbortError") ui.status.replaceChildren(el("div", { class: "muted" }, "stopped"));
      else ui.status.replaceChildren(errorBox(err));
    } finally {
      this.controller = null;
      ui.run.disabled = false; ui.stop.disabled = true;
    }
  },

  approvalButtons(approvalId, threadId, ui) {
    const slot = el("div", { class: "approval", dataset: { approvalId } });
    const decide = async (approve) => {
      for (const b of slot.querySelectorAll("button")) b.disabled = true;
      slot.append(el("span", { class: `pill ${approve ? "ok" : "err"}` }, approve ? "approved" : "rejected"));
      if (threadId) { this.threadId = threadId; ui.thread.textContent = `thread ${threadId}`; }
      delete ui.trace.dataset.done;
      await this.stream(`/v1/agents/approvals/${enc(approvalId)}/${approve ? "approve" : "reject"}`, { stream: true }, ui);
      await this.loadApprovals(ui);
    };
    slot.append(el("div", { class: "row" },
      el("button", { type: "button", class: "approve", onclick: () => decide(true) }, "Approve"),
      el("button", { type: "button", class: "danger reject", onclick: () => decide(false) }, "Reject")));
    return slot;
  },

  /* The customer-service assistant: a customer's chat; a human's answer to a hand-off appears by polling. */
  renderAssistant(box) {
    const st = this.assistant;
    const app = el("input", { id: "assistant-app", value: st.app, style: "width:200px" });
    const log = el("div", { id: "assistant-log", class: "chat-log" });
    const info = el("div", { id: "assistant-info", class: "stats" });
    const status = el("div");
    const input = el("input", { id: "assistant-input", class: "grow", placeholder: "Write as a customer, e.g. Where is my order A1002?" });
    const send = el("button", { id: "assistant-send", type: "submit" }, "Send");
    const ui = { log, info, status, input, send };
    box.append(
      el("div", { class: "card" }, el("div", { class: "row" },
        el("label", {}, "Assistant app", app),
        el("button", { id: "assistant-new", type: "button", class: "ghost", onclick: () => { st.app = app.value.trim(); this.startConversation(ui); } }, "New conversation"),
        el("span", { id: "assistant-thread", class: "small muted" }, st.threadId ? `thread ${st.threadId}` : ""))),
      status, log, info,
      el("form", { class: "composer", onsubmit: (e) => { e.preventDefault(); st.app = app.value.trim(); this.say(ui); } }, input, send));
    if (st.threadId) this.poll(ui, true);
    else this.startConversation(ui);
    st.timer = setInterval(() => {
      if (!document.body.contains(log)) { clearInterval(st.timer); return; }
      if (st.threadId) this.poll(ui);
    }, 2000);
    input.focus();
  },

  addMessages(ui, messages) {
    const st = this.assistant;
    for (const m of messages) {
      if (m.id !== undefined) {
        if (m.id <= st.lastId) continue;
        st.lastId = m.id;
      }
      const b = Chat.bubble(m.role, m.content);
      if (m.role === "human_agent") $(".who", b).textContent = "human agent";
      ui.log.append(b);
    }
    ui.log.scrollTop = ui.log.scrollHeight;
  },

  async startConversation(ui) {
    const st = this.assistant;
    await guarded(ui.status, async () => {
      const r = await api(`/v1/assistants/${enc(st.app)}/threads`, { method: "POST" });
      st.threadId = r.thread_id; st.lastId = 0;
      ui.log.replaceChildren(); ui.info.textContent = "";
      const label = $("#assistant-thread");
      if (label) label.textContent = `thread ${st.threadId}`;
      this.addMessages(ui, r.messages || []);
    });
  },

  async poll(ui, all = false) {
    const st = this.assistant;
    if (all) { st.lastId = 0; ui.log.replaceChildren(); }
    try {
      const r = await api(`/v1/assistants/threads/${enc(st.threadId)}/messages?after=${st.lastId}`);
      this.addMessages(ui, asList(r, "messages"));
    } catch (err) {
      if (all) ui.status.replaceChildren(errorBox(err));
    }
  },

  async say(ui) {
    const st = this.assistant;
    const text = ui.input.value.trim();
    if (!text) return;
    ui.input.value = "";
    ui.send.disabled = true;
    await guarded(ui.status, async () => {
      const r = await api(`/v1/assistants/${enc(st.app)}/messages`, { method: "POST", json: { message: text, thread_id: st.threadId || undefined } });
      st.threadId = r.thread_id;
      await this.poll(ui);  // the stored turn (customer message and reply), in order
      const parts = [`intent ${r.intent} (${Number(r.confidence).toFixed(2)})`, `action ${r.action}`];
      if (r.form) parts.push(`form ${r.form}`);
      const slots = Object.entries(r.slots || {});
      if (slots.length) parts.push(`slots ${slots.map(([k, v]) => `${k}=${v}`).join(", ")}`);
      if (r.ticket_id) parts.push(`ticket #${r.ticket_id}: a human will answer here`);
      ui.info.textContent = parts.join(" · ");
      ui.info.dataset.action = r.action;
    });
    ui.send.disabled = false;
    ui.input.focus();
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

const PANELS = { chat: Chat, agent: Agent, kb: KB, apps: Apps, tickets: Tickets, keys: Keys };

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
