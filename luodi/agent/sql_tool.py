"""The sql tool: ONE read-only SELECT on an SQLite database (read-only connection, an authorizer that
denies every write, a single statement, a VM-step budget). The tool shows the model the database's
tables and a worked example taken from the database itself."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from luodi.agent.tools import Tool, ToolError, tool
from luodi.errors import BadRequest

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
        raise BadRequest(f"database '{p}' not found; run `luodi demo` to create the demo database or pass --db PATH")
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
    relevance = _schema_relevance(schema) if schema else None
    return tool(sql, name=name, description=desc, example=_sql_example(db_path, schema), relevance=relevance)


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


def _schema_relevance(schema: str) -> Callable[[str], float]:
    """1.0 when the goal names a table or column of the database (or looks up an id-like code)."""
    words: set[str] = set()
    for line in schema.splitlines():
        table, cols = line.split("(", 1)
        words |= {table.lower(), table.lower().rstrip("s")}
        words |= {c.split()[0].lower() for c in cols.rstrip(")").split(",") if c.split() and len(c.split()[0]) > 3}
    words -= {"name", "type", "kind", "status", "amount"}

    def rel(goal: str) -> float:
        toks = set(re.findall(r"[a-z_]+", goal.lower()))
        return 1.0 if toks & words or re.search(r"\b[A-Z]{1,2}\d{3,4}\b", goal) else 0.0

    return rel
