"""Per-key rate limits: a sliding one-minute window, answered with 429 and Retry-After."""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from luodi.errors import RateLimited

WINDOW_S = 60.0


class RateLimiter:
    """Allow at most `rpm` requests per key in any 60-second window (thread-safe, in memory)."""

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
                wait = max(1, math.ceil(q[0] + WINDOW_S - t))
                err = RateLimited(
                    f"rate limit of {rpm} requests per minute reached for this API key; "
                    f"retry in {wait} s, or ask for a key with a higher rate_limit_rpm"
                )
                err.retry_after = wait  # type: ignore[attr-defined]
                raise err
            q.append(t)
