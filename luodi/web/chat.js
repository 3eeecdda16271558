/* Chat: pick a chat model and talk over several turns; the reply streams token by token (POST /v1/chat/completions). */
import { errorBox, guarded } from "./errors.js";
import { api, sse } from "./http.js";
import { $, asList, el } from "./lib.js";

/** One message of a conversation, as the chat, the assistant and the hand-off queue show it. */
export function bubble(role, content) {
  return el("div", { class: `msg ${role}` }, el("span", { class: "who" }, role), el("span", { class: "text" }, content));
}

export const Chat = {
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
    for (const m of this.messages) log.append(bubble(m.role, m.content));
    this.loadModels(model, status);
    input.focus();
  },

  async send(text, log, stats, send, stop) {
    this.messages.push({ role: "user", content: text });
    log.append(bubble("user", text));
    const reply = bubble("assistant", "");
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
