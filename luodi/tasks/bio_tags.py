"""BIO tag sequences: the words a text is cut into, entity spans, conlleval-style entity scores, and Viterbi
decoding restricted to valid transitions (I-X only after B-X or I-X)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

WORD_RE = re.compile(r"\w+(?:[-'.]\w+)*|[^\w\s]")  # a tagged word: the tagger and its export bundle cut alike


def spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first, last+1) entity spans of a BIO sequence (an I- without a B- starts an entity)."""
    out = []
    start, kind = None, None
    for i, t in enumerate([*tags, "O"]):
        boundary = t == "O" or t.startswith("B-") or (t.startswith("I-") and t[2:] != kind)
        if boundary and start is not None:
            out.append((kind, start, i))
            start, kind = None, None
        if t.startswith(("B-", "I-")) and start is None:
            start, kind = i, t[2:]
    return out


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, Any]:
    """Micro precision/recall/F1 over exact (type, span) matches, plus per-type F1."""
    tp: dict[str, int] = {}
    n_gold: dict[str, int] = {}
    n_pred: dict[str, int] = {}
    for g, p in zip(gold, pred, strict=True):
        gs, ps = set(spans(g)), set(spans(p))
        for k, *_ in gs:
            n_gold[k] = n_gold.get(k, 0) + 1
        for k, *_ in ps:
            n_pred[k] = n_pred.get(k, 0) + 1
        for k, *_ in gs & ps:
            tp[k] = tp.get(k, 0) + 1

    def prf(t: int, p: int, g: int) -> tuple[float, float, float]:
        pr, rc = (t / p if p else 0.0), (t / g if g else 0.0)
        return pr, rc, (2 * pr * rc / (pr + rc) if pr + rc else 0.0)

    t, p, g = sum(tp.values()), sum(n_pred.values()), sum(n_gold.values())
    precision, recall, f1 = prf(t, p, g)
    per_type = {k: round(prf(tp.get(k, 0), n_pred.get(k, 0), n_gold[k])[2], 4) for k in sorted(n_gold)}
    return {"f1": f1, "precision": precision, "recall": recall, "per_type_f1": per_type}


def allowed_transitions(tags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Log-space start and transition masks: I-X only after B-X or I-X."""
    n = len(tags)
    start = np.array([0.0 if not t.startswith("I-") else -np.inf for t in tags])
    trans = np.zeros((n, n))
    for j, t in enumerate(tags):
        if t.startswith("I-"):
            for i, prev in enumerate(tags):
                if prev[2:] != t[2:] or prev == "O":
                    trans[i, j] = -np.inf
    return start, trans


def viterbi(logp: np.ndarray, start: np.ndarray, trans: np.ndarray) -> list[int]:
    """Best tag path under hard transition constraints; logp is (n_words, n_tags)."""
    score = logp[0] + start
    back = np.zeros(logp.shape, dtype=np.int64)
    for i in range(1, len(logp)):
        cand = score[:, None] + trans
        back[i] = cand.argmax(0)
        score = cand.max(0) + logp[i]
    path = [int(score.argmax())]
    for i in range(len(logp) - 1, 0, -1):
        path.append(int(back[i][path[-1]]))
    return path[::-1]
