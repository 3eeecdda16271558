"""Add documents to a knowledge base: read, chunk, embed, index — incremental, deduplicated, resumable.

Crash safety: a batch of documents is first stored as `pending` with its chunks, then its vectors are
added to the FAISS file (atomic rename), then the documents are flipped to `indexed` in one transaction.
Only `indexed` documents are ever searched; `pending` leftovers of a killed run are removed and redone by
the next `add` (which skips every document already indexed, by content hash).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from luodi.errors import BadRequest, NotFound
from luodi.rag.chunk import Chunk, chunk_text
from luodi.rag.guards import kb_pii, redact_text, screen_at_ingest
from luodi.rag.index import drop_vectors, embed_text, forget, read_vectors, remove_ids, write_vectors
from luodi.rag.kbs import bump_generation, describe, get_kb_row, kb_config, kb_dir, kb_lock
from luodi.rag.readers import extract_text, iter_files
from luodi.store import session_scope
from luodi.store.tables import KbChunk, KbDocument


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # same content already indexed
    replaced: list[str] = field(default_factory=list)  # same source, new content: old version removed
    failed: dict[str, str] = field(default_factory=dict)  # source -> error
    recovered: int = 0  # pending documents of an interrupted run that were cleaned up
    chunks: int = 0
    pii_removed: dict[str, list[str]] = field(default_factory=dict)  # source -> entity types redacted (KB's pii)
    injection_flagged: dict[str, int] = field(default_factory=dict)  # source -> chunks that look injected

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "skipped": self.skipped,
            "replaced": self.replaced,
            "failed": self.failed,
            "recovered": self.recovered,
            "chunks": self.chunks,
            "pii_removed": self.pii_removed,
            "injection_flagged": self.injection_flagged,
            "injection_flagged_chunks": sum(self.injection_flagged.values()),
        }


@dataclass
class _Doc:
    source: str
    sha256: str
    chunks: list[Chunk]


def _recover(name: str, dim: int) -> int:
    """Remove pending documents (and their chunks and vectors) left by an interrupted ingest."""
    with session_scope() as s:
        kb = get_kb_row(s, name)
        pending = s.scalars(
            select(KbDocument.id).where(KbDocument.kb_id == kb.id, KbDocument.status == "pending")
        ).all()
        if not pending:
            return 0
        chunk_ids = s.scalars(select(KbChunk.id).where(KbChunk.doc_id.in_(pending))).all()
        index = read_vectors(name, dim)
        if remove_ids(index, list(chunk_ids)):
            write_vectors(name, index)
        s.query(KbChunk).filter(KbChunk.doc_id.in_(pending)).delete(synchronize_session=False)
        s.query(KbDocument).filter(KbDocument.id.in_(pending)).delete(synchronize_session=False)
        return len(pending)


def _flush(name: str, docs: list[_Doc], encoder, report: IngestReport) -> None:
    """Embed, store and index one batch of documents; visible only once everything is durable."""
    if not docs:
        return
    texts = [embed_text(d.source, c.text) for d in docs for c in d.chunks]
    vecs = encoder.encode(texts) if texts else None
    with session_scope() as s:  # 1. documents and chunks, invisible (pending)
        kb = get_kb_row(s, name)
        rows, new_ids = [], []
        for d in docs:
            doc = KbDocument(
                kb_id=kb.id, source=d.source, sha256=d.sha256, n_chunks=len(d.chunks), status="pending"
            )
            s.add(doc)
            s.flush()
            new_ids.append(doc.id)
            for i, c in enumerate(d.chunks):
                row = KbChunk(kb_id=kb.id, doc_id=doc.id, ord=i, text=c.text, start=c.start, end=c.end)
                s.add(row)
                rows.append(row)
        s.flush()
        chunk_ids = [r.id for r in rows]
    index = read_vectors(name, encoder.dim)  # 2. vectors, written atomically
    if vecs is not None and len(chunk_ids):
        import numpy as np

        index.add_with_ids(vecs, np.asarray(chunk_ids, dtype=np.int64))
        write_vectors(name, index)
    with session_scope() as s:  # 3. flip to indexed; drop older versions of the same sources
        kb = get_kb_row(s, name)
        s.query(KbDocument).filter(KbDocument.id.in_(new_ids)).update(
            {KbDocument.status: "indexed"}, synchronize_session=False
        )
        sources = [d.source for d in docs]
        old = s.scalars(
            select(KbDocument.id).where(
                KbDocument.kb_id == kb.id,
                KbDocument.source.in_(sources),
                KbDocument.id.not_in(new_ids),
                KbDocument.status == "indexed",
            )
        ).all()
        if old:
            old_sources = s.scalars(select(KbDocument.source).where(KbDocument.id.in_(old))).all()
            report.replaced.extend(sorted(set(old_sources)))
            stale = list(s.scalars(select(KbChunk.id).where(KbChunk.doc_id.in_(old))).all())
            s.query(KbChunk).filter(KbChunk.doc_id.in_(old)).delete(synchronize_session=False)
            s.query(KbDocument).filter(KbDocument.id.in_(old)).delete(synchronize_session=False)
        bump_generation(s, kb)
    if old and remove_ids(index, stale):  # the caller holds the KB's write lock
        write_vectors(name, index)
    report.added.extend(d.source for d in docs)
    report.chunks += len(chunk_ids)


def ingest(
    name: str,
    items: list[tuple[str, Callable[[], bytes]]],
    *,
    progress: bool = False,
    batch_chunks: int = 256,
    encoder=None,
) -> IngestReport:
    """Add documents given as (source, read-bytes) pairs. Re-adding identical content is a no-op."""
    from luodi.embeddings import get_encoder

    report = IngestReport()
    with session_scope() as s:
        cfg = kb_config(get_kb_row(s, name))
    pii = kb_pii(cfg)
    encoder = encoder or get_encoder(cfg["encoder"])
    count = _token_counter(encoder)
    with kb_lock(name):
        report.recovered = _recover(name, encoder.dim)
        with session_scope() as s:
            kb = get_kb_row(s, name)
            known = set(s.scalars(select(KbDocument.sha256).where(KbDocument.kb_id == kb.id)).all())
        batch: list[_Doc] = []
        n_batch = 0
        steps: Any = items
        if progress:
            from rich.progress import track

            steps = track(items, description=f"adding to '{name}'")
        try:
            for source, read in steps:
                try:
                    data = read()
                    sha = hashlib.sha256(data).hexdigest()
                    if sha in known:
                        report.skipped.append(source)
                        continue
                    text = extract_text(source, data)
                    text, removed = redact_text(text, pii)  # the KB's pii: nothing below sees the original
                except (BadRequest, OSError) as e:
                    report.failed[source] = getattr(e, "message", str(e))
                    continue
                known.add(sha)
                if removed:
                    report.pii_removed[source] = removed
                chunks = chunk_text(text, cfg["chunk_tokens"], cfg["overlap"], count=count)
                # the KB's injection setting: each chunk's verdict kept for answering
                flagged = screen_at_ingest(cfg, name, kb_dir(name), [c.text for c in chunks])
                if flagged:
                    report.injection_flagged[source] = flagged
                batch.append(_Doc(source, sha, chunks))
                n_batch += len(chunks)
                if n_batch >= batch_chunks:
                    _flush(name, batch, encoder, report)
                    batch, n_batch = [], 0
            _flush(name, batch, encoder, report)
        finally:
            forget(name)
    return report


def add_paths(name: str, paths: list[str | Path], *, progress: bool = False, encoder=None) -> IngestReport:
    """Add files and directories (recursively) to a knowledge base; sources are absolute paths."""
    from luodi.rag.kbs import get_kb

    get_kb(name)  # a missing KB is the first thing to report
    files = iter_files(paths)
    if not files:
        raise BadRequest(
            "no supported documents found in the given paths (txt, md, html, pdf, docx)", param="path"
        )
    items = [(str(f.resolve()), f.read_bytes) for f in files]
    return ingest(name, items, progress=progress, encoder=encoder)


def add_bytes(name: str, files: list[tuple[str, bytes]], *, encoder=None) -> IngestReport:
    """Add uploaded documents given as (file name, content)."""
    items = [(fname, (lambda d=data: d)) for fname, data in files]
    return ingest(name, items, encoder=encoder)


def _token_counter(encoder) -> Callable[[str], int]:
    tok = getattr(encoder, "tokenizer", None)
    if tok is None:
        from luodi.rag.chunk import approx_tokens

        return approx_tokens
    return lambda text: len(tok(text, add_special_tokens=False, truncation=False)["input_ids"])


# --- removing ------------------------------------------------------------------------------------


def delete_kb(name: str) -> dict[str, Any]:
    """Delete a knowledge base, its documents, chunks and index files."""
    with session_scope() as s:
        kb = get_kb_row(s, name)
        info = describe(s, kb)
        s.query(KbChunk).filter(KbChunk.kb_id == kb.id).delete()
        s.query(KbDocument).filter(KbDocument.kb_id == kb.id).delete()
        s.delete(kb)
    shutil.rmtree(kb_dir(name), ignore_errors=True)
    forget(name)
    return {**info, "deleted": True}


def delete_document(name: str, doc_id: int) -> dict[str, Any]:
    """Remove one document and its chunks (its vectors are dropped from the index on the next load/add)."""
    with session_scope() as s:
        kb = get_kb_row(s, name)
        doc = s.scalar(select(KbDocument).where(KbDocument.kb_id == kb.id, KbDocument.id == doc_id))
        if doc is None:
            raise NotFound(f"document {doc_id} not found in knowledge base '{name}'; list them with "
                           f"`luodi kb docs {name}`", param="doc_id")
        info = {"id": doc.id, "source": doc.source, "deleted": True}
        chunk_ids = list(s.scalars(select(KbChunk.id).where(KbChunk.doc_id == doc.id)).all())
        s.query(KbChunk).filter(KbChunk.doc_id == doc.id).delete(synchronize_session=False)
        s.delete(doc)
        bump_generation(s, kb)
    drop_vectors(name, chunk_ids)
    return info
