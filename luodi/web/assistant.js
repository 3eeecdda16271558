/* The customer-service assistant: a customer's chat with an assistant app; a human's answer to a hand-off
 * appears by polling the thread's messages every 2 s. */
import { bubble } from "./chat.js";
import { errorBox, guarded } from "./errors.js";
import { api } from "./http.js";
import { $, asList, el, enc } from "./lib.js";

export const Assistant = {
  app: "customer-service",
  threadId: null,
  lastId: 0,
  timer: null,

  /** Stop polling (the panel is drawn again). */
  stop() {
    clearInterval(this.timer);
  },

  render(box) {
    const st = this;
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
    const st = this;
    for (const m of messages) {
      if (m.id !== undefined) {
        if (m.id <= st.lastId) continue;
        st.lastId = m.id;
      }
      const b = bubble(m.role, m.content);
      if (m.role === "human_agent") $(".who", b).textContent = "human agent";
      ui.log.append(b);
    }
    ui.log.scrollTop = ui.log.scrollHeight;
  },

  async startConversation(ui) {
    const st = this;
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
    const st = this;
    if (all) { st.lastId = 0; ui.log.replaceChildren(); }
    try {
      const r = await api(`/v1/assistants/threads/${enc(st.threadId)}/messages?after=${st.lastId}`);
      this.addMessages(ui, asList(r, "messages"));
    } catch (err) {
      if (all) ui.status.replaceChildren(errorBox(err));
    }
  },

  async say(ui) {
    const st = this;
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
