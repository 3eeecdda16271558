"""OpenAI request fields -> SamplingParams, validated: every error names the request field and the fix.

Nothing here knows about HTTP; the value ranges are checked once, by luodi.engines.limits.
"""

from __future__ import annotations

from typing import Any

from luodi.engines.base import SamplingParams
from luodi.engines.limits import check_params
from luodi.errors import BadRequest

MAX_STOP = 16
MAX_LOGIT_BIAS = 1024  # tokens one request may bias


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
    """Validated SamplingParams from OpenAI-style fields (None = engine default; max_tokens None = what the
    context window leaves, filled in by engines.limits.check_request)."""
    p = SamplingParams(
        max_tokens=max_tokens, stop=normalize_stop(stop), seed=seed, logit_bias=normalize_logit_bias(logit_bias),
        presence_penalty=float(presence_penalty or 0.0), frequency_penalty=float(frequency_penalty or 0.0),
        logprobs=logprobs, **response_format_params(response_format),
    )
    if json_schema is not None:
        p.json_schema = json_schema
    if temperature is not None:
        p.temperature = temperature
    if top_p is not None:
        p.top_p = top_p
    if top_k is not None:
        p.top_k = top_k
    check_params(p)
    return p


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
