"""Answer a question from a knowledge base: retrieve, let the LLM answer from the passages only, and cite
the sentence (source file and character span) that supports the answer. Weak retrieval -> "not found"."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from luodi.engines.base import SamplingParams
from luodi.errors import BadRequest
from luodi.options.privacy import PiiConfig
from luodi.rag.chunk import sentence_spans
from luodi.rag.guards import Screen, kb_screen
from luodi.rag.index import bm25_tokens
from luodi.rag.kbs import get_kb, kb_dir
from luodi.rag.retrieve import Hit, SearchResult, search

NOT_FOUND = "Not found in the knowledge base."
SYSTEM = (
    "You answer questions using only the numbered context passages. Reply with a short, direct answer "
    "taken from the passages. If the passages do not contain the answer, reply: I don't know."
)
MARGIN = 0.15  # passages this much less similar to the question than the best one are left out
_MARK = re.compile(r"\[(\d{1,2})\]")


@dataclass
class Citation:
    source: str  # document the supporting sentence comes from
    start: int  # character span of that sentence in the document's text
    end: int
    text: str
    chunk_id: int
    score: float  # how much of the answer the sentence covers (0..1)
    rank: int = 0  # the cited passage's place in the retrieval ranking (1 = best)
    retrieval_score: float = 0.0  # that passage's ranking score (hybrid blend, cosine or BM25: the KB's mode)
    dense: float = 0.0  # cosine similarity of the question and the passage
    bm25: float = 0.0  # BM25 score of the passage for the question


@dataclass
class Answer:
    question: str
    answer: str
    found: bool
    citations: list[Citation] = field(default_factory=list)
    passages: list[Hit] = field(default_factory=list)
    best_dense: float = 0.0
    pii_removed: list[str] = field(default_factory=list)  # entity types redacted from the question (KB's pii)
    guard: list[dict[str, Any]] = field(default_factory=list)  # passages the injection screen dropped or flagged

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["citations"] = [asdict(c) for c in self.citations]
        d["passages"] = [h.as_dict() for h in self.passages]
        return d


def focus(res: SearchResult, margin: float = MARGIN) -> list[Hit]:
    """The passages worth showing the LLM: the best-ranked one, plus others about as similar to the
    question as the closest passage (small models get distracted by off-topic context)."""
    return [h for i, h in enumerate(res.hits) if i == 0 or h.dense >= res.best_dense - margin]


def build_messages(question: str, hits: list[Hit]) -> list[dict[str, str]]:
    context = "\n\n".join(f"[{i + 1}] {h.text}" for i, h in enumerate(hits))
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
    ]


def cite(answer: str, question: str, hits: list[Hit], ranking: list[Hit] | None = None) -> list[Citation]:
    """The passages' sentences that best support `answer`, best first (at most one per passage).

    A sentence scores by the share of the answer's words it contains; passages the answer marks as [n]
    get a bonus, and so do sentences sharing the question's words; ties go to the better-ranked passage.
    Each citation carries the retrieval scores of its passage and its place in `ranking` (the whole search
    result; default `hits`), so a reader can see how strongly the source was retrieved, not only quoted."""
    place = {h.chunk_id: i + 1 for i, h in enumerate(ranking if ranking is not None else hits)}
    a_tokens = set(bm25_tokens(answer))
    q_tokens = set(bm25_tokens(question))
    marked = {int(m) - 1 for m in _MARK.findall(answer)}
    cands: list[tuple[float, int, Citation]] = []
    for rank, h in enumerate(hits):
        best: tuple[float, Citation] | None = None
        for s, e in sentence_spans(h.text):
            sent = h.text[s:e]
            st = set(bm25_tokens(sent))
            cover = len(a_tokens & st) / len(a_tokens) if a_tokens else 0.0
            cover += 0.5 * len(q_tokens & st) / max(1, len(q_tokens))
            if rank in marked:
                cover += 0.25
            if best is None or cover > best[0]:
                best = (
                    cover,
                    Citation(
                        h.source,
                        h.start + s,
                        h.start + e,
                        sent,
                        h.chunk_id,
                        round(cover, 4),
                        place.get(h.chunk_id, 0),
                        round(h.score, 4),
                        round(h.dense, 4),
                        round(h.bm25, 4),
                    ),
                )
        if best is not None:
            cands.append((best[0], -rank, best[1]))
    cands.sort(key=lambda x: (x[0], x[1]), reverse=True)
    return [c for _, _, c in cands]


def _fit(engine, question: str, hits: list[Hit], max_tokens: int) -> tuple[list[int], list[Hit]]:
    """The prompt's token ids with as many passages as fit the engine's context window (at least one); the
    ids go to the engine as they are, so the prompt is tokenized once."""
    hits = list(hits)
    while True:
        ids = engine.tokenize(engine.chat_prompt(build_messages(question, hits)))
        if len(hits) <= 1 or len(ids) + max_tokens <= engine.n_ctx:
            return ids, hits
        hits = hits[:-1]


def _check(question: str) -> str:
    if not isinstance(question, str) or not question.strip():
        raise BadRequest("question must be a non-empty string", param="question")
    if len(question) > 2000:
        raise BadRequest(f"question is {len(question)} characters; keep it under 2000", param="question")
    return question.strip()


def _engine(engine):
    """`engine`: an Engine, a zero-argument function returning one (called only when needed), or None (the
    shared one, luodi.engines.get_engine)."""
    if engine is None:
        from luodi.engines import get_engine

        return get_engine()
    if not hasattr(engine, "generate") and callable(engine):
        return engine()
    return engine


def _screen(res: SearchResult, screen: Screen) -> list[dict[str, Any]]:
    """Run the injection screen over the retrieved passages: 'drop' removes a passage from the result (when none is
    left the answer is 'not found'), 'flag' keeps it; returns what was done, per passage."""
    verdicts = screen([h.text for h in res.hits])
    done = [{"chunk_id": h.chunk_id, "source": h.source, **v} for h, v in zip(res.hits, verdicts, strict=True) if v]
    dropped = {d["chunk_id"] for d in done if d["action"] == "drop"}
    if dropped:
        res.hits = [h for h in res.hits if h.chunk_id not in dropped]
    return done


async def ask_stream(
    name: str,
    question: str,
    k: int = 3,
    *,
    engine=None,
    encoder=None,
    max_tokens: int = 64,
    pii: PiiConfig | None = None,
    screen: Screen | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Events: {'event': 'passages', ...}, then {'event': 'delta', 'text'} while the LLM writes,
    then {'event': 'done', 'answer': Answer-as-dict}. The question is redacted first by the KB's pii setting,
    else by `pii` (the server's guard): the LLM and the answer only see the redacted question. The KB's injection
    setting (or `screen`, given) drops or flags retrieved passages that carry injected instructions before the LLM
    sees them."""
    question = _check(question)
    res: SearchResult = await asyncio.to_thread(search, name, question, k=k, encoder=encoder, pii=pii)
    question = res.query
    if screen is None:
        screen = await asyncio.to_thread(lambda: kb_screen(get_kb(name)["config"], name, kb_dir(name)))
    guarded = await asyncio.to_thread(_screen, res, screen) if screen is not None and res.hits else []
    yield {
        "event": "passages",
        "found": res.found,
        "best_dense": res.best_dense,
        "passages": [h.as_dict() for h in res.hits],
        "pii_removed": res.pii_removed,
        "guard": guarded,
    }
    if not res.found:
        yield {"event": "delta", "text": NOT_FOUND}
        yield {
            "event": "done",
            "answer": Answer(
                question, NOT_FOUND, False, [], res.hits, res.best_dense, res.pii_removed, guarded
            ).as_dict(),
        }
        return
    engine = _engine(engine)
    prompt_ids, hits = _fit(engine, question, focus(res), max_tokens)
    parts: list[str] = []
    stream = engine.generate(prompt_ids, SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=["\n"]))
    try:
        async for chunk in stream:
            if chunk.text:
                parts.append(chunk.text)
                yield {"event": "delta", "text": chunk.text}
    finally:
        await stream.aclose()
    text = "".join(parts).strip()
    cited = cite(text, question, hits, res.hits)[:1]
    ans = Answer(question, text, True, cited, res.hits, res.best_dense, res.pii_removed, guarded)
    yield {"event": "done", "answer": ans.as_dict()}


async def ask_async(
    name: str, question: str, k: int = 3, *, engine=None, encoder=None, max_tokens: int = 64,
    screen: Screen | None = None,
) -> Answer:
    final: dict[str, Any] = {}
    async for ev in ask_stream(name, question, k, engine=engine, encoder=encoder, max_tokens=max_tokens,
                               screen=screen):
        if ev["event"] == "done":
            final = ev["answer"]
    return Answer(
        final["question"],
        final["answer"],
        final["found"],
        [Citation(**c) for c in final["citations"]],
        [Hit(**h) for h in final["passages"]],
        final["best_dense"],
        final["pii_removed"],
        final.get("guard", []),
    )


def ask(
    name: str, question: str, k: int = 3, *, engine=None, encoder=None, max_tokens: int = 64,
    screen: Screen | None = None,
) -> Answer:
    """Blocking `ask_async` for the CLI and scripts."""
    from luodi.llm import run_sync

    return run_sync(ask_async(name, question, k, engine=engine, encoder=encoder, max_tokens=max_tokens, screen=screen))
