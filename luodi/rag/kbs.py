"""Knowledge bases: create, list and describe them (rows in the store, files under LUODI_HOME/kb/), and the
one-writer lock each has. Deleting a KB or a document touches its vectors too: luodi.rag.ingest."""

from __future__ import annotations

import fcntl
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from luodi.errors import BadRequest, NotFound
from luodi.rag.guards import pii_setting
from luodi.settings import get_settings
from luodi.store import session_scope
from luodi.store.tables import KbChunk, KbDocument, KnowledgeBase

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Defaults stored in each KB's config; `min_score` is the calibrated "not found" threshold on the best
# dense cosine similarity (see bench/rag.py and docs/rag.md).
DEFAULTS: dict[str, Any] = {
    "encoder": "bundled:minilm-l6",
    "chunk_tokens": 200,
    "overlap": 1,
    "min_score": 0.35,
    "generation": 0,
}


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadRequest(
            f"invalid knowledge base name {name!r}: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. 'product-docs')",
            param="name",
        )
    return name


def kb_dir(name: str) -> Path:
    return get_settings().home / "kb" / check_name(name)


def get_kb_row(s: Session, name: str) -> KnowledgeBase:
    kb = s.scalar(select(KnowledgeBase).where(KnowledgeBase.name == check_name(name)))
    if kb is None:
        raise NotFound(
            f"knowledge base '{name}' not found; create it with `luodi kb create {name}`", param="name"
        )
    return kb


def describe(s: Session, kb: KnowledgeBase) -> dict[str, Any]:
    docs = (
        s.scalar(
            select(func.count())
            .select_from(KbDocument)
            .where(KbDocument.kb_id == kb.id, KbDocument.status == "indexed")
        )
        or 0
    )
    chunks = (
        s.scalar(
            select(func.count())
            .select_from(KbChunk)
            .join(KbDocument)
            .where(KbChunk.kb_id == kb.id, KbDocument.status == "indexed")
        )
        or 0
    )
    cfg = {**DEFAULTS, **(kb.config or {})}
    return {
        "name": kb.name,
        "documents": int(docs),
        "chunks": int(chunks),
        "config": {k: v for k, v in cfg.items() if k != "generation"},
        "created_at": kb.created_at.isoformat() if kb.created_at else None,
    }


def create_kb(
    name: str,
    *,
    chunk_tokens: int = 200,
    overlap: int = 1,
    min_score: float | None = None,
    encoder: str = "bundled:minilm-l6",
    pii: bool | dict[str, Any] | None = None,
    injection: bool | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create an empty knowledge base; fails if the name is taken. `pii` (true or PII settings): documents and
    questions are redacted before they are stored, embedded, searched or sent to the LLM (luodi.rag.pii)."""
    check_name(name)
    pii_cfg = pii_setting(pii)
    injection_cfg = injection_setting(injection)  # `injection`: retrieved passages screened (luodi.privacy.injection)
    if not 16 <= chunk_tokens <= 512:
        raise BadRequest(
            f"chunk_tokens must be between 16 and 512 (got {chunk_tokens})", param="chunk_tokens"
        )
    if not 0 <= overlap <= 5:
        raise BadRequest(f"overlap must be between 0 and 5 sentences (got {overlap})", param="overlap")
    if min_score is not None and not -1.0 <= min_score <= 1.0:
        raise BadRequest(f"min_score is a cosine similarity in [-1, 1] (got {min_score})", param="min_score")
    cfg = {**DEFAULTS, "encoder": encoder, "chunk_tokens": chunk_tokens, "overlap": overlap}
    if min_score is not None:
        cfg["min_score"] = float(min_score)
    if pii_cfg is not None:
        cfg["pii"] = pii_cfg
    if injection_cfg is not None:
        cfg["injection"] = injection_cfg
    with session_scope() as s:
        if s.scalar(select(KnowledgeBase).where(KnowledgeBase.name == name)) is not None:
            raise BadRequest(
                f"knowledge base '{name}' already exists; pick another name or delete it first",
                param="name",
                status=409,
            )
        kb = KnowledgeBase(name=name, config=cfg)
        s.add(kb)
        s.flush()
        kb_dir(name).mkdir(parents=True, exist_ok=True)
        return describe(s, kb)


def injection_setting(value: bool | dict[str, Any] | None) -> dict[str, Any] | None:
    """The `injection` value stored in a KB's config: None (off), or InjectionConfig fields (true: the defaults);
    errors name `injection.<field>`."""
    from pydantic import ValidationError

    from luodi.options.injection import InjectionConfig

    if value is None or value is False:
        return None
    if value is not True and not isinstance(value, dict):
        raise BadRequest("injection: true, false or a mapping of injection-guard settings (docs/security-guard.md)",
                         param="injection")
    try:
        cfg = InjectionConfig.model_validate({} if value is True else value)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(["injection", *(str(p) for p in err["loc"])])
        raise BadRequest(f"{where}: {err['msg']}", param=where) from None
    return cfg.model_dump(mode="json")


def get_kb(name: str) -> dict[str, Any]:
    with session_scope() as s:
        return describe(s, get_kb_row(s, name))


def list_kbs() -> list[dict[str, Any]]:
    with session_scope() as s:
        return [describe(s, kb) for kb in s.scalars(select(KnowledgeBase).order_by(KnowledgeBase.name))]


def list_documents(name: str) -> list[dict[str, Any]]:
    with session_scope() as s:
        kb = get_kb_row(s, name)
        docs = s.scalars(select(KbDocument).where(KbDocument.kb_id == kb.id).order_by(KbDocument.id))
        return [
            {
                "id": d.id,
                "source": d.source,
                "sha256": d.sha256,
                "chunks": d.n_chunks,
                "status": d.status,
                "added_at": d.added_at.isoformat() if d.added_at else None,
            }
            for d in docs
        ]


def bump_generation(s: Session, kb: KnowledgeBase) -> None:
    """Mark the KB changed so cached indexes in every process reload."""
    kb.config = {
        **DEFAULTS,
        **(kb.config or {}),
        "generation": int((kb.config or {}).get("generation", 0)) + 1,
    }


def kb_config(kb: KnowledgeBase) -> dict[str, Any]:
    return {**DEFAULTS, **(kb.config or {})}


@contextmanager
def kb_lock(name: str) -> Iterator[None]:
    """One writer per KB across processes and threads (an OS file lock, released if the process dies)."""
    d = kb_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "write.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
