"""The built-in tools by name (`builtin_tools(["calculator", "sql", ...])`): calculator (exact arithmetic),
sql (one read-only SELECT on an SQLite database, the demo bank by default), kb_search (a knowledge base),
current_time and create_ticket (hand-off to a human, who answers in the same conversation)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from luodi import rag
from luodi.agent.assistant.demo import DEMO_KB, build_demo_db
from luodi.agent.assistant.tickets import create_ticket as open_ticket
from luodi.agent.calculator import calculator
from luodi.agent.faq import get_faq
from luodi.agent.sql_tool import sql_tool
from luodi.agent.tools import RUN_CONTEXT, Tool, ToolError, tool
from luodi.errors import BadRequest, LuodiError

BUILTIN_NAMES = ("calculator", "sql", "kb_search", "current_time", "create_ticket")

# ---------------------------------------------------------------------------------------- current time

_TIME = re.compile(r"\b(time|date|today|tomorrow|yesterday|weekday|what day|clock|now)\b", re.I)


def _time_relevance(goal: str) -> float:
    return 1.0 if _TIME.search(goal) else 0.0


@tool(
    relevance=_time_relevance,
    example={
        "goal": "What day is it today?",
        "plan": ["get the date", "answer"],
        "arguments": {"timezone": "UTC"},
        "result": "Friday 2026-01-02 10:00:00 UTC",
        "answer": "Today is Friday, 2 January 2026.",
    },
)
def current_time(timezone: str = "UTC") -> str:
    """Get the current date and time.

    Args:
        timezone: an IANA timezone name such as "UTC" or "Europe/Paris"
    """
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ToolError(f"unknown timezone {timezone!r}; use an IANA name like 'UTC' or 'Asia/Shanghai'") from e
    now = datetime.now(UTC).astimezone(tz)
    return now.strftime("%A %Y-%m-%d %H:%M:%S %Z")


# ---------------------------------------------------------------------------------------- knowledge base


def kb_search_tool(kb: str, k: int = 3) -> Tool:
    """Search a knowledge base by meaning (luodi.rag, or the assistant's FAQ index for the demo kb)."""

    def kb_search(query: str) -> str:
        """Args:
        query: what to look for, in a few words
        """
        hits = search_kb(kb, query, k)
        if not hits:
            return "no matching passages"
        return "\n".join(f"[{i + 1}] {h['text']}" for i, h in enumerate(hits))

    example = {
        "goal": "Can I get my money back for a payment?",
        "plan": ["search the knowledge base", "answer"],
        "arguments": {"query": "refund for a payment"},
        "result": "[1] Refunds: ask the merchant first; if they refuse within 14 days, open a dispute.",
        "answer": "Ask the merchant first; if they do not refund you within 14 days, open a dispute.",
    }
    return tool(
        kb_search,
        name="kb_search",
        description=f"Search the '{kb}' knowledge base for passages answering a question.",
        example=example,
        relevance=_kb_relevance(kb),
    )


def search_kb(kb: str, query: str, k: int = 3) -> list[dict[str, Any]]:
    """[{'text', 'score', 'source'}] from the knowledge base; the demo kb falls back to the bundled FAQ when
    it was not built (`luodi demo` builds it)."""
    try:
        return [{"text": h.text, "score": h.score, "source": h.source} for h in rag.search(kb, query, k)]
    except LuodiError as e:
        if kb != DEMO_KB:
            raise ToolError(f"knowledge base '{kb}': {e.message}") from e
    return [
        {"text": f"Q: {h.question}\nA: {h.answer}", "score": s, "source": h.source}
        for h, s in get_faq().search(query, k)
    ]


def _kb_relevance(kb: str, threshold: float = 0.5) -> Callable[[str], float]:
    def rel(goal: str) -> float:
        try:
            hits = search_kb(kb, goal, 1)
        except ToolError:
            return 0.0
        score = float(hits[0]["score"] or 0.0) if hits else 0.0
        return 1.0 if score >= threshold else score

    return rel


# ---------------------------------------------------------------------------------------- hand-off


@tool
def create_ticket(subject: str, details: str) -> str:
    """Hand the problem over to a human support agent, who will answer in this conversation later.

    Args:
        subject: a short title of the problem
        details: what the customer needs, with any identifiers (order id, account)
    """
    ctx = RUN_CONTEXT.get() or {}
    tid = open_ticket(ctx.get("thread_id"), subject, details, actor="agent")
    return f"ticket #{tid} created; a human agent will reply in this conversation"


# ---------------------------------------------------------------------------------------- registry


def builtin_tools(
    names: list[str] | None = None,
    *,
    db: str | Path | None = None,
    kb: str = DEMO_KB,
    approval: list[str] | None = None,
) -> list[Tool]:
    """Built-in tools by name (default: all); `approval` names tools that need a human's approval."""
    names = list(names or BUILTIN_NAMES)
    out: list[Tool] = []
    for n in names:
        if n == "calculator":
            t = calculator
        elif n == "current_time":
            t = current_time
        elif n == "create_ticket":
            t = create_ticket
        elif n == "sql":
            path = Path(db) if db else build_demo_db()  # the demo bank, built on first use
            t = sql_tool(path, about="the bank's customers/accounts/orders database")
        elif n == "kb_search":
            t = kb_search_tool(kb)
        else:
            raise BadRequest(f"unknown tool '{n}'; built-in tools are: {', '.join(BUILTIN_NAMES)}", param="tools")
        out.append(t)
    approval = approval or []
    for n in approval:
        if n not in names:
            raise BadRequest(f"approval: tool '{n}' is not among the tools {names}", param="approval")
    return [replace(t, requires_approval=True) if t.name in approval else t for t in out]
