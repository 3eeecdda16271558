"""Integer ids in request paths and queries, as one typed constraint every route reuses.

Database ids are 64-bit signed integers (SQLite INTEGER, Postgres BIGINT): a larger number in a URL used to
reach the database and fail there with OverflowError (a 500). Declaring the range on the parameter makes
FastAPI answer 422 naming the field before the route runs, and documents the range in /openapi.json.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

DB_INT_MAX = 2**63 - 1  # the largest id SQLite and Postgres BIGINT store

Id = Annotated[int, Path(ge=1, le=DB_INT_MAX, description="a database id: 1 .. 2**63-1")]
"""A row id in the path (tickets, approvals, keys, knowledge-base documents)."""

AfterId = Annotated[int, Query(ge=0, le=DB_INT_MAX, description="return rows with a larger id; 0 = from the start")]
"""A row id in a query that pages after it (0 = from the start)."""

Limit = Annotated[int, Query(ge=1, le=1000, description="rows returned, at most 1000")]
"""How many rows a list route returns."""
