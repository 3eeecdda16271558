"""The LLM service: chat and text completions from OpenAI requests, over the engines (luodi.engines).

    service.py       chat_completion / text_completion: the one recipe the HTTP routes and the CLI face
    forward.py       the same on an engine that forwards OpenAI requests (the `openai` engine: an upstream)
    openai_types.py  OpenAI request and response bodies (pydantic)
    params.py        request fields -> SamplingParams (validated, errors name the field)
    choices.py       n choices of one prompt, collected or their streams merged
    generation.py    one timed generation (usage, time to first token) for responses and /metrics
    toolcalls.py     tools in, constrained-decoding schema, prompt; toolparse.py: the output -> tool calls
    loading.py       the server's chat engine and encoder, loaded once
    sync.py          run_sync: the one sync/async bridge

Nothing here knows about HTTP. Layers: luodi.engines below, serve/, cli/, agent/ and rag/ above.
"""

from __future__ import annotations

from luodi.llm.choices import Choices
from luodi.llm.generation import Generation, TimedStream
from luodi.llm.loading import ensure_encoder, ensure_engine
from luodi.llm.params import chat_text, normalize_logit_bias, normalize_stop, response_format_params, sampling_params
from luodi.llm.service import chat_completion, error_event, fit_prompt, text_completion
from luodi.llm.sync import run_sync

__all__ = [
    "Choices",
    "Generation",
    "TimedStream",
    "chat_completion",
    "chat_text",
    "ensure_encoder",
    "ensure_engine",
    "error_event",
    "fit_prompt",
    "normalize_logit_bias",
    "normalize_stop",
    "response_format_params",
    "run_sync",
    "sampling_params",
    "text_completion",
]
