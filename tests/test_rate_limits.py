"""Rate limits counted in the store (issue 20: replicas behave as one server): every limiter on one store shares
each key's count; a refused call is not counted and says when to retry. The two-server run on PostgreSQL is in
tests/test_server_postgres.py."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from luodi.errors import RateLimited
from luodi.serve.ratelimit import RateLimiter, StoreRateLimiter, limiter_for
from luodi.settings import Settings
from luodi.store import session_scope
from luodi.store.tables import RateLimitWindow


def stored_count(key: str) -> int:
    with session_scope() as s:
        return sum(s.scalars(select(RateLimitWindow.count).where(RateLimitWindow.key == key)).all())


def test_limiters_on_one_store_share_the_count():
    one, other = StoreRateLimiter(), StoreRateLimiter()  # as two server processes would each have
    one.check("key:shared", 3)
    other.check("key:shared", 3)
    one.check("key:shared", 3)
    with pytest.raises(RateLimited, match="rate limit of 3 requests per minute") as e:
        other.check("key:shared", 3)
    assert 1 <= e.value.retry_after <= 120
    assert stored_count("key:shared") == 3  # the refused call is not counted
    other.check("key:someone-else", 3)  # each key has its own count


def test_the_limiter_follows_the_setting():
    assert type(limiter_for(Settings(rate_limit_store="database"))) is StoreRateLimiter
    assert type(limiter_for(Settings(rate_limit_store="memory"))) is RateLimiter
    assert type(limiter_for(Settings(rate_limit_store="auto", database_url=None))) is RateLimiter
    shared = Settings(rate_limit_store="auto", database_url="postgresql+psycopg://db/luodi")
    assert type(limiter_for(shared)) is StoreRateLimiter
