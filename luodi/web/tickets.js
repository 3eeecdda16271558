/* The hand-off queue: tickets the assistant handed to a human, with the conversation; a human answers here. */
import { bubble } from "./chat.js";
import { guarded } from "./errors.js";
import { api } from "./http.js";
import { asList, el, enc, fmtTime } from "./lib.js";

export const Tickets = {
  filter: "open",

  render(root, redraw) {
    const status = el("div");
    const box = el("div", { id: "tickets" });
    const tabs = el("div", { class: "tabs" }, ["open", "answered", "closed", "all"].map((f) =>
      el("button", { type: "button", class: f === this.filter ? "active" : "", dataset: { filter: f },
        onclick: () => { this.filter = f; redraw(); } }, f)));
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
        conversation.replaceChildren(...asList(r, "messages").map((m) => bubble(m.role, m.content)));
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
