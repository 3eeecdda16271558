"""Human approval of tool calls with side effects: pending -> approved | rejected, audited."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from luodi.errors import BadRequest, NotFound
from luodi.store import session_scope
from luodi.store.tables import Approval, AuditLog


def approval_dict(a: Approval) -> dict[str, Any]:
    return {
        "id": a.id,
        "thread_id": a.thread_id,
        "tool": a.tool,
        "args": dict(a.args or {}),
        "status": a.status,
        "created_at": a.created_at.isoformat() if a.created_at else None,
    }


def request_approval(thread_id: str, tool: str, args: dict[str, Any]) -> int:
    with session_scope() as s:
        a = Approval(thread_id=thread_id, tool=tool, args=args, status="pending")
        s.add(a)
        s.flush()
        return a.id


def get_approval(approval_id: int) -> dict[str, Any]:
    with session_scope() as s:
        a = s.get(Approval, approval_id)
        if a is None:
            raise NotFound(f"approval {approval_id} not found", param="approval_id")
        return approval_dict(a)


def list_approvals(status: str | None = "pending", thread_id: str | None = None) -> list[dict[str, Any]]:
    with session_scope() as s:
        q = select(Approval).order_by(Approval.id)
        if status:
            q = q.where(Approval.status == status)
        if thread_id:
            q = q.where(Approval.thread_id == thread_id)
        return [approval_dict(a) for a in s.scalars(q).all()]


def decide(approval_id: int, approve: bool, actor: str = "human", reason: str = "") -> dict[str, Any]:
    """Approve or reject a pending approval (once); the agent resumes from it."""
    with session_scope() as s:
        a = s.get(Approval, approval_id)
        if a is None:
            raise NotFound(f"approval {approval_id} not found", param="approval_id")
        if a.status != "pending":
            raise BadRequest(
                f"approval {approval_id} is already {a.status}; only pending approvals can be decided",
                param="approval_id",
                status=409,
            )
        a.status = "approved" if approve else "rejected"
        s.add(
            AuditLog(
                actor=actor,
                action=f"approval.{a.status}",
                detail={
                    "approval_id": a.id,
                    "thread_id": a.thread_id,
                    "tool": a.tool,
                    "args": a.args,
                    "reason": reason,
                },
            )
        )
        return approval_dict(a)
