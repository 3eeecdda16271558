"""OpenAI-format tool calling for any chat model: schema for constrained decoding, prompt, parse + validate.

A model sees the tools in its system prompt and answers with exactly ONE JSON object:

    {"name": "<tool>", "arguments": {...}}      a tool call
    {"content": "<text>"}                       a final answer / plain reply (only when allowed)

Constrained decoding to `call_schema(...)` makes even a 135M model emit a well-formed call; `parse_output`
still validates everything (name, arguments against the tool's JSON Schema) and raises `ToolCallError`
whose `.feedback` is a short text to send back to the model as an observation.

Public API (used by the OpenAI-compatible server and by luodi.agent.runtime):

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
    parse_output(text, tools, tool_choice="auto") -> ParsedOutput
        Parse a generation. ParsedOutput.tool_calls: list[ToolCall] (empty for a text reply),
        ParsedOutput.content: str | None, ParsedOutput.extra: other keys (e.g. "thought").
        Accepts the canonical form plus common variants from unconstrained models (```json fences,
        <tool_call> tags, {"tool": ..}, {"function": {...}}, arguments as a JSON string, a list of calls).
        Raises ToolCallError (a BadRequest) with `.feedback` when the output is not a valid call.
    ToolCall(name, arguments: dict, id="call_...").to_openai() -> {"id", "type": "function",
        "function": {"name", "arguments": "<json string>"}}   (the OpenAI response shape)
    validate_arguments(spec: ToolSpec, arguments: dict) -> list[str]   problems, [] when valid.
    tool_signature(spec: ToolSpec) -> str   the compact text description of one tool used in prompts.

Server sketch for POST /v1/chat/completions with `tools`:

    specs = normalize_tools(req.tools); choice = normalize_tool_choice(req.tool_choice, specs)
    prompt = engine.chat_prompt(messages_for_model(req.messages, specs, choice))
    params.json_schema = call_schema(specs, choice)
    out = parse_output(text, specs, choice)   # on ToolCallError: return the text as content, or retry
    message = {"role": "assistant", "content": out.content,
               "tool_calls": [c.to_openai() for c in out.tool_calls] or None}
    finish_reason = "tool_calls" if out.tool_calls else "stop"
"""

from __future__ import annotations

import difflib
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
        role, content = m["role"], _text(m.get("content"))
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


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


# ---------------------------------------------------------------------------------------------- parse


_FENCE = re.compile(r"```(?:json|tool_call)?\s*(.*?)```", re.S)
_TAG = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


class BrokenJson(ValueError):
    """The output is JSON that was cut off (max_tokens) or is malformed."""


def _find_json(text: str) -> Any:
    """First JSON value (object or list) in text, tolerating fences, tags and surrounding prose."""
    s = text.strip()
    candidates = [s]
    candidates += [m.group(1) for m in _TAG.finditer(s)] + [m.group(1) for m in _FENCE.finditer(s)]
    dec = json.JSONDecoder()
    for c in candidates:
        c = c.strip()
        try:
            return json.loads(c)
        except json.JSONDecodeError as e:
            if c[:1] in "{[":  # JSON that is cut off or malformed: never fish inside it
                raise BrokenJson(f"invalid JSON ({e.msg} at character {e.pos})") from None
        for m in re.finditer(r"[{\[]", c):
            try:
                val, _ = dec.raw_decode(c, m.start())
            except json.JSONDecodeError:
                continue
            if isinstance(val, dict | list):
                return val
    raise ValueError("no JSON object found")


def validate_arguments(spec: ToolSpec, arguments: Any) -> list[str]:
    """Problems with `arguments` for `spec`, each naming the argument; [] when valid."""
    if not isinstance(arguments, dict):
        return [f"'arguments' must be a JSON object, got {type(arguments).__name__}"]
    from jsonschema.validators import validator_for

    schema = spec.parameters
    v = validator_for(schema)(schema)
    problems = []
    for e in sorted(v.iter_errors(arguments), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in e.path)
        problems.append(f"argument '{where}': {e.message}" if where else e.message)
    return problems


def _guide(tools: list[ToolSpec], choice: str) -> str:
    names = ", ".join(t.name for t in tools)
    tail = ' or {"content": "..."} to answer directly' if choice == "auto" else ""
    return f'Reply with one JSON object {{"name": "<one of: {names}>", "arguments": {{...}}}}{tail}.'


def _one_call(obj: dict[str, Any], tools: list[ToolSpec], choice: str, raw: str) -> ToolCall:
    by_name = {t.name: t for t in tools}
    fn = obj.get("function") if isinstance(obj.get("function"), dict) else obj
    name = fn.get("name", fn.get("tool", fn.get("tool_name")))
    args = fn.get("arguments", fn.get("args", fn.get("parameters", fn.get("input", {}))))
    if not isinstance(name, str) or not name:
        raise ToolCallError(
            "tool call has no 'name'",
            raw=raw,
            feedback="Error: your reply had no tool 'name'. " + _guide(tools, choice),
        )
    if name not in by_name:
        near = difflib.get_close_matches(name, list(by_name), n=1)
        hint = f" Did you mean '{near[0]}'?" if near else ""
        raise ToolCallError(
            f"unknown tool {name!r}",
            raw=raw,
            feedback=f"Error: there is no tool named '{name}'.{hint} Available tools: {', '.join(by_name)}.",
        )
    if choice not in CHOICES and name != choice:
        raise ToolCallError(
            f"tool {name!r} called but tool_choice requires {choice!r}",
            raw=raw,
            feedback=f"Error: you must call the tool '{choice}'.",
        )
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise ToolCallError(
                f"arguments of {name!r} are not valid JSON: {e}",
                raw=raw,
                feedback=f"Error: the arguments for '{name}' were not valid JSON ({e.msg}). "
                "Give 'arguments' as a JSON object.",
            ) from e
    if args is None:
        args = {}
    problems = validate_arguments(by_name[name], args)
    if problems:
        sig = tool_signature(by_name[name])
        raise ToolCallError(
            f"invalid arguments for {name!r}: " + "; ".join(problems),
            raw=raw,
            feedback=f"Error: invalid arguments for '{name}': "
            + "; ".join(problems)
            + f". The tool expects:\n{sig}",
        )
    return ToolCall(name, args)


def parse_output(text: str, tools: list[ToolSpec], tool_choice: str = "auto") -> ParsedOutput:
    """Parse one generation into tool calls or a content reply; raise ToolCallError when invalid."""
    if tool_choice == "none" or not tools:
        return ParsedOutput(content=text)
    try:
        obj = _find_json(text)
    except BrokenJson as e:
        raise ToolCallError(
            f"output is {e}",
            raw=text,
            feedback=f"Error: your reply was cut off or malformed ({e}); keep it short. "
            + _guide(tools, tool_choice),
        ) from None
    except ValueError:
        if tool_choice == "auto" and text.strip():
            return ParsedOutput(content=text.strip())  # an unconstrained model answered in prose
        raise ToolCallError(
            "output is not JSON",
            raw=text,
            feedback="Error: your reply was not a JSON object. " + _guide(tools, tool_choice),
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("tool_calls"), list):
        obj = obj["tool_calls"]
    if isinstance(obj, list):
        dicts = [o for o in obj if isinstance(o, dict)]
        if not dicts:
            raise ToolCallError(
                "empty list of tool calls",
                raw=text,
                feedback="Error: empty list of tool calls. " + _guide(tools, tool_choice),
            )
        return ParsedOutput(tool_calls=[_one_call(o, tools, tool_choice, text) for o in dicts])
    if not isinstance(obj, dict):
        raise ToolCallError(
            "output is not a JSON object",
            raw=text,
            feedback="Error: your reply was not a JSON object. " + _guide(tools, tool_choice),
        )
    is_call = any(k in obj for k in ("name", "tool", "tool_name", "function"))
    extra = {
        k: v
        for k, v in obj.items()
        if k
        not in (
            "name",
            "tool",
            "tool_name",
            "function",
            "arguments",
            "args",
            "parameters",
            "input",
            "content",
        )
    }
    if not is_call:
        if "content" in obj:
            if tool_choice != "auto":
                raise ToolCallError(
                    "a tool call is required",
                    raw=text,
                    feedback="Error: you must call a tool now. " + _guide(tools, tool_choice),
                )
            return ParsedOutput(content=_text(obj["content"]), extra=extra)
        raise ToolCallError(
            "JSON object is neither a tool call nor a content reply",
            raw=text,
            feedback="Error: your reply had neither 'name' nor 'content'. " + _guide(tools, tool_choice),
        )
    return ParsedOutput(tool_calls=[_one_call(obj, tools, tool_choice, text)], extra=extra)


__all__ = [
    "ParsedOutput",
    "ToolCall",
    "ToolCallError",
    "ToolSpec",
    "call_schema",
    "messages_for_model",
    "normalize_tool_choice",
    "normalize_tools",
    "parse_output",
    "render_tools_prompt",
    "validate_arguments",
]
