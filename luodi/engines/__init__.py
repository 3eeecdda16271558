"""LLM engines: one interface (base.Engine), several backends, one continuous-batching scheduler.

    engine = load_engine()                      # settings: chat_model, engine, n_ctx, max_running...
    prompt = engine.chat_prompt([{"role": "user", "content": "Hi"}])
    async for chunk in engine.generate(prompt, SamplingParams(max_tokens=64)):
        print(chunk.text, end="")
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading

from luodi.engines.base import Engine, GenerationChunk, SamplingParams
from luodi.engines.choice import choose_backend
from luodi.errors import ConfigError

__all__ = ["BACKENDS", "Engine", "GenerationChunk", "SamplingParams", "complete", "engine_options", "engine_status",
           "get_engine", "load_engine"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "llamacpp", "transformers", "openai", "vllm")  # openai: any OpenAI-compatible upstream
# (upstream.py); vllm: a vLLM server luodi starts on a CUDA GPU (vllm.py); auto: vllm where it can run, else llamacpp


def load_engine(spec: str | None = None, backend: str | None = None, **options) -> Engine:
    """Load a chat model into a new engine. Defaults come from luodi.settings (LUODI_* env vars).

    spec: a model source (bundled:<name>, .gguf file, HF directory); backend: llamacpp | transformers | openai
    (spec 'openai:MODEL[@URL]' picks it too; else the upstream's model is LUODI_UPSTREAM_MODEL or its first).
    options override n_ctx, max_running, max_queue, threads and backend-specific knobs (openai: upstream,
    upstream_key_env, upstream_model, upstream_timeout_s, upstream_retries).
    """
    from luodi.models import resolve
    from luodi.settings import get_settings

    s = get_settings()
    spec = spec or s.chat_model
    backend = choose_backend(backend or s.engine)
    named = upstream_spec(spec)
    if named is not None:
        backend, options = "openai", {**named, **options}
    opts = engine_options(s, backend)
    opts.update(options)
    if backend == "openai":
        from luodi.engines.upstream import UpstreamEngine

        return UpstreamEngine(**opts)
    if backend == "vllm":
        from luodi.engines.vllm import VllmEngine

        return VllmEngine(spec, model_id=spec, **opts)
    src = resolve(spec)
    if backend == "llamacpp":
        opts.setdefault("ggml_poll", s.ggml_poll)
        if os.environ.get("LUODI_REQUANTIZE") and "requantize" not in options:
            opts["requantize"] = os.environ["LUODI_REQUANTIZE"]  # e.g. q8_0: faster batches, see llamacpp.py
        if src.kind != "gguf":
            raise ConfigError(
                f"the llamacpp engine needs a .gguf model but '{spec}' is a {src.kind}; "
                "use LUODI_ENGINE=transformers for HF directories, or convert it to GGUF", param="engine")
        from luodi.engines import ggml_cpu

        try:  # the self-check runs before llama_cpp is imported here: a broken library must not crash us
            ggml_cpu.prepare(src.path, max(1, opts["threads"] or os.cpu_count() or 1))
            from luodi.engines.llamacpp import LlamaCppEngine

            return LlamaCppEngine(src.path, model_id=spec, **opts)
        except ggml_cpu.SelfCheckFailed as e:
            if not s.engine_fallback:
                raise ConfigError(f"{e}. (LUODI_ENGINE_FALLBACK is off, so luodi does not fall back to the "
                                  "transformers engine.)", param="engine") from e
            log.error("%s. Serving on the transformers engine instead (slower; LUODI_ENGINE_FALLBACK=false "
                      "makes this an error).", e)
            from luodi.engines.transformers_engine import TransformersEngine

            opts.pop("requantize", None)
            opts.pop("ggml_poll", None)
            engine = TransformersEngine(src, model_id=spec, **opts)
            engine.degraded = str(e)
            return engine
    if backend == "transformers":
        from luodi.engines.transformers_engine import TransformersEngine

        return TransformersEngine(src, model_id=spec, **opts)
    raise ConfigError(f"unknown engine '{backend}'; choose one of: {', '.join(BACKENDS)}", param="engine")


def engine_status(engine: Engine | None) -> dict:
    """What serves and whether it is degraded: for /health, `luodi models` and bench/serve.py."""
    if engine is None:
        return {"backend": None, "degraded": False}
    out = {"backend": engine.name, "model": engine.model_id, "degraded": bool(getattr(engine, "degraded", None))}
    if getattr(engine, "forwards", False):
        out["upstream"] = engine.url
    if out["degraded"]:
        out["reason"] = engine.degraded
    cpu = getattr(engine, "cpu", None)
    if cpu:
        out.update(ggml_cpu_variant=cpu["ggml_cpu_variant"], cpu_features=cpu["cpu_features"])
    check = getattr(engine, "self_check", None)
    if check:
        out["self_check_seconds"] = check["seconds"]
    return out


_engines: dict[tuple, Engine] = {}
_lock = threading.Lock()
SHARED_OPTIONS = ("n_ctx", "max_running", "max_queue", "threads")  # settings an engine is built with
UPSTREAM_OPTIONS = ("upstream", "upstream_key_env", "upstream_model", "upstream_timeout_s", "upstream_retries")
VLLM_OPTIONS = ("vllm_args", "vllm_tool_parser", "vllm_start_timeout_s", "upstream_timeout_s", "upstream_retries")


UPSTREAM_SPEC = re.compile(r"^openai:(?P<model>[^@]*)(?:@(?P<url>https?://\S+))?$")


def upstream_spec(spec: str | None) -> dict | None:
    """A model spec that names an upstream, for one app, agent or assistant YAML: 'openai:MODEL' (the server's
    LUODI_UPSTREAM) or 'openai:MODEL@URL'; the engine options it sets, else None."""
    m = UPSTREAM_SPEC.match(spec or "")
    if m is None:
        return None
    out = {"upstream_model": m["model"]}
    if m["url"]:
        out["upstream"] = m["url"]
    return out


def engine_options(settings, backend: str) -> dict:
    """The settings an engine of `backend` is built with (the openai engine's upstream ones too)."""
    backend = choose_backend(backend)
    names = SHARED_OPTIONS + {"openai": UPSTREAM_OPTIONS, "vllm": VLLM_OPTIONS}.get(backend, ())
    return {name: getattr(settings, name) for name in names}


def get_engine(spec: str | None = None, backend: str | None = None, **options) -> Engine:
    """The one engine accessor: a process-wide engine per model, backend and options (None / left out: the
    configured ones, luodi.settings), loaded on first use; the server, the CLI, agents, the assistant and RAG
    share it, and close_engines() closes it at exit."""
    from luodi.settings import get_settings

    s = get_settings()
    backend = choose_backend(backend or s.engine)
    named = upstream_spec(spec)  # 'openai:MODEL[@URL]': this caller's upstream, whatever the server's engine
    if named is not None:
        backend = "openai"
        options = {**named, **options}
    opts = engine_options(s, backend)
    opts.update(options)
    key = (spec or s.chat_model, backend, tuple(sorted(opts.items())))
    with _lock:
        eng = _engines.get(key)
        if eng is None:
            eng = _engines[key] = load_engine(key[0], key[1], **opts)
        return eng


@atexit.register
def close_engines() -> None:
    """Close every engine get_engine() created (also run at interpreter exit)."""
    with _lock:
        for eng in _engines.values():
            eng.close()
        _engines.clear()


async def complete(engine: Engine, prompt: str | list[int], params: SamplingParams | None = None
                   ) -> GenerationChunk:
    """The run-to-the-end helper: one request to its end, as one chunk holding the whole text (and logprobs),
    the finish_reason and usage. Sync code runs it with luodi.llm.run_sync."""
    stream = engine.generate(prompt, params or SamplingParams())
    try:
        chunks = [chunk async for chunk in stream]
    finally:
        await stream.aclose()
    last = chunks[-1] if chunks else GenerationChunk("")
    lps = [e for c in chunks for e in c.logprobs or []] if any(c.logprobs is not None for c in chunks) else None
    return GenerationChunk(
        "".join(c.text for c in chunks), last.finish_reason, last.prompt_tokens, last.completion_tokens, lps
    )
