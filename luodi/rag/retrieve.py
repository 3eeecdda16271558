"""Hybrid retrieval: dense (FAISS, bundled encoder) and lexical (BM25) scores blended per query
(cosine * ALPHA + BM25 / best BM25 * (1 - ALPHA)) over both rankings' candidates. Returns chunks with
their document source and character span."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from luodi.errors import BadRequest
from luodi.options.privacy import PiiConfig
from luodi.rag.guards import kb_pii, redact_text
from luodi.rag.index import LoadedKb, load

Mode = Literal["hybrid", "dense", "bm25"]
MODES = ("hybrid", "dense", "bm25")
ALPHA = 0.6  # weight of the cosine; BM25 (scaled to the query's best) gets 1 - ALPHA. See docs/rag.md
CANDIDATES = 100  # how deep each ranking is read before blending


@dataclass
class Hit:
    chunk_id: int
    doc_id: int
    source: str
    start: int
    end: int
    text: str
    score: float  # ranking score: blended (hybrid), cosine (dense) or BM25 (bm25)
    dense: float  # cosine similarity of query and chunk
    bm25: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    hits: list[Hit]
    best_dense: float  # highest cosine over the whole KB: the "is it in here at all" signal
    min_score: float  # the KB's calibrated threshold on best_dense
    query: str = ""  # the query as searched (redacted when the KB or the server's guard has pii)
    pii_removed: list[str] = field(default_factory=list)  # entity types redacted from the query

    @property
    def found(self) -> bool:
        return bool(self.hits) and self.best_dense >= self.min_score

    def __iter__(self):  # a result reads as its list of hits
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    n = min(n, len(scores))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, n - 1)[:n]
    return part[np.argsort(-scores[part], kind="stable")]


def rank(kb: LoadedKb, qvec: np.ndarray, query: str, k: int, mode: Mode = "hybrid") -> SearchResult:
    """Rank the KB's chunks for one query whose embedding is `qvec` (normalized, shape (dim,))."""
    n = len(kb.chunk_ids)
    if n == 0:
        return SearchResult([], -1.0, float(kb.config["min_score"]))
    depth = max(CANDIDATES, k)
    dscores, dids = kb.vectors.search(qvec.reshape(1, -1).astype(np.float32), min(depth, n))
    dense_rows = [kb.row_of[int(i)] for i in dids[0] if i >= 0]
    dense_of = {r: float(s) for r, s in zip(dense_rows, dscores[0], strict=False)}
    best_dense = float(dscores[0][0]) if len(dense_rows) else -1.0
    bm = kb.bm25.scores(query) if mode != "dense" else np.zeros(n, dtype=np.float32)
    bm_rows = [int(r) for r in _top(bm, depth) if bm[r] > 0]
    cands = dict.fromkeys(dense_rows if mode != "bm25" else [])
    cands.update(dict.fromkeys(bm_rows if mode != "dense" else []))
    missing = [r for r in cands if r not in dense_of]
    if missing:
        dense_of.update(zip(missing, (kb.matrix[missing] @ qvec).tolist(), strict=True))
    bmax = float(bm.max()) if len(bm) and bm.max() > 0 else 1.0
    if mode == "hybrid":
        score = {r: ALPHA * dense_of[r] + (1 - ALPHA) * float(bm[r]) / bmax for r in cands}
    elif mode == "dense":
        score = {r: dense_of[r] for r in cands}
    else:
        score = {r: float(bm[r]) for r in cands}
    order = sorted(cands, key=lambda r: -score[r])[:k]
    hits = []
    for r in order:
        cid = int(kb.chunk_ids[r])
        dense = dense_of[r]
        hits.append(
            Hit(
                cid,
                int(kb.doc_ids[r]),
                kb.sources[int(kb.doc_ids[r])],
                int(kb.starts[r]),
                int(kb.ends[r]),
                kb.texts[r],
                score[r],
                dense,
                float(bm[r]),
            )
        )
    return SearchResult(hits, best_dense, float(kb.config["min_score"]))


def search(
    name: str, query: str, k: int = 5, mode: Mode = "hybrid", encoder=None, pii: PiiConfig | None = None
) -> SearchResult:
    """Search a knowledge base; `mode` picks hybrid (default), dense-only or BM25-only ranking. The query is
    redacted first by the KB's pii setting, else by `pii` (the server's guard)."""
    if not isinstance(query, str) or not query.strip():
        raise BadRequest("query must be a non-empty string", param="query")
    if not 1 <= k <= 100:
        raise BadRequest(f"k must be between 1 and 100 (got {k})", param="k")
    if mode not in MODES:
        raise BadRequest(f"mode must be one of {', '.join(MODES)} (got {mode!r})", param="mode")
    kb = load(name)
    query, removed = redact_text(query, kb_pii(kb.config, pii))
    from luodi.embeddings import get_encoder

    encoder = encoder or get_encoder(kb.config["encoder"])
    qvec = encoder.encode([query])[0]
    res = rank(kb, qvec, query, k, mode)
    res.query, res.pii_removed = query, removed
    return res
