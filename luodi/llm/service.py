"""The LLM service: one request in, one OpenAI response out (or its stream of events).

`chat_completion` is the whole recipe of a chat completion: chat template, sampling parameters, tools, the
one context check (the prompt is tokenized once and its ids go to the engine), n choices, streamed or not.
`text_completion` is the same for the legacy /v1/completions. The HTTP routes and `luodi chat` / `luodi
generate` are thin faces over these two. Errors are luodi.errors.* naming the request field, raised before
a response starts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from luodi.engines.base import Engine, SamplingParams
from luodi.engines.limits import check_request
from luodi.errors import BadRequest, LuodiError
from luodi.llm import toolcalls, toolparse
from luodi.llm.choices import Choices
from luodi.llm.forward import forward
from luodi.llm.generation import Generation
from luodi.llm.openai_types import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    CompletionRequest,
    Delta,
    ErrorBody,
    ErrorDetail,
    LegacyLogprobs,
    TextChoice,
    TextCompletion,
)
from luodi.llm.params import chat_text, sampling_params

OnDone = Callable[[Generation], None]
Disconnected = Callable[[], Awaitable[bool]]


def fit_prompt(engine: Engine, prompt: str, params: SamplingParams, prompt_field: str) -> list[int]:
    """Tokenize the prompt once and check the request fits the context window (never truncated); fills in
    params.max_tokens when the request left it out. Returns the ids to hand to the engine."""
    ids = engine.tokenize(prompt)
    params.max_tokens = check_request(ids, params, engine.n_ctx, getattr(engine, "n_vocab", None), prompt_field)
    return ids


async def _still_here() -> bool:
    return False


def _finish(reason: str | None) -> str:
    return reason or "stop"


# ------------------------------------------------------------------------------------------ chat
async def chat_completion(
    engine: Engine,
    req: ChatCompletionRequest,
    *,
    model: str | None = None,
    on_done: OnDone | None = None,
    stream_interval: float = 0.0,
    disconnected: Disconnected = _still_here,
) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
    """Serve one chat completion: the finished ChatCompletion, or with req.stream its events (the choices have
    started by then, so a bad or overloading request raises here, before any event). `on_done` sees each
    choice's timed Generation; `stream_interval` (seconds) merges the tokens of one choice between events;
    `disconnected` stops a non-streamed request whose client went away. On an engine that forwards OpenAI
    requests (the `openai` engine), the upstream does all of it (luodi.llm.forward)."""
    if getattr(engine, "forwards", False):
        return await forward(engine, "chat/completions", req, model=model or engine.model_id, on_done=on_done)
    if req.top_logprobs is not None and not req.logprobs:
        raise BadRequest("field 'top_logprobs': needs 'logprobs': true", param="top_logprobs")
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    specs = toolcalls.normalize_tools(req.tools) if req.tools else []
    choice = toolcalls.normalize_tool_choice(req.tool_choice, specs) if specs else "none"
    tools = _Tools(specs, choice) if specs and choice != "none" else None
    if tools and req.response_format and req.response_format.type != "text":
        raise BadRequest("fields 'tools' and 'response_format' cannot be combined; drop one of them",
                         param="response_format")
    params = sampling_params(
        max_tokens=req.max_completion_tokens or req.max_tokens, temperature=req.temperature, top_p=req.top_p,
        top_k=req.top_k, seed=req.seed, stop=req.stop,
        response_format=req.response_format.model_dump() if req.response_format else None,
        json_schema=toolcalls.call_schema(specs, choice) if tools else None, logit_bias=req.logit_bias,
        presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty, logprobs=logprobs,
    )
    messages = []
    for i, m in enumerate(req.messages):
        messages.append({**m.model_dump(exclude_none=True), "content": chat_text(m.content, f"messages[{i}]")})
    prompt = engine.chat_prompt(toolcalls.messages_for_model(messages, specs, choice))
    ids = fit_prompt(engine, prompt, params, "messages")
    choices = Choices(engine, ids, params, req.n, on_done=on_done,
                      stream_interval=stream_interval if req.stream else 0.0)
    await choices.start()
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model or engine.model_id}
    if req.stream:
        return _chat_events(choices, head, req.include_usage, tools)
    out = []
    for i, g in enumerate(await choices.collect(disconnected)):
        message, finish = tools.message(g) if tools else (AssistantMessage(content=g.text), _finish(g.finish_reason))
        lp = None if logprobs is None else {"content": g.logprobs or []}
        out.append(ChatChoice(index=i, message=message, finish_reason=finish, logprobs=lp))
    return ChatCompletion(**head, choices=out, usage=choices.usage())


class _Tools:
    """A request's tools: the reply is parsed from the whole output into tool calls or text."""

    def __init__(self, specs: list[toolcalls.ToolSpec], choice: str) -> None:
        self.specs, self.choice = specs, choice

    def message(self, g: Generation) -> tuple[AssistantMessage, str]:
        if g.finish_reason == "length":
            return AssistantMessage(content=g.text), "length"
        try:
            out = toolparse.parse_output(g.text, self.specs, self.choice)
        except toolcalls.ToolCallError:
            return AssistantMessage(content=g.text), "stop"
        if out.tool_calls:
            return AssistantMessage(content=None, tool_calls=[c.to_openai() for c in out.tool_calls]), "tool_calls"
        return AssistantMessage(content=out.content or ""), "stop"


async def _chat_events(choices: Choices, head: dict[str, Any], include_usage: bool, tools: _Tools | None
                       ) -> AsyncIterator[ChatCompletionChunk]:
    def event(i: int, delta: Delta, finish: str | None = None, logprobs: list | None = None) -> ChatCompletionChunk:
        lp = None if logprobs is None else {"content": logprobs}
        return ChatCompletionChunk(**head, include_usage=include_usage,
                                   choices=[ChunkChoice(index=i, delta=delta, finish_reason=finish, logprobs=lp)])

    try:  # closing the events (client gone) or an error cancels every choice
        for i in range(len(choices.streams)):
            yield event(i, Delta(role="assistant", content=""))
        async with aclosing(choices.stream()) as merged:
            async for i, c in merged:
                if c is not None:
                    if (c.text or c.logprobs) and tools is None:
                        yield event(i, Delta(content=c.text), logprobs=c.logprobs)
                    continue
                g = choices.results[i]  # choice i has finished
                if tools is not None:  # tool calls are parsed from the whole output, then sent as one delta
                    message, finish = tools.message(g)
                    calls = [{"index": j, **tc.dump()} for j, tc in enumerate(message.tool_calls or [])]
                    yield event(i, Delta(content=message.content, tool_calls=calls or None))
                else:
                    finish = _finish(g.finish_reason)
                yield event(i, Delta(), finish)
        if include_usage:
            yield ChatCompletionChunk(**head, include_usage=True, choices=[], usage=choices.usage())
    finally:
        await choices.close()


# ------------------------------------------------------------------------------------------ text
async def text_completion(
    engine: Engine,
    req: CompletionRequest,
    *,
    model: str | None = None,
    on_done: OnDone | None = None,
    stream_interval: float = 0.0,
    disconnected: Disconnected = _still_here,
) -> TextCompletion | AsyncIterator[TextCompletion]:
    """Serve one text completion (no chat template), as chat_completion does a chat one."""
    if getattr(engine, "forwards", False):
        return await forward(engine, "completions", req, model=model or engine.model_id, on_done=on_done)
    for name, bad in (("echo", req.echo), ("suffix", req.suffix), ("best_of", req.best_of not in (None, 1))):
        if bad:
            raise BadRequest(f"field '{name}': not supported by this server; remove it", param=name)
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    if len(prompts) != 1:
        raise BadRequest(f"field 'prompt': send exactly one prompt per request (got {len(prompts)})",
                         param="prompt")
    prompt = prompts[0]
    if not prompt:
        raise BadRequest("field 'prompt': must not be empty", param="prompt")
    params = sampling_params(
        max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=req.seed,
        stop=req.stop, logit_bias=req.logit_bias, presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty, logprobs=req.logprobs,
    )
    ids = fit_prompt(engine, prompt, params, "prompt")
    choices = Choices(engine, ids, params, req.n, on_done=on_done,
                      stream_interval=stream_interval if req.stream else 0.0)
    await choices.start()
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model or engine.model_id}
    offset = None if req.logprobs is None else len(prompt)  # OpenAI counts text offsets from the prompt's start
    if req.stream:
        return _text_events(choices, head, req.include_usage, offset)
    out = [
        TextChoice(index=i, text=g.text, finish_reason=_finish(g.finish_reason),
                   logprobs=None if offset is None else legacy_logprobs(g.logprobs or [], offset))
        for i, g in enumerate(await choices.collect(disconnected))
    ]
    return TextCompletion(**head, include_usage=True, choices=out, usage=choices.usage())


def legacy_logprobs(entries: list[dict[str, Any]], offset: int) -> LegacyLogprobs:
    """/v1/completions' logprobs shape from the engine's entries; `offset`: characters before the first token."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e["token"])
    return LegacyLogprobs(
        tokens=[e["token"] for e in entries], token_logprobs=[e["logprob"] for e in entries],
        top_logprobs=[{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries], text_offset=offsets,
    )


async def _text_events(choices: Choices, head: dict[str, Any], include_usage: bool, offset: int | None
                       ) -> AsyncIterator[TextCompletion]:
    offsets = [offset] * len(choices.streams)

    def event(i: int, text: str, finish: str | None = None, logprobs: list | None = None) -> TextCompletion:
        lp = None
        if offsets[i] is not None and logprobs is not None:
            lp = legacy_logprobs(logprobs, offsets[i])
            offsets[i] += sum(len(e["token"]) for e in logprobs)
        choice = TextChoice(index=i, text=text, finish_reason=finish, logprobs=lp)
        return TextCompletion(**head, include_usage=include_usage, choices=[choice])

    try:
        async with aclosing(choices.stream()) as merged:
            async for i, c in merged:
                if c is None:
                    yield event(i, "", _finish(choices.results[i].finish_reason))
                elif c.text or c.logprobs:
                    yield event(i, c.text, logprobs=c.logprobs)
        if include_usage:
            yield TextCompletion(**head, include_usage=True, choices=[], usage=choices.usage())
    finally:
        await choices.close()


def error_event(e: BaseException) -> ErrorBody:
    """The error body sent as a stream's last event when generation fails after the response started."""
    if isinstance(e, LuodiError):
        etype = "server_error" if e.status >= 500 else "invalid_request_error"  # e.g. an upstream failing mid-stream
        return ErrorBody(error=ErrorDetail(message=e.message, type=etype, param=e.param, code=e.code))
    return ErrorBody(error=ErrorDetail(message=f"generation failed ({type(e).__name__})", type="server_error",
                                       code="internal_error"))

