"""OpenAI-compatible endpoints: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.

Thin: request models (FastAPI types = OpenAPI docs) -> luodi.llm service functions -> OpenAI-shaped JSON/SSE.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from luodi import llm
from luodi.errors import BadRequest, LuodiError, NotFound, Overloaded
from luodi.serve.choices import Choices
from luodi.serve.state import ServerState, get_state

router = APIRouter(tags=["openai"])
MAX_EMBED_INPUTS = 2048
MAX_CHOICES = 16  # n per request: each choice is a sequence in the engine's batch


# ------------------------------------------------------------------------------------------ request models
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(None, description="the served chat model id (see GET /v1/models)")
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, description="luodi extension; 0 = disabled")
    max_tokens: int | None = Field(None, ge=1, description="default: what is left of the context window")
    stop: str | list[str] | None = None
    seed: int | None = Field(None, description="same seed + same request = same output")
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="choices to generate (seed + i each when seeded)")
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(
        None, ge=-2, le=2, description="subtracted from the logit of every token generated so far"
    )
    frequency_penalty: float | None = Field(
        None, ge=-2, le=2, description="times the number of times a token was generated so far"
    )
    logit_bias: dict[str, float] | None = Field(
        None, description='{"token id": bias}: -100 bans the token, 100 forces it (added to its logit)'
    )
    user: str | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = Field(None, description="each output token's log-probability (choices[].logprobs)")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="with logprobs: the k likeliest tokens too")


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = Field(None, ge=0, le=20, description="log-probabilities of the k likeliest tokens")
    best_of: int | None = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


# ------------------------------------------------------------------------------------------ helpers
def _model_names(spec: str) -> set[str]:
    names = {spec}
    if spec.startswith("bundled:"):
        names.add(spec.split(":", 1)[1])
    return names


def available_models(state: ServerState) -> list[dict[str, Any]]:
    """Chat and embedding models this server answers with, plus registered ones."""
    s = state.settings
    created = int(time.time())
    out = [
        {"id": s.chat_model, "object": "model", "created": created, "owned_by": "luodi", "role": "chat"},
        {
            "id": s.embed_model,
            "object": "model",
            "created": created,
            "owned_by": "luodi",
            "role": "embedding",
        },
    ]
    seen = {s.chat_model, s.embed_model}
    for m in _registered_models():
        if m["id"] not in seen:
            seen.add(m["id"])
            out.append({"object": "model", "created": created, "owned_by": "luodi-registry", **m})
    return out


def _registered_models() -> list[dict[str, Any]]:
    """Apps with a finished run in the registry (served at /v1/apps/{name}/predict), when present."""
    try:
        from luodi.apps import registry

        out = []
        for name in registry.apps_with_runs():
            run = registry.get_run(name)
            out.append(
                {"id": name, "role": run.task, "version": run.version, "endpoint": f"/v1/apps/{name}/predict"}
            )
        return out
    except Exception:  # noqa: BLE001 - the registry is optional for the LLM server
        return []


def _check_model(state: ServerState, model: str | None, role: str) -> str:
    s = state.settings
    spec = s.chat_model if role == "chat" else s.embed_model
    other = s.embed_model if role == "chat" else s.chat_model
    ok = _model_names(spec) | {"default"}
    if role == "chat" and state.engine is not None:
        ok.add(str(getattr(state.engine, "model_id", spec)))
    if not model or model in ok:
        return spec
    if model in _model_names(other):
        where = "/v1/embeddings" if role == "chat" else "/v1/chat/completions or /v1/completions"
        raise BadRequest(
            f"field 'model': '{model}' is {'an embedding' if role == 'chat' else 'a chat'} "
            f"model; use it with {where}, or send model '{spec}' here",
            param="model",
        )
    raise NotFound(
        f"field 'model': model '{model}' is not served here; use '{spec}' (GET /v1/models lists the models)",
        param="model",
    )


async def _engine(state: ServerState):
    if state.engine is not None:
        return state.engine
    try:
        return await run_in_threadpool(llm.ensure_engine, state)
    except (ImportError, AttributeError) as e:
        raise Overloaded(f"the chat engine is not available on this server ({e})") from e


def _on_done(state: ServerState):
    metrics = state.extra.get("metrics")
    if metrics is None:
        return None

    def record(g: llm.Generation) -> None:
        metrics.observe_generation(
            ttft=g.ttft,
            decode_seconds=g.decode_seconds,
            prompt_tokens=g.prompt_tokens,
            completion_tokens=g.completion_tokens,
        )

    return record


def _finish(reason: str | None) -> str:
    return {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}.get(
        reason or "", reason or "stop"
    )


def _chat_logprobs(req: ChatCompletionRequest) -> int | None:
    """SamplingParams.logprobs for a chat request: None (off) or the number of alternatives per token."""
    if req.top_logprobs is not None and not req.logprobs:
        raise BadRequest("field 'top_logprobs': needs 'logprobs': true", param="top_logprobs")
    return (req.top_logprobs or 0) if req.logprobs else None


def _legacy_logprobs(entries: list[dict[str, Any]], offset: int) -> dict[str, Any]:
    """/v1/completions' logprobs shape (tokens, token_logprobs, top_logprobs, text_offset) from chat entries;
    `offset`: characters before the first token (the prompt's length, as OpenAI counts)."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        "text_offset": offsets,
    }


def _sse(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _error_event(e: Exception) -> str:
    if isinstance(e, LuodiError):
        err = {"message": e.message, "type": "invalid_request_error", "param": e.param, "code": e.code}
    else:
        err = {
            "message": f"generation failed ({type(e).__name__})",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    return _sse({"error": err})


# ------------------------------------------------------------------------------------------ chat
@router.post("/v1/chat/completions", summary="Chat completion (OpenAI-compatible; SSE when stream=true)")
async def chat_completions(req: ChatCompletionRequest, request: Request):
    state = get_state(request)
    logprobs = _chat_logprobs(req)
    model = _check_model(state, req.model, "chat")
    engine = await _engine(state)
    max_tokens = req.max_completion_tokens or req.max_tokens

    from luodi.agent import toolcalls

    specs = toolcalls.normalize_tools(req.tools) if req.tools else []
    choice = toolcalls.normalize_tool_choice(req.tool_choice, specs) if specs else "none"
    use_tools = bool(specs) and choice != "none"
    schema = toolcalls.call_schema(specs, choice) if use_tools else None
    if use_tools and req.response_format and req.response_format.type != "text":
        raise BadRequest(
            "fields 'tools' and 'response_format' cannot be combined; drop one of them",
            param="response_format",
        )
    params = llm.sampling_params(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        seed=req.seed,
        stop=req.stop,
        response_format=req.response_format.model_dump() if req.response_format else None,
        json_schema=schema,
        logit_bias=req.logit_bias,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        logprobs=logprobs,
    )
    messages = []
    for i, m in enumerate(req.messages):
        d = m.model_dump(exclude_none=True)
        d["content"] = llm.chat_text(m.content, f"messages[{i}]")
        messages.append(d)
    prompt = engine.chat_prompt(toolcalls.messages_for_model(messages, specs, choice))
    n_prompt = llm.fit_to_context(engine, prompt, params, max_tokens is not None, "messages")
    choices = Choices(engine, prompt, params, req.n, n_prompt, on_done=_on_done(state),
                      stream_interval=state.settings.stream_interval_ms / 1000 if req.stream else 0.0)
    await choices.start()  # errors (context, overload) become a normal HTTP error here
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())

    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return EventSourceResponse(
            _chat_stream(choices, cid, created, model, include_usage, specs if use_tools else None, choice),
            ping=15,
            sep="\n",
        )

    async def disconnected() -> bool:
        return await request.is_disconnected()

    out = []
    for i, g in enumerate(await choices.collect(disconnected)):
        message: dict[str, Any] = {"role": "assistant", "content": g.text}
        finish = _finish(g.finish_reason)
        if use_tools:
            message, finish = _tool_message(g, specs, choice)
        lp = None if logprobs is None else {"content": g.logprobs or []}
        out.append({"index": i, "message": message, "finish_reason": finish, "logprobs": lp})
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": out,
        "usage": choices.usage(),
    }


def _tool_message(g: llm.Generation, specs, choice) -> tuple[dict[str, Any], str]:
    from luodi.agent import toolcalls

    if g.finish_reason == "length":
        return {"role": "assistant", "content": g.text}, "length"
    try:
        out = toolcalls.parse_output(g.text, specs, choice)
    except toolcalls.ToolCallError:
        return {"role": "assistant", "content": g.text}, "stop"
    if out.tool_calls:
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [c.to_openai() for c in out.tool_calls],
        }, "tool_calls"
    return {"role": "assistant", "content": out.content or ""}, "stop"


def _chunk_sse(cid: str, created: int, model: str, obj: str, choices: list, include_usage: bool,
               usage: dict | None = None) -> str:
    """One streamed SSE event of a chat or text completion (`usage` is null until the last event)."""
    body = {"id": cid, "object": obj, "created": created, "model": model, "choices": choices}
    if include_usage:
        body["usage"] = usage
    return _sse(body)


async def _chat_stream(
    choices: Choices, cid: str, created: int, model: str, include_usage: bool, specs, tool_choice
) -> AsyncIterator[str]:
    def chunk(i: int, delta: dict, finish: str | None = None, logprobs: list | None = None) -> str:
        lp = None if logprobs is None else {"content": logprobs}
        choice0 = {"index": i, "delta": delta, "finish_reason": finish, "logprobs": lp}
        return _chunk_sse(cid, created, model, "chat.completion.chunk", [choice0], include_usage)

    try:
        for i in range(len(choices.streams)):
            yield chunk(i, {"role": "assistant", "content": ""})
        async with aclosing(choices.stream()) as merged:
            async for i, c in merged:
                if c is not None:
                    if (c.text or c.logprobs) and specs is None:
                        yield chunk(i, {"content": c.text}, logprobs=c.logprobs)
                    continue
                g = choices.results[i]  # choice i has finished
                if specs is not None:  # tool calls are parsed from the whole output, then sent as one delta
                    message, finish = _tool_message(g, specs, tool_choice)
                    delta = {k: v for k, v in message.items() if k != "role" and v is not None}
                    if "tool_calls" in delta:
                        delta["tool_calls"] = [{"index": j, **tc} for j, tc in enumerate(delta["tool_calls"])]
                    yield chunk(i, delta)
                else:
                    finish = _finish(g.finish_reason)
                yield chunk(i, {}, finish)
        if include_usage:
            yield _chunk_sse(cid, created, model, "chat.completion.chunk", [], True, choices.usage())
        yield "[DONE]"
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as e:  # noqa: BLE001 - the response has started: report the error in the stream
        yield _error_event(e)
        yield "[DONE]"
    finally:
        await choices.close()


# ------------------------------------------------------------------------------------------ completions
@router.post("/v1/completions", summary="Text completion (OpenAI-compatible legacy endpoint)")
async def completions(req: CompletionRequest, request: Request):
    state = get_state(request)
    for name, bad in (("echo", req.echo), ("suffix", req.suffix), ("best_of", req.best_of not in (None, 1))):
        if bad:
            raise BadRequest(f"field '{name}': not supported by this server; remove it", param=name)
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    if len(prompts) != 1:
        raise BadRequest(
            f"field 'prompt': send exactly one prompt per request (got {len(prompts)})", param="prompt"
        )
    prompt = prompts[0]
    if not prompt:
        raise BadRequest("field 'prompt': must not be empty", param="prompt")
    model = _check_model(state, req.model, "chat")
    engine = await _engine(state)
    params = llm.sampling_params(
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        seed=req.seed,
        stop=req.stop,
        logit_bias=req.logit_bias,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        logprobs=req.logprobs,
    )
    n_prompt = llm.fit_to_context(engine, prompt, params, req.max_tokens is not None, "prompt")
    choices = Choices(engine, prompt, params, req.n, n_prompt, on_done=_on_done(state),
                      stream_interval=state.settings.stream_interval_ms / 1000 if req.stream else 0.0)
    await choices.start()
    cid = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        offset = None if req.logprobs is None else len(prompt)
        return EventSourceResponse(
            _completion_stream(choices, cid, created, model, include_usage, offset), ping=15, sep="\n"
        )

    async def disconnected() -> bool:
        return await request.is_disconnected()

    out = [
        {
            "index": i,
            "text": g.text,
            "finish_reason": _finish(g.finish_reason),
            "logprobs": None if req.logprobs is None else _legacy_logprobs(g.logprobs or [], len(prompt)),
        }
        for i, g in enumerate(await choices.collect(disconnected))
    ]
    return {
        "id": cid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": out,
        "usage": choices.usage(),
    }


async def _completion_stream(
    choices: Choices, cid: str, created: int, model: str, include_usage: bool, offset: int | None
) -> AsyncIterator[str]:
    """SSE events of a text completion; `offset` (the prompt's length) when the request asked for logprobs."""
    offsets = [offset] * len(choices.streams)

    def chunk(i: int, text: str, finish: str | None = None, logprobs: list | None = None) -> str:
        lp = None
        if offsets[i] is not None and logprobs is not None:
            lp = _legacy_logprobs(logprobs, offsets[i])
            offsets[i] += sum(len(e["token"]) for e in logprobs)
        choice0 = {"index": i, "text": text, "finish_reason": finish, "logprobs": lp}
        return _chunk_sse(cid, created, model, "text_completion", [choice0], include_usage)

    try:
        async with aclosing(choices.stream()) as merged:
            async for i, c in merged:
                if c is None:
                    yield chunk(i, "", _finish(choices.results[i].finish_reason))
                elif c.text or c.logprobs:
                    yield chunk(i, c.text, logprobs=c.logprobs)
        if include_usage:
            yield _chunk_sse(cid, created, model, "text_completion", [], True, choices.usage())
        yield "[DONE]"
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as e:  # noqa: BLE001
        yield _error_event(e)
        yield "[DONE]"
    finally:
        await choices.close()


# ------------------------------------------------------------------------------------------ embeddings
def embed_texts(state: ServerState, texts: list[str]) -> tuple[np.ndarray, int]:
    """Embed texts with the server's encoder: (vectors, token count)."""
    enc = llm.ensure_encoder(state)
    return enc.encode(texts), enc.count_tokens(texts)


@router.post("/v1/embeddings", summary="Sentence embeddings (L2-normalized)")
async def embeddings(req: EmbeddingRequest, request: Request):
    state = get_state(request)
    model = _check_model(state, req.model, "embedding")
    inp = req.input
    texts = [inp] if isinstance(inp, str) else list(inp)
    if not texts:
        raise BadRequest("field 'input': send a string or a non-empty list of strings", param="input")
    if any(not isinstance(t, str) for t in texts):
        raise BadRequest(
            "field 'input': token-id input is not supported; send the text itself", param="input"
        )
    if len(texts) > MAX_EMBED_INPUTS:
        raise BadRequest(
            f"field 'input': at most {MAX_EMBED_INPUTS} texts per request, got {len(texts)}; split the list",
            param="input",
        )
    for i, t in enumerate(texts):
        if not t.strip():
            where = "input" if isinstance(inp, str) else f"input[{i}]"
            raise BadRequest(f"field '{where}': must not be empty", param="input")
    vecs, n_tokens = await run_in_threadpool(embed_texts, state, texts)
    if req.dimensions is not None and req.dimensions != vecs.shape[1]:
        raise BadRequest(
            f"field 'dimensions': this model gives {vecs.shape[1]}-dimensional vectors; omit "
            f"'dimensions' or set it to {vecs.shape[1]}",
            param="dimensions",
        )
    metrics = state.extra.get("metrics")
    if metrics is not None:
        metrics.embedded_inputs.inc(len(texts))
    data = []
    for i, v in enumerate(vecs):
        emb: Any = (
            base64.b64encode(v.astype("<f4").tobytes()).decode()
            if req.encoding_format == "base64"
            else v.tolist()
        )
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }


# ------------------------------------------------------------------------------------------ models
@router.get("/v1/models", summary="Models served here (chat, embedding) and registered ones")
async def models(request: Request):
    return {"object": "list", "data": available_models(get_state(request))}


@router.get("/v1/models/{model_id:path}", summary="One model")
async def model(model_id: str, request: Request):
    for m in available_models(get_state(request)):
        if model_id in _model_names(m["id"]):
            return m
    raise NotFound(f"model '{model_id}' is not served here; GET /v1/models lists the models", param="model")
