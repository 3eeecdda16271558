"""Tool calling: schema derivation, constrained-decoding schemas, parsing/validation, and tool safety."""

from __future__ import annotations

import json
import sqlite3
from typing import Literal

import pytest

from luodi.agent.builtin_tools import builtin_tools, kb_search_tool
from luodi.agent.calculator import calculator, safe_eval
from luodi.agent.sql_tool import run_select, sql_tool
from luodi.agent.tools import ToolError, tool
from luodi.errors import BadRequest
from luodi.llm.toolcalls import (
    ToolCallError,
    call_schema,
    messages_for_model,
    normalize_tool_choice,
    normalize_tools,
    render_tools_prompt,
)
from luodi.llm.toolparse import parse_output

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city"],
        },
    },
}


@tool
def book_room(
    room: str, people: int, floor: Literal["ground", "first"] = "ground", notes: str | None = None
) -> str:
    """Book a meeting room.

    Args:
        room: the room's name
        people: how many people come
        floor: which floor
    """
    return f"booked {room} for {people}"


def test_tool_schema_from_type_hints_and_docstring():
    spec = book_room.spec()
    p = spec.parameters
    assert spec.name == "book_room" and spec.description == "Book a meeting room."
    assert p["required"] == ["room", "people"]
    assert p["properties"]["people"]["type"] == "integer"
    assert p["properties"]["room"]["description"] == "the room's name"
    assert p["properties"]["floor"]["enum"] == ["ground", "first"]
    assert p["additionalProperties"] is False
    assert "title" not in json.dumps(p)  # kept small for prompts
    assert book_room.invoke({"room": "Lotus", "people": 3}) == "booked Lotus for 3"
    with pytest.raises(ToolError, match="people"):
        book_room.invoke({"room": "Lotus", "people": "many"})
    with pytest.raises(ToolError, match="(?i)extra"):
        book_room.invoke({"room": "Lotus", "people": 2, "color": "red"})


def test_tool_needs_docstring():
    def nodoc(x: int) -> int:
        return x

    with pytest.raises(BadRequest, match="docstring"):
        tool(nodoc)


def test_normalize_tools_errors_name_the_field():
    assert normalize_tools([WEATHER])[0].name == "get_weather"
    with pytest.raises(BadRequest) as e:
        normalize_tools([{"type": "function", "function": {"name": "bad name!"}}])
    assert e.value.param == "tools[0].function.name"
    with pytest.raises(BadRequest) as e:
        normalize_tools([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}])
    assert e.value.param == "tools[0].function.parameters"
    with pytest.raises(BadRequest, match="twice"):
        normalize_tools([WEATHER, WEATHER])
    with pytest.raises(BadRequest, match="not among the tools"):
        normalize_tool_choice({"type": "function", "function": {"name": "nope"}}, normalize_tools([WEATHER]))
    assert normalize_tool_choice(None, []) == "none"
    assert normalize_tool_choice(None, normalize_tools([WEATHER])) == "auto"


def test_call_schema_compiles_to_a_grammar_for_each_choice():
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    specs = normalize_tools([WEATHER, calculator.to_openai()])
    auto = call_schema(specs, "auto")
    assert len(auto["anyOf"]) == 3  # two tools + a content reply
    assert call_schema(specs, "none") is None
    assert "content" not in json.dumps(call_schema(specs, "required"))
    forced = call_schema(specs, "calculator")
    assert forced["properties"]["name"] == {"const": "calculator"}
    with_plan = call_schema(
        specs, "auto", extra_properties={"plan": {"type": "array", "items": {"type": "string"}}}
    )
    assert list(with_plan["anyOf"][0]["properties"])[0] == "plan"
    for schema in (auto, call_schema(specs, "required"), forced, with_plan):
        assert "root ::=" in json_schema_to_gbnf(json.dumps(schema))


def test_parse_output_canonical_and_variants():
    specs = normalize_tools([WEATHER])
    out = parse_output('{"name": "get_weather", "arguments": {"city": "Paris"}}', specs)
    assert out.tool_calls[0].name == "get_weather" and out.tool_calls[0].arguments == {"city": "Paris"}
    oa = out.tool_calls[0].to_openai()
    assert oa["type"] == "function" and json.loads(oa["function"]["arguments"]) == {"city": "Paris"}
    assert oa["id"].startswith("call_")
    # fences, <tool_call> tags, arguments as a string, OpenAI-style nesting, lists of calls
    variants = [
        'Sure!\n```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```',
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}</tool_call>',
        '{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}',
        '[{"name": "get_weather", "arguments": {"city": "Oslo"}}]',
    ]
    for v in variants:
        assert parse_output(v, specs).tool_calls[0].arguments == {"city": "Oslo"}, v
    assert parse_output('{"content": "Hello"}', specs).content == "Hello"
    assert parse_output("Just prose.", specs).content == "Just prose."  # auto: plain text is a reply


def test_parse_output_errors_give_feedback_for_the_model():
    specs = normalize_tools([WEATHER])
    with pytest.raises(ToolCallError) as e:
        parse_output('{"name": "get_wether", "arguments": {"city": "Paris"}}', specs)
    assert "Did you mean 'get_weather'" in e.value.feedback
    with pytest.raises(ToolCallError) as e:
        parse_output('{"name": "get_weather", "arguments": {"city": 3, "unit": "k"}}', specs)
    assert "'city'" in e.value.feedback and "'unit'" in e.value.feedback and "City name" in e.value.feedback
    with pytest.raises(ToolCallError) as e:
        parse_output('{"name": "get_weather", "arguments": {}}', specs)
    assert "'city' is a required property" in e.value.feedback
    with pytest.raises(ToolCallError, match="required"):
        parse_output('{"content": "hi"}', specs, "required")
    with pytest.raises(ToolCallError, match="not JSON"):
        parse_output("no json here", specs, "required")
    assert e.value.status == 400


def test_prompt_and_message_conversion():
    specs = normalize_tools([WEATHER])
    text = render_tools_prompt(specs, "auto")
    assert "get_weather" in text and "city (string) - City name" in text and '"content"' in text
    msgs = messages_for_model(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
        ],
        specs,
    )
    assert (
        msgs[0]["role"] == "system"
        and msgs[0]["content"].startswith("Be brief.")
        and "get_weather" in msgs[0]["content"]
    )
    assert json.loads(msgs[2]["content"]) == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert msgs[3] == {"role": "user", "content": "Result of get_weather: 18C, sunny"}


# ------------------------------------------------------------------------------------------ calculator


@pytest.mark.parametrize(
    "expr,value",
    [
        ("17 * 23", 391),
        ("(45 - 12) * 3", 99),
        ("2^12", 4096),
        ("sqrt(144)", 12),
        ("15% of 80", 12),
        ("1,200 / 3", 400),
        ("-3 + 10 // 4", -1),
        ("round(2/3, 3)", 0.667),
        ("2 * pi", 6.283185307179586),
    ],
)
def test_calculator_computes(expr, value):
    assert safe_eval(expr) == pytest.approx(value)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('echo hi')",
        "open('/etc/passwd').read()",
        "(1).__class__",
        "x + 1",
        "[1, 2, 3]",
        "lambda: 1",
        "9 ** 9 ** 9",
        "10 ** 5000",
        "1 / 0",
        "eval('1')",
    ],
)
def test_calculator_refuses_anything_but_arithmetic(expr):
    with pytest.raises(ToolError):
        safe_eval(expr)


# ------------------------------------------------------------------------------------------ SQL


@pytest.fixture()
def bank_db(tmp_path):
    from luodi.agent.assistant import build_demo_db

    return build_demo_db(tmp_path / "bank.db")


def test_sql_reads(bank_db):
    r = run_select(bank_db, "SELECT status FROM orders WHERE id = 'A1002';")
    assert r["rows"] == [["shipped"]]
    t = sql_tool(bank_db)
    assert "orders(id text" in t.description
    assert "Shanghai" in t.invoke({"query": "SELECT city FROM customers WHERE id = 'C002'"})
    assert t.example and "SELECT" in t.example["arguments"]["query"]


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM orders",
        "UPDATE accounts SET balance = 1e9",
        "INSERT INTO customers VALUES ('X', 'x', 'x', 'x', 'x')",
        "DROP TABLE orders",
        "SELECT 1; DELETE FROM orders",
        "WITH x AS (SELECT 1) DELETE FROM orders",
        "ATTACH DATABASE '/tmp/evil.db' AS evil",
        "PRAGMA writable_schema = 1",
        "SELECT load_extension('x')",
    ],
)
def test_sql_writes_are_refused_and_nothing_changes(bank_db, query):
    before = sqlite3.connect(bank_db).execute("SELECT COUNT(*), SUM(balance) FROM accounts").fetchone()
    n_orders = sqlite3.connect(bank_db).execute("SELECT COUNT(*) FROM orders").fetchone()
    with pytest.raises(ToolError):
        run_select(bank_db, query)
    conn = sqlite3.connect(bank_db)
    assert conn.execute("SELECT COUNT(*), SUM(balance) FROM accounts").fetchone() == before
    assert conn.execute("SELECT COUNT(*) FROM orders").fetchone() == n_orders


def test_sql_runaway_query_is_stopped(bank_db):
    q = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    with pytest.raises(ToolError, match="too expensive"):
        run_select(bank_db, q)


def test_builtin_tools_by_name_and_errors(bank_db):
    tools = builtin_tools(["calculator", "sql", "current_time"], db=bank_db, approval=["sql"])
    assert [t.name for t in tools] == ["calculator", "sql", "current_time"]
    assert [t.requires_approval for t in tools] == [False, True, False]
    with pytest.raises(BadRequest, match="unknown tool 'shell'"):
        builtin_tools(["shell"])
    with pytest.raises(ToolError, match="timezone"):
        tools[2].invoke({"timezone": "Mars/Olympus"})


def test_kb_search_finds_the_faq_answer():
    text = kb_search_tool("bank-faq").invoke({"query": "my card was stolen"})
    assert "Block the card" in text
