"""OpenAI's request and response bodies as pydantic models: what the LLM service takes and gives back.

The requests are also FastAPI's request types (so the OpenAPI docs show them); the responses dump to the exact
JSON the official `openai` client reads (`dump()`: fields OpenAI leaves out when unset are left out).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

MAX_CHOICES = 16  # n per request: each choice is a sequence in the engine's batch


# ------------------------------------------------------------------------------------------ requests
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"] = Field(
        description="who speaks: system/developer instructions, the user, the assistant, or a tool's result")
    content: str | list[dict[str, Any]] | None = Field(None, description="text, or a list of text parts")
    name: str | None = Field(None, description="the speaker's name (optional)")
    tool_calls: list[dict[str, Any]] | None = Field(None, description="an assistant turn's tool calls")
    tool_call_id: str | None = Field(None, description="a tool turn: the id of the call it answers")


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"] = Field(
        "text", description="text, any JSON object, or JSON following json_schema.schema")
    json_schema: dict[str, Any] | None = Field(None, description='{"name": ..., "schema": {JSON Schema}}')


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="send a last event with the usage (choices: [])")


class SamplingRequest(BaseModel):
    """Fields shared by chat and text completions. Fields not listed here are kept: the `openai` engine forwards
    them to its upstream (e.g. reasoning_effort, metadata); the local engines ignore them."""

    model_config = ConfigDict(extra="allow")
    model: str | None = Field(None, description="the served chat model id (see GET /v1/models)")
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling; 1 = off")
    top_k: int | None = Field(None, ge=0, description="luodi extension; 0 = disabled")
    max_tokens: int | None = Field(None, ge=1, description="default: what is left of the context window")
    stop: str | list[str] | None = Field(None, description="up to 16 strings that end the output (not included)")
    seed: int | None = Field(
        None, ge=-(2**63), le=2**63 - 1, description="same seed + same request = same output (a 64-bit integer)"
    )
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="choices to generate (seed + i each when seeded)")
    stream: bool = Field(False, description="send server-sent events as the text is generated")
    stream_options: StreamOptions | None = Field(None, description="with stream: include_usage")
    presence_penalty: float | None = Field(
        None, ge=-2, le=2, description="subtracted from the logit of every token generated so far"
    )
    frequency_penalty: float | None = Field(
        None, ge=-2, le=2, description="times the number of times a token was generated so far"
    )
    logit_bias: dict[str, float] | None = Field(
        None, description='{"token id": bias}: -100 bans the token, 100 forces it (added to its logit)'
    )
    user: str | None = Field(None, description="the end user's id (accepted, not used)")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1, description="the conversation so far")
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name for max_tokens")
    response_format: ResponseFormat | None = Field(None, description="constrain the output to JSON")
    tools: list[dict[str, Any]] | None = Field(None, description='[{"type": "function", "function": {...}}]')
    tool_choice: str | dict[str, Any] | None = Field(None, description="none | auto | required | one tool")
    parallel_tool_calls: bool | None = Field(None, description="accepted; one call per turn is generated")
    logprobs: bool | None = Field(None, description="each output token's log-probability (choices[].logprobs)")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="with logprobs: the k likeliest tokens too")


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] = Field(description="the text to continue (one prompt per request)")
    echo: bool = Field(False, description="not supported")
    suffix: str | None = Field(None, description="not supported")
    logprobs: int | None = Field(None, ge=0, le=20, description="log-probabilities of the k likeliest tokens")
    best_of: int | None = Field(None, description="not supported (1 only)")


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input: str | list[str] | list[int] | list[list[int]] = Field(description="a text or a list of texts")
    model: str | None = Field(None, description="the served embedding model id")
    encoding_format: Literal["float", "base64"] = Field("float", description="float list or base64 float32")
    dimensions: int | None = Field(None, ge=1, description="must equal the model's dimension when given")
    user: str | None = Field(None, description="the end user's id (accepted, not used)")


# ------------------------------------------------------------------------------------------ responses
class Body(BaseModel):
    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def sse(self) -> str:
        """The compact JSON of one server-sent event (pydantic's serializer: half the CPU of json.dumps(dump()))."""
        return self.model_dump_json()


class Usage(Body):
    prompt_tokens: int = Field(description="the prompt's tokens, counted once for n choices")
    completion_tokens: int = Field(description="generated tokens, all choices together")
    total_tokens: int = Field(description="prompt + completion")


class TopLogprob(Body):
    token: str = Field(description="the token's text")
    bytes: list[int] = Field(description="the token's UTF-8 bytes")
    logprob: float = Field(description="its log-probability (<= 0)")


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(description="the k likeliest tokens at this position, likeliest first")


class ChoiceLogprobs(Body):
    content: list[TokenLogprob] = Field(description="one entry per output token")


class FunctionCall(Body):
    name: str = Field(description="the tool's name")
    arguments: str = Field(description="the arguments as a JSON string")


class ToolCallOut(Body):
    id: str = Field(description="call id, quoted back by the tool turn")
    type: Literal["function"] = Field("function", description="always function")
    function: FunctionCall = Field(description="which tool with which arguments")


class StreamedToolCall(Body):
    index: int = Field(description="position of the call in the message")
    id: str = Field(description="call id, quoted back by the tool turn")
    type: Literal["function"] = Field("function", description="always function")
    function: FunctionCall = Field(description="which tool with which arguments")


class AssistantMessage(Body):
    role: Literal["assistant"] = Field("assistant", description="always assistant")
    content: str | None = Field(description="the text (null when the reply is tool calls)")
    tool_calls: list[ToolCallOut] | None = Field(None, description="left out when there are none")

    @model_serializer(mode="wrap")
    def _drop_unset_calls(self, handler):
        data = handler(self)
        if self.tool_calls is None:
            data.pop("tool_calls", None)
        return data


class ChatChoice(Body):
    index: int = Field(description="the choice's number (0 .. n-1)")
    message: AssistantMessage = Field(description="the reply")
    finish_reason: str = Field(description="stop | length | tool_calls | cancelled")
    logprobs: ChoiceLogprobs | None = Field(None, description="when the request asked for logprobs")


class ChatCompletion(Body):
    id: str = Field(description="chatcmpl-...")
    object: Literal["chat.completion"] = Field("chat.completion", description="the body's type")
    created: int = Field(description="unix time")
    model: str = Field(description="the model that answered")
    choices: list[ChatChoice] = Field(description="n choices")
    usage: Usage = Field(description="token counts")


class Delta(Body):
    """What a streamed event adds to a choice; unset fields are left out ({} on the last event)."""

    role: Literal["assistant"] | None = Field(None, description="only on the first event")
    content: str | None = Field(None, description="new text")
    tool_calls: list[StreamedToolCall] | None = Field(None, description="the parsed calls, in one event")

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler):
        return {k: v for k, v in handler(self).items() if v is not None}


class ChunkChoice(Body):
    index: int = Field(description="the choice this event belongs to")
    delta: Delta = Field(description="what it adds")
    finish_reason: str | None = Field(None, description="set on the choice's last event")
    logprobs: ChoiceLogprobs | None = Field(None, description="the new tokens' logprobs, when asked for")


class Streamed(Body):
    """A streamed event: the `usage` key is there only when the request asked for it (null until the last)."""

    include_usage: bool = Field(False, exclude=True, description="whether the body carries `usage`")
    usage: Usage | None = Field(None, description="set on the last event (choices: [])")

    @model_serializer(mode="wrap")
    def _usage_when_asked(self, handler):
        data = handler(self)
        usage = data.pop("usage", None)
        if self.include_usage:
            data["usage"] = usage  # last, as OpenAI sends it
        return data


class ChatCompletionChunk(Streamed):
    id: str = Field(description="the same id on every event of a response")
    object: Literal["chat.completion.chunk"] = Field("chat.completion.chunk", description="the body's type")
    created: int = Field(description="unix time")
    model: str = Field(description="the model that answers")
    choices: list[ChunkChoice] = Field(description="one choice's event, or [] for the usage event")


class LegacyLogprobs(Body):
    """/v1/completions' logprobs shape."""

    tokens: list[str] = Field(description="each output token's text")
    token_logprobs: list[float] = Field(description="each token's log-probability")
    top_logprobs: list[dict[str, float]] = Field(description="per token: the k likeliest tokens' logprobs")
    text_offset: list[int] = Field(description="each token's character offset (counting the prompt)")


class TextChoice(Body):
    index: int = Field(description="the choice's number (0 .. n-1)")
    text: str = Field(description="the generated text (streamed: the new text)")
    finish_reason: str | None = Field(None, description="stop | length | cancelled; null while streaming")
    logprobs: LegacyLogprobs | None = Field(None, description="when the request asked for logprobs")


class TextCompletion(Streamed):
    """A text completion, or (with include_usage set as the request asked) one of its streamed events."""

    id: str = Field(description="cmpl-...")
    object: Literal["text_completion"] = Field("text_completion", description="the body's type")
    created: int = Field(description="unix time")
    model: str = Field(description="the model that answered")
    choices: list[TextChoice] = Field(description="n choices, or one choice's event when streamed")


class ErrorDetail(Body):
    message: str = Field(description="what is wrong and how to fix it")
    type: str = Field(description="invalid_request_error | server_error | ...")
    param: str | None = Field(None, description="the request field at fault")
    code: str | None = Field(None, description="a machine-readable code")


class ErrorBody(Body):
    error: ErrorDetail = Field(description="OpenAI's error shape (also sent as a stream's last event)")


class Embedding(Body):
    object: Literal["embedding"] = Field("embedding", description="the item's type")
    index: int = Field(description="position of the input text")
    embedding: list[float] | str = Field(description="the vector, or its float32 bytes as base64")


class EmbeddingUsage(Body):
    prompt_tokens: int = Field(description="tokens of all inputs")
    total_tokens: int = Field(description="the same (nothing is generated)")


class EmbeddingList(Body):
    object: Literal["list"] = Field("list", description="the body's type")
    data: list[Embedding] = Field(description="one vector per input text")
    model: str = Field(description="the embedding model")
    usage: EmbeddingUsage = Field(description="token counts")
