"""The `openai` engine: any OpenAI-compatible server (vLLM, Ollama, llama-server, a hosted API, another luodi)
as luodi's chat engine.

An upstream speaks messages, not token ids, and in general has no tokenizer endpoint. So:

- The LLM service (luodi.llm.forward) sees `forwards = True` and hands the OpenAI request fields to
  `forward()` as they came: streaming, n, logprobs, tools, response_format and whatever else the upstream
  supports are the upstream's; luodi keeps its keys, rate limits, metrics, audit log and guards in front.
- Code written against the Engine interface (RAG, agents, the assistant) keeps working: `chat_prompt()`
  returns a `ChatPrompt` (a str that remembers its messages), `tokenize()` an `Estimate` of the token count
  that remembers its text, and `generate()` sends either one to the upstream's chat/completions (a
  ChatPrompt) or completions (plain text) endpoint, streamed, as GenerationChunks.

Talking to the upstream is the official `openai` client's job (time-outs, retries with back-off, SSE); one
AsyncOpenAI per event loop (httpx connection pools belong to one loop). Every upstream failure becomes a
luodi error that names the upstream and what to do (`upstream_error`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import weakref
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import openai

from luodi.engines.base import GenerationChunk, SamplingParams
from luodi.engines.limits import check_params
from luodi.errors import BadRequest, ConfigError, LuodiError, Overloaded, UpstreamError, UpstreamTimeout

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3  # tokenize()'s estimate: ~4 characters per token in English, 3 errs on the long side
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ChatPrompt(str):
    """chat_prompt()'s result: a readable rendering of the messages (for logs and length estimates) that
    carries the messages themselves, which is what the upstream gets."""

    messages: list[dict[str, Any]]

    def __new__(cls, messages: list[dict[str, Any]]) -> ChatPrompt:
        text = "\n".join(f"{m.get('role', 'user')}: {_text(m.get('content'))}" for m in messages)
        out = super().__new__(cls, text + "\nassistant:")
        out.messages = [dict(m) for m in messages]
        return out


class Estimate(list):
    """tokenize()'s result: as many zeros as the text's estimated tokens (the upstream's tokenizer is not
    reachable), carrying the text, so a caller that hands these 'ids' to generate() sends the text."""

    prompt: str

    def __init__(self, prompt: str) -> None:
        super().__init__([0] * max(1, -(-len(prompt) // CHARS_PER_TOKEN)))
        self.prompt = prompt


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def check_upstream(url: str, key_env: str) -> tuple[str, str]:
    """Validate the upstream settings: (base URL without a trailing slash, API key). Errors name the setting."""
    url = (url or "").strip().rstrip("/")
    if not url:
        raise ConfigError("engine 'openai' needs the upstream server's URL: set LUODI_UPSTREAM (luodi serve "
                          "--upstream), e.g. http://127.0.0.1:8001/v1 or https://api.openai.com/v1",
                          param="upstream")
    p = urlparse(url)
    if p.scheme not in ("http", "https") or not p.hostname:
        raise ConfigError(f"LUODI_UPSTREAM (--upstream) must be an http:// or https:// URL with a host, got {url!r}; "
                          "e.g. http://127.0.0.1:8001/v1", param="upstream")
    key_env = (key_env or "").strip()
    if not key_env:
        return url, "none"  # the openai client needs some key; an upstream without auth ignores it
    if not ENV_NAME.match(key_env) or key_env.startswith(("sk-", "ld-")):
        raise ConfigError("LUODI_UPSTREAM_KEY_ENV (--upstream-key-env) is the NAME of the environment variable "
                          "that holds the upstream's key (e.g. OPENAI_API_KEY), not the key itself",
                          param="upstream_key_env")
    key = os.environ.get(key_env, "").strip()
    if not key:
        raise ConfigError(f"LUODI_UPSTREAM_KEY_ENV (--upstream-key-env) names {key_env}, but {key_env} is not set "
                          "(or empty) in luodi's environment; export it with the upstream's API key",
                          param="upstream_key_env")
    return url, key


def upstream_error(e: BaseException, url: str) -> LuodiError:
    """An openai-client exception from the upstream -> the luodi error the client of luodi sees."""
    if isinstance(e, LuodiError):
        return e
    if isinstance(e, openai.APITimeoutError):
        return UpstreamTimeout(f"the upstream {url} did not answer in time; raise LUODI_UPSTREAM_TIMEOUT_S or "
                               "check the upstream's load", param="upstream")
    if isinstance(e, openai.APIConnectionError):
        cause = e.__cause__ or e
        return UpstreamError(f"cannot reach the upstream {url} ({type(cause).__name__}: {cause}); is it running, "
                             "and is LUODI_UPSTREAM right?", param="upstream")
    if isinstance(e, openai.APIStatusError):
        status, msg, param = e.status_code, _message(e), _param(e)
        if status in (401, 403):
            return UpstreamError(f"the upstream {url} refused luodi's credentials ({status}: {msg}); set "
                                 "LUODI_UPSTREAM_KEY_ENV to the name of a variable holding a valid key",
                                 param="upstream_key_env")
        if status == 404:
            return UpstreamError(f"the upstream {url} answered 404 ({msg}); check LUODI_UPSTREAM (it usually ends "
                                 "in /v1) and LUODI_UPSTREAM_MODEL", param="upstream")
        if status == 429 or status == 503:
            err = Overloaded(f"the upstream {url} is busy or rate-limiting luodi ({status}: {msg}); retry later",
                             param="upstream")
            err.retry_after = _retry_after(e)
            return err
        if 400 <= status < 500:
            return LuodiError(f"the upstream refused the request ({status}): {msg}", param=param,
                              status=400 if status == 422 else status)
        return UpstreamError(f"the upstream {url} failed ({status}: {msg})", param="upstream")
    if isinstance(e, openai.APIError):  # an error event inside a stream
        return UpstreamError(f"the upstream {url} failed during the response: {e.message}", param="upstream")
    return UpstreamError(f"the upstream {url} failed ({type(e).__name__}: {e})", param="upstream")


def _error_body(e: openai.APIStatusError) -> dict:
    body = e.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]
    return body if isinstance(body, dict) else {}


def _message(e: openai.APIStatusError) -> str:
    body = _error_body(e)
    msg = body.get("message") or body.get("detail") or e.message
    return str(msg)[:500]


def _param(e: openai.APIStatusError) -> str | None:
    p = _error_body(e).get("param")
    return str(p) if p else None


def _retry_after(e: openai.APIStatusError) -> int:
    try:
        return max(1, int(float(e.response.headers.get("retry-after", "1"))))
    except (TypeError, ValueError):
        return 1


class UpstreamEngine:
    """luodi's chat engine on an OpenAI-compatible server (see the module docstring)."""

    name = "openai"
    forwards = True  # luodi.llm forwards OpenAI requests as they are (forward()) instead of templating them
    n_vocab = None  # the upstream's vocabulary is unknown: logit_bias ids are the upstream's business

    def __init__(self, model_id: str | None = None, *, upstream: str = "", upstream_key_env: str = "",
                 upstream_model: str = "", upstream_timeout_s: float = 60.0, upstream_retries: int = 2,
                 n_ctx: int = 2048, **_ignored: Any) -> None:
        self.url, self._key = check_upstream(upstream, upstream_key_env)
        if upstream_timeout_s is None or upstream_timeout_s <= 0:
            raise ConfigError(f"LUODI_UPSTREAM_TIMEOUT_S must be > 0 seconds, got {upstream_timeout_s}",
                              param="upstream_timeout_s")
        if upstream_retries is None or upstream_retries < 0:
            raise ConfigError(f"LUODI_UPSTREAM_RETRIES must be >= 0, got {upstream_retries}", param="upstream_retries")
        self.timeout, self.retries = float(upstream_timeout_s), int(upstream_retries)
        self.n_ctx = n_ctx  # the budget RAG and agents fit their prompts to (estimated tokens)
        self._model = (upstream_model or "").strip() or None
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._running = 0
        if self._model is None:
            try:  # which model to ask for: the upstream's first; if it is down now, again on the first request
                self._model = self._first_model_sync()
            except LuodiError as e:
                log.warning("%s; luodi asks again on the first request", e.message)

    # ---------------------------------------------------------------- the upstream
    @property
    def model_id(self) -> str:
        return self._model or "upstream"

    def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                client = self._clients[loop] = openai.AsyncOpenAI(
                    base_url=self.url, api_key=self._key, timeout=self.timeout, max_retries=self.retries)
            return client

    def _first_model_sync(self) -> str:
        with openai.OpenAI(base_url=self.url, api_key=self._key, timeout=min(5.0, self.timeout),
                           max_retries=0) as c:
            try:
                models = c.models.list().data
            except Exception as e:  # noqa: BLE001 - mapped to a luodi error naming the upstream
                raise upstream_error(e, self.url) from e
        return self._pick(models)

    def _pick(self, models: list) -> str:
        if not models:
            raise UpstreamError(f"the upstream {self.url} lists no models at GET /models; set LUODI_UPSTREAM_MODEL",
                                param="upstream_model")
        return str(models[0].id)

    async def model(self) -> str:
        """The model luodi asks the upstream for (LUODI_UPSTREAM_MODEL, else the upstream's first)."""
        if self._model is None:
            try:
                models = (await self._client().models.list()).data
            except Exception as e:  # noqa: BLE001
                raise upstream_error(e, self.url) from e
            self._model = self._pick(models)
        return self._model

    async def forward(self, path: str, body: dict[str, Any]) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """POST an OpenAI request body to the upstream's `path` ("chat/completions" or "completions") with the
        upstream model: its JSON response as a dict, or with body["stream"] its events as dicts. Errors (also
        in the middle of a stream) are luodi errors naming the upstream."""
        body = {**body, "model": await self.model()}
        self._running += 1
        streaming = False
        try:
            if not body.get("stream"):
                return await self._client().post(f"/{path}", body=body, cast_to=object)
            stream = await self._client().post(f"/{path}", body=body, cast_to=object, stream=True,
                                               stream_cls=openai.AsyncStream[object])
            streaming = True
        except Exception as e:  # noqa: BLE001
            raise upstream_error(e, self.url) from e
        finally:
            if not streaming:
                self._running -= 1
        return self._events(stream)

    async def _events(self, stream: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            async for event in stream:
                yield event
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as e:  # noqa: BLE001
            raise upstream_error(e, self.url) from e
        finally:
            self._running -= 1
            await stream.close()

    # ---------------------------------------------------------------- the Engine interface
    def tokenize(self, text: str) -> list[int]:
        return Estimate(text)

    def chat_prompt(self, messages: list[dict[str, Any]]) -> str:
        return ChatPrompt(messages)

    async def generate(self, prompt: str | list[int], params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        """One request to the upstream, streamed as GenerationChunks: a ChatPrompt goes to chat/completions,
        plain text to completions; the last chunk has the finish_reason and the upstream's usage counts."""
        if isinstance(prompt, Estimate):
            prompt = prompt.prompt
        if not isinstance(prompt, str):
            raise BadRequest("the openai engine takes text or chat_prompt()'s result, not token ids (the upstream's "
                             "tokenizer is not known here)", param="prompt")
        check_params(params)
        chat = isinstance(prompt, ChatPrompt)
        body = sampling_body(params, chat)
        body.update({"messages": prompt.messages} if chat else {"prompt": str(prompt)})
        events = await self.forward("chat/completions" if chat else "completions", body)
        usage: dict[str, Any] = {}
        finish = None
        async for event in events:
            usage = event.get("usage") or usage
            for c in event.get("choices") or []:
                finish = c.get("finish_reason") or finish
                text = (c.get("delta") or {}).get("content") if chat else c.get("text")
                lps = _chunk_logprobs(c.get("logprobs"), chat)
                if text or lps:
                    yield GenerationChunk(text or "", logprobs=lps)
        yield GenerationChunk("", finish or "stop", int(usage.get("prompt_tokens") or 0),
                              int(usage.get("completion_tokens") or 0))

    def stats(self) -> dict[str, int]:
        return {"queue_depth": 0, "running": self._running}

    def close(self) -> None:
        self._clients = weakref.WeakKeyDictionary()  # their loops close their connections


def sampling_body(p: SamplingParams, chat: bool) -> dict[str, Any]:
    """SamplingParams -> the OpenAI request fields (streamed, usage included). A GBNF grammar has no OpenAI
    field: it is refused, naming it."""
    if p.grammar:
        raise BadRequest("the openai engine cannot constrain output to a GBNF grammar (OpenAI's API has no such "
                         "field); use a JSON schema (response_format) instead", param="grammar")
    body: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True},
                            "temperature": p.temperature, "top_p": p.top_p}
    if p.max_tokens is not None:
        body["max_tokens"] = p.max_tokens
    if p.seed is not None:
        body["seed"] = p.seed
    if p.stop:
        body["stop"] = list(p.stop)
    if p.top_k:
        body["top_k"] = p.top_k  # not OpenAI's; vLLM, llama-server, Ollama and luodi take it
    if p.presence_penalty:
        body["presence_penalty"] = p.presence_penalty
    if p.frequency_penalty:
        body["frequency_penalty"] = p.frequency_penalty
    if p.logit_bias:
        body["logit_bias"] = {str(k): v for k, v in p.logit_bias.items()}
    if p.json_schema is not None:
        if not chat:
            raise BadRequest("a JSON schema needs a chat prompt with the openai engine", param="response_format")
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": p.json_schema}}
    elif p.json_object:
        if not chat:
            raise BadRequest("JSON mode needs a chat prompt with the openai engine", param="response_format")
        body["response_format"] = {"type": "json_object"}
    if p.logprobs is not None:
        if chat:
            body.update(logprobs=True, top_logprobs=p.logprobs)
        else:
            body["logprobs"] = p.logprobs
    return body


def _chunk_logprobs(lp: Any, chat: bool) -> list[dict[str, Any]] | None:
    """A streamed choice's logprobs in the engine's shape (OpenAI chat's content entries)."""
    if not lp:
        return None
    if chat:
        return list(lp.get("content") or [])
    tops = lp.get("top_logprobs") or []
    out = []
    for i, (tok, val) in enumerate(zip(lp.get("tokens") or [], lp.get("token_logprobs") or [], strict=False)):
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        out.append({"token": tok, "bytes": list(tok.encode()), "logprob": val,
                    "top_logprobs": [{"token": t, "bytes": list(t.encode()), "logprob": v} for t, v in top.items()]})
    return out
