"""HTTP routes for agents (`agents`, mounted at /v1/agents), assistants (`assistants`, /v1/assistants) and
human hand-off tickets (`tickets`, /v1/tickets): create_app includes each router with its prefix.

Every route is a thin face of luodi.agent (runtime, approvals, memory, assistant), like the CLI.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import Field
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from luodi.agent import approvals, memory
from luodi.agent.assistant import MAX_MESSAGE, answer_ticket, get_ticket, list_tickets, load_assistant
from luodi.agent.assistant.demo import DEMO_KB
from luodi.agent.builtin_tools import BUILTIN_NAMES
from luodi.agent.runtime import Limits, agent_from_config, collect, resume_after_approval
from luodi.config import Strict
from luodi.errors import LuodiError
from luodi.keys import KeyInfo
from luodi.llm import ensure_engine
from luodi.options.injection import InjectionConfig
from luodi.serve.auth import require_key
from luodi.serve.ids import AfterId, Id, Limit
from luodi.serve.state import get_state

agents = APIRouter(tags=["agents"])
assistants = APIRouter(tags=["assistants"])
tickets = APIRouter(tags=["tickets"])


class RunRequest(Strict):
    goal: str = Field(
        min_length=1,
        max_length=4000,
        description="what the agent should achieve",
        examples=["What is the status of order A1002?"],
    )
    tools: list[str] = Field(
        default_factory=lambda: ["calculator", "sql", "kb_search", "current_time"],
        description=f"built-in tools: {', '.join(BUILTIN_NAMES)}",
    )
    thread_id: str | None = Field(None, description="continue this conversation")
    kb: str = Field(DEMO_KB, description="the knowledge base kb_search reads")
    approval: list[str] = Field(default_factory=list, description="tools that need a human's approval")
    memory: str | None = Field(None, description="long-term memory scope; off when omitted")
    max_steps: int = Field(6, ge=1, le=50, description="model turns")
    max_tool_calls: int = Field(5, ge=1, le=50, description="tool calls")
    max_tokens: int = Field(1500, ge=16, le=32000, description="completion tokens over the whole run")
    max_seconds: float = Field(120, gt=0, le=3600, description="wall time of the run")
    stream: bool = Field(False, description="send the trace as server-sent events")
    injection: InjectionConfig | bool | None = Field(
        None,
        description="guard.injection for tool outputs: one that looks like a prompt injection is replaced by a "
        "notice (mode block) or passed on (mode flag); true: the defaults (docs/security-guard.md)",
    )


class DecideRequest(Strict):
    reason: str = Field("", description="why, kept with the decision")
    stream: bool = Field(False, description="send the resumed trace as server-sent events")


class AssistantMessage(Strict):
    message: str = Field(
        min_length=1,
        max_length=MAX_MESSAGE,
        description="the customer's message",
        examples=["Where is my order A1002?"],
    )
    thread_id: str | None = Field(None, description="the conversation; a new one when omitted")


class TicketAnswer(Strict):
    answer: str = Field(min_length=1, max_length=10000, description="the human agent's answer")
    close: bool = Field(False, description="close the ticket (no further answers)")


async def _respond(request: Request, events: AsyncIterator[dict[str, Any]], stream: bool):
    first = await events.__anext__()  # bad thread / state -> a normal 4xx here
    if not stream:
        res = await collect(_chain(first, events))
        return res.to_dict()

    async def gen():
        yield {"event": first["type"], "data": json.dumps(first, default=str)}
        try:
            async for ev in events:
                if await request.is_disconnected():
                    break
                yield {"event": ev["type"], "data": json.dumps(ev, default=str)}
        except LuodiError as e:
            yield {"event": "error", "data": json.dumps({"error": {"message": e.message, "code": e.code}})}
        finally:
            await events.aclose()

    return EventSourceResponse(gen(), ping=15, sep="\n")


async def _chain(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for ev in rest:
        yield ev


# ------------------------------------------------------------------------------------------ agents


@agents.post("/runs")
async def run_agent(body: RunRequest, request: Request):
    """Run an agent on a goal: the final result, or its trace as server-sent events with `stream: true`."""
    cfg = {"names": body.tools, "kb": body.kb, "approval": body.approval}
    if body.injection:  # stored with the thread's tools, so a resumed run keeps its guard
        cfg["injection"] = True if body.injection is True else body.injection.model_dump(mode="json")
    limits = Limits(
        max_steps=body.max_steps,
        max_tool_calls=body.max_tool_calls,
        max_tokens=body.max_tokens,
        max_seconds=body.max_seconds,
    )
    engine = await run_in_threadpool(ensure_engine, get_state(request))
    agent = await run_in_threadpool(
        lambda: agent_from_config(cfg, engine=engine, limits=limits, memory_scope=body.memory)
    )
    return await _respond(request, agent.stream(body.goal, body.thread_id), body.stream)


@agents.get("/threads/{thread_id}")
async def get_agent_thread(thread_id: str) -> dict[str, Any]:
    return await run_in_threadpool(memory.get_thread, thread_id)


@agents.get("/approvals")
async def list_pending(
    status: Literal["pending", "approved", "rejected", "all"] = "pending", thread_id: str | None = None
) -> dict[str, Any]:
    rows = await run_in_threadpool(approvals.list_approvals, None if status == "all" else status, thread_id)
    return {"object": "list", "data": rows}


async def _decide(approval_id: Id, ok: bool, body: DecideRequest, request: Request):
    # the engine first: a server without one answers 503 and the approval stays pending
    engine = await run_in_threadpool(ensure_engine, get_state(request))
    resumed = await run_in_threadpool(
        lambda: resume_after_approval(approval_id, ok, actor="http", reason=body.reason, engine=engine)
    )
    return await _respond(request, resumed.events, body.stream)


@agents.post("/approvals/{approval_id}/approve")
async def approve(approval_id: Id, request: Request, body: DecideRequest | None = None):
    """Approve a paused tool call; the agent runs it and continues."""
    return await _decide(approval_id, True, body or DecideRequest(), request)


@agents.post("/approvals/{approval_id}/reject")
async def reject(approval_id: Id, request: Request, body: DecideRequest | None = None):
    """Reject a paused tool call; the agent continues without it."""
    return await _decide(approval_id, False, body or DecideRequest(), request)


# ------------------------------------------------------------------------------------------ assistants


@assistants.post("/{app}/threads", status_code=201)
async def start_conversation(app: str) -> dict[str, Any]:
    """Start a conversation; returns its id and the greeting."""

    def start() -> dict[str, Any]:
        a = load_assistant(app)
        tid = a.start()
        return {"thread_id": tid, "messages": memory.get_thread(tid)["messages"]}

    return await run_in_threadpool(start)


@assistants.post("/{app}/messages")
async def send_message(app: str, body: AssistantMessage) -> dict[str, Any]:
    """One customer turn: the reply with its intent, confidence, action, slots and any ticket."""

    def respond() -> dict[str, Any]:
        return load_assistant(app).respond(body.message, body.thread_id).to_dict()

    return await run_in_threadpool(respond)


@assistants.get("/threads/{thread_id}/messages")
async def poll_messages(thread_id: str, after: AfterId = 0) -> dict[str, Any]:
    """Messages after id `after` — how the customer's page sees a human agent's answer."""

    def poll() -> dict[str, Any]:
        memory.get_thread(thread_id)  # 404 for unknown threads
        return {"object": "list", "data": memory.messages_after(thread_id, after)}

    return await run_in_threadpool(poll)


# ------------------------------------------------------------------------------------------ tickets


@tickets.get("")
async def tickets_by_status(
    status: Literal["open", "answered", "closed", "all"] = "open", limit: Limit = 100
) -> dict[str, Any]:
    rows = await run_in_threadpool(list_tickets, None if status == "all" else status, limit)
    return {"object": "list", "data": rows}


@tickets.get("/{ticket_id}")
async def ticket(ticket_id: Id) -> dict[str, Any]:
    return await run_in_threadpool(get_ticket, ticket_id)


@tickets.post("/{ticket_id}/answer")
async def answer(ticket_id: Id, body: TicketAnswer, key: KeyInfo | None = Depends(require_key)) -> dict[str, Any]:
    """A human agent answers; the answer is appended to the customer's conversation (audited by key name)."""
    actor = f"key:{key.name or key.id}" if key else "human_agent"
    return await run_in_threadpool(answer_ticket, ticket_id, body.answer, actor, body.close)
