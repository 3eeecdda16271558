"""The customer-service assistant: conversation tests, config validation, tickets, and HTTP hand-off."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from luodi.agent import memory
from luodi.agent.assistant import (
    DEMO_APP,
    answer_ticket,
    ensure_demo,
    list_tickets,
    load_assistant,
    run_tests,
)
from luodi.config import AppConfig, load_app_config
from luodi.errors import BadRequest, ConfigError, NotFound

ROOT = Path(__file__).resolve().parents[1]


def test_example_app_is_the_shipped_demo():
    assert (ROOT / "examples" / "customer-service.yaml").read_text() == DEMO_APP.read_text()


def test_conversation_suite_passes():
    r = run_tests(ROOT / "examples" / "assistant-tests.yaml")
    failed = [(c["name"], [t["problems"] for t in c["turns"]]) for c in r["conversations"] if not c["passed"]]
    assert not failed, failed
    assert len(r["conversations"]) >= 15 and r["intent_turns"] >= 35
    assert r["intent_accuracy"] >= 0.95 and r["task_success_rate"] == 1.0


def test_paraphrases_not_in_the_examples():
    """Held-out phrasings: the nearest-centroid classifier must generalize beyond its example list."""
    a = load_assistant("customer-service")
    cases = {
        "has my card order shipped yet?": "order_status",
        "I'd like to see how much is left on my account": "account_balance",
        "put me through to a person please": "human",
        "hello hello": "greet",
        "ok forget about it": "cancel",
    }
    got = {text: a.respond(text).intent for text in cases}
    right = sum(got[t] == want for t, want in cases.items())
    assert right >= 4, got


def test_thread_state_survives_a_new_assistant_instance():
    """The dialogue state lives in the store: another process (instance) continues the conversation."""
    from luodi.agent.assistant import Assistant

    a = load_assistant("customer-service")
    t1 = a.respond("where is my order?")
    assert t1.action == "ask"
    b = Assistant(load_app_config(DEMO_APP))
    t2 = b.respond("A1006", t1.thread_id)
    assert t2.action == "lookup" and "delivered" in t2.reply


def test_bad_input_is_a_clear_error():
    a = load_assistant("customer-service")
    with pytest.raises(BadRequest, match="message"):
        a.respond("   ")
    with pytest.raises(NotFound, match="not found") as e:
        a.respond("hi", thread_id="th_does_not_exist")
    assert e.value.status == 404


def _cfg(options: dict) -> AppConfig:
    return AppConfig(name="bad-assistant", task="assistant", options=options)


@pytest.mark.parametrize(
    "options,needle",
    [
        ({}, "intents"),
        (
            {"intents": {"items": {"x": {"action": "form:nope", "examples": ["a"]}}}},
            "form 'nope' is not defined",
        ),
        ({"intents": {"items": {"x": {"action": "dance", "examples": ["a"]}}}}, "form:<name>"),
        ({"intents": {"items": {"x": {"action": "reply", "examples": ["a"]}}}}, "needs a 'reply'"),
        ({"intents": {"items": {"x": {"action": "faq"}}}}, "give 'examples'"),
        (
            {"intents": {"items": {"x": {"action": "faq", "examples": ["a"]}}}, "colour": "red"},
            "unknown key 'colour'",
        ),
        (
            {
                "intents": {"items": {"x": {"action": "faq", "examples": ["a"]}}},
                "entities": {"e": {"regex": "("}},
            },
            "not a valid regular expression",
        ),
        ({"intents": {"threshold": 2, "items": {"x": {"action": "faq", "examples": ["a"]}}}}, "threshold"),
    ],
)
def test_config_errors_name_the_field(options, needle):
    from luodi.agent.assistant import Assistant

    with pytest.raises(ConfigError) as e:
        Assistant(_cfg(options))
    assert needle in e.value.message


def test_ensure_demo_builds_the_database_and_kb():
    info = ensure_demo()
    assert Path(info["db"]).exists()
    import sqlite3

    assert sqlite3.connect(info["db"]).execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 6
    if info.get("kb"):
        from luodi import rag

        hits = list(rag.search(info["kb"], "how long until my new card arrives", k=3))
        assert any("5 to 7 business days" in h.text for h in hits)


def test_ticket_answer_reaches_the_conversation():
    a = load_assistant("customer-service")
    t = a.respond("I want to talk to a human")
    assert t.action == "handoff" and t.ticket_id
    assert any(x["id"] == t.ticket_id for x in list_tickets("open"))
    answer_ticket(t.ticket_id, "Hello, Sam here. How can I help?")
    msgs = memory.get_thread(t.thread_id)["messages"]
    assert msgs[-1]["role"] == "human_agent" and msgs[-1]["content"] == "Hello, Sam here. How can I help?"
    with pytest.raises(BadRequest, match="answer"):
        answer_ticket(t.ticket_id, " ")


def test_handoff_round_trip_over_http(live_server):
    """Customer -> bot -> hand-off; a human answers via /v1/tickets; the customer's poll sees it."""
    h = {"Authorization": f"Bearer {live_server.key}"}
    with httpx.Client(base_url=live_server.url, headers=h, timeout=120) as c:
        start = c.post("/v1/assistants/customer-service/threads")
        assert start.status_code == 201, start.text
        tid = start.json()["thread_id"]
        r = c.post(
            "/v1/assistants/customer-service/messages",
            json={"message": "Where is order A1002?", "thread_id": tid},
        )
        assert r.status_code == 200 and "shipped" in r.json()["reply"]
        r = c.post(
            "/v1/assistants/customer-service/messages",
            json={"message": "I need a real person", "thread_id": tid},
        )
        body = r.json()
        assert body["action"] == "handoff" and body["ticket_id"]
        last_id = max(m["id"] for m in c.get(f"/v1/assistants/threads/{tid}/messages").json()["data"])

        open_tickets = c.get("/v1/tickets", params={"status": "open"}).json()["data"]
        ticket = next(t for t in open_tickets if t["thread_id"] == tid)
        assert "I need a real person" in ticket["body"]  # the transcript travels with the ticket
        ans = c.post(f"/v1/tickets/{ticket['id']}/answer", json={"answer": "Hi, this is Mia. Checking now."})
        assert ans.status_code == 200 and ans.json()["status"] == "answered"
        assert c.get(f"/v1/tickets/{ticket['id']}").json()["answer"] == "Hi, this is Mia. Checking now."

        new = c.get(f"/v1/assistants/threads/{tid}/messages", params={"after": last_id}).json()["data"]
        assert [(m["role"], m["content"]) for m in new] == [("human_agent", "Hi, this is Mia. Checking now.")]

        # errors are 4xx with the field named, never 500
        assert c.post("/v1/tickets/999999/answer", json={"answer": "x"}).status_code == 404
        bad = c.post("/v1/assistants/customer-service/messages", json={"message": ""})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "message"
        assert c.post("/v1/assistants/no-such-app/messages", json={"message": "hi"}).status_code == 404
        assert c.get("/v1/assistants/threads/nope/messages").status_code == 404
        weird = c.get("/v1/tickets", params={"status": "weird"})
        assert weird.status_code == 422 and weird.json()["error"]["param"] == "status"
        assert httpx.get(f"{live_server.url}/v1/tickets", timeout=30).status_code == 401  # key required
    time.sleep(0)  # keep the server fixture alive until here


def test_suite_files_are_read_by_one_loader_naming_file_and_key(tmp_path):
    """Conversation tests and agent task suites: a missing file, bad YAML or a wrong key is a ConfigError."""
    from luodi.agent.evals import load_suite

    with pytest.raises(ConfigError, match="test file '.*nope.yaml' not found"):
        run_tests(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("conversations:\n  - name: x\n    turns: [{user: hi, colour: red}]\n")
    with pytest.raises(ConfigError, match="unknown key 'conversations.0.turns.0.colour'"):
        run_tests(bad)
    with pytest.raises(ConfigError, match="task file '.*nope.yaml' not found"):
        load_suite(tmp_path / "nope.yaml")
    bad.write_text("tasks: [{id: a, goal: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(bad)
    bad.write_text("tasks: [{id: a, goal: g}, {id: a, goal: h}]\n")
    with pytest.raises(ConfigError, match="repeated: a"):
        load_suite(bad)
