"""Engine, sessions and schema set-up for the store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from luodi.settings import get_settings
from luodi.store.tables import Base  # noqa: F401  (importing it registers every table on Base.metadata)

_engines: dict[str, Engine] = {}
_ready: set[str] = set()
_lock = threading.Lock()
MIGRATIONS = Path(__file__).parent / "migrations"


def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().db_url
    with _lock:
        if url not in _engines:
            kw = {"connect_args": {"check_same_thread": False, "timeout": 30}} if url.startswith("sqlite") else {}
            eng = create_engine(url, future=True, pool_pre_ping=True, **kw)
            if url.startswith("sqlite"):
                @event.listens_for(eng, "connect")
                def _pragmas(dbapi_conn, _rec):  # WAL: readers never block the writer; crash-safe
                    cur = dbapi_conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA synchronous=NORMAL")
                    cur.execute("PRAGMA foreign_keys=ON")
                    cur.close()
            _engines[url] = eng
    return _engines[url]


def init_db(url: str | None = None) -> Engine:
    """Bring the schema to the newest migration (idempotent; never drops data)."""
    url = url or get_settings().db_url
    eng = get_engine(url)
    if url in _ready:
        return eng
    with _lock:
        if url in _ready:
            return eng
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        with eng.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        _ready.add(url)
    return eng


_sessionmakers: dict[str, sessionmaker] = {}


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A transaction: commits on success, rolls back on any error."""
    url = url or get_settings().db_url
    eng = init_db(url)
    if url not in _sessionmakers:
        _sessionmakers[url] = sessionmaker(bind=eng, expire_on_commit=False)
    s = _sessionmakers[url]()
    try:
        yield s
        s.commit()
    except BaseException:
        s.rollback()
        raise
    finally:
        s.close()


def reset_engines() -> None:
    """Dispose cached engines (tests switch LUODI_HOME)."""
    with _lock:
        for e in _engines.values():
            e.dispose()
        _engines.clear()
        _ready.clear()
        _sessionmakers.clear()
