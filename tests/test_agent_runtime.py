"""The agent loop's control logic (limits, repeated calls, invalid output, approvals, threads, memory).

The model here is a scripted Engine (same interface as the llama.cpp one) so each rule is exercised
exactly; tests/test_agent_model.py runs the real bundled model.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from luodi.agent import approvals, memory
from luodi.agent.builtin_tools import builtin_tools
from luodi.agent.calculator import calculator
from luodi.agent.runtime import Agent, Limits, agent_from_config, collect, resume_after_approval
from luodi.agent.tools import tool
from luodi.engines.base import GenerationChunk
from luodi.errors import BadRequest
from luodi.llm import run_sync


class ScriptedEngine:
    """Answers each generate() with the next scripted text; records prompts and sampling params."""

    name = "scripted"
    model_id = "scripted"
    n_ctx = 4096

    def __init__(self, outputs, delay: float = 0.0):
        self.outputs = list(outputs)
        self.prompts: list[str] = []
        self.params = []
        self.delay = delay

    def tokenize(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    def chat_prompt(self, messages):
        return "\n".join(f"<{m['role']}> {m['content']}" for m in messages) + "\n<assistant>"

    async def _gen(self, text):
        if self.delay:
            await asyncio.sleep(self.delay)
        yield GenerationChunk(text=text, finish_reason="stop", prompt_tokens=10, completion_tokens=len(text.split()))

    def generate(self, prompt, params):
        self.prompts.append(prompt)
        self.params.append(params)
        text = self.outputs.pop(0) if self.outputs else '{"plan": ["answer"], "content": "fallback"}'
        return self._gen(text)

    def stats(self):
        return {"queue_depth": 0, "running": 0}

    def close(self):
        pass


def call(name, args, plan=("do it", "answer")):
    return json.dumps({"plan": list(plan), "name": name, "arguments": args})


def final(text, plan=("answer",)):
    return json.dumps({"plan": list(plan), "content": text})


def test_tool_call_then_answer_and_trace_is_stored():
    eng = ScriptedEngine(
        [call("calculator", {"expression": "17*23"}, ("compute 17*23", "answer")), final("17 * 23 = 391")]
    )
    res = Agent([calculator], engine=eng).run("What is 17 * 23?")
    assert res.stop_reason == "final_answer" and res.answer == "17 * 23 = 391"
    assert res.steps == 2 and res.tool_calls == 1 and res.invalid_calls == 0 and res.tools_used == ["calculator"]
    assert "Result of calculator: 391" in eng.prompts[1]  # the observation reached the model
    assert eng.params[0].temperature == 0.0
    # "17 * 23" is arithmetic: the router makes the first turn call a tool (no "content" alternative)
    assert "content" not in json.dumps(eng.params[0].json_schema)
    assert "content" in json.dumps(eng.params[1].json_schema)
    assert [t["status"] for t in res.plan["tasks"]] == ["done", "done"]
    types = [e["type"] for e in res.events]
    assert types[:4] == ["start", "route", "model", "plan"] and "tool_call" in types and types[-1] == "final"
    th = memory.get_thread(res.thread_id)
    assert th["state"]["status"] == "done" and th["state"]["stop_reason"] == "final_answer"
    assert [m["role"] for m in th["messages"]] == ["user", "assistant", "tool", "assistant", "assistant"]


def test_plan_is_revised_as_it_goes():
    eng = ScriptedEngine(
        [
            call("calculator", {"expression": "2+2"}, ("add", "multiply", "answer")),
            call("calculator", {"expression": "4*3"}, ("multiply", "check units", "answer")),
            final("12", ("answer",)),
        ]
    )
    res = Agent([calculator], engine=eng).run("Add 2 and 2, then multiply by 3")
    plans = [e for e in res.events if e["type"] == "plan"]
    assert len(plans) == 3 and plans[-1]["revisions"] == 2
    assert {t["text"] for t in res.plan["tasks"]} == {"add", "multiply", "check units", "answer"}


def test_repeated_identical_calls_are_detected_and_stopped():
    same = call("calculator", {"expression": "1+1"})
    eng = ScriptedEngine([same, same, same, same, final("2")])
    res = Agent([calculator], engine=eng, limits=Limits(max_steps=10, max_repeats=1)).run("1+1?")
    assert res.stop_reason == "repeated_call"
    assert res.tool_calls == 1  # the tool ran once; the repeat got the cached result as a warning
    assert any(e.get("repeat") for e in res.events if e["type"] == "observation")
    assert res.answer  # best effort: one forced final answer
    assert isinstance(res.answer, str)


@pytest.mark.parametrize(
    "limits,reason",
    [
        (Limits(max_steps=2), "max_steps"),
        (Limits(max_steps=10, max_tool_calls=2), "max_tool_calls"),
        (Limits(max_steps=10, max_tokens=12), "max_tokens"),
    ],
)
def test_limits_end_with_a_best_effort_answer_never_an_exception(limits, reason):
    outs = [call("calculator", {"expression": f"{i}+1"}) for i in range(10)]
    res = Agent([calculator], engine=ScriptedEngine(outs), limits=limits).run("count up")
    assert res.stop_reason == reason
    assert res.answer
    assert res.steps <= limits.max_steps


def test_wall_time_limit():
    eng = ScriptedEngine([call("calculator", {"expression": "1+1"})] * 5, delay=0.6)
    res = Agent([calculator], engine=eng, limits=Limits(max_seconds=1.0, max_steps=10)).run("slow")
    assert res.stop_reason == "timeout"
    assert "stopped: timeout" in res.answer


def test_invalid_output_goes_back_as_an_observation():
    eng = ScriptedEngine(
        [
            '{"plan": ["x"], "name": "calculatr", "arguments": {"expression": "1"}}',
            '{"plan": ["x"], "name": "calculator", "arguments": {"expr": "1"}}',
            call("calculator", {"expression": "6*7"}),
            final("42"),
        ]
    )
    res = Agent([calculator], engine=eng).run("6*7")
    assert res.stop_reason == "final_answer" and res.answer == "42"
    assert res.invalid_calls == 2 and res.steps == 4
    assert "Did you mean 'calculator'" in eng.prompts[1]
    assert "'expression' is a required property" in eng.prompts[2]


def test_tool_errors_are_observations():
    eng = ScriptedEngine([call("calculator", {"expression": "import os"}), final("cannot compute that")])
    res = Agent([calculator], engine=eng).run("run import os")
    obs = [e for e in res.events if e["type"] == "observation"][0]
    assert obs["text"].startswith("Error:")
    assert res.stop_reason == "final_answer"


def test_no_tools_agent_answers_directly():
    eng = ScriptedEngine([final("Bonjour")])
    res = Agent([], engine=eng).run("Say hello in French")
    assert res.answer == "Bonjour" and res.tool_calls == 0
    assert eng.params[0].json_schema["required"] == ["plan", "content"]


def test_thread_resume_keeps_history():
    eng = ScriptedEngine([final("Nice to meet you, Ada."), final("Your name is Ada.")])
    agent = Agent([calculator], engine=eng)
    first = agent.run("My name is Ada.")
    second = agent.run("What is my name?", thread_id=first.thread_id)
    assert second.thread_id == first.thread_id
    assert "My name is Ada." in eng.prompts[1] and "Nice to meet you, Ada." in eng.prompts[1]
    msgs = memory.get_thread(first.thread_id)["messages"]
    assert [m["content"] for m in msgs if m["role"] == "user"] == ["My name is Ada.", "What is my name?"]


def test_empty_goal_is_a_clear_error():
    with pytest.raises(BadRequest, match="goal"):
        Agent([calculator], engine=ScriptedEngine([])).run("  ")


@tool(requires_approval=True)
def refund(order_id: str, amount: float) -> str:
    """Refund money for an order (a side effect: needs a human's approval).

    Args:
        order_id: the order
        amount: EUR to refund
    """
    return f"refunded {amount} EUR for {order_id}"


def test_approval_pause_approve_resume():
    eng = ScriptedEngine([call("refund", {"order_id": "A1004", "amount": 10}), final("Refund done.")])
    agent = Agent([refund, calculator], engine=eng)
    res = agent.run("Refund order A1004 (10 EUR)")
    assert res.stop_reason == "approval_required" and res.approval_id
    pending = approvals.list_approvals("pending", res.thread_id)
    assert pending[0]["tool"] == "refund" and pending[0]["args"] == {"order_id": "A1004", "amount": 10}
    assert memory.get_thread(res.thread_id)["state"]["status"] == "paused"
    with pytest.raises(BadRequest, match="still pending"):
        agent.resume(res.thread_id)
    with pytest.raises(BadRequest, match="waits for approval"):
        agent.run("something else", thread_id=res.thread_id)
    approvals.decide(res.approval_id, True)
    with pytest.raises(BadRequest, match="already approved"):
        approvals.decide(res.approval_id, False)
    done = agent.resume(res.thread_id)
    assert done.stop_reason == "final_answer" and done.answer == "Refund done."
    obs = [e for e in done.events if e["type"] == "observation"][0]
    assert obs["text"] == "refunded 10.0 EUR for A1004"
    assert "Result of refund: refunded 10.0 EUR" in eng.prompts[-1]


def test_approval_reject_resume():
    eng = ScriptedEngine([call("refund", {"order_id": "A1001", "amount": 5}), final("I did not refund.")])
    agent = Agent([refund], engine=eng)
    res = agent.run("Refund A1001")
    approvals.decide(res.approval_id, False, reason="not eligible")
    done = agent.resume(res.thread_id)
    assert done.stop_reason == "final_answer"
    assert "rejected" in [e for e in done.events if e["type"] == "observation"][0]["text"]


def test_ticket_tool_links_the_thread():
    from luodi.agent.assistant import get_ticket

    eng = ScriptedEngine(
        [
            call("create_ticket", {"subject": "Card stuck", "details": "ATM kept card K501"}),
            final("A human will answer."),
        ]
    )
    res = Agent(builtin_tools(["create_ticket"]), engine=eng).run("The ATM ate my card, get me a human")
    obs = [e for e in res.events if e["type"] == "observation"][0]["text"]
    tid = int(obs.split("#")[1].split()[0])
    assert get_ticket(tid)["thread_id"] == res.thread_id


def test_long_term_memory_recall_reaches_the_prompt():
    scope = "test-memory"
    mem = memory.LongTermMemory(scope)
    mem.forget()
    mem.add("The customer's favourite branch is in Lyon.")
    mem.add("Quarterly report is due on March 31.")
    assert mem.search("Which branch does the customer like?", k=1)[0].text.startswith("The customer's favourite")
    mem.path.unlink()  # the FAISS file is a cache: rebuilt from the table
    assert mem.search("When is the quarterly report due?", k=1)[0].text.startswith("Quarterly report")
    eng = ScriptedEngine([final("Lyon")])
    res = Agent([calculator], engine=eng, memory_scope=scope).run("Where is my favourite branch?")
    assert "favourite branch is in Lyon" in eng.prompts[0]
    assert any(e["type"] == "memory" for e in res.events)
    assert mem.count() == 3  # the run's answer was remembered
    mem.forget()


def test_router_requires_a_relevant_tool_only_when_the_goal_needs_it():
    eng = ScriptedEngine([final("Bonjour"), call("calculator", {"expression": "2+2"}), final("4")])
    agent = Agent([calculator], engine=eng)
    res = agent.run("Say hello in French")
    assert res.answer == "Bonjour" and not any(e["type"] == "route" for e in res.events)
    res = agent.run("What is 2 + 2?")
    assert [e for e in res.events if e["type"] == "route"][0]["tools"] == ["calculator"]
    off = Agent([calculator], engine=ScriptedEngine([final("4")]), route=False).run("What is 2 + 2?")
    assert off.answer == "4" and off.tool_calls == 0


def test_rambling_answer_cut_off_by_max_tokens_is_salvaged():
    eng = ScriptedEngine(['{"plan": ["answer"], "content": "Bonjour! Bonjour! Bonjour! Bon'])
    res = Agent([calculator], engine=eng).run("Say hello in French")
    assert res.stop_reason == "final_answer" and res.answer == "Bonjour!"
    assert res.invalid_calls == 1  # counted honestly as an invalid turn


def test_strict_route_answers_directly_when_no_tool_is_relevant():
    eng = ScriptedEngine([final("Bonjour")])
    res = Agent([calculator], engine=eng, route="strict").run("Say hello in French")
    assert res.answer == "Bonjour" and res.tool_calls == 0
    assert "name" not in json.dumps(eng.params[0].json_schema)  # the first turn could only answer


def _paused_calculator_run(eng: ScriptedEngine):
    agent = agent_from_config({"names": ["calculator"], "approval": ["calculator"], "route": False}, engine=eng)
    res = agent.run("What is 6 * 7?")
    assert res.stop_reason == "approval_required"
    return res


def test_resume_after_approval_rebuilds_the_agent_from_its_thread():
    """The one resume path the CLI and the HTTP route share: decide, rebuild the same tools, continue."""
    eng = ScriptedEngine([call("calculator", {"expression": "6*7"}), final("6 * 7 is 42.")])
    res = _paused_calculator_run(eng)
    resumed = resume_after_approval(res.approval_id, True, actor="test", engine=eng)
    assert resumed.approval["status"] == "approved" and resumed.approval["thread_id"] == res.thread_id
    assert [(t.name, t.requires_approval) for t in resumed.agent.tools] == [("calculator", True)]
    done = run_sync(collect(resumed.events))
    assert [e["type"] for e in done.events][:2] == ["resume", "observation"]
    assert done.events[1]["text"] == "42"
    assert done.stop_reason == "final_answer" and done.answer == "6 * 7 is 42."
    with pytest.raises(BadRequest, match="already approved"):
        resume_after_approval(res.approval_id, False, actor="test", engine=eng)


def test_http_approve_and_reject_resume_the_run():
    from fastapi.testclient import TestClient

    from luodi.serve.app import create_app
    from luodi.settings import get_settings

    eng = ScriptedEngine(
        [
            call("calculator", {"expression": "6*7"}),  # the two runs pause on their calls ...
            call("calculator", {"expression": "1+1"}),
            final("42."),  # ... then the approved one answers, then the rejected one
            final("No."),
        ]
    )
    app = create_app(get_settings().model_copy(update={"auth": "off"}), preload=False)
    app.state.luodi.engine = eng
    with TestClient(app) as c:
        approved, rejected = _paused_calculator_run(eng), _paused_calculator_run(eng)
        r = c.post(f"/v1/agents/approvals/{approved.approval_id}/approve", json={"reason": "fine"})
        assert r.status_code == 200 and r.json()["answer"] == "42." and r.json()["stop_reason"] == "final_answer"
        r = c.post(f"/v1/agents/approvals/{rejected.approval_id}/reject")
        assert r.status_code == 200 and r.json()["answer"] == "No."
        assert "rejected" in [e for e in r.json()["events"] if e["type"] == "observation"][0]["text"]
        r = c.post(f"/v1/agents/approvals/{approved.approval_id}/reject")
        assert r.status_code == 409 and r.json()["error"]["param"] == "approval_id"
        r = c.post(f"/v1/agents/approvals/{rejected.approval_id}/approve", json={"reason": "x", "colour": "red"})
        assert r.status_code == 422 and r.json()["error"]["param"] == "colour"
