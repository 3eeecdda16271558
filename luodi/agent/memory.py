"""Agent memory: per-conversation history in the store (resumable by thread id) and long-term memory
in a FAISS index over the Memory table.

The Memory table is the source of truth; the FAISS file under $LUODI_HOME/memory/ is a cache rebuilt
whenever it disagrees with the table (so a crash mid-write never loses a memory).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from luodi.atomic import atomic_path
from luodi.errors import NotFound
from luodi.settings import get_settings
from luodi.store import session_scope
from luodi.store.tables import Memory, Message, Thread, now

# ------------------------------------------------------------------------------------------ threads


def new_thread_id(prefix: str = "th") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def create_thread(
    kind: str, app: str | None = None, state: dict | None = None, thread_id: str | None = None
) -> str:
    tid = thread_id or new_thread_id()
    with session_scope() as s:
        s.add(Thread(id=tid, kind=kind, app=app, state=state or {}))
    return tid


def get_thread(thread_id: str, kind: str | None = None) -> dict[str, Any]:
    """{'id', 'kind', 'app', 'state', 'messages': [...]} or NotFound."""
    with session_scope() as s:
        t = s.get(Thread, thread_id)
        if t is None or (kind and t.kind != kind):
            raise NotFound(
                f"thread '{thread_id}' not found; start a new one (omit thread_id)", param="thread_id"
            )
        msgs = s.scalars(select(Message).where(Message.thread_id == thread_id).order_by(Message.id)).all()
        return {
            "id": t.id,
            "kind": t.kind,
            "app": t.app,
            "state": dict(t.state or {}),
            "created_at": t.created_at.isoformat() if t.created_at else None,
            "updated_at": t.updated_at.isoformat() if t.updated_at else None,
            "messages": [message_dict(m) for m in msgs],
        }


def message_dict(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "role": m.role,
        "content": m.content,
        "meta": dict(m.meta or {}),
        "created_at": m.created_at.isoformat() if m.created_at else None,
    }


def thread_exists(thread_id: str) -> bool:
    with session_scope() as s:
        return s.get(Thread, thread_id) is not None


def save_state(thread_id: str, state: dict[str, Any]) -> None:
    with session_scope() as s:
        t = s.get(Thread, thread_id)
        if t is None:
            raise NotFound(f"thread '{thread_id}' not found", param="thread_id")
        t.state = dict(state)


def add_message(thread_id: str, role: str, content: str, meta: dict | None = None) -> int:
    with session_scope() as s:
        m = Message(thread_id=thread_id, role=role, content=content, meta=meta or {})
        s.add(m)
        t = s.get(Thread, thread_id)
        if t is not None:  # bump updated_at so pollers see activity
            t.updated_at = now()
        s.flush()
        return m.id


def messages_after(thread_id: str, after_id: int = 0) -> list[dict[str, Any]]:
    with session_scope() as s:
        rows = s.scalars(
            select(Message).where(Message.thread_id == thread_id, Message.id > after_id).order_by(Message.id)
        ).all()
        return [message_dict(m) for m in rows]


# ------------------------------------------------------------------------------------------ long-term


@dataclass
class Recall:
    id: int
    text: str
    score: float


class LongTermMemory:
    """Remember texts under a scope and recall the nearest ones by meaning (FAISS inner product)."""

    _locks: dict[str, threading.Lock] = {}

    def __init__(self, scope: str = "default", encoder_spec: str | None = None):
        self.scope = scope
        self.encoder_spec = encoder_spec or get_settings().embed_model
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in scope)
        self.path = get_settings().home / "memory" / f"{safe}.faiss"
        self._lock = self._locks.setdefault(str(self.path), threading.Lock())

    def _encoder(self):
        from luodi.embeddings import get_encoder

        return get_encoder(self.encoder_spec)

    def _rows(self) -> list[tuple[int, str]]:
        with session_scope() as s:
            rows = s.execute(
                select(Memory.id, Memory.text).where(Memory.scope == self.scope).order_by(Memory.id)
            ).all()
        return [(r[0], r[1]) for r in rows]

    def _index(self):
        """Load the FAISS index, rebuilding it from the table when missing or stale."""
        import faiss

        rows = self._rows()
        ids = {r[0] for r in rows}
        if self.path.exists():
            idx = faiss.read_index(str(self.path))
            if idx.ntotal == len(rows) and (
                not rows or set(faiss.vector_to_array(idx.id_map).tolist()) == ids
            ):
                return idx
        enc = self._encoder()
        idx = faiss.IndexIDMap2(faiss.IndexFlatIP(enc.dim))
        if rows:
            vecs = enc.encode([r[1] for r in rows])
            idx.add_with_ids(vecs, np.array([r[0] for r in rows], dtype=np.int64))
        self._write(idx)
        return idx

    def _write(self, idx) -> None:
        import faiss

        with atomic_path(self.path) as tmp:
            faiss.write_index(idx, str(tmp))

    def add(self, text: str) -> int:
        text = text.strip()
        with self._lock:
            idx = self._index()
            with session_scope() as s:
                m = Memory(scope=self.scope, text=text)
                s.add(m)
                s.flush()
                mid = m.id
            idx.add_with_ids(self._encoder().encode([text]), np.array([mid], dtype=np.int64))
            self._write(idx)
        return mid

    def search(self, query: str, k: int = 3, min_score: float = 0.3) -> list[Recall]:
        with self._lock:
            idx = self._index()
            if idx.ntotal == 0:
                return []
            scores, ids = idx.search(self._encoder().encode([query]), min(k, idx.ntotal))
        texts = dict(self._rows())
        return [
            Recall(int(i), texts[int(i)], float(sc))
            for sc, i in zip(scores[0], ids[0], strict=True)
            if i >= 0 and int(i) in texts and sc >= min_score
        ]

    def count(self) -> int:
        return len(self._rows())

    def forget(self) -> int:
        """Delete every memory of this scope."""
        with self._lock, session_scope() as s:
            rows = s.scalars(select(Memory).where(Memory.scope == self.scope)).all()
            for r in rows:
                s.delete(r)
            n = len(rows)
        Path(self.path).unlink(missing_ok=True)
        return n
