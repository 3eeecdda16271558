"""Continuous batching, backend-independent part.

A `Scheduler` owns one thread. Callers `submit` a `Sequence` and get back its `Stream` (an async and
sync iterator of GenerationChunk). Each loop iteration admits waiting sequences while the backend has
room (`can_admit`), drops cancelled ones, and asks the backend to advance every running sequence by one
`step` (llama.cpp: one batch with a token per decoding sequence plus a chunk of prompt tokens).
Stop strings, max_tokens, EOS and UTF-8-safe detokenization live in `Sequence`, once for all backends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from luodi.engines.base import GenerationChunk, SamplingParams
from luodi.engines.streaming import StopFilter, Utf8Stream
from luodi.errors import BadRequest, LuodiError, Overloaded

log = logging.getLogger(__name__)


class Stream:
    """What `Engine.generate` returns: iterate it (async or sync); `aclose()`/`close()` cancels it.

    Pending text deltas are merged, so a slow consumer receives fewer, larger chunks.
    """

    def __init__(self, prompt_tokens: int, wake: Callable[[], None]) -> None:
        self.prompt_tokens = prompt_tokens
        self._wake = wake
        self._chunks: deque[GenerationChunk] = deque()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future | None = None
        self._finished = False  # the final chunk was handed out
        self.cancelled = False
        self.created = time.monotonic()

    # --- scheduler side -------------------------------------------------------------------------
    def push(self, chunk: GenerationChunk | None = None, error: BaseException | None = None) -> None:
        with self._lock:
            if chunk is not None:
                self._chunks.append(chunk)
            if error is not None:
                self._error = error
            self._ready.set()
            loop, fut = self._loop, self._waiter
        if fut is not None and loop is not None:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # the consumer's loop is closed
                pass

    # --- consumer side --------------------------------------------------------------------------
    def _take(self) -> GenerationChunk | None:
        """Merge everything pending into one chunk (caller holds the lock)."""
        if not self._chunks:
            if self._error is not None:
                self._finished = True
                raise self._error
            return None
        first = self._chunks.popleft()
        text = [first.text]
        lps = None if first.logprobs is None else list(first.logprobs)
        last = first
        while self._chunks and last.finish_reason is None:
            last = self._chunks.popleft()
            text.append(last.text)
            if last.logprobs is not None:
                lps = (lps or []) + last.logprobs
        if not self._chunks and self._error is None:
            self._ready.clear()
        if last.finish_reason is not None:
            self._finished = True
        return GenerationChunk(
            "".join(text), last.finish_reason, last.prompt_tokens, last.completion_tokens, logprobs=lps
        )

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> GenerationChunk:
        while True:
            with self._lock:
                if self._finished:
                    raise StopAsyncIteration
                got = self._take()
                if got is not None:
                    return got
                self._loop = asyncio.get_running_loop()
                self._waiter = self._loop.create_future()
                fut = self._waiter
            try:
                await fut
            except asyncio.CancelledError:
                self.cancel()
                raise
            finally:
                with self._lock:
                    self._waiter = None

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> GenerationChunk:
        while True:
            with self._lock:
                if self._finished:
                    raise StopIteration
                got = self._take()
                if got is not None:
                    return got
            self._ready.wait()

    def cancel(self) -> None:
        """Stop generating and free the sequence's slot (idempotent)."""
        if not self.cancelled and not self._finished:
            self.cancelled = True
            self._wake()

    async def aclose(self) -> None:
        self.cancel()

    def close(self) -> None:
        self.cancel()

    def __del__(self) -> None:  # a consumer that walked away without closing
        try:
            self.cancel()
        except Exception:
            pass


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class Sequence:
    """One request inside the scheduler: its prompt, sampling state and output bookkeeping."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams, max_tokens: int,
                 piece: Callable[[int], bytes], is_eog: Callable[[int], bool], stream: Stream) -> None:
        self.prompt_ids = prompt_ids
        self.params = params
        self.max_tokens = max_tokens
        self.stream = stream
        self._piece = piece
        self._is_eog = is_eog
        self._utf8 = Utf8Stream()
        self._stops = StopFilter(list(params.stop or []))
        self.n_prefilled = 0  # prompt tokens already in the KV cache
        self.n_past = 0  # positions written to the KV cache
        self.generated: list[int] = []
        self.last_token: int | None = None
        self.finish_reason: str | None = None
        self.slot: Any = None  # backend data (seq_id, sampler, KV cache...)
        self._logprobs: list[dict[str, Any]] | None = None if params.logprobs is None else []  # not yet sent

    @property
    def prefilling(self) -> bool:
        return self.n_prefilled < len(self.prompt_ids)

    @property
    def reserved(self) -> int:
        """KV cells this sequence may use at most."""
        return len(self.prompt_ids) + self.max_tokens

    def accept(self, token: int, logits: Any = None) -> None:
        """Record one sampled token: emit text, or finish on EOS / stop string / max_tokens. `logits` (the
        raw next-token logits, a numpy array) give the token's log-probabilities when the request asked."""
        if self._is_eog(token):
            self.finish("stop", self._drain())
            return
        self.generated.append(token)
        self.last_token = token
        if self._logprobs is not None and logits is not None:
            self._logprobs.append(token_logprobs(logits, token, int(self.params.logprobs or 0), self._piece))
        text, stopped = self._stops.feed(self._utf8.feed(self._piece(token)))
        if stopped:
            self.finish("stop", text)
        elif len(self.generated) >= self.max_tokens:
            self.finish("length", text + self._drain())
        elif text:
            self.stream.push(self._chunk(text, None))

    @property
    def wants_logprobs(self) -> bool:
        return self._logprobs is not None

    def _chunk(self, text: str, reason: str | None) -> GenerationChunk:
        lps, self._logprobs = self._logprobs, (None if self._logprobs is None else [])
        return GenerationChunk(text, reason, len(self.prompt_ids), len(self.generated), logprobs=lps)

    def _drain(self) -> str:
        """Text still held back (an incomplete character, a possible stop-string prefix)."""
        tail, stopped = self._stops.feed(self._utf8.flush())
        return tail if stopped else tail + self._stops.flush()

    def finish(self, reason: str, text: str = "") -> None:
        """End the sequence with a final chunk carrying `reason` and usage counts."""
        if self.finish_reason is not None:
            return
        self.finish_reason = reason
        self.stream.push(self._chunk(text, reason))

    def fail(self, error: BaseException) -> None:
        self.finish_reason = "error"
        self.stream.push(error=error)


def token_logprobs(logits: Any, token: int, k: int, piece: Callable[[int], bytes]) -> dict[str, Any]:
    """OpenAI's logprobs entry for one sampled token, from the model's raw next-token logits (before
    temperature, penalties or grammar): its log-probability and the k likeliest tokens'."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max()
    lp = x - (m + np.log(np.exp(x - m).sum()))

    def entry(t: int) -> dict[str, Any]:
        b = piece(t)
        return {"token": b.decode("utf-8", errors="replace"), "bytes": list(b), "logprob": float(lp[t])}

    top: list[int] = []
    if k > 0:
        cand = np.argpartition(-lp, min(k, lp.size - 1))[:k]
        top = [int(t) for t in cand[np.argsort(-lp[cand], kind="stable")]]
    return {**entry(token), "top_logprobs": [entry(t) for t in top]}


class Scheduler:
    """The scheduling loop. Backends subclass it and implement can_admit/admit/step/release."""

    def __init__(self, max_running: int, max_queue: int, name: str = "luodi-scheduler") -> None:
        if max_running < 1:
            raise BadRequest("max_running must be >= 1", param="max_running")
        self.max_running = max_running
        self.max_queue = max(0, max_queue)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    # --- backend hooks --------------------------------------------------------------------------
    def can_admit(self, seq: Sequence) -> bool:
        return len(self.running) < self.max_running

    def admit(self, seq: Sequence) -> None: ...

    def step(self, running: list[Sequence]) -> None:
        raise NotImplementedError

    def release(self, seq: Sequence) -> None: ...

    def shutdown(self) -> None:
        """Free backend resources (called on the scheduler thread when closing)."""

    # --- public ---------------------------------------------------------------------------------
    def submit(self, seq: Sequence) -> Stream:
        with self._cond:
            if self._closed:
                raise LuodiError("the engine is closed", status=503)
            free_slots = max(0, self.max_running - len(self.running))
            if len(self.waiting) >= self.max_queue + free_slots:
                raise Overloaded(
                    f"server busy: {len(self.waiting)} requests already waiting "
                    f"(max_queue={self.max_queue}); "
                    "retry later or raise LUODI_MAX_QUEUE"
                )
            self.waiting.append(seq)
            if not self._started:
                self._started = True
                self._thread.start()
            self._cond.notify()
        return seq.stream

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def stats(self) -> dict[str, int]:
        with self._cond:
            running = sum(1 for s in self.running if s.finish_reason is None)
            return {"queue_depth": len(self.waiting), "running": running}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._started and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        if not self._started:
            self.shutdown()

    # --- loop -----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and not self.running and not self.waiting:
                        self._cond.wait()
                    if self._closed:
                        break
                    self._drop_cancelled()
                    while self.waiting and self.can_admit(self.waiting[0]):
                        seq = self.waiting.popleft()
                        self.running.append(seq)
                        self._admit(seq)
                    running = [s for s in self.running if s.finish_reason is None]
                if not running:
                    with self._cond:
                        self._reap()
                        if self.waiting and not self.running:  # waiting for room that is not there yet
                            self._cond.wait(timeout=0.05)
                    continue
                try:
                    self.step(running)
                except LuodiError as e:
                    for seq in running:
                        seq.fail(e)
                except Exception as e:  # a backend bug must not kill the server's engine
                    log.exception("engine step failed")
                    for seq in running:
                        seq.fail(LuodiError(f"generation failed: {e}", status=500))
                with self._cond:
                    self._reap()
        finally:
            with self._cond:
                for seq in list(self.running) + list(self.waiting):
                    seq.fail(LuodiError("the engine was closed", status=503))
                    if seq in self.running:
                        self.release(seq)
                self.running.clear()
                self.waiting.clear()
            self.shutdown()

    def _reap(self) -> None:
        for seq in [s for s in self.running if s.finish_reason is not None]:
            self.running.remove(seq)
            self.release(seq)

    def _admit(self, seq: Sequence) -> None:
        try:
            self.admit(seq)
        except LuodiError as e:
            seq.fail(e)
        except Exception as e:
            log.exception("admitting a sequence failed")
            seq.fail(LuodiError(f"generation failed: {e}", status=500))

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self.waiting if s.stream.cancelled]:
            self.waiting.remove(seq)
            seq.finish("cancelled")
        for seq in [s for s in self.running if s.stream.cancelled or s.finish_reason is not None]:
            self.running.remove(seq)
            seq.finish("cancelled")  # no-op when it had already finished
            self.release(seq)
