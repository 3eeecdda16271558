"""The store: SQLAlchemy tables (SQLite by default, PostgreSQL by URL) with Alembic migrations."""

from luodi.store.db import get_engine, init_db, session_scope
from luodi.store.tables import Base

__all__ = ["Base", "get_engine", "init_db", "session_scope"]
