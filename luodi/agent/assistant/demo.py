"""The customer-service demo: a bank's orders database (SQLite, from luodi/demo/orders.sql), the
assistant App YAML and the FAQ knowledge base 'bank-faq'. `luodi demo` prepares them; the sql tool of
the agent uses the same database by default."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from luodi import rag
from luodi.atomic import atomic_path
from luodi.settings import get_settings

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"
DEMO_SQL = DEMO_DIR / "orders.sql"
DEMO_APP = DEMO_DIR / "customer-service.yaml"
DEMO_KB = "bank-faq"


def demo_db_path() -> Path:
    return get_settings().home / "demo" / "orders.db"


def build_demo_db(path: str | Path | None = None, force: bool = False) -> Path:
    """Create the demo SQLite database from luodi/demo/orders.sql (atomically: temp file, then rename)."""
    p = Path(path) if path else demo_db_path()
    if p.exists() and not force:
        return p
    with atomic_path(p) as tmp:
        tmp.unlink()  # sqlite3 makes its own file
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(DEMO_SQL.read_text(encoding="utf-8"))
            conn.commit()
        finally:
            conn.close()
    return p


def ensure_demo(kb: bool = True) -> dict[str, Any]:
    """Prepare the customer-service demo: the demo database, and the FAQ knowledge base 'bank-faq'."""
    out: dict[str, Any] = {"db": str(build_demo_db()), "app": str(DEMO_APP)}
    if kb:
        rag.ensure_kb(DEMO_KB)
        rag.add_documents(DEMO_KB, sorted(str(p) for p in (DEMO_DIR / "faq").glob("*.md")))
        out["kb"] = DEMO_KB
    return out
