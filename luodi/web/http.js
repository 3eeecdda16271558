/* Calls to this server's /v1/* routes: the saved API key as a Bearer token, the server's own words on errors,
 * and server-sent events read as an async stream. */

const KEY_STORAGE = "luodi.apiKey";

/** The API key the user typed, kept in localStorage ("" when none). */
export function savedKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

/** Keep `key` for later visits; an empty one forgets the saved key. */
export function saveKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

let unauthorized = () => {};

/** Call `handler(response)` on every 401, so the key's status pill can say the key was refused. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function authHeaders() {
  const key = savedKey();
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

function parseJson(text) {
  try { return text ? JSON.parse(text) : null; } catch { return null; }
}

/** The ApiError for a non-2xx answer whose body was `text`. */
export function failure(status, text) {
  const body = parseJson(text);
  return new ApiError(status, errorMessage(status, body, text), body);
}

/** fetch() with the key; a network failure becomes ApiError(0), a 401 is reported to onUnauthorized's handler. */
export async function request(path, { method = "GET", json, form, signal } = {}) {
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
  if (resp.status === 401) unauthorized(resp);
  return resp;
}

/** Call a JSON route; throws ApiError carrying the server's message on any non-2xx answer. */
export async function api(path, opts = {}) {
  const resp = await request(path, opts);
  const text = await resp.text();
  const body = parseJson(text);
  if (!resp.ok) {
    let msg = errorMessage(resp.status, body, text);
    if (resp.status === 404 && msg === "Not Found") {
      msg = `this server has no route ${opts.method || "GET"} ${path.split("?")[0]}`;
    }
    throw new ApiError(resp.status, msg, body);
  }
  return body ?? text;
}

/** POST `json` and yield each server-sent event as {event, data} (data parsed as JSON when it is JSON). */
export async function* sse(path, json, signal) {
  const resp = await request(path, { method: "POST", json, signal });
  if (!resp.ok) throw failure(resp.status, await resp.text());
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
