"""Chat and text completions on an engine that forwards OpenAI requests (`engine.forwards`, the `openai` engine:
luodi.engines.upstream): the request's fields go to the upstream as the client sent them, and the upstream's
response (or its events) comes back as it is, under the model id luodi serves.

What the upstream supports (streaming, n, logprobs, tools, response_format, vision parts...) is what the client
gets; what it refuses comes back as a 400 quoting it, and a failed or unreachable upstream as a 502 / 504 naming
it (luodi.engines.upstream.upstream_error). luodi's own work here is small on purpose (the added latency is
measured by bench/upstream.py): one dict copy per request and one per streamed event, plus the usage counts that
/metrics records (the upstream is always asked for usage in streams; the event is dropped unless the client asked).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import PrivateAttr

from luodi.llm.generation import Generation
from luodi.llm.openai_types import Body, ChatCompletionRequest, CompletionRequest


class Forwarded(Body):
    """An upstream response body or streamed event, passed through as JSON (no re-validation)."""

    _data: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Forwarded:
        out = cls.model_construct()
        out._data = data
        return out

    def dump(self) -> dict[str, Any]:
        return self._data

    def sse(self) -> str:
        return json.dumps(self._data, separators=(",", ":"), ensure_ascii=False)


async def forward(engine: Any, path: str, req: ChatCompletionRequest | CompletionRequest, *, model: str,
                  on_done: Callable[[Generation], None] | None = None) -> Forwarded | AsyncIterator[Forwarded]:
    """One request through the upstream: the finished body, or with req.stream its events (the first one has
    arrived by then, so an upstream error is an HTTP error, not a broken stream)."""
    body = req.model_dump(exclude_unset=True)
    body.pop("model", None)
    t0 = time.perf_counter()
    if not req.stream:
        data = await engine.forward(path, body)
        if isinstance(data, dict):
            data["model"] = model
            _record(on_done, data.get("usage"), None, 0.0, data.get("choices"))
        return Forwarded.of(data)
    body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}  # for /metrics
    events = await engine.forward(path, body)
    try:
        first = await anext(events, None)
    except BaseException:
        await events.aclose()
        raise
    return _events(events, first, model, req.include_usage, on_done, t0)


async def _events(events: AsyncIterator[dict[str, Any]], first: dict[str, Any] | None, model: str,
                  include_usage: bool, on_done: Callable[[Generation], None] | None, t0: float
                  ) -> AsyncIterator[Forwarded]:
    usage, t_first, t_last, finish = None, None, None, None
    try:
        event = first
        while event is not None:
            if isinstance(event, dict):
                if event.get("usage"):
                    usage = event["usage"]
                choices = event.get("choices")
                if choices:
                    t_last = time.perf_counter()
                    t_first = t_first or t_last
                    finish = choices[-1].get("finish_reason") or finish
                if include_usage or choices:  # the usage-only event goes out only when the client asked for it
                    if not include_usage:
                        event.pop("usage", None)
                    event["model"] = model
                    yield Forwarded.of(event)
            event = await anext(events, None)
    finally:
        await events.aclose()
        ttft = None if t_first is None else t_first - t0
        _record(on_done, usage, ttft, (t_last - t_first) if t_first and t_last else 0.0,
                [{"finish_reason": finish}] if finish else None)


def _record(on_done: Callable[[Generation], None] | None, usage: dict | None, ttft: float | None,
            decode_seconds: float, choices: list | None) -> None:
    if on_done is None:
        return
    usage = usage or {}
    finish = next((c.get("finish_reason") for c in choices or [] if isinstance(c, dict)), None)
    on_done(Generation(finish_reason=finish, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                       completion_tokens=int(usage.get("completion_tokens") or 0), ttft=ttft,
                       decode_seconds=decode_seconds))
