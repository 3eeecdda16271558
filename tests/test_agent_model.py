"""Real-model agent runs: the bundled SmolLM2-135M (greedy, llama.cpp) drives the loop end to end.

A 135M model is weak at reasoning; what must hold regardless: constrained decoding gives valid,
schema-conforming calls, routed goals call the right tool, tool results reach the model, and every run ends
with an answer and a stop reason (see docs/agents.md for the measured task success rate).
"""

from __future__ import annotations

import json

import httpx
import pytest

from luodi.agent.builtin_tools import builtin_tools
from luodi.agent.runtime import STOP_REASONS, Agent, Limits

LIMITS = Limits(max_steps=3, max_tool_calls=2, max_seconds=600, step_tokens=96)


@pytest.fixture(scope="module")
def demo(luodi_home):
    from luodi.agent.assistant import ensure_demo

    return ensure_demo(kb=False)


def _check_run(res, tool: str):
    assert res.stop_reason in STOP_REASONS and res.stop_reason != "error"
    assert res.answer.strip()
    calls = [e for e in res.events if e["type"] == "tool_call"]
    assert calls and calls[0]["name"] == tool  # the router made the first turn call the relevant tool
    models = [e for e in res.events if e["type"] == "model"]
    first = json.loads(models[0]["text"])  # grammar-constrained: always complete, valid JSON
    assert first["name"] == tool and isinstance(first["plan"], list)
    obs = [e for e in res.events if e["type"] == "observation"]
    assert obs and obs[0]["name"] == tool
    return calls[0]["arguments"], obs[0]["text"]


def test_bundled_model_calls_the_calculator():
    res = Agent(builtin_tools(["calculator"]), limits=LIMITS).run("What is 17 * 23?")
    args, obs = _check_run(res, "calculator")
    assert set(args) == {"expression"}
    assert not obs.startswith("Error") or "not allowed" in obs  # a computed value or a clear refusal


def test_bundled_model_queries_the_database(demo):
    res = Agent(builtin_tools(["sql"], db=demo["db"]), limits=LIMITS).run(
        "What is the status of order A1002?"
    )
    args, obs = _check_run(res, "sql")
    assert args["query"].strip().lower().startswith(("select", "with"))


def test_agent_over_http_streams_its_trace(live_server):
    h = {"Authorization": f"Bearer {live_server.key}"}
    body = {
        "goal": "What is 6 * 7?",
        "tools": ["calculator"],
        "max_steps": 2,
        "max_seconds": 600,
        "stream": True,
    }
    events = []
    with httpx.stream("POST", f"{live_server.url}/v1/agents/runs", json=body, headers=h, timeout=900) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event:"):
                events.append(line.split(":", 1)[1].strip())
    assert events[0] == "start" and events[-1] == "final"
    assert "tool_call" in events and "observation" in events
    tid_runs = httpx.post(
        f"{live_server.url}/v1/agents/runs", json={"goal": "", "tools": ["calculator"]}, headers=h, timeout=60
    )
    assert tid_runs.status_code == 422 and tid_runs.json()["error"]["param"] == "goal"
    bad = httpx.post(
        f"{live_server.url}/v1/agents/runs", json={"goal": "hi", "tools": ["rm_rf"]}, headers=h, timeout=60
    )
    assert bad.status_code == 400 and "unknown tool 'rm_rf'" in bad.text
