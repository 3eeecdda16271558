"""The one sync/async bridge: run a coroutine to the end from sync code (the CLI, sync APIs, worker threads)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any


def run_sync(coro: Any) -> Any:
    """Run a coroutine to the end from sync code (the CLI, a sync API called from a worker thread).

    Each thread keeps one event loop for all its calls (a CLI session's streams and engine waits live on it);
    when a loop already runs in this thread (sync code called from async code) the coroutine runs on a helper
    thread instead, since a running loop cannot be re-entered.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _thread_loop().run_until_complete(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = _thread_loop().run_until_complete(coro)
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    helper = threading.Thread(target=target, name="luodi-run-sync")
    helper.start()
    helper.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


_loops = threading.local()


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()
    return loop
