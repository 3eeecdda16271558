"""The prediction log: served predictions (sampled by serve.log) queued on the request path and written to the
store's prediction_log table by one background thread, in batches, so a request pays for a dict and a queue put,
never for a database round trip. Each logged prediction gets an id (returned to the client in the header
X-Luodi-Prediction-Id) that POST /v1/apps/{name}/feedback uses to attach the ground truth.

Retention: after a write, each app written to is pruned (at most once a minute per app) to serve.log's
retention_days and max_rows. The inputs logged are the records the model saw: with the app's guard.pii on, the
routes pass the redacted copies, so no text the guard removed reaches the log; with the server-wide LUODI_GUARD_PII
on, `redact_logged_inputs` redacts every logged input's texts too, in the writer thread.
"""

from __future__ import annotations

import atexit
import logging
import queue
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select

from luodi.errors import BadRequest, NotFound
from luodi.options.monitor import PredictionLogConfig
from luodi.settings import get_settings
from luodi.store.db import session_scope
from luodi.store.tables import PredictionLog

log = logging.getLogger("luodi.monitor")
ID_HEADER = "X-Luodi-Prediction-Id"  # comma-separated, one per input in order; "-" where it was not logged
PRUNE_EVERY_S = 60.0
Records = list[dict[str, Any]]


@dataclass
class _Entry:
    db_url: str
    app: str
    version: str
    ids: list[str | None]
    records: Records
    outputs: Records
    latency_ms: float
    at: datetime
    cfg: PredictionLogConfig


class PredictionLogWriter:
    """Queue -> batched inserts in a daemon thread; `flush()` writes what is queued now (tests, feedback)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self._queue: queue.SimpleQueue[_Entry] = queue.SimpleQueue()
        self._lock = threading.Lock()  # one writer at a time: the thread or a caller's flush
        self._thread: threading.Thread | None = None
        self._pruned: dict[tuple[str, str], float] = {}
        self.written = 0

    def put(self, entry: _Entry) -> None:
        self._queue.put(entry)
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="luodi-prediction-log", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()

    def flush(self) -> int:
        """Write every queued prediction now; the number of rows written."""
        with self._lock:
            entries: list[_Entry] = []
            while True:
                try:
                    entries.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            by_url: dict[str, list[_Entry]] = {}
            for e in entries:
                by_url.setdefault(e.db_url, []).append(e)
            n = 0
            for url, group in by_url.items():
                try:
                    n += _insert(url, group)
                    self._prune(url, group)
                except Exception:  # noqa: BLE001 - the log must never take the server down; say so loudly
                    log.exception("prediction log: %d predictions could not be written", len(group))
            self.written += n
            return n

    def _prune(self, url: str, group: list[_Entry]) -> None:
        now = time.monotonic()
        for e in {e.app: e for e in group}.values():
            if now - self._pruned.get((url, e.app), -PRUNE_EVERY_S) >= PRUNE_EVERY_S:
                prune(e.app, e.cfg, url)
                self._pruned[(url, e.app)] = now


_redactor: Callable[[Records], Records] | None = None


def redact_logged_inputs(redact: Callable[[Records], Records] | None) -> None:
    """Redact the inputs of every prediction before it is logged, in the writer thread (off the request path):
    the server calls it with LUODI_GUARD_PII's redactor (records -> redacted copies). None: inputs are logged as
    the model saw them. When the redactor fails, those predictions are not logged at all (never unredacted)."""
    global _redactor
    _redactor = redact


def _insert(url: str, entries: list[_Entry]) -> int:
    rows = []
    for e in entries:
        records = _redactor(e.records) if _redactor is not None else e.records
        for pid, rec, out in zip(e.ids, records, e.outputs, strict=True):
            if pid is None:
                continue
            rows.append(
                PredictionLog(
                    id=pid, app=e.app, version=e.version, at=e.at, latency_ms=e.latency_ms,
                    inputs=_jsonable(rec), output=_jsonable({k: v for k, v in out.items() if k != "explanation"}),
                )
            )
    if rows:
        with session_scope(url) as s:
            s.add_all(rows)
    return len(rows)


def _jsonable(obj: Any) -> Any:
    """Records as JSON holds them (bytes of uploaded files are not logged, only their size)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bytes | bytearray):
        return f"<{len(obj)} bytes>"
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    return str(obj)


WRITER = PredictionLogWriter()
atexit.register(WRITER.flush)  # what is queued when the server (or a script) stops is written, not dropped


def log_config(cfg: Any) -> PredictionLogConfig:
    """An app config's serve.log, or the defaults when it leaves it out."""
    return cfg.serve.log or PredictionLogConfig()


def log_predictions(pred: Any, records: Records, outputs: Records, seconds: float) -> list[str | None]:
    """Queue a served request's predictions (a Predictor's app, version and serve.log) for the log: sampled per
    record; the ids given (None: not logged) go back to the client. `records`: what the model saw."""
    cfg = log_config(pred.config)
    if cfg.sample <= 0 or not records:
        return [None] * len(records)
    ids: list[str | None] = [
        secrets.token_hex(16) if cfg.sample >= 1 or random.random() < cfg.sample else None for _ in records
    ]
    if any(ids):
        WRITER.put(
            _Entry(get_settings().db_url, pred.run.app, pred.run.version, ids, records, outputs,
                   round(seconds * 1000, 3), datetime.now(UTC), cfg)
        )
    return ids


def id_header(ids: list[str | None]) -> str:
    return ",".join(i or "-" for i in ids)


def prune(app: str, cfg: PredictionLogConfig, url: str | None = None) -> int:
    """Delete an app's logged predictions older than retention_days and beyond max_rows (oldest first)."""
    cutoff = datetime.now(UTC) - timedelta(days=cfg.retention_days)
    with session_scope(url) as s:
        gone = s.execute(delete(PredictionLog).where(PredictionLog.app == app, PredictionLog.at < cutoff)).rowcount
        count = s.scalar(select(func.count()).select_from(PredictionLog).where(PredictionLog.app == app)) or 0
        extra = count - cfg.max_rows
        if extra > 0:
            oldest = select(PredictionLog.id).where(PredictionLog.app == app).order_by(
                PredictionLog.at, PredictionLog.id).limit(extra)
            gone += s.execute(
                delete(PredictionLog).where(PredictionLog.id.in_(list(s.scalars(oldest)))),
                execution_options={"synchronize_session": False},
            ).rowcount
    return int(gone or 0)


def rows(app: str, since: datetime, limit: int) -> list[PredictionLog]:
    """An app's logged predictions since `since`, newest first, at most `limit` (queued ones written first)."""
    WRITER.flush()
    with session_scope() as s:
        q = (
            select(PredictionLog)
            .where(PredictionLog.app == app, PredictionLog.at >= since)
            .order_by(PredictionLog.at.desc())
            .limit(limit)
        )
        return list(s.scalars(q))


def record_feedback(app: str, items: list[tuple[str, Any]], labels: list[str] | None = None) -> dict[str, Any]:
    """Attach ground truth to logged predictions of `app`: (prediction id, truth) pairs, all or none. An id the
    app's log does not hold (never logged, sampled out, pruned, another app's) is a 404 naming its item;
    `labels`: the classes of a classification app (a truth outside them is a 400)."""
    if labels is not None:  # a classification app: truths are labels (JSON 1 or 1.0 -> "1")
        items = [(pid, str(int(t)) if isinstance(t, float) and t.is_integer() else str(t)) for pid, t in items]
    for i, (_, truth) in enumerate(items):
        if labels is not None and truth not in labels:
            raise BadRequest(
                f"items[{i}].truth '{truth}' is not a label of app '{app}'; labels: {', '.join(labels)}",
                param=f"items[{i}].truth",
            )
    WRITER.flush()
    now = datetime.now(UTC)
    with session_scope() as s:
        found = {
            r.id: r for r in s.scalars(
                select(PredictionLog).where(PredictionLog.app == app, PredictionLog.id.in_([i for i, _ in items]))
            )
        }
        for i, (pid, _) in enumerate(items):
            if pid not in found:
                raise NotFound(
                    f"items[{i}].prediction_id '{pid}' is not in the prediction log of app '{app}' (not logged: "
                    "serve.log.sample, pruned: serve.log.retention_days / max_rows, or another app's); take the "
                    f"ids from the {ID_HEADER} header of the predict response",
                    param=f"items[{i}].prediction_id",
                )
        for pid, truth in items:
            found[pid].truth, found[pid].feedback_at = truth, now
    return {"app": app, "recorded": len(items)}
