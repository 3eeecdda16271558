"""What /openapi.json documents for /v1/completions and /v1/embeddings: the request types of luodi.llm with
the rules the LLM service and the routes check spelled out in JSON Schema (one non-empty prompt; echo, suffix
and best_of unsupported; at most MAX_STOP stop strings; logit_bias keys are token ids with biases in
[-100, 100]; embedding inputs are 1..MAX_EMBED_INPUTS non-blank texts, never token ids).

Only the documented schema changes (pydantic's WithJsonSchema): validation stays where it is, so the errors
keep their messages naming the field and the fix. Clients and fuzzers that read the schema then send what is
accepted, and generate what is refused on purpose.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, WithJsonSchema

from luodi.llm.openai_types import CompletionRequest, EmbeddingRequest
from luodi.llm.params import MAX_LOGIT_BIAS, MAX_STOP

MAX_EMBED_INPUTS = 2048

_TEXT = {"type": "string", "minLength": 1}
_NON_BLANK = {"type": "string", "pattern": r"\S"}
_NULL = {"type": "null"}
_STOP = {"anyOf": [_TEXT, {"type": "array", "items": _TEXT, "maxItems": MAX_STOP}, _NULL]}
_LOGIT_BIAS = {
    "anyOf": [
        {
            "type": "object",
            "propertyNames": {"pattern": "^[0-9]+$"},
            "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
            "maxProperties": MAX_LOGIT_BIAS,
        },
        _NULL,
    ]
}


class CompletionBody(CompletionRequest):
    """A text completion request (/v1/completions)."""

    prompt: Annotated[
        str | list[str],
        WithJsonSchema({"anyOf": [_TEXT, {"type": "array", "items": _TEXT, "minItems": 1, "maxItems": 1}]}),
    ] = Field(description="the text to continue: one non-empty string (or a list holding exactly one)")
    echo: Annotated[bool, WithJsonSchema({"type": "boolean", "enum": [False]})] = Field(
        False, description="not supported: false only"
    )
    suffix: Annotated[str | None, WithJsonSchema(_NULL)] = Field(None, description="not supported: omit it")
    best_of: Annotated[int | None, WithJsonSchema({"anyOf": [{"type": "integer", "enum": [1]}, _NULL]})] = Field(
        None, description="not supported: 1 or omitted"
    )
    stop: Annotated[str | list[str] | None, WithJsonSchema(_STOP)] = Field(
        None, description=f"up to {MAX_STOP} non-empty strings that end the output (not included)"
    )
    logit_bias: Annotated[dict[str, float] | None, WithJsonSchema(_LOGIT_BIAS)] = Field(
        None, description='{"token id": bias}: -100 bans the token, 100 forces it (added to its logit)'
    )


class EmbeddingBody(EmbeddingRequest):
    """An embeddings request (/v1/embeddings)."""

    input: Annotated[
        str | list[str] | list[int] | list[list[int]],
        WithJsonSchema(
            {"anyOf": [_NON_BLANK, {"type": "array", "items": _NON_BLANK, "minItems": 1, "maxItems": MAX_EMBED_INPUTS}]}
        ),
    ] = Field(description=f"a text or a list of 1 to {MAX_EMBED_INPUTS} texts, none blank (token ids: not supported)")
