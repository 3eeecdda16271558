"""Parse and validate a model's tool-calling output (the format luodi.llm.toolcalls prompts for).

    parse_output(text, tools, tool_choice="auto") -> ParsedOutput
        ParsedOutput.tool_calls: list[ToolCall] (empty for a text reply), .content: str | None, .extra: other
        keys (e.g. "thought"). Accepts the canonical form plus common variants from unconstrained models
        (```json fences, <tool_call> tags, {"tool": ..}, {"function": {...}}, arguments as a JSON string, a list
        of calls). Raises ToolCallError (a BadRequest) with `.feedback` when the output is not a valid call.
    validate_arguments(spec, arguments) -> list[str]   problems, [] when valid.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from luodi.llm.toolcalls import (
    CHOICES,
    ParsedOutput,
    ToolCall,
    ToolCallError,
    ToolSpec,
    content_text,
    tool_signature,
)

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
            return ParsedOutput(content=content_text(obj["content"]), extra=extra)
        raise ToolCallError(
            "JSON object is neither a tool call nor a content reply",
            raw=text,
            feedback="Error: your reply had neither 'name' nor 'content'. " + _guide(tools, tool_choice),
        )
    return ParsedOutput(tool_calls=[_one_call(obj, tools, tool_choice, text)], extra=extra)


__all__ = ["BrokenJson", "parse_output", "validate_arguments"]
