"""LLM engines: one interface (base.Engine), several backends, one continuous-batching scheduler.

    engine = load_engine()                      # settings: chat_model, engine, n_ctx, max_running...
    prompt = engine.chat_prompt([{"role": "user", "content": "Hi"}])
    async for chunk in engine.generate(prompt, SamplingParams(max_tokens=64)):
        print(chunk.text, end="")
"""

from __future__ import annotations

import atexit
import os
import threading

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see luodi.engines.llamacpp

from luodi.engines.base import Engine, GenerationChunk, SamplingParams
from luodi.errors import ConfigError

__all__ = ["BACKENDS", "Engine", "GenerationChunk", "SamplingParams", "complete", "complete_sync",
           "get_engine", "load_engine"]

BACKENDS = ("llamacpp", "transformers")  # "vllm" would slot in here (GPU only)


def load_engine(spec: str | None = None, backend: str | None = None, **options) -> Engine:
    """Load a chat model into a new engine. Defaults come from luodi.settings (LUODI_* env vars).

    spec: a model source (bundled:<name>, .gguf file, HF directory); backend: llamacpp | transformers.
    options override n_ctx, max_running, max_queue, threads and backend-specific knobs.
    """
    from luodi.models import resolve
    from luodi.settings import get_settings

    s = get_settings()
    spec = spec or s.chat_model
    backend = (backend or s.engine).lower()
    src = resolve(spec)
    opts = {"n_ctx": s.n_ctx, "max_running": s.max_running, "max_queue": s.max_queue, "threads": s.threads}
    opts.update(options)
    if backend == "llamacpp":
        if os.environ.get("LUODI_REQUANTIZE") and "requantize" not in options:
            opts["requantize"] = os.environ["LUODI_REQUANTIZE"]  # e.g. q8_0: faster batches, see llamacpp.py
        if src.kind != "gguf":
            raise ConfigError(
                f"the llamacpp engine needs a .gguf model but '{spec}' is a {src.kind}; "
                "use LUODI_ENGINE=transformers for HF directories, or convert it to GGUF", param="engine")
        from luodi.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(src.path, model_id=spec, **opts)
    if backend == "transformers":
        from luodi.engines.transformers_engine import TransformersEngine

        return TransformersEngine(src, model_id=spec, **opts)
    raise ConfigError(f"unknown engine '{backend}'; choose one of: {', '.join(BACKENDS)}", param="engine")


_engines: dict[tuple[str | None, str | None], Engine] = {}
_lock = threading.Lock()


def get_engine(spec: str | None = None, backend: str | None = None) -> Engine:
    """A process-wide shared engine per (spec, backend), loaded on first use."""
    key = (spec, backend)
    with _lock:
        eng = _engines.get(key)
        if eng is None:
            eng = _engines[key] = load_engine(spec, backend)
        return eng


@atexit.register
def close_engines() -> None:
    """Close every engine get_engine() created (also run at interpreter exit)."""
    with _lock:
        for eng in _engines.values():
            eng.close()
        _engines.clear()


async def complete(engine: Engine, prompt: str, params: SamplingParams | None = None) -> GenerationChunk:
    """Run one request to the end; returns a chunk holding the whole text, finish_reason and usage."""
    return _joined([chunk async for chunk in engine.generate(prompt, params or SamplingParams())])


def complete_sync(engine: Engine, prompt: str, params: SamplingParams | None = None) -> GenerationChunk:
    """`complete` for code without an event loop (CLI, scripts, worker threads)."""
    stream = engine.generate(prompt, params or SamplingParams())
    try:
        return _joined(list(stream))  # engines' streams are also plain iterators
    finally:
        stream.close()


def _joined(chunks: list[GenerationChunk]) -> GenerationChunk:
    """One chunk with the whole text (and logprobs), the last chunk's finish_reason and usage."""
    last = chunks[-1] if chunks else GenerationChunk("")
    lps = [e for c in chunks for e in c.logprobs or []] if any(c.logprobs is not None for c in chunks) else None
    return GenerationChunk(
        "".join(c.text for c in chunks), last.finish_reason, last.prompt_tokens, last.completion_tokens, lps
    )
