"""An append-only audit log of who called what: one row per /v1/ request in the store's audit_log table (the
table ticket and approval events already use), viewable by admins at GET /v1/audit-log.

A row holds the caller's key id, name and prefix, the method, the route *template* (`/v1/tickets/{ticket_id}`,
never the concrete path), the app or knowledge base the route names, the status and the duration. Bodies,
query strings and headers are never read, so no prompt, record or personal data reaches the log: it is
PII-free by construction rather than redacted after the fact.

Rows are queued by an ASGI middleware and written by one background thread in batches (a request never waits
for the store). Append-only: nothing in luodi updates or deletes audit rows, and in the server process the ORM
refuses to (`_refuse_changes`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import event, select
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from luodi.errors import LuodiError
from luodi.serve.ids import DB_INT_MAX, AfterId, Limit
from luodi.serve.metrics import route_template
from luodi.serve.state import get_state
from luodi.store import session_scope
from luodi.store.tables import AuditLog

log = logging.getLogger("luodi.serve.audit")
ACTION = "http.request"


def _refuse_changes(mapper: Any, connection: Any, target: AuditLog) -> None:
    raise LuodiError("the audit log is append-only: its rows cannot be changed or deleted", status=403)


event.listen(AuditLog, "before_update", _refuse_changes)
event.listen(AuditLog, "before_delete", _refuse_changes)


class AuditWriter:
    """Batches audit rows from the request path into the store (one transaction per batch)."""

    def __init__(self, db_url: str, interval: float = 0.25) -> None:
        self.db_url = db_url
        self.interval = interval
        self._queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def put(self, row: dict[str, Any]) -> None:
        self._queue.put(row)
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="luodi-audit-log", daemon=True)
                    self._thread.start()

    def flush(self) -> int:
        """Write what is queued now; the number of rows written."""
        rows = []
        while True:
            try:
                rows.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if rows:
            try:
                with session_scope(self.db_url) as s:
                    s.add_all(AuditLog(**r) for r in rows)
            except Exception:  # noqa: BLE001 - the log must not take the server down; say so loudly
                log.exception("audit log: %d rows could not be written", len(rows))
                return 0
        return len(rows)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()


def _subject(scope: Scope) -> dict[str, str]:
    """The app or knowledge base a route names (its `name` path parameter)."""
    name = (scope.get("path_params") or {}).get("name")
    path = scope.get("path", "")
    if not name:
        return {}
    if path.startswith("/v1/kb/"):
        return {"kb": str(name)}
    if path.startswith(("/v1/apps/", "/v1/assistants/")):
        return {"app": str(name)}
    return {}


class AccessLogMiddleware:
    """Queues one audit row per /v1/ request once its response has started (streams included)."""

    def __init__(self, app: ASGIApp, *, writer: AuditWriter) -> None:
        self.app = app
        self.writer = writer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.writer.put(self._row(scope, status["code"], time.perf_counter() - started))

    @staticmethod
    def _row(scope: Scope, status: int, seconds: float) -> dict[str, Any]:
        state = scope.get("state") or {}
        checked = "luodi_key_checked" in state
        key = state.get("luodi_key_checked")
        route = route_template(scope)
        detail: dict[str, Any] = {
            "method": scope.get("method", ""),
            "route": route,
            "status": status,
            "ms": round(seconds * 1000, 1),
            **_subject(scope),
        }
        if key is not None:
            detail.update(key_id=key.id, key_name=key.name, key_prefix=key.prefix)
            actor = f"key:{key.id}"
        else:
            actor = "auth-off" if checked else "no-valid-key"
        return {"actor": actor, "action": ACTION, "detail": detail}


def read_log(db_url: str, *, after: int = 0, limit: int = 100, key_id: int | None = None,
             action: str | None = None) -> list[dict[str, Any]]:
    """Audit rows, newest first (id > `after`), optionally one key's or one action's."""
    with session_scope(db_url) as s:
        q = select(AuditLog).where(AuditLog.id > after)
        if key_id is not None:
            q = q.where(AuditLog.actor == f"key:{key_id}")
        if action:
            q = q.where(AuditLog.action == action)
        rows = s.scalars(q.order_by(AuditLog.id.desc()).limit(limit)).all()
        return [{"id": r.id, "at": r.at.isoformat(), "actor": r.actor, "action": r.action, "detail": r.detail}
                for r in rows]


# ------------------------------------------------------------------------------------------ admin route
router = APIRouter(tags=["audit log"])
KeyFilter = Annotated[int | None, Query(ge=1, le=DB_INT_MAX, description="only this key's calls")]


@router.get("", summary="The audit log, newest first: every /v1/ call and ticket / approval event (admin keys)")
async def audit_log(
    request: Request, after: AfterId = 0, limit: Limit = 100, key_id: KeyFilter = None,
    action: Annotated[str | None, Query(max_length=200, description="e.g. http.request, ticket.answered")] = None,
) -> dict[str, Any]:
    writer: AuditWriter | None = get_state(request).extra.get("audit_writer")
    if writer is not None:
        await run_in_threadpool(writer.flush)  # what is queued, so the caller sees its own earlier calls
    url = get_state(request).settings.db_url
    rows = await run_in_threadpool(lambda: read_log(url, after=after, limit=limit, key_id=key_id, action=action))
    return {"object": "list", "data": rows}
