/* Knowledge bases: create and delete them, upload and remove documents, ask (streamed, with citations) and search. */
import { guarded } from "./errors.js";
import { api, sse } from "./http.js";
import { asList, el, enc, fmtTime } from "./lib.js";

export const KB = {
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
      const score = typeof c.score === "number" ? ` · ${c.rank ? "support" : "score"} ${c.score.toFixed(3)}` : "";
      const retrieved = c.rank ? ` · retrieved #${c.rank}: score ${c.retrieval_score.toFixed(3)}, cosine ${c.dense.toFixed(3)}, BM25 ${c.bm25.toFixed(2)}` : "";
      return el("li", { class: "citation" },
        el("span", { class: "mono source" }, `${c.source ?? "?"}${span}`),
        el("span", { class: "muted small" }, score + retrieved), c.text ? el("pre", {}, c.text) : "");
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
