"""Alembic environment: runs on the connection luodi.store.db hands over (or on the configured URL)."""

from alembic import context
from sqlalchemy import create_engine

from luodi.store import tables  # noqa: F401
from luodi.store.tables import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is None:
        with create_engine(config.get_main_option("sqlalchemy.url")).connect() as c:
            context.configure(connection=c, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
