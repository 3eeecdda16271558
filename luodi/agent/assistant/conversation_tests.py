"""Conversation tests (`luodi assistant test suite.yaml`): scripted customer turns with the expected intent,
action and reply words; played against an assistant, they give per-turn intent accuracy, the turn pass rate
and the task success rate (a conversation passes when all its turns do)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from luodi.agent import memory
from luodi.agent.assistant.dialogue import Assistant, Turn, load_assistant
from luodi.agent.assistant.tickets import answer_ticket, list_tickets
from luodi.agent.suites import load_yaml_suite
from luodi.config import Strict


class ConvTurn(Strict):
    user: str = Field(description="what the customer says")
    intent: str | None = Field(None, description="expected intent (for per-turn intent accuracy)")
    expect: list[str] = Field(default_factory=list, description="substrings the reply must contain (any case)")
    expect_any: list[str] = Field(default_factory=list, description="the reply contains at least one of these")
    action: str | None = Field(None, description="expected action (ask, lookup, faq, clarify, handoff, ...)")
    human_reply: str | None = Field(None, description="after this turn, a human agent answers the open ticket")


class ConvCase(Strict):
    name: str = Field(description="shown in the report")
    turns: list[ConvTurn] = Field(description="the customer's messages, in order")
    expect_ticket: bool | None = Field(None, description="the conversation must (not) end with a ticket")


class ConvSuite(Strict):
    app: str = Field("customer-service", description="the assistant app: a name or a YAML path")
    conversations: list[ConvCase] = Field(description="the conversations to play")


def load_tests(path: str | Path) -> ConvSuite:
    return load_yaml_suite(path, ConvSuite, "test file")


def run_tests(
    path: str | Path, app: str | None = None, progress: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Play every conversation; report per-turn intent accuracy, turn pass rate and task success rate."""
    suite = load_tests(path)
    ref = app or suite.app
    if ref != "customer-service" and not Path(ref).is_absolute() and (Path(path).parent / ref).exists():
        ref = str(Path(path).parent / ref)  # an app YAML beside the suite
    a = load_assistant(ref)
    convs = []
    for conv in suite.conversations:
        convs.append(_play(a, conv))
        if progress:
            progress(convs[-1])
    turns = [t for c in convs for t in c["turns"]]
    judged = [  # (expected, got) for the turns that name an intent
        (want.intent, got["intent"])
        for case, c in zip(suite.conversations, convs, strict=True)
        for want, got in zip(case.turns, c["turns"], strict=True)
        if want.intent is not None
    ]
    return {
        "app": a.name,
        "conversations": convs,
        "task_success_rate": sum(c["passed"] for c in convs) / max(1, len(convs)),
        "intent_accuracy": sum(want == got for want, got in judged) / max(1, len(judged)),
        "intent_turns": len(judged),
        "turn_pass_rate": sum(not t["problems"] for t in turns) / max(1, len(turns)),
        "turns": len(turns),
    }


def _play(a: Assistant, conv: ConvCase) -> dict[str, Any]:
    """One conversation in a new thread: each turn with the problems found ([] when it passed)."""
    tid = a.start()
    turns = []
    for t in conv.turns:
        r = a.respond(t.user, tid)
        problems = _check(r, t)
        if t.human_reply:
            problems += _human_answers(tid, t.human_reply)
        turns.append(
            {
                "user": t.user,
                "reply": r.reply,
                "intent": r.intent,
                "confidence": round(r.confidence, 3),
                "action": r.action,
                "problems": problems,
            }
        )
    if conv.expect_ticket is not None:
        has = bool(memory.get_thread(tid)["state"].get("ticket"))
        if has != conv.expect_ticket:
            turns[-1]["problems"].append(f"ticket expected={conv.expect_ticket}, got {has}")
    passed = not any(t["problems"] for t in turns)
    return {"name": conv.name, "passed": passed, "thread_id": tid, "turns": turns}


def _check(r: Turn, t: ConvTurn) -> list[str]:
    low = r.reply.lower()
    problems = [f"reply lacks {e!r}" for e in t.expect if e.lower() not in low]
    if t.expect_any and not any(e.lower() in low for e in t.expect_any):
        problems.append(f"reply has none of {t.expect_any}")
    if t.action and r.action != t.action:
        problems.append(f"action {r.action!r} != {t.action!r}")
    if t.intent is not None and r.intent != t.intent:
        problems.append(f"intent {r.intent!r} != {t.intent!r}")
    return problems


def _human_answers(tid: str, reply: str) -> list[str]:
    """A human agent answers the conversation's open ticket; the answer must reach the conversation."""
    tickets = [x for x in list_tickets("open") if x["thread_id"] == tid]
    if not tickets:
        return ["no open ticket for the human to answer"]
    answer_ticket(tickets[0]["id"], reply)
    msgs = memory.get_thread(tid)["messages"]
    if not any(m["role"] == "human_agent" and m["content"] == reply for m in msgs):
        return ["the human's answer did not reach the conversation"]
    return []
