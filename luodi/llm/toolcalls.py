"""OpenAI-format tool calling for any chat model: tools in, schema for constrained decoding, prompt.

A model sees the tools in its system prompt and answers with exactly ONE JSON object:

    {"name": "<tool>", "arguments": {...}}      a tool call
    {"content": "<text>"}                       a final answer / plain reply (only when allowed)

Constrained decoding to `call_schema(...)` makes even a 135M model emit a well-formed call; `toolparse.parse_output`
still validates everything (name, arguments against the tool's JSON Schema) and raises `ToolCallError`
whose `.feedback` is a short text to send back to the model as an observation.

Public API (used by the LLM service and by luodi.agent.runtime; parsing lives in luodi.llm.toolparse):

    normalize_tools(tools: list[dict]) -> list[ToolSpec]
        Validate OpenAI `tools` ([{"type": "function", "function": {"name", "description", "parameters"}}]);
        raises luodi.errors.BadRequest naming the field (param="tools[i].function.name", ...).
    normalize_tool_choice(tool_choice, tools) -> "none" | "auto" | "required" | <tool name>
        Accepts None (-> "auto", or "none" when there are no tools), the strings, or
        {"type": "function", "function": {"name": ...}}; raises BadRequest.
    call_schema(tools, tool_choice="auto", *, extra_properties=None, content_max_length=None) -> dict | None
        The JSON Schema one model output must follow (pass to SamplingParams(json_schema=...)); None when
        tool_choice == "none" (decode freely). `extra_properties` (e.g. {"thought": {"type": "string"}}) are
        required keys placed BEFORE "name" in every alternative (used by the agent loop for reasoning).
    render_tools_prompt(tools, tool_choice="auto") -> str
        Text describing the tools and the reply format, to put in (or append to) the system prompt.
    messages_for_model(messages, tools, tool_choice="auto") -> list[dict]
        OpenAI chat messages -> plain {"role", "content"} messages any chat template can render: the tools
        prompt is merged into the system message, assistant `tool_calls` become the JSON the model emits,
        `tool` messages become user turns "Result of <name>: ...". Feed the result to engine.chat_prompt().
    ToolCall(name, arguments: dict, id="call_...").to_openai() -> {"id", "type": "function",
        "function": {"name", "arguments": "<json string>"}}   (the OpenAI response shape)
    tool_signature(spec: ToolSpec) -> str   the compact text description of one tool used in prompts.

luodi.llm.service.chat_completion is the whole use of it for POST /v1/chat/completions with `tools`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from luodi.errors import BadRequest

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CHOICES = ("none", "auto", "required")


class ToolCallError(BadRequest):
    """A generated output that is not a valid tool call; `feedback` is meant for the model."""

    def __init__(self, message: str, *, feedback: str | None = None, raw: str = ""):
        super().__init__(message, param="tool_calls")
        self.feedback = feedback or message
        self.raw = raw


@dataclass(frozen=True)
class ToolSpec:
    """One function tool: name, description, JSON Schema of its arguments (an object schema)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }


@dataclass
class ParsedOutput:
    tool_calls: list[ToolCall] = field(default_factory=list)
    content: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- tools in


def normalize_tools(tools: list[Any] | None) -> list[ToolSpec]:
    """Validate OpenAI-format tools (dicts or ToolSpec) into ToolSpecs; errors name the field."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest(
            f"'tools' must be a list of {{'type': 'function', 'function': {{...}}}}, "
            f"got {type(tools).__name__}",
            param="tools",
        )
    specs: list[ToolSpec] = []
    for i, t in enumerate(tools):
        if isinstance(t, ToolSpec):
            specs.append(t)
            continue
        where = f"tools[{i}]"
        if hasattr(t, "model_dump"):
            t = t.model_dump(exclude_none=True)
        if not isinstance(t, dict):
            raise BadRequest(f"'{where}' must be an object, got {type(t).__name__}", param=where)
        if t.get("type", "function") != "function":
            raise BadRequest(
                f"'{where}.type' must be 'function', got {t.get('type')!r}", param=f"{where}.type"
            )
        fn = t.get("function")
        if not isinstance(fn, dict):
            raise BadRequest(
                f"'{where}.function' must be an object with 'name', 'description', 'parameters'",
                param=f"{where}.function",
            )
        name = fn.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise BadRequest(
                f"'{where}.function.name' must be 1-64 letters, digits, '_' or '-', got {name!r}",
                param=f"{where}.function.name",
            )
        desc = fn.get("description") or ""
        if not isinstance(desc, str):
            raise BadRequest(
                f"'{where}.function.description' must be a string", param=f"{where}.function.description"
            )
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict) or params.get("type", "object") != "object":
            raise BadRequest(
                f"'{where}.function.parameters' must be a JSON Schema of type 'object', got {params!r}",
                param=f"{where}.function.parameters",
            )
        _check_schema(params, f"{where}.function.parameters")
        if any(s.name == name for s in specs):
            raise BadRequest(
                f"'{where}.function.name': tool '{name}' is defined twice", param=f"{where}.function.name"
            )
        specs.append(ToolSpec(name, desc, params))
    return specs


def _check_schema(schema: dict, where: str) -> None:
    try:
        from jsonschema.validators import validator_for

        validator_for(schema).check_schema(schema)
    except ImportError:  # pragma: no cover - jsonschema is a dependency
        return
    except Exception as e:  # jsonschema.SchemaError
        raise BadRequest(
            f"'{where}' is not a valid JSON Schema: {getattr(e, 'message', e)}", param=where
        ) from e


def normalize_tool_choice(tool_choice: Any, tools: list[ToolSpec]) -> str:
    """Return 'none' | 'auto' | 'required' | a tool name."""
    if hasattr(tool_choice, "model_dump"):
        tool_choice = tool_choice.model_dump(exclude_none=True)
    if tool_choice is None:
        return "auto" if tools else "none"
    if isinstance(tool_choice, str):
        if tool_choice not in CHOICES:
            raise BadRequest(
                f"'tool_choice' must be one of {', '.join(CHOICES)} or "
                f"{{'type': 'function', 'function': {{'name': ...}}}}, got {tool_choice!r}",
                param="tool_choice",
            )
        if tool_choice != "none" and not tools:
            raise BadRequest(
                f"'tool_choice' is {tool_choice!r} but no 'tools' were given", param="tool_choice"
            )
        return tool_choice
    if isinstance(tool_choice, dict):
        name = (
            (tool_choice.get("function") or {}).get("name")
            if isinstance(tool_choice.get("function"), dict)
            else tool_choice.get("name")
        )
        if not isinstance(name, str):
            raise BadRequest("'tool_choice.function.name' is missing", param="tool_choice.function.name")
        if name not in {t.name for t in tools}:
            raise BadRequest(
                f"'tool_choice.function.name' is {name!r}, which is not among the tools "
                f"({', '.join(t.name for t in tools) or 'none given'})",
                param="tool_choice.function.name",
            )
        return name
    raise BadRequest(
        f"'tool_choice' has an unsupported type {type(tool_choice).__name__}", param="tool_choice"
    )


# ---------------------------------------------------------------------------------------------- schema


def _call_alternative(spec: ToolSpec, extra: dict[str, Any]) -> dict[str, Any]:
    args = dict(spec.parameters)
    args.setdefault("type", "object")
    args.setdefault("properties", {})
    # Extra keys would let the model ramble; unknown arguments are never useful in a call.
    args.setdefault("additionalProperties", False)
    props = {**extra, "name": {"const": spec.name}, "arguments": args}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def call_schema(
    tools: list[ToolSpec],
    tool_choice: str = "auto",
    *,
    extra_properties: dict[str, Any] | None = None,
    content_max_length: int | None = None,
) -> dict[str, Any] | None:
    """JSON Schema of ONE model output under `tool_choice` (see module docstring); None for 'none'."""
    extra = dict(extra_properties or {})
    if tool_choice == "none" or not tools:
        return None
    if tool_choice not in CHOICES:
        chosen = [t for t in tools if t.name == tool_choice]
        if not chosen:
            raise BadRequest(f"tool_choice {tool_choice!r} is not among the tools", param="tool_choice")
        return _call_alternative(chosen[0], extra)
    alts = [_call_alternative(t, extra) for t in tools]
    if tool_choice == "auto":
        content: dict[str, Any] = {"type": "string"}
        if content_max_length:
            content["maxLength"] = content_max_length
        props = {**extra, "content": content}
        alts.append(
            {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
        )
    return alts[0] if len(alts) == 1 else {"anyOf": alts}


# ---------------------------------------------------------------------------------------------- prompt


def _type_text(s: dict[str, Any]) -> str:
    if "enum" in s:
        return " | ".join(json.dumps(v, ensure_ascii=False) for v in s["enum"])
    if "const" in s:
        return json.dumps(s["const"], ensure_ascii=False)
    for key in ("anyOf", "oneOf"):
        if key in s:
            return " | ".join(_type_text(x) for x in s[key])
    t = s.get("type", "any")
    if isinstance(t, list):
        return " | ".join(t)
    if t == "array" and isinstance(s.get("items"), dict):
        return f"list of {_type_text(s['items'])}"
    return str(t)


def tool_signature(spec: ToolSpec) -> str:
    """'- name: description' plus one indented line per argument (type, optional, description)."""
    props: dict[str, Any] = spec.parameters.get("properties", {}) or {}
    required = set(spec.parameters.get("required", []) or [])
    lines = [f"- {spec.name}: {spec.description.strip() or '(no description)'}"]
    for pname, ps in props.items():
        ps = ps if isinstance(ps, dict) else {}
        opt = "" if pname in required else ", optional"
        desc = f" - {ps['description']}" if ps.get("description") else ""
        lines.append(f"    {pname} ({_type_text(ps)}{opt}){desc}")
    return "\n".join(lines)


def _example_args(spec: ToolSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    props = spec.parameters.get("properties", {}) or {}
    for pname in spec.parameters.get("required", []) or list(props)[:1]:
        ps = props.get(pname, {}) if isinstance(props.get(pname), dict) else {}
        if "enum" in ps:
            out[pname] = ps["enum"][0]
        elif "default" in ps:
            out[pname] = ps["default"]
        else:
            out[pname] = {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}.get(
                ps.get("type"), "..."
            )
    return out


def render_tools_prompt(tools: list[ToolSpec], tool_choice: str = "auto") -> str:
    """Describe the tools and the one-JSON-object reply format for the system prompt."""
    if tool_choice == "none" or not tools:
        return ""
    shown = tools if tool_choice in CHOICES else [t for t in tools if t.name == tool_choice]
    ex = shown[0]
    example = json.dumps({"name": ex.name, "arguments": _example_args(ex)}, ensure_ascii=False)
    lines = [
        "You can use these tools:",
        *(tool_signature(t) for t in shown),
        "",
        "Reply with exactly one JSON object and nothing else.",
        f'To call a tool: {{"name": "<tool name>", "arguments": {{...}}}}, for example {example}',
    ]
    if tool_choice == "auto":
        lines.append('To answer without a tool: {"content": "<your answer>"}')
    elif tool_choice == "required":
        lines.append("You must call one of the tools.")
    else:
        lines.append(f"You must call the tool '{tool_choice}'.")
    return "\n".join(lines)


def messages_for_model(messages: list[Any], tools: list[ToolSpec], tool_choice: str = "auto") -> list[dict]:
    """OpenAI messages (tool_calls, tool results) -> plain role/content messages for any chat template."""
    out: list[dict[str, str]] = []
    id_to_name: dict[str, str] = {}
    for i, m in enumerate(messages):
        if hasattr(m, "model_dump"):
            m = m.model_dump(exclude_none=True)
        if not isinstance(m, dict) or "role" not in m:
            raise BadRequest(f"'messages[{i}]' must be an object with a 'role'", param=f"messages[{i}]")
        role, content = m["role"], content_text(m.get("content"))
        if role == "developer":
            role = "system"
        if role == "assistant" and m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = c.get("function", {}) if isinstance(c, dict) else {}
                args = fn.get("arguments", {})
                if isinstance(args, str):
                    try:
                        args = json.loads(args or "{}")
                    except json.JSONDecodeError:
                        pass
                calls.append({"name": fn.get("name"), "arguments": args})
                if isinstance(c, dict) and c.get("id"):
                    id_to_name[c["id"]] = fn.get("name", "tool")
            content = "\n".join(json.dumps(c, ensure_ascii=False) for c in calls)
        elif role in ("tool", "function"):
            name = m.get("name") or id_to_name.get(m.get("tool_call_id", ""), "the tool")
            role, content = "user", f"Result of {name}: {content}"
        out.append({"role": role, "content": content})
    tools_text = render_tools_prompt(tools, tool_choice)
    if tools_text:
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": (out[0]["content"] + "\n\n" + tools_text).strip()}
        else:
            out.insert(0, {"role": "system", "content": tools_text})
    return out


def content_text(content: Any) -> str:
    """Message content (a string or text parts) as text, leniently."""
    if content is None:
        return ""
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


__all__ = [
    "ParsedOutput",
    "ToolCall",
    "ToolCallError",
    "ToolSpec",
    "call_schema",
    "messages_for_model",
    "normalize_tool_choice",
    "normalize_tools",
    "render_tools_prompt",
    "tool_signature",
]
