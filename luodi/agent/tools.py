"""Agent tools: typed Python functions turned into OpenAI-format tools, and the built-in tools.

    @tool
    def add(a: int, b: int) -> int:
        '''Add two integers.

        Args:
            a: the first number
            b: the second number
        '''
        return a + b

    add.spec()           # ToolSpec with the JSON Schema derived from the type hints (pydantic)
    add.invoke({"a": 1, "b": 2})  # validated call -> "3"

Built-ins (`builtin_tools(names, ...)`): calculator (safe AST arithmetic), sql (one read-only SELECT on an
SQLite database), kb_search (a knowledge base), current_time, create_ticket (hand-off to a human).
"""

from __future__ import annotations

import ast
import contextvars
import inspect
import json
import math
import operator
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from luodi.agent.toolcalls import ToolSpec
from luodi.errors import BadRequest

# Who is running a tool right now (thread id, app): set by the runtime, read by tools like create_ticket.
RUN_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "luodi_agent_run", default=None
)

MAX_OBSERVATION = 1200  # characters of a tool result shown to the model


class ToolError(Exception):
    """A tool refused or failed; the message goes back to the model as the observation."""


@dataclass
class Tool:
    """A callable tool: `fn` plus its validated arguments model and flags."""

    name: str
    description: str
    fn: Callable[..., Any]
    args_model: type[BaseModel]
    requires_approval: bool = False
    # a worked example shown to the model as earlier turns: {goal, arguments, result, answer}
    example: dict[str, Any] | None = None
    # how relevant the tool is to a goal, in [0, 1] (the agent's router requires a call when high)
    relevance: Callable[[str], float] | None = None

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, _clean_schema(self.args_model.model_json_schema()))

    def to_openai(self) -> dict[str, Any]:
        return self.spec().to_openai()

    def invoke(self, arguments: dict[str, Any]) -> str:
        """Validate arguments, run the function, return its result as text (errors as ToolError)."""
        try:
            args = self.args_model.model_validate(arguments or {})
        except ValidationError as e:
            problems = "; ".join(
                f"'{'.'.join(map(str, x['loc'])) or '(root)'}': {x['msg']}" for x in e.errors()
            )
            raise ToolError(f"invalid arguments for {self.name}: {problems}") from e
        try:
            out = self.fn(**args.model_dump())
        except ToolError:
            raise
        except BadRequest as e:
            raise ToolError(e.message) from e
        except Exception as e:  # a tool failing is an observation, never a crash of the loop
            raise ToolError(f"{self.name} failed: {type(e).__name__}: {e}") from e
        return _as_text(out)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def _as_text(out: Any) -> str:
    if isinstance(out, str):
        text = out
    elif isinstance(out, float):
        text = f"{out:.10g}"
    else:
        try:
            text = json.dumps(out, ensure_ascii=False, default=str)
        except TypeError:
            text = str(out)
    return text if len(text) <= MAX_OBSERVATION else text[:MAX_OBSERVATION] + " …(truncated)"


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's 'title' noise so prompts and grammars stay small."""
    if isinstance(schema, dict):
        return {k: _clean_schema(v) for k, v in schema.items() if k != "title" or not isinstance(v, str)}
    if isinstance(schema, list):
        return [_clean_schema(v) for v in schema]
    return schema


def _doc_parts(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (description, {arg: description})."""
    doc = inspect.cleandoc(doc or "")
    m = re.search(r"^\s*(Args|Arguments|Parameters):\s*$", doc, re.M)
    if not m:
        return doc.strip(), {}
    desc, rest = doc[: m.start()].strip(), doc[m.end() :]
    args: dict[str, str] = {}
    current = None
    for line in rest.splitlines():
        am = re.match(r"^\s{0,8}(\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", line)
        if am:
            current = am.group(1)
            args[current] = am.group(3).strip()
        elif current and line.strip() and not re.match(r"^\s*(Returns|Raises|Yields):", line):
            args[current] += " " + line.strip()
        elif re.match(r"^\s*(Returns|Raises|Yields):", line):
            current = None
    return desc, args


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    example: dict[str, Any] | None = None,
) -> Any:
    """Decorator turning a typed function with a docstring into a Tool."""

    def wrap(f: Callable[..., Any]) -> Tool:
        desc, arg_docs = _doc_parts(f.__doc__ or "")
        if not (description or desc):
            raise BadRequest(
                f"tool '{f.__name__}' needs a docstring: the model reads it to decide when to call it"
            )
        hints = get_type_hints(f, include_extras=True)
        fields: dict[str, Any] = {}
        for pname, p in inspect.signature(f).parameters.items():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise BadRequest(f"tool '{f.__name__}': *args/**kwargs cannot be described to a model")
            ann = hints.get(pname, str)
            default = ... if p.default is p.empty else p.default
            fields[pname] = (ann, Field(default, description=arg_docs.get(pname)))
        model = create_model(f"{f.__name__}_args", __config__=ConfigDict(extra="forbid"), **fields)
        return Tool(name or f.__name__, (description or desc).strip(), f, model, requires_approval, example)

    return wrap(fn) if fn is not None else wrap


# ---------------------------------------------------------------------------------------- calculator

_BIN = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTS = {"pi": math.pi, "e": math.e}


def safe_eval(expression: str) -> float | int:
    """Evaluate arithmetic by walking the AST (no eval): numbers, + - * / // % **, (), math functions."""
    expr = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    expr = re.sub(r"(?<=\d),(?=\d{3}\b)", "", expr)  # 1,200 -> 1200
    expr = re.sub(r"(\d+(?:\.\d+)?)\s*%\s*of\s*", r"\1/100*", expr)  # 15% of 80
    if len(expr) > 500:
        raise ToolError("expression too long (max 500 characters)")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise ToolError(f"not an arithmetic expression: {expression!r} ({e.msg})") from e

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int | float)
            and not isinstance(node.value, bool)
        ):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 1000 or abs(left) > 1e6 and abs(right) > 10):
                raise ToolError("exponent too large")
            if (
                isinstance(node.op, ast.Mult | ast.Pow)
                and isinstance(left, int)
                and isinstance(right, int)
                and math.log10(abs(left) + 1) + math.log10(abs(right) + 1) > 400
            ):
                raise ToolError("result too large")
            return _BIN[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Name) and node.id in _CONSTS:
            return _CONSTS[node.id]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and not node.keywords
        ):
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        allowed = "numbers, + - * / // % ** ^, parentheses, " + ", ".join([*_FUNCS, *_CONSTS])
        raise ToolError(f"'{ast.unparse(node)}' is not allowed in a calculation; allowed: {allowed}")

    try:
        value = ev(tree)
    except ZeroDivisionError as e:
        raise ToolError("division by zero") from e
    except (OverflowError, ValueError, TypeError) as e:
        raise ToolError(f"cannot compute {expression!r}: {e}") from e
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


@tool(
    example={
        "goal": "What is 12 times 7, plus 5?",
        "plan": ["compute 12*7+5", "answer"],
        "arguments": {"expression": "12*7+5"},
        "result": "89",
        "answer": "12 times 7, plus 5, is 89.",
    }
)
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, e.g. "(17 + 25) * 3" or "sqrt(2) * 10".

    Args:
        expression: the arithmetic expression to compute
    """
    v = safe_eval(expression)
    return f"{v:.10g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------------------------------- current time


@tool(
    example={
        "goal": "What day is it today?",
        "plan": ["get the date", "answer"],
        "arguments": {"timezone": "UTC"},
        "result": "Friday 2026-01-02 10:00:00 UTC",
        "answer": "Today is Friday, 2 January 2026.",
    }
)
def current_time(timezone: str = "UTC") -> str:
    """Get the current date and time.

    Args:
        timezone: an IANA timezone name such as "UTC" or "Europe/Paris"
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ToolError(
            f"unknown timezone {timezone!r}; use an IANA name like 'UTC' or 'Asia/Shanghai'"
        ) from e
    now = datetime.now(UTC).astimezone(tz)
    return now.strftime("%A %Y-%m-%d %H:%M:%S %Z")


# ---------------------------------------------------------------------------------------- read-only SQL

_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}


def _authorizer(action: int, *_args: Any) -> int:
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


def sqlite_schema(db_path: str | Path) -> str:
    """'table(col type, ...)' lines describing a database, for the model."""
    with _connect_ro(db_path) as conn:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
        out = []
        for (table,) in rows:
            cols = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
            out.append(f"{table}(" + ", ".join(f"{c[1]} {c[2].lower()}" for c in cols) + ")")
    return "\n".join(out)


def _connect_ro(db_path: str | Path) -> sqlite3.Connection:
    p = Path(db_path).expanduser().resolve()
    if not p.is_file():
        raise BadRequest(
            f"database '{p}' not found; run `luodi demo` to create the demo database or pass --db PATH"
        )
    return sqlite3.connect(f"{p.as_uri()}?mode=ro", uri=True, check_same_thread=False)


def run_select(db_path: str | Path, query: str, max_rows: int = 20) -> dict[str, Any]:
    """Run ONE SELECT (read-only connection + authorizer + single statement); return columns/rows."""
    q = query.strip().rstrip(";").strip()
    if not re.match(r"^(select|with)\b", q, re.I):
        raise ToolError("only a single SELECT query is allowed (the database is read-only)")
    conn = _connect_ro(db_path)
    try:
        conn.set_authorizer(_authorizer)
        budget = [200]  # progress callbacks of 10k VM steps: ~2M steps at most

        def tick() -> int:
            budget[0] -= 1
            return 1 if budget[0] < 0 else 0

        conn.set_progress_handler(tick, 10_000)
        try:
            cur = conn.execute(q)
        except sqlite3.ProgrammingError as e:  # e.g. "You can only execute one statement at a time."
            raise ToolError(f"refused: {e}; send exactly one SELECT statement") from e
        except sqlite3.DatabaseError as e:
            msg = str(e)
            if "not authorized" in msg or "readonly" in msg:
                raise ToolError("refused: the database is read-only; only SELECT is allowed") from e
            if "interrupted" in msg:
                raise ToolError("query too expensive; add a WHERE clause or LIMIT") from e
            raise ToolError(f"SQL error: {msg}") from e
        cols = [d[0] for d in cur.description or []]
        rows = cur.fetchmany(max_rows + 1)
    finally:
        conn.close()
    return {"columns": cols, "rows": [list(r) for r in rows[:max_rows]], "truncated": len(rows) > max_rows}


def format_rows(result: dict[str, Any]) -> str:
    if not result["rows"]:
        return "no rows"
    lines = [" | ".join(result["columns"])] + [" | ".join(str(v) for v in r) for r in result["rows"]]
    if result["truncated"]:
        lines.append("(more rows not shown; add LIMIT or a narrower WHERE)")
    return "\n".join(lines)


def sql_tool(db_path: str | Path, name: str = "sql", about: str = "the database") -> Tool:
    """A tool running one read-only SELECT on an SQLite database; its schema is shown to the model."""
    schema = sqlite_schema(db_path)

    def sql(query: str) -> str:
        """Args:
        query: one SQLite SELECT statement
        """
        return format_rows(run_select(db_path, query))

    desc = f"Run one read-only SQL SELECT query on {about}. Tables:\n{schema}"
    t = tool(sql, name=name, description=desc, example=_sql_example(db_path, schema))
    t.relevance = _schema_relevance(schema) if schema else None
    return t


def _sql_example(db_path: str | Path, schema: str) -> dict[str, Any] | None:
    """A worked example from the database itself: look one row up by its first column."""
    if not schema:
        return None
    table, cols = schema.split("\n")[0].split("(", 1)
    key, col = cols.split(",")[0].split()[0], (cols.split(",")[1].split()[0] if "," in cols else None)
    if col is None:
        return None
    r = run_select(db_path, f'SELECT "{key}", "{col}" FROM "{table}" LIMIT 1')
    if not r["rows"]:
        return None
    k, v = r["rows"][0]
    q = (
        f"SELECT {col} FROM {table} WHERE {key} = {k!r}"
        if isinstance(k, str)
        else f"SELECT {col} FROM {table} WHERE {key} = {k}"
    )
    return {
        "goal": f"What is the {col} of {table} {k}?",
        "plan": ["look it up with SQL", "answer"],
        "arguments": {"query": q},
        "result": f"{col}\n{v}",
        "answer": f"The {col} of {table} {k} is {v}.",
    }


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
    t = tool(
        kb_search,
        name="kb_search",
        description=f"Search the '{kb}' knowledge base for passages answering a question.",
        example=example,
    )
    t.relevance = _kb_relevance(kb)
    return t


def search_kb(kb: str, query: str, k: int = 3) -> list[dict[str, Any]]:
    """[{'text', 'score', 'source'}] from luodi.rag when it has the kb, else from a markdown FAQ folder."""
    try:
        from luodi import rag

        fn = getattr(rag, "search", None)
    except ImportError:
        fn = None
    if fn is not None:
        try:
            hits = fn(kb, query, k)
            return [_hit_dict(h) for h in hits]
        except Exception as e:  # kb missing in the store: fall back to the bundled FAQ when it's the demo kb
            if kb != "bank-faq":
                raise ToolError(f"knowledge base '{kb}': {getattr(e, 'message', e)}") from e
    from luodi.agent.faq import get_faq

    return [
        {"text": f"Q: {h.question}\nA: {h.answer}", "score": s, "source": h.source}
        for h, s in get_faq().search(query, k)
    ]


def _hit_dict(h: Any) -> dict[str, Any]:
    if isinstance(h, dict):
        return {"text": h.get("text", ""), "score": h.get("score"), "source": h.get("source")}
    return {
        "text": getattr(h, "text", str(h)),
        "score": getattr(h, "score", None),
        "source": getattr(h, "source", None),
    }


# ---------------------------------------------------------------------------------------- hand-off


@tool
def create_ticket(subject: str, details: str) -> str:
    """Hand the problem over to a human support agent, who will answer in this conversation later.

    Args:
        subject: a short title of the problem
        details: what the customer needs, with any identifiers (order id, account)
    """
    from luodi.store import session_scope
    from luodi.store.tables import Ticket

    ctx = RUN_CONTEXT.get() or {}
    with session_scope() as s:
        t = Ticket(thread_id=ctx.get("thread_id"), subject=subject[:500], body=details)
        s.add(t)
        s.flush()
        tid = t.id
    return f"ticket #{tid} created; a human agent will reply in this conversation"


# ---------------------------------------------------------------------------------------- registry

BUILTIN_NAMES = ("calculator", "sql", "kb_search", "current_time", "create_ticket")


def default_db() -> Path:
    from luodi.settings import get_settings

    return get_settings().home / "demo" / "orders.db"


def builtin_tools(
    names: list[str] | None = None,
    *,
    db: str | Path | None = None,
    kb: str = "bank-faq",
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
            path = Path(db) if db else default_db()
            if not db and not path.exists():
                from luodi.agent.assistant import ensure_demo

                ensure_demo(kb=False)
            t = sql_tool(path, about="the bank's customers/accounts/orders database")
        elif n == "kb_search":
            t = kb_search_tool(kb)
        else:
            raise BadRequest(
                f"unknown tool '{n}'; built-in tools are: {', '.join(BUILTIN_NAMES)}", param="tools"
            )
        out.append(t)
    for n in approval or []:
        match = [t for t in out if t.name == n]
        if not match:
            raise BadRequest(
                f"approval: tool '{n}' is not among the tools {[t.name for t in out]}", param="approval"
            )
        match[0] = Tool(**{**match[0].__dict__, "requires_approval": True})
        out = [match[0] if t.name == n else t for t in out]
    return out


# ---------------------------------------------------------------------------------------- relevance

_ARITH = re.compile(
    r"\d\s*[-+*/^x×÷%]\s*\(?\d|\b(times|plus|minus|divided|multipl\w*|percent|square root|"
    r"power|sum|total|average|compute|calculate)\b",
    re.I,
)
_TIME = re.compile(r"\b(time|date|today|tomorrow|yesterday|weekday|what day|clock|now)\b", re.I)


def _arith_relevance(goal: str) -> float:
    return 1.0 if _ARITH.search(goal) else 0.0


def _time_relevance(goal: str) -> float:
    return 1.0 if _TIME.search(goal) else 0.0


def _schema_relevance(schema: str) -> Callable[[str], float]:
    """1.0 when the goal names a table or column of the database (or looks up an id-like code)."""
    words: set[str] = set()
    for line in schema.splitlines():
        table, cols = line.split("(", 1)
        words |= {table.lower(), table.lower().rstrip("s")}
        words |= {
            c.split()[0].lower() for c in cols.rstrip(")").split(",") if c.split() and len(c.split()[0]) > 3
        }
    words -= {"name", "type", "kind", "status", "amount"}

    def rel(goal: str) -> float:
        toks = set(re.findall(r"[a-z_]+", goal.lower()))
        return 1.0 if toks & words or re.search(r"\b[A-Z]{1,2}\d{3,4}\b", goal) else 0.0

    return rel


def _kb_relevance(kb: str, threshold: float = 0.5) -> Callable[[str], float]:
    def rel(goal: str) -> float:
        try:
            hits = search_kb(kb, goal, 1)
        except ToolError:
            return 0.0
        score = float(hits[0]["score"] or 0.0) if hits else 0.0
        return 1.0 if score >= threshold else score

    return rel


calculator.relevance = _arith_relevance
current_time.relevance = _time_relevance
