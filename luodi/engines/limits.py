"""The one check of a request against an engine's limits: sampling values, vocabulary, context window.

Every engine runs it on every request, and the LLM service (luodi.llm) runs it before a response starts, so
the HTTP API, the CLI, agents and RAG all get the same message naming the same field. A prompt is never
truncated: too long is an error that says by how much.
"""

from __future__ import annotations

from luodi.engines.base import SamplingParams
from luodi.errors import BadRequest

MAX_TOP_LOGPROBS = 20  # alternatives per token (OpenAI's limit)


def _check_range(name: str, value: float | None, lo: float, hi: float, fix: str) -> None:
    if value is not None and not (lo <= value <= hi):
        raise BadRequest(f"field '{name}': expected a number from {lo} to {hi}, got {value}; {fix}", param=name)


def check_params(p: SamplingParams) -> None:
    """Sampling values in range, each error naming its OpenAI request field."""
    _check_range("temperature", p.temperature, 0.0, 2.0, "use 0 for greedy decoding, ~0.7 for varied text")
    _check_range("top_p", p.top_p, 0.0, 1.0, "use 1 to disable nucleus sampling")
    if p.top_p is not None and p.top_p == 0:
        raise BadRequest("field 'top_p': must be greater than 0; use 1 to disable nucleus sampling", param="top_p")
    if p.top_k is not None and p.top_k < 0:
        raise BadRequest(f"field 'top_k': expected 0 (disabled) or a positive integer, got {p.top_k}",
                         param="top_k")
    _check_range("presence_penalty", p.presence_penalty, -2.0, 2.0, "use 0 for no penalty")
    _check_range("frequency_penalty", p.frequency_penalty, -2.0, 2.0, "use 0 for no penalty")
    if p.logprobs is not None and not (isinstance(p.logprobs, int) and 0 <= p.logprobs <= MAX_TOP_LOGPROBS):
        raise BadRequest(
            f"field 'top_logprobs': expected 0 to {MAX_TOP_LOGPROBS} alternatives per token, got {p.logprobs!r}",
            param="top_logprobs")
    if p.max_tokens is not None and (not isinstance(p.max_tokens, int) or p.max_tokens < 1):
        raise BadRequest(f"field 'max_tokens': expected a positive integer, got {p.max_tokens!r}",
                         param="max_tokens")


def check_request(prompt_ids: list[int], params: SamplingParams, n_ctx: int, n_vocab: int | None = None,
                  prompt_field: str = "messages") -> int:
    """Check a tokenized request fits the engine; return its max_tokens (what is left of the context window
    when params.max_tokens is None). `prompt_field` is the request field the prompt came from."""
    check_params(params)
    outside = [t for t in params.logit_bias if n_vocab is not None and not 0 <= t < n_vocab]
    if outside:
        raise BadRequest(
            f"field 'logit_bias': token id {outside[0]} is outside this model's vocabulary (ids 0 to {n_vocab - 1})",
            param="logit_bias")
    n_prompt = len(prompt_ids)
    if n_prompt == 0:
        raise BadRequest(f"field '{prompt_field}': the prompt is empty; send some text", param=prompt_field)
    if n_prompt >= n_ctx:
        raise BadRequest(
            f"field '{prompt_field}': the prompt has {n_prompt} tokens but the model's context window is {n_ctx} "
            f"tokens; shorten the {prompt_field} (nothing was truncated)", param=prompt_field)
    if params.max_tokens is None:
        return n_ctx - n_prompt
    if n_prompt + params.max_tokens > n_ctx:
        raise BadRequest(
            f"field 'max_tokens': prompt ({n_prompt} tokens) + max_tokens ({params.max_tokens}) "
            f"= {n_prompt + params.max_tokens} exceeds the context window of {n_ctx} tokens; "
            f"set max_tokens <= {n_ctx - n_prompt} or shorten the {prompt_field}", param="max_tokens")
    return params.max_tokens
