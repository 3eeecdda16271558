"""Every table luodi stores. Change a table only together with a new Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# encrypted at rest when LUODI_ENCRYPTION_KEY is set, in the same SQL types (no migration): docs/encryption.md
from luodi.store.encrypted import EncryptedJSON, EncryptedString, encrypted


class Base(DeclarativeBase):
    """Declarative base shared by every table in luodi.store."""


def now() -> datetime:
    return datetime.now(UTC)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), index=True)  # shown to users, e.g. "ld-ab12cd"
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    rate_limit_rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # admin keys may also create, list and revoke keys (migration 0002; keys older than it became admin)
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # scoped keys (migration 0004): {"apps": [...], "kbs": [...], "routes": [...]}; NULL = unscoped
    scope: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class RateLimitWindow(Base):
    """Requests per rate-limited caller per minute (migration 0005): every server on the store counts into the
    same rows, so a key's rate limit holds across replicas (luodi.serve.ratelimit.StoreRateLimiter)."""

    __tablename__ = "rate_limit_windows"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # "key:<api key id>"
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # minutes since 1970
    count: Mapped[int] = mapped_column(Integer, default=0)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("app", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default="running")  # running|done|failed|interrupted
    path: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ServedVersion(Base):
    """The run an app serves when pinned with `luodi promote APP VERSION` (migration 0003); no row: the app
    serves its latest finished run."""

    __tablename__ = "served_versions"
    app: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class KnowledgeBase(Base):
    __tablename__ = "kbs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class KbDocument(Base):
    __tablename__ = "kb_documents"
    __table_args__ = (UniqueConstraint("kb_id", "sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("kbs.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    n_chunks: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(32), default="pending")  # pending|indexed
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class KbChunk(Base):
    __tablename__ = "kb_chunks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("kbs.id", ondelete="CASCADE"), index=True)
    doc_id: Mapped[int] = mapped_column(ForeignKey("kb_documents.id", ondelete="CASCADE"), index=True)
    ord: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(encrypted("kb_chunks", "text"))
    start: Mapped[int] = mapped_column(Integer)  # character span in the source text
    end: Mapped[int] = mapped_column(Integer)


class Thread(Base):
    """A conversation: chat, agent run or assistant session, resumable by id."""

    __tablename__ = "threads"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # chat|agent|assistant
    app: Mapped[str | None] = mapped_column(String(200), nullable=True)
    state: Mapped[dict] = mapped_column(encrypted("threads", "state", EncryptedJSON), default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, onupdate=now)


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32))  # system|user|assistant|tool|human_agent
    content: Mapped[str] = mapped_column(encrypted("messages", "content"))
    meta: Mapped[dict] = mapped_column(encrypted("messages", "meta", EncryptedJSON), default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Ticket(Base):
    """A hand-off to a human agent; the answer is appended to the thread."""

    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    thread_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    subject: Mapped[str] = mapped_column(encrypted("tickets", "subject", EncryptedString, 500))
    body: Mapped[str] = mapped_column(encrypted("tickets", "body"))
    status: Mapped[str] = mapped_column(String(32), default="open")  # open|answered|closed
    answer: Mapped[str | None] = mapped_column(encrypted("tickets", "answer"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Approval(Base):
    """A tool call with side effects waiting for a human's approve / reject."""

    __tablename__ = "approvals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    thread_id: Mapped[str] = mapped_column(String(64), index=True)
    tool: Mapped[str] = mapped_column(String(200))
    args: Mapped[dict] = mapped_column(encrypted("approvals", "args", EncryptedJSON), default=dict)
    status: Mapped[str] = mapped_column(String(32), default="pending")  # pending|approved|rejected
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Memory(Base):
    """Long-term agent memory; vectors live in a FAISS index beside the store."""

    __tablename__ = "memories"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(200), index=True)
    text: Mapped[str] = mapped_column(encrypted("memories", "text"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class AuditLog(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


class PredictionLog(Base):
    """A served prediction (migration 0006), sampled by the app's serve.log: its inputs (PII-redacted when the
    guard is on), output, version and latency, and the ground truth once POST /v1/apps/{name}/feedback brings it.
    The id is the one the predict response returned (header X-Luodi-Prediction-Id)."""

    __tablename__ = "prediction_log"
    __table_args__ = (Index("ix_prediction_log_app_at", "app", "at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    app: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    latency_ms: Mapped[float] = mapped_column(Float)
    inputs: Mapped[dict] = mapped_column(encrypted("prediction_log", "inputs", EncryptedJSON))
    output: Mapped[dict] = mapped_column(encrypted("prediction_log", "output", EncryptedJSON))
    truth: Mapped[Any | None] = mapped_column(encrypted("prediction_log", "truth", EncryptedJSON), nullable=True)
    feedback_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
