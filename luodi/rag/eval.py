"""Evaluate a knowledge base on questions with known sources/answers: hit@k, MRR, citation accuracy.

QA file: JSON lines, each {"question": str, "source": str (file name or path of the document holding
the answer), "answers": [str, ...] (or "answer": str)}; a line needs `source` or `answers`.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

from luodi.errors import BadRequest
from luodi.rag.index import load
from luodi.rag.retrieve import MODES, Hit, rank

KS = (1, 3, 5, 10)


def load_qa(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise BadRequest(f"QA file '{path}' not found; give a JSON-lines file of questions", param="qa")
    items = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadRequest(f"{p}:{n}: not valid JSON ({e.msg})", param="qa") from e
        items.append(check_item(row, f"{p}:{n}"))
    if not items:
        raise BadRequest(f"QA file '{path}' has no questions", param="qa")
    return items


def check_item(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
        raise BadRequest(
            f"{where}: each line must be an object with a non-empty 'question' string", param="qa"
        )
    answers = row.get("answers", [row["answer"]] if isinstance(row.get("answer"), str) else [])
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise BadRequest(f"{where}: 'answers' must be a list of strings", param="qa")
    source = row.get("source")
    if source is not None and not isinstance(source, str):
        raise BadRequest(f"{where}: 'source' must be a string (a document's file name or path)", param="qa")
    if not source and not answers:
        raise BadRequest(f"{where}: give 'source' (the document holding the answer) or 'answers'", param="qa")
    return {"question": row["question"], "source": source, "answers": answers}


def _norm(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def source_matches(hit_source: str, gold: str) -> bool:
    """A gold source matches a document path equal to it or ending with it (a file name or sub-path)."""
    return hit_source == gold or hit_source.replace("\\", "/").endswith("/" + gold.lstrip("/"))


def _relevant(item: dict[str, Any], source: str, text: str) -> bool:
    if item["source"]:
        return source_matches(source, item["source"])
    return any(_norm(a) in _norm(text) for a in item["answers"] if _norm(a))


def first_relevant_rank(item: dict[str, Any], hits: list[Hit]) -> int | None:
    """1-based rank of the first relevant document (documents counted once, in hit order)."""
    seen: list[int] = []
    for h in hits:
        if h.doc_id not in seen:
            seen.append(h.doc_id)
        if _relevant(item, h.source, h.text):
            return seen.index(h.doc_id) + 1
    return None


def retrieval_metrics(ranks: list[int | None], ks: tuple[int, ...] = KS) -> dict[str, float]:
    n = max(1, len(ranks))
    out = {f"hit@{k}": sum(1 for r in ranks if r is not None and r <= k) / n for k in ks}
    out["mrr"] = sum(1.0 / r for r in ranks if r is not None) / n
    return out


def evaluate_retrieval(
    name: str,
    items: list[dict[str, Any]],
    *,
    mode: str = "hybrid",
    depth: int = 30,
    encoder=None,
    progress: bool = False,
) -> dict[str, float]:
    """hit@1/3/5/10 and MRR over `items` (documents ranked by their best chunk)."""
    if mode not in MODES:
        raise BadRequest(f"mode must be one of {', '.join(MODES)} (got {mode!r})", param="mode")
    from luodi.embeddings import get_encoder

    kb = load(name)
    encoder = encoder or get_encoder(kb.config["encoder"])
    qvecs = encoder.encode([it["question"] for it in items], progress=progress)
    ranks = [
        first_relevant_rank(it, rank(kb, qv, it["question"], depth, mode).hits)  # type: ignore[arg-type]
        for it, qv in zip(items, qvecs, strict=True)
    ]
    return {**retrieval_metrics(ranks), "questions": len(items)}


def evaluate_answers(
    name: str, items: list[dict[str, Any]], *, k: int = 3, engine=None, encoder=None, progress: bool = False
) -> dict[str, float]:
    """Ask each question; citation accuracy = the first citation points at the gold document (and, when
    answers are known, its span contains one); answer_match = the answer contains a gold answer."""
    from luodi.rag.answer import ask

    src_ok = span_ok = ans_ok = found = 0
    n_span = 0
    steps: Any = items
    if progress:
        from rich.progress import track

        steps = track(items, description="answering")
    for it in steps:
        a = ask(name, it["question"], k, engine=engine, encoder=encoder)
        found += a.found
        c = a.citations[0] if a.citations else None
        if c is not None and _relevant(it, c.source, c.text):
            src_ok += 1
        if it["answers"]:
            n_span += 1
            if c is not None and any(_norm(x) in _norm(c.text) for x in it["answers"] if _norm(x)):
                span_ok += 1
            if any(_norm(x) in _norm(a.answer) for x in it["answers"] if _norm(x)):
                ans_ok += 1
    n = max(1, len(items))
    out: dict[str, float] = {
        "answered": len(items),
        "found_rate": found / n,
        "citation_source_acc": src_ok / n,
    }
    if n_span:
        out["citation_span_acc"] = span_ok / n_span
        out["answer_match"] = ans_ok / n_span
    return out


def evaluate(
    name: str,
    qa_path: str | Path,
    *,
    mode: str = "hybrid",
    generate: int = 0,
    k: int = 3,
    progress: bool = False,
) -> dict[str, float]:
    """Retrieval metrics for every question, plus answer/citation metrics on the first `generate` ones."""
    items = load_qa(qa_path)
    out = evaluate_retrieval(name, items, mode=mode, progress=progress)
    if generate:
        out.update(evaluate_answers(name, items[:generate], k=k, progress=progress))
    return out
