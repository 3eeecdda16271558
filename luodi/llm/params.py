"""LLM service functions shared by the HTTP routes and the CLI: load the engine, turn request fields into
SamplingParams, check the context window, and run a generation while timing it.

Nothing here knows about HTTP; errors are luodi.errors.* naming the request field and the fix.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from luodi.engines.base import Engine, GenerationChunk, SamplingParams
from luodi.errors import BadRequest
from luodi.settings import Settings, get_settings

_load_lock = threading.Lock()
MAX_STOP = 16
MAX_LOGIT_BIAS = 1024  # tokens one request may bias
MAX_TOP_LOGPROBS = 20  # alternatives per token (OpenAI's limit)


# ---------------------------------------------------------------- loading
def load_chat_engine(settings: Settings | None = None) -> tuple[Engine, bool]:
    """The chat engine for `settings` and whether the caller owns it (must close it).

    The process-wide engine (luodi.engines.get_engine) is shared when the settings match the global ones,
    so the server, agents and RAG never load the model twice.
    """
    import luodi.engines as engines

    settings = settings or get_settings()
    glob = get_settings()
    fields = ("chat_model", "engine", "n_ctx", "max_running", "max_queue", "threads")
    if all(getattr(settings, f) == getattr(glob, f) for f in fields):
        return engines.get_engine(), False
    opts = {f: getattr(settings, f) for f in fields[2:]}
    return engines.load_engine(settings.chat_model, settings.engine, **opts), True


def ensure_engine(state: Any) -> Engine:
    """The server's chat engine (a ServerState), loaded once on first use (thread-safe)."""
    if state.engine is None:
        with _load_lock:
            if state.engine is None:
                engine, owned = load_chat_engine(state.settings)
                state.extra["owns_engine"] = owned
                metrics = state.extra.get("metrics")
                if metrics is not None:
                    metrics.bind_engine_stats(engine.stats)
                state.engine = engine
    return state.engine


def ensure_encoder(state: Any):
    """The server's sentence encoder (a ServerState), loaded once on first use."""
    if state.encoder is None:
        with _load_lock:
            if state.encoder is None:
                from luodi.embeddings import get_encoder

                state.encoder = get_encoder(state.settings.embed_model)
    return state.encoder


# ---------------------------------------------------------------- request -> SamplingParams
def _check_range(name: str, value: float | None, lo: float, hi: float, fix: str) -> None:
    if value is not None and not (lo <= value <= hi):
        raise BadRequest(
            f"field '{name}': expected a number from {lo} to {hi}, got {value}; {fix}", param=name
        )


def normalize_logit_bias(bias: dict[str, float] | None) -> dict[int, float]:
    """OpenAI's logit_bias: {"token id": bias from -100 (ban) to 100 (force)}, keys as strings in JSON."""
    out: dict[int, float] = {}
    for key, value in (bias or {}).items():
        try:
            tok = int(key)
        except (TypeError, ValueError):
            tok = -1
        if tok < 0 or str(key).strip() != str(tok):
            raise BadRequest(
                f"field 'logit_bias': key {key!r} is not a token id; use the ids the model's tokenizer gives "
                "(non-negative integers)", param="logit_bias")
        if not isinstance(value, int | float) or isinstance(value, bool) or not -100 <= value <= 100:
            raise BadRequest(
                f"field 'logit_bias': the bias of token {key} must be a number from -100 (never) to 100 "
                f"(always), got {value!r}", param="logit_bias")
        out[tok] = float(value)
    if len(out) > MAX_LOGIT_BIAS:
        raise BadRequest(f"field 'logit_bias': at most {MAX_LOGIT_BIAS} tokens, got {len(out)}", param="logit_bias")
    return out


def normalize_stop(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > MAX_STOP:
        raise BadRequest(f"field 'stop': at most {MAX_STOP} stop strings, got {len(stops)}", param="stop")
    if any(not isinstance(s, str) or s == "" for s in stops):
        raise BadRequest("field 'stop': every stop sequence must be a non-empty string", param="stop")
    return stops


def response_format_params(response_format: dict | None) -> dict[str, Any]:
    """OpenAI `response_format` -> SamplingParams fields (json_object / json_schema)."""
    if not response_format:
        return {}
    rtype = response_format.get("type", "text")
    if rtype == "text":
        return {}
    if rtype == "json_object":
        return {"json_object": True}
    if rtype == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise BadRequest(
                "field 'response_format.json_schema.schema': expected a JSON Schema object, e.g. "
                '{"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", '
                '"properties": {...}}}}',
                param="response_format.json_schema.schema",
            )
        try:
            import jsonschema

            jsonschema.validators.validator_for(schema).check_schema(schema)
        except ImportError:
            pass
        except jsonschema.SchemaError as e:
            raise BadRequest(
                f"field 'response_format.json_schema.schema' is not a valid JSON Schema: {e.message}",
                param="response_format.json_schema.schema",
            ) from e
        return {"json_schema": schema}
    raise BadRequest(
        f"field 'response_format.type': expected 'text', 'json_object' or 'json_schema', got {rtype!r}",
        param="response_format.type",
    )


def sampling_params(
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    seed: int | None = None,
    stop: str | list[str] | None = None,
    response_format: dict | None = None,
    json_schema: dict | None = None,
    logit_bias: dict[str, float] | None = None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    logprobs: int | None = None,
) -> SamplingParams:
    """Validated SamplingParams from OpenAI-style fields (None = engine default). max_tokens is set later
    by fit_to_context when None."""
    _check_range("temperature", temperature, 0.0, 2.0, "use 0 for greedy decoding, ~0.7 for varied text")
    _check_range("top_p", top_p, 0.0, 1.0, "use 1 to disable nucleus sampling")
    _check_range("presence_penalty", presence_penalty, -2.0, 2.0, "use 0 for no penalty")
    if logprobs is not None and not (isinstance(logprobs, int) and 0 <= logprobs <= MAX_TOP_LOGPROBS):
        raise BadRequest(
            f"field 'top_logprobs': expected 0 to {MAX_TOP_LOGPROBS} alternatives per token, got {logprobs!r}",
            param="top_logprobs",
        )
    _check_range("frequency_penalty", frequency_penalty, -2.0, 2.0, "use 0 for no penalty")
    if top_p is not None and top_p == 0:
        raise BadRequest(
            "field 'top_p': must be greater than 0; use 1 to disable nucleus sampling", param="top_p"
        )
    if top_k is not None and top_k < 0:
        raise BadRequest(
            f"field 'top_k': expected 0 (disabled) or a positive integer, got {top_k}", param="top_k"
        )
    if max_tokens is not None and max_tokens < 1:
        raise BadRequest(
            f"field 'max_tokens': expected a positive integer, got {max_tokens}", param="max_tokens"
        )
    p = SamplingParams(
        stop=normalize_stop(stop), seed=seed, logit_bias=normalize_logit_bias(logit_bias),
        presence_penalty=float(presence_penalty or 0.0), frequency_penalty=float(frequency_penalty or 0.0),
        logprobs=logprobs,
        **response_format_params(response_format),
    )
    if json_schema is not None:
        p.json_schema = json_schema
    if max_tokens is not None:
        p.max_tokens = max_tokens
    if temperature is not None:
        p.temperature = temperature
    if top_p is not None:
        p.top_p = top_p
    if top_k is not None:
        p.top_k = top_k
    return p


def fit_to_context(
    engine: Engine,
    prompt: str,
    params: SamplingParams,
    max_tokens_given: bool,
    prompt_field: str = "messages",
) -> int:
    """Check prompt + max_tokens fit the context window (never truncate); fill in max_tokens when not given.

    Returns the prompt's token count.
    """
    n_vocab = getattr(engine, "n_vocab", None)
    outside = [t for t in params.logit_bias if n_vocab is not None and t >= n_vocab]
    if outside:
        raise BadRequest(
            f"field 'logit_bias': token id {outside[0]} is outside this model's vocabulary (ids 0 to {n_vocab - 1})",
            param="logit_bias",
        )
    n_prompt = len(engine.tokenize(prompt))
    n_ctx = engine.n_ctx
    if n_prompt >= n_ctx:
        raise BadRequest(
            f"field '{prompt_field}': the prompt has {n_prompt} tokens but the model's context "
            f"window is {n_ctx} tokens; shorten the {prompt_field} (nothing was truncated)",
            param=prompt_field,
            status=400,
        )
    if not max_tokens_given:
        params.max_tokens = n_ctx - n_prompt
    elif n_prompt + params.max_tokens > n_ctx:
        raise BadRequest(
            f"field 'max_tokens': prompt ({n_prompt} tokens) + max_tokens ({params.max_tokens}) "
            f"= {n_prompt + params.max_tokens} exceeds the context window of {n_ctx} tokens; "
            f"set max_tokens <= {n_ctx - n_prompt} or shorten the {prompt_field}",
            param="max_tokens",
        )
    return n_prompt


def chat_text(content: Any, field: str = "messages") -> str:
    """OpenAI message content (a string or a list of text parts) -> plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for i, part in enumerate(content):
            ptype = part.get("type") if isinstance(part, dict) else None
            if ptype == "text":
                out.append(str(part.get("text", "")))
            else:
                raise BadRequest(
                    f"field '{field}.content[{i}]': only text parts are supported by this model "
                    f"(got type {ptype!r}); send {{'type': 'text', 'text': ...}}",
                    param=f"{field}.content",
                )
        return "".join(out)
    raise BadRequest(f"field '{field}.content': expected a string or a list of text parts", param=field)


# ---------------------------------------------------------------- running
@dataclass
class Generation:
    """A finished generation with its usage and timings."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: float | None = None  # seconds from start to the first token
    decode_seconds: float = 0.0  # first token -> last token
    logprobs: list[dict[str, Any]] | None = None  # per generated token, when SamplingParams.logprobs is set

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class TimedStream:
    """Wrap an engine stream: collects text, usage and timings into `.result`; always closes the engine
    iterator (so a client disconnect cancels the sequence) and calls `on_done(result)` exactly once."""

    def __init__(
        self,
        engine: Engine,
        prompt: str,
        params: SamplingParams,
        prompt_tokens: int = 0,
        on_done: Callable[[Generation], None] | None = None,
    ):
        self.result = Generation(prompt_tokens=prompt_tokens)
        self._agen = engine.generate(prompt, params)
        self._on_done = on_done
        self._t0 = time.perf_counter()
        self._t_first: float | None = None
        self._t_last: float | None = None
        self._done = False

    async def first(self) -> GenerationChunk | None:
        """Pull the first chunk (so bad-request/overload errors surface before a response starts)."""
        try:
            return await self._agen.__anext__()
        except StopAsyncIteration:
            return None

    def record(self, chunk: GenerationChunk) -> None:
        t = time.perf_counter()
        r = self.result
        if chunk.text:
            r.text += chunk.text
        if chunk.logprobs is not None:
            r.logprobs = (r.logprobs or []) + chunk.logprobs
        if chunk.completion_tokens or chunk.text:
            if self._t_first is None:
                self._t_first = t
                r.ttft = t - self._t0
            self._t_last = t
        if chunk.prompt_tokens:
            r.prompt_tokens = chunk.prompt_tokens
        if chunk.completion_tokens:
            r.completion_tokens = chunk.completion_tokens
        if chunk.finish_reason:
            r.finish_reason = chunk.finish_reason

    async def chunks(self, first: GenerationChunk | None = None, interval: float = 0.0
                     ) -> AsyncIterator[GenerationChunk]:
        """The chunks; with `interval` (seconds), at most one per interval: the engine's stream merges the tokens
        that arrive meanwhile, so a fast single stream costs the server and its client fewer events per token
        (each streamed event costs ~1 ms of CPU across server and client, a tenth of a decode step)."""
        async with aclosing(self._agen):
            try:
                if first is not None:
                    self.record(first)
                    yield first
                due = time.monotonic() + interval
                async for chunk in self._agen:
                    self.record(chunk)
                    yield chunk
                    if interval and chunk.finish_reason is None:
                        wait = due - time.monotonic()
                        if wait > 0:
                            await asyncio.sleep(wait)
                        due = time.monotonic() + interval
            finally:
                self.finish()

    async def aclose(self) -> None:
        await self._agen.aclose()
        self.finish()

    def finish(self) -> None:
        if self._done:
            return
        self._done = True
        r = self.result
        if r.finish_reason is None:
            r.finish_reason = "cancelled"
        if self._t_first is not None and self._t_last is not None:
            r.decode_seconds = self._t_last - self._t_first
        if self._on_done is not None:
            self._on_done(r)


async def generate(
    engine: Engine,
    prompt: str,
    params: SamplingParams,
    *,
    prompt_tokens: int = 0,
    on_done: Callable[[Generation], None] | None = None,
    on_text: Callable[[str], None] | None = None,
    cancelled: Callable[[], Any] | None = None,
) -> Generation:
    """Run one generation to the end and return it; `on_text` sees each text delta, and the generation is
    cancelled when the async `cancelled()` check returns true (checked every few chunks)."""
    ts = TimedStream(engine, prompt, params, prompt_tokens, on_done)
    first = await ts.first()
    n = 0
    async with aclosing(ts.chunks(first)) as stream:
        async for chunk in stream:
            if on_text is not None and chunk.text:
                on_text(chunk.text)
            n += 1
            if cancelled is not None and n % 8 == 0 and await cancelled():
                break
    return ts.result


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
