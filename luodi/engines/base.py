"""The Engine interface every LLM backend implements; the server, CLI and agents only see this."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class SamplingParams:
    """How to decode one request. temperature == 0 means greedy."""

    max_tokens: int | None = 256  # None: whatever the context window leaves after the prompt
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    grammar: str | None = None  # GBNF grammar, if the output must follow one
    json_schema: dict[str, Any] | None = None  # constrained decoding to this JSON Schema
    json_object: bool = False  # constrained decoding to any JSON object
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit (OpenAI)
    presence_penalty: float = 0.0  # OpenAI: subtracted from the logit of every token generated so far
    frequency_penalty: float = 0.0  # OpenAI: times the number of times the token was generated so far
    logprobs: int | None = None  # None: off; k >= 0: each token's log-probability and the k likeliest tokens


@dataclass
class GenerationChunk:
    """One streamed step: `text` is the new text since the last chunk."""

    text: str
    finish_reason: str | None = None  # None while running; then "stop" | "length" | "cancelled"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # with SamplingParams.logprobs: one entry per token generated since the last chunk, OpenAI's shape:
    # {"token", "bytes", "logprob", "top_logprobs": [{"token", "bytes", "logprob"}, ...]}
    logprobs: list[dict[str, Any]] | None = None


@runtime_checkable
class Engine(Protocol):
    """An LLM runtime. Implementations batch concurrent `generate` calls continuously.

    `generate` takes the prompt as text or as token ids (`tokenize`'s, so a caller that already counted the
    prompt's tokens does not tokenize it twice); it raises luodi.errors.BadRequest when the request does not
    fit (luodi.engines.limits.check_request: prompt + max_tokens over `n_ctx`, never truncated),
    luodi.errors.Overloaded when its queue is full; closing the iterator (client disconnect) cancels
    the sequence and frees its slot.
    """

    name: str  # backend name, e.g. "llamacpp"
    model_id: str
    n_ctx: int
    n_vocab: int  # token ids are 0 .. n_vocab - 1

    def tokenize(self, text: str) -> list[int]: ...

    def chat_prompt(self, messages: list[dict[str, Any]]) -> str:
        """Render chat messages with the model's chat template, ready for the assistant's turn."""
        ...

    def generate(self, prompt: str | list[int], params: SamplingParams) -> AsyncIterator[GenerationChunk]: ...

    def stats(self) -> dict[str, int]:
        """{'queue_depth': waiting requests, 'running': sequences being decoded}."""
        ...

    def close(self) -> None: ...
