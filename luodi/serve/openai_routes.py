"""OpenAI-compatible endpoints: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.

Thin: the request types (luodi.llm.openai_types, also the OpenAPI docs) go to the LLM service
(luodi.llm.chat_completion / text_completion) and its typed responses come back as JSON or SSE.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from luodi import crypto, llm
from luodi.errors import BadRequest, LuodiError, NotFound, Overloaded
from luodi.llm.openai_types import (
    Body,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Embedding,
    EmbeddingList,
    EmbeddingUsage,
    TextCompletion,
)
from luodi.serve.auth import visible
from luodi.serve.openai_schemas import MAX_EMBED_INPUTS, CompletionBody, EmbeddingBody
from luodi.serve.state import ServerState, get_state

router = APIRouter(tags=["openai"])


# ------------------------------------------------------------------------------------------ helpers
def _model_names(spec: str) -> set[str]:
    names = {spec}
    if spec.startswith("bundled:"):
        names.add(spec.split(":", 1)[1])
    return names


def chat_model_id(state: ServerState) -> str:
    """The chat model this server answers with: the engine's once loaded (the openai engine serves its
    upstream's model under the upstream's id), else LUODI_CHAT_MODEL."""
    engine = state.engine
    if engine is not None and getattr(engine, "forwards", False):
        return str(engine.model_id)
    return state.settings.chat_model


def available_models(state: ServerState) -> list[dict[str, Any]]:
    """Chat and embedding models this server answers with, plus registered ones."""
    s = state.settings
    created = int(time.time())
    chat = chat_model_id(state)
    out = [
        {"id": chat, "object": "model", "created": created, "owned_by": "luodi", "role": "chat"},
        {
            "id": s.embed_model,
            "object": "model",
            "created": created,
            "owned_by": "luodi",
            "role": "embedding",
        },
    ]
    seen = {chat, s.embed_model}
    for m in registered_models():
        if m["id"] not in seen:
            seen.add(m["id"])
            out.append({"object": "model", "created": created, "owned_by": "luodi-registry", **m})
    return out


def _visible_models(request: Request) -> list[dict[str, Any]]:
    """The models a caller's key may use: a key scoped to some apps sees the served chat and embedding models and
    those apps, not every app of the registry."""
    listed = available_models(get_state(request))
    apps = [m for m in listed if m.get("owned_by") == "luodi-registry"]
    allowed = {id(m) for m in visible(request, "app", apps, field="id")}
    return [m for m in listed if m.get("owned_by") != "luodi-registry" or id(m) in allowed]


def registered_models() -> list[dict[str, Any]]:
    """Apps with a finished run in the registry (served at /v1/apps/{name}/predict), when present; those
    served from a GGUF (`luodi optimize --method gguf`) answer on /v1/chat/completions too."""
    try:
        from luodi.apps import registry

        out = []
        for name in registry.apps_with_runs():
            try:
                run = registry.get_run(name)
            except LuodiError:  # no run serves by itself (held back: optimized, or it missed its goal)
                continue
            entry = {"id": name, "role": run.task, "version": run.version, "endpoint": f"/v1/apps/{name}/predict"}
            if _gguf_of(run) is not None:
                entry.update(endpoint="/v1/chat/completions", predict_endpoint=f"/v1/apps/{name}/predict")
            out.append(entry)
        return out
    except Exception:  # noqa: BLE001 - the registry is optional for the LLM server
        return []


def _check_model(state: ServerState, model: str | None, role: str) -> str:
    s = state.settings
    spec = chat_model_id(state) if role == "chat" else s.embed_model
    other = s.embed_model if role == "chat" else chat_model_id(state)
    ok = _model_names(spec) | {"default"}
    if role == "chat" and state.engine is not None:
        ok.add(str(getattr(state.engine, "model_id", spec)))
    if not model or model in ok:
        return spec
    if role == "chat" and state.engine is not None and getattr(state.engine, "model_id", None) == "upstream":
        return model  # the openai engine has not learnt its upstream's model yet (it was down): the upstream judges
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


def _gguf_of(run: Any) -> str | None:
    """The merged GGUF a text-generation run is served from, else None."""
    if run.task != "text-generation":
        return None
    from luodi.tasks.text_generation import served_gguf

    path = served_gguf(run.path)
    return None if path is None else str(path)


def app_engine(state: ServerState, name: str) -> tuple[Any, str | None] | None:
    """The llama.cpp engine of app `name` when its served run is a merged GGUF (one shared engine per model,
    continuous batching like the server's own model, with the server's engine settings) and the system prompt
    the app was trained with; else None."""
    from luodi.apps import registry
    from luodi.engines import engine_options, get_engine

    try:
        run = registry.get_run(name)
    except LuodiError:
        return None
    path = _gguf_of(run) if run.status == "done" else None
    if path is None:
        return None
    system = crypto.read_json(run.path / "text_generation.json").get("options", {}).get("system")
    try:
        return get_engine(path, "llamacpp", **engine_options(state.settings, "llamacpp")), system
    except LuodiError:
        raise
    except Exception as e:  # noqa: BLE001 - the app's model cannot load here: say so, never a 500
        raise Overloaded(f"app '{name}''s model is not available on this server ({e})") from e


def _chat_target(state: ServerState, req: Any) -> tuple[str, Any | None, Any]:
    """The model name to answer with, its engine and the request: an app served from a GGUF by its name (its
    training system prompt first when the chat has none), else the server's chat model (engine None: the
    server's); unknown names keep their 404 / 400."""
    try:
        return _check_model(state, req.model, "chat"), None, req
    except NotFound:
        found = app_engine(state, req.model) if req.model else None
        if found is None:
            raise
        engine, system = found
        if system and isinstance(req, ChatCompletionRequest) and req.messages[0].role != "system":
            req = req.model_copy(update={"messages": [ChatMessage(role="system", content=system), *req.messages]})
        return req.model, engine, req


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


async def _serve(service, req, request: Request):
    """Run a completion through the LLM service: JSON, or SSE events ending in [DONE] when req.stream."""
    state = get_state(request)
    model, engine, req = await run_in_threadpool(_chat_target, state, req)
    headers = None
    guard = state.extra.get("pii_guard")
    if guard is not None:  # LUODI_GUARD_PII: the model (and all after it) sees the redacted request only
        from luodi.privacy.guard import HEADER, redact_request

        req, removed = await run_in_threadpool(redact_request, req, guard)
        headers = {HEADER: ",".join(removed) or "none"}
    injection = state.extra.get("injection_guard")
    if injection is not None:  # LUODI_GUARD_INJECTION: block (400 guard_injection) or flag (X-Luodi-Guard)
        from luodi.privacy.injection_server import check_request

        headers = {**(headers or {}), **await run_in_threadpool(check_request, req, injection)}
    engine = engine or state.engine or await run_in_threadpool(llm.ensure_engine, state)
    out = await service(engine, req, model=model, on_done=_on_done(state),
                        stream_interval=state.settings.stream_interval_ms / 1000, disconnected=request.is_disconnected)
    if isinstance(out, Body):  # its JSON as it is (FastAPI's jsonable_encoder would walk it again)
        body = out.sse()
        if injection is not None:  # the reply's output checks: secrets, system prompt, PII
            from luodi.privacy.injection_server import check_response

            body, extra = await run_in_threadpool(check_response, body, req, injection.cfg)
            headers = {**(headers or {}), **extra}
        return Response(body, media_type="application/json", headers=headers)
    if injection is not None:  # streamed: checked as it grows, a leak ends the stream (content_filter)
        from luodi.privacy.injection_server import check_stream

        out, extra = check_stream(out, req, injection.cfg)
        headers = {**(headers or {}), **extra}
    return EventSourceResponse(_sse(out), ping=15, sep="\n", headers=headers)


async def _sse(events: AsyncIterator[Body]) -> AsyncIterator[str]:
    try:
        async with aclosing(events):
            async for event in events:
                yield event.sse()
        yield "[DONE]"
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as e:  # noqa: BLE001 - the response has started: report the error in the stream
        yield llm.error_event(e).sse()
        yield "[DONE]"


@router.post("/v1/chat/completions", summary="Chat completion (OpenAI-compatible; SSE when stream=true)",
             responses={200: {"model": ChatCompletion, "description": "or chat.completion.chunk events (stream)"}})
async def chat_completions(req: ChatCompletionRequest, request: Request):
    return await _serve(llm.chat_completion, req, request)


@router.post("/v1/completions", summary="Text completion (OpenAI-compatible legacy endpoint)",
             responses={200: {"model": TextCompletion, "description": "or text_completion events (stream)"}})
async def completions(req: CompletionBody, request: Request):
    return await _serve(llm.text_completion, req, request)


# ------------------------------------------------------------------------------------------ embeddings
def embed_texts(state: ServerState, texts: list[str]) -> tuple[np.ndarray, int]:
    """Embed texts with the server's encoder: (vectors, token count)."""
    enc = llm.ensure_encoder(state)
    return enc.encode(texts), enc.count_tokens(texts)


@router.post("/v1/embeddings", summary="Sentence embeddings (L2-normalized)", responses={200: {"model": EmbeddingList}})
async def embeddings(req: EmbeddingBody, request: Request):
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
        data.append(Embedding(index=i, embedding=emb))
    usage = EmbeddingUsage(prompt_tokens=n_tokens, total_tokens=n_tokens)
    return EmbeddingList(data=data, model=model, usage=usage).dump()


# ------------------------------------------------------------------------------------------ models
@router.get("/v1/models", summary="Models served here (chat, embedding) and registered ones")
async def models(request: Request):
    return {"object": "list", "data": _visible_models(request)}


@router.get("/v1/models/{model_id:path}", summary="One model")
async def model(model_id: str, request: Request):
    for m in _visible_models(request):
        if model_id in _model_names(m["id"]):
            return m
    raise NotFound(f"model '{model_id}' is not served here; GET /v1/models lists the models", param="model")
