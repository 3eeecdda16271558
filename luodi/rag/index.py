"""Per-KB indexes: a FAISS inner-product index of chunk vectors (file, written atomically, its sha256 in a
checksum file beside it and checked on every read) and BM25 over chunk texts (rebuilt in memory). `load(name)`
gives a cached, read-only view of what is visible now."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from sqlalchemy import select

from luodi import crypto
from luodi.atomic import atomic_path, sha256_file, write_json
from luodi.errors import LuodiError
from luodi.rag.kbs import get_kb_row, kb_config, kb_dir, kb_lock
from luodi.store import session_scope
from luodi.store.tables import KbChunk, KbDocument

INDEX_FILE = "vectors.faiss"
SUMS_FILE = "vectors.faiss.sha256.json"  # {"sha256": [the file's, and during a swap the file it replaces]}

log = logging.getLogger(__name__)


class KbIntegrityError(LuodiError):
    """A knowledge base's index file does not match the checksum luodi wrote with it."""

    status = 409
    code = "integrity_error"

# --- FAISS vectors -------------------------------------------------------------------------------


def _new_index(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _known_sums(name: str) -> list[str] | None:
    """The checksums the index file may have (None: a knowledge base written before luodi kept them)."""
    path = kb_dir(name) / SUMS_FILE
    return list(crypto.read_json(path)["sha256"]) if path.exists() else None


def read_vectors(name: str, dim: int) -> faiss.Index:
    """The KB's vectors, after checking the file against its checksum: a file changed outside luodi is refused,
    naming it, instead of answering from vectors nobody wrote."""
    path = kb_dir(name) / INDEX_FILE
    if not path.exists():
        return _new_index(dim)
    sums, actual = _known_sums(name), sha256_file(path)
    if sums is None:  # an index from before checksums: trusted once, checked from now on
        log.warning("knowledge base '%s': %s has no checksum yet; recording it now", name, path)
        write_json(kb_dir(name) / SUMS_FILE, {"sha256": [actual]})
    elif actual not in sums:
        raise KbIntegrityError(
            f"knowledge base '{name}': file '{path}' was modified outside luodi (sha256 mismatch); restore it "
            f"from a backup, or delete the knowledge base and add its documents again (`luodi kb delete {name}`)"
        )
    return faiss.deserialize_index(np.frombuffer(crypto.read_bytes(path), dtype=np.uint8))


def write_vectors(name: str, index: faiss.Index) -> None:
    """Write the index to a temp file and rename it into place: a crash never leaves a torn file. Its checksum
    is recorded before the swap beside the replaced file's (a crash between the two leaves either file
    valid) and alone after it."""
    path = kb_dir(name) / INDEX_FILE
    old = (_known_sums(name) or [])[:1] if path.exists() else []
    stored = crypto.stored_form(path, faiss.serialize_index(index).tobytes())  # (encrypted when a key is set)
    new = hashlib.sha256(stored).hexdigest()
    with atomic_path(path, as_stored=True) as tmp:
        tmp.write_bytes(stored)
        write_json(kb_dir(name) / SUMS_FILE, {"sha256": [new, *old]})
    write_json(kb_dir(name) / SUMS_FILE, {"sha256": [new]})


def remove_ids(index: faiss.Index, ids: list[int]) -> int:
    if not ids or index.ntotal == 0:
        return 0
    return int(index.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64))))


def drop_vectors(name: str, chunk_ids: list[int]) -> None:
    """Remove vectors of deleted chunks from the index file (searches already ignore them)."""
    if not chunk_ids:
        return
    with kb_lock(name):
        index = read_vectors(name, 0) if (kb_dir(name) / INDEX_FILE).exists() else None
        if index is not None and remove_ids(index, chunk_ids):
            write_vectors(name, index)


# --- BM25 ----------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    "a an and are as at be been but by can could did do does for from had has have he her his how i if in "
    "into is it its me my no not of on or our she so than that the their them then there these they this "
    "to was we were what when where which who whom whose why will with would you your".split()
)


def _stem(w: str) -> str:
    """A light English suffix stripper: enough to match plural/verb forms, never below 3 letters."""
    for suf in ("ies", "sses", "ing", "edly", "ed", "es", "s"):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            if suf == "ies":
                return w[:-3] + "y"
            if suf == "sses":
                return w[:-2]
            if suf == "s" and w.endswith(("ss", "us", "is")):
                return w
            return w[: -len(suf)]
    return w


def bm25_tokens(text: str) -> list[str]:
    return [_stem(w) for w in _TOKEN.findall(text.lower()) if w not in STOPWORDS]


class Bm25:
    """Okapi BM25 (rank_bm25's statistics) scored with a sparse matrix, so a query costs O(matches)."""

    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75):
        from rank_bm25 import BM25Okapi
        from scipy import sparse

        docs = [bm25_tokens(t) or ["∅"] for t in texts]
        self.n = len(docs)
        if not docs:
            self.vocab: dict[str, int] = {}
            self.matrix = None
            return
        bm = BM25Okapi(docs, k1=k1, b=b)
        self.vocab = {w: i for i, w in enumerate(bm.idf)}
        rows, cols, vals = [], [], []
        for r, (freqs, dl) in enumerate(zip(bm.doc_freqs, bm.doc_len, strict=True)):
            norm = k1 * (1 - b + b * dl / bm.avgdl)
            for w, tf in freqs.items():
                rows.append(r)
                cols.append(self.vocab[w])
                vals.append(bm.idf[w] * tf * (k1 + 1) / (tf + norm))
        self.matrix = sparse.csc_matrix(
            (vals, (rows, cols)), shape=(self.n, len(self.vocab)), dtype=np.float32
        )

    def scores(self, query: str) -> np.ndarray:
        out = np.zeros(self.n, dtype=np.float32)
        if self.matrix is None:
            return out
        cols = [self.vocab[w] for w in bm25_tokens(query) if w in self.vocab]
        if cols:
            out += np.asarray(self.matrix[:, cols].sum(axis=1)).ravel()
        return out


# --- a loaded, visible view of one KB -------------------------------------------------------------


def embed_text(source: str, text: str) -> str:
    """What the encoder sees for a chunk: a short header naming its document, then the chunk."""
    return f"{doc_title(source)}\n{text}" if doc_title(source) else text


def doc_title(source: str) -> str:
    """A readable title from a document's path: its folder name and its file stem, separators as spaces;
    stem words that look like ids or numbers (p003, 12, v2) are dropped."""
    p = Path(source)
    stem = [w for w in re.split(r"[\s_\-.]+", p.stem) if w and not re.search(r"\d", w)]
    folder = re.sub(r"[_\-.]+", " ", p.parent.name).strip()
    return re.sub(r"\s+", " ", " ".join([folder, *stem])).strip()


@dataclass
class LoadedKb:
    """Everything search needs, for chunks of fully indexed documents only."""

    name: str
    generation: int
    config: dict
    chunk_ids: np.ndarray  # row -> chunk id
    doc_ids: np.ndarray  # row -> document id
    texts: list[str]
    starts: np.ndarray
    ends: np.ndarray
    sources: dict[int, str]  # document id -> source
    vectors: faiss.Index
    matrix: np.ndarray  # row -> chunk vector (the same vectors as the FAISS index, row-aligned)
    bm25: Bm25
    row_of: dict[int, int] = field(default_factory=dict)  # chunk id -> row


_cache: dict[str, LoadedKb] = {}
_cache_lock = threading.Lock()


def forget(name: str) -> None:
    with _cache_lock:
        _cache.pop(name, None)


def load(name: str, dim: int = 384) -> LoadedKb:
    """The KB's current visible index, reloaded when another process or request changed it."""
    with session_scope() as s:
        kb = get_kb_row(s, name)
        cfg = kb_config(kb)
        gen = int(cfg["generation"])
        cached = _cache.get(name)
        if cached is not None and cached.generation == gen:
            return cached
        rows = s.execute(
            select(KbChunk.id, KbChunk.doc_id, KbChunk.text, KbChunk.start, KbChunk.end)
            .join(KbDocument, KbDocument.id == KbChunk.doc_id)
            .where(KbChunk.kb_id == kb.id, KbDocument.status == "indexed")
            .order_by(KbChunk.id)
        ).all()
        sources = dict(
            s.execute(
                select(KbDocument.id, KbDocument.source).where(
                    KbDocument.kb_id == kb.id, KbDocument.status == "indexed"
                )
            ).all()
        )
    with _cache_lock:
        cached = _cache.get(name)
        if cached is not None and cached.generation == gen:
            return cached
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = read_vectors(name, dim)
        # Vectors of documents that are not (or no longer) visible are dropped from this in-memory copy.
        visible = set(ids.tolist())
        if vectors.ntotal:
            stored = faiss.vector_to_array(vectors.id_map)
            remove_ids(vectors, [int(i) for i in stored if int(i) not in visible])
        matrix = np.zeros((len(ids), vectors.d), dtype=np.float32)
        if vectors.ntotal:
            stored = faiss.vector_to_array(vectors.id_map)
            codes = faiss.vector_to_array(faiss.downcast_index(vectors.index).codes)
            flat = codes.view(np.float32).reshape(-1, vectors.d)
            pos = {int(c): i for i, c in enumerate(stored)}
            for row, c in enumerate(ids.tolist()):  # (a chunk without a vector keeps a zero row)
                if c in pos:
                    matrix[row] = flat[pos[c]]
        loaded = LoadedKb(
            name=name,
            generation=gen,
            config=cfg,
            chunk_ids=ids,
            doc_ids=np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)),
            texts=[r[2] for r in rows],
            starts=np.fromiter((r[3] for r in rows), dtype=np.int64, count=len(rows)),
            ends=np.fromiter((r[4] for r in rows), dtype=np.int64, count=len(rows)),
            sources=sources,
            vectors=vectors,
            matrix=matrix,
            bm25=Bm25([embed_text(sources[r[1]], r[2]) for r in rows]),
            row_of={int(c): i for i, c in enumerate(ids)},
        )
        _cache[name] = loaded
        return loaded
