"""Per-key rate limits: a one-minute window, answered with 429 and Retry-After.

Two counters with the same contract (`check(key, rpm)` records one request or raises RateLimited):
- `RateLimiter`: an exact sliding window in this process's memory (one server);
- `StoreRateLimiter`: counts per key and minute in the store (`rate_limit_windows`), so every server on one
  PostgreSQL store counts into the same rows and a limit holds across replicas. The window slides by weighting the
  previous minute's count by the part of it still inside the last 60 seconds (the usual approximation of a sliding
  window from two fixed ones); a refused request is not counted.
`limiter_for(settings)` picks: LUODI_RATE_LIMIT_STORE=memory | database, or auto (the default: database when
LUODI_DATABASE_URL names a shared store, memory for the local SQLite file).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

from luodi.errors import RateLimited

WINDOW_S = 60.0


def refused(rpm: int, wait: float) -> RateLimited:
    """The 429 for a caller over `rpm`, retrying in `wait` seconds."""
    wait_s = max(1, math.ceil(wait))
    err = RateLimited(
        f"rate limit of {rpm} requests per minute reached for this API key; "
        f"retry in {wait_s} s, or ask for a key with a higher rate_limit_rpm"
    )
    err.retry_after = wait_s  # type: ignore[attr-defined]
    return err


class RateLimiter:
    """Allow at most `rpm` requests per key in any 60-second window (thread-safe, in memory)."""

    shared = False

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str, rpm: int) -> None:
        """Record one request for `key`, or raise RateLimited (with `retry_after` seconds) if over `rpm`."""
        t = time.monotonic()
        with self._lock:
            q = self._hits.setdefault(key, deque())
            while q and q[0] <= t - WINDOW_S:
                q.popleft()
            if len(q) >= rpm:
                raise refused(rpm, q[0] + WINDOW_S - t)
            q.append(t)


class StoreRateLimiter:
    """Allow about `rpm` requests per key in any 60 seconds, counted in the store by every server that uses it."""

    shared = True

    def __init__(self) -> None:
        self._swept = -1  # the last minute whose older rows this process deleted

    def check(self, key: str, rpm: int) -> None:
        from sqlalchemy import delete, select, update

        from luodi.store import session_scope
        from luodi.store.tables import RateLimitWindow as W

        now = time.time()
        minute = int(now // WINDOW_S)
        into = (now - minute * WINDOW_S) / WINDOW_S  # share of this minute gone
        with session_scope() as s:
            count = _count_one(s, key, minute)
            previous = s.scalar(select(W.count).where(W.key == key, W.window == minute - 1)) or 0
            if previous * (1 - into) + count > rpm:
                s.execute(update(W).where(W.key == key, W.window == minute).values(count=W.count - 1))
                raise refused(rpm, _wait(previous, count - 1, rpm, into))
            if minute != self._swept:
                s.execute(delete(W).where(W.window < minute - 1))
                self._swept = minute


def _count_one(s: Any, key: str, minute: int) -> int:
    """Add this request to (key, minute) in one statement, whichever server counts at the same time; the new count."""
    from luodi.store.tables import RateLimitWindow as W

    if s.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(W).values(key=key, window=minute, count=1)
    stmt = stmt.on_conflict_do_update(index_elements=[W.key, W.window], set_={"count": W.count + 1})
    return int(s.execute(stmt.returning(W.count)).scalar_one())


def _wait(previous: int, count: int, rpm: int, into: float) -> float:
    """Seconds until one more request fits: later this minute as the previous one fades, else in the next."""
    if count < rpm and previous:
        return (1 - (rpm - count - 1) / previous - into) * WINDOW_S  # previous x (1 - f) + count + 1 <= rpm
    fade = 1 - (rpm - 1) / count if count else 0.0  # next minute: count x (1 - f) + 1 <= rpm
    return (1 - into + max(0.0, fade)) * WINDOW_S


def limiter_for(settings: Any) -> RateLimiter | StoreRateLimiter:
    """The counter LUODI_RATE_LIMIT_STORE asks for (auto: the store when it is shared, i.e. set by URL)."""
    mode = settings.rate_limit_store
    if mode == "auto":
        mode = "database" if settings.database_url else "memory"
    return StoreRateLimiter() if mode == "database" else RateLimiter()
