"""Hand-off tickets: the assistant (or an agent's create_ticket tool) opens one, a human agent answers it,
and the answer is appended to the customer's conversation (role "human_agent"), where the next poll sees it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from luodi.agent import memory
from luodi.errors import BadRequest, NotFound
from luodi.store import session_scope
from luodi.store.tables import AuditLog, Ticket

STATUSES = ("open", "answered", "closed")


def _ticket_dict(t: Ticket) -> dict[str, Any]:
    return {
        "id": t.id,
        "thread_id": t.thread_id,
        "subject": t.subject,
        "body": t.body,
        "status": t.status,
        "answer": t.answer,
        "created_at": t.created_at.isoformat() if t.created_at else None,
        "answered_at": t.answered_at.isoformat() if t.answered_at else None,
    }


def ticket_open(ticket_id: int) -> bool:
    with session_scope() as s:
        t = s.get(Ticket, ticket_id)
        return t is not None and t.status == "open"


def create_ticket(thread_id: str | None, subject: str, body: str, actor: str = "assistant") -> int:
    """A new open ticket for the conversation `thread_id` (audited as `actor`); returns its id."""
    with session_scope() as s:
        t = Ticket(thread_id=thread_id, subject=subject[:500], body=body)
        s.add(t)
        s.flush()
        s.add(AuditLog(actor=actor, action="ticket.created", detail={"ticket_id": t.id, "thread_id": thread_id}))
        return t.id


def list_tickets(status: str | None = "open", limit: int = 100) -> list[dict[str, Any]]:
    if status is not None and status not in STATUSES:
        raise BadRequest(f"'status' must be open, answered or closed, got {status!r}", param="status")
    with session_scope() as s:
        q = select(Ticket).order_by(Ticket.id.desc()).limit(max(1, min(limit, 1000)))
        if status:
            q = q.where(Ticket.status == status)
        return [_ticket_dict(t) for t in s.scalars(q).all()]


def get_ticket(ticket_id: int) -> dict[str, Any]:
    with session_scope() as s:
        t = s.get(Ticket, ticket_id)
        if t is None:
            raise NotFound(f"ticket {ticket_id} not found", param="ticket_id")
        return _ticket_dict(t)


def answer_ticket(ticket_id: int, answer: str, actor: str = "human_agent", close: bool = False) -> dict[str, Any]:
    """A human agent's answer: stored on the ticket and appended to the customer's conversation."""
    if not isinstance(answer, str) or not answer.strip():
        raise BadRequest("'answer' must be a non-empty string", param="answer")
    with session_scope() as s:
        t = s.get(Ticket, ticket_id)
        if t is None:
            raise NotFound(f"ticket {ticket_id} not found", param="ticket_id")
        if t.status == "closed":
            raise BadRequest(f"ticket {ticket_id} is closed; open a new one", param="ticket_id", status=409)
        t.answer = answer.strip()
        t.status = "closed" if close else "answered"
        t.answered_at = datetime.now(UTC)
        s.add(AuditLog(actor=actor, action="ticket.answered", detail={"ticket_id": t.id, "thread_id": t.thread_id}))
        out = _ticket_dict(t)
    if out["thread_id"] and memory.thread_exists(out["thread_id"]):
        memory.add_message(out["thread_id"], "human_agent", out["answer"], {"ticket_id": ticket_id, "by": actor})
    return out
