/* Agents & assistants: an agent run's trace streams as it happens, paused tool calls are approved or rejected
 * inline; the second tab is the customer-service assistant (assistant.js). */
import { Assistant } from "./assistant.js";
import { errorBox, guarded } from "./errors.js";
import { api, sse } from "./http.js";
import { asList, el, enc } from "./lib.js";

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

export const Agent = {
  mode: "agent",
  toolNames: ["calculator", "sql", "kb_search", "current_time", "create_ticket"],
  chosen: new Set(["calculator", "sql", "kb_search", "current_time"]),
  needApproval: new Set(["create_ticket"]),
  kb: "bank-faq",
  threadId: null,
  controller: null,

  render(root, redraw) {
    Assistant.stop();
    const box = el("div");
    const tabs = el("div", { class: "tabs" }, [["agent", "Agent"], ["assistant", "Customer-service assistant"]].map(([m, label]) =>
      el("button", { type: "button", class: m === this.mode ? "active" : "", dataset: { mode: m },
        onclick: () => { this.mode = m; redraw(); } }, label)));
    root.append(el("h2", {}, "Agents & assistants"), tabs, box);
    if (this.mode === "agent") this.renderAgent(box);
    else Assistant.render(box);
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
};
