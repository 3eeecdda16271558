"""OpenAI's `n`: several generations of one prompt, run together by the engine's continuous batching.

`Choices` starts them (so a bad request or a full queue is an HTTP error before any response starts), then
either collects them all or merges their streams, tagging every chunk with its choice index. Choice i samples
with seed + i when the request has a seed (n different, reproducible answers). A client disconnect or an
error cancels every sequence and frees its slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import anyio

from luodi.engines.base import GenerationChunk, SamplingParams
from luodi.llm.generation import Generation, TimedStream
from luodi.llm.openai_types import Usage


class Choices:
    """n generations of one tokenized prompt (`prompt_ids`, checked against the context window already)."""

    def __init__(
        self,
        engine: Any,
        prompt_ids: list[int],
        params: SamplingParams,
        n: int,
        on_done: Callable[[Generation], None] | None = None,
        stream_interval: float = 0.0,
    ) -> None:
        self.prompt_tokens = len(prompt_ids)
        self.stream_interval = stream_interval  # seconds between streamed events of one choice (TimedStream)
        self._args = (engine, prompt_ids, params, n, on_done)
        self.streams: list[TimedStream] = []
        self._firsts: list[GenerationChunk | None] = []

    async def start(self) -> None:
        """Submit every choice and wait for each one's first chunk; on an error close the ones started."""
        engine, prompt, params, n, on_done = self._args
        try:
            for i in range(n):  # submitted together, so the engine batches them from the start
                p = params if params.seed is None else dataclasses.replace(params, seed=params.seed + i)
                self.streams.append(TimedStream(engine, prompt, p, self.prompt_tokens, on_done=on_done))
            for ts in self.streams:
                self._firsts.append(await ts.first())
        except BaseException:
            await self.close()
            raise

    @property
    def results(self) -> list[Generation]:
        return [ts.result for ts in self.streams]

    def usage(self) -> Usage:
        """The prompt counted once, the completions summed (as OpenAI counts n > 1)."""
        completion = sum(g.completion_tokens for g in self.results)
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=completion,
                     total_tokens=self.prompt_tokens + completion)

    async def collect(self, disconnected: Callable[[], Awaitable[bool]]) -> list[Generation]:
        """Run every choice to its end (stopping early when the client went away)."""
        gone = False

        async def one(ts: TimedStream, first: GenerationChunk | None) -> None:
            nonlocal gone
            k = 0
            async with aclosing(ts.chunks(first)) as chunks:
                async for _ in chunks:
                    k += 1
                    if gone or (k % 16 == 0 and await disconnected()):
                        gone = True
                        break

        try:
            await asyncio.gather(*(one(ts, f) for ts, f in zip(self.streams, self._firsts, strict=True)))
        finally:
            await self.close()
        return self.results

    async def stream(self) -> AsyncIterator[tuple[int, GenerationChunk | None]]:
        """(index, chunk) as chunks arrive from any choice; (index, None) once choice `index` has finished."""
        queue: asyncio.Queue[tuple[int, GenerationChunk | None, BaseException | None]] = asyncio.Queue()

        async def pump(i: int, ts: TimedStream, first: GenerationChunk | None) -> None:
            try:
                async with aclosing(ts.chunks(first, self.stream_interval)) as chunks:
                    async for c in chunks:
                        await queue.put((i, c, None))
            except Exception as e:  # noqa: BLE001 - handed to the consumer, which reports it in the stream
                await queue.put((i, None, e))
                return
            await queue.put((i, None, None))

        pairs = enumerate(zip(self.streams, self._firsts, strict=True))
        tasks = [asyncio.create_task(pump(i, ts, f)) for i, (ts, f) in pairs]
        try:
            left = len(tasks)
            while left:
                i, chunk, error = await queue.get()
                if error is not None:
                    raise error
                if chunk is None:
                    left -= 1
                yield i, chunk
        finally:
            for t in tasks:
                t.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*tasks, return_exceptions=True)
            await self.close()

    async def close(self) -> None:
        """Cancel whatever still runs (idempotent), even while the caller is being cancelled."""
        with anyio.CancelScope(shield=True):
            for ts in self.streams:
                await ts.aclose()
