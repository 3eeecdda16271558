"""Agent tools: typed Python functions turned into OpenAI-format tools, and the built-in tools.

    @tool
    def add(a: int, b: int) -> int:
        '''Add two integers.

        Args:
            a: the first number
            b: the second number
        '''
        return a + b

    add.spec()           # ToolSpec with the JSON Schema derived from the type hints (pydantic)
    add.invoke({"a": 1, "b": 2})  # validated call -> "3"

The built-in tools live in luodi.agent.builtin_tools (calculator, sql_tool and the registry
`builtin_tools(names, ...)`).
"""

from __future__ import annotations

import contextvars
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from luodi.errors import BadRequest
from luodi.llm.toolcalls import ToolSpec

# Who is running a tool right now (thread id, app): set by the runtime, read by tools like create_ticket.
RUN_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("luodi_agent_run", default=None)

MAX_OBSERVATION = 1200  # characters of a tool result shown to the model


class ToolError(Exception):
    """A tool refused or failed; the message goes back to the model as the observation."""


@dataclass
class Tool:
    """A callable tool: `fn` plus its validated arguments model and flags."""

    name: str
    description: str
    fn: Callable[..., Any]
    args_model: type[BaseModel]
    requires_approval: bool = False
    # a worked example shown to the model as earlier turns: {goal, arguments, result, answer}
    example: dict[str, Any] | None = None
    # how relevant the tool is to a goal, in [0, 1] (the agent's router requires a call when high)
    relevance: Callable[[str], float] | None = None

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, _clean_schema(self.args_model.model_json_schema()))

    def to_openai(self) -> dict[str, Any]:
        return self.spec().to_openai()

    def invoke(self, arguments: dict[str, Any]) -> str:
        """Validate arguments, run the function, return its result as text (errors as ToolError)."""
        try:
            args = self.args_model.model_validate(arguments or {})
        except ValidationError as e:
            problems = "; ".join(f"'{'.'.join(map(str, x['loc'])) or '(root)'}': {x['msg']}" for x in e.errors())
            raise ToolError(f"invalid arguments for {self.name}: {problems}") from e
        try:
            out = self.fn(**args.model_dump())
        except ToolError:
            raise
        except BadRequest as e:
            raise ToolError(e.message) from e
        except Exception as e:  # a tool failing is an observation, never a crash of the loop
            raise ToolError(f"{self.name} failed: {type(e).__name__}: {e}") from e
        return _as_text(out)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def _as_text(out: Any) -> str:
    if isinstance(out, str):
        text = out
    elif isinstance(out, float):
        text = f"{out:.10g}"
    else:
        try:
            text = json.dumps(out, ensure_ascii=False, default=str)
        except TypeError:
            text = str(out)
    return text if len(text) <= MAX_OBSERVATION else text[:MAX_OBSERVATION] + " …(truncated)"


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's 'title' noise so prompts and grammars stay small."""
    if isinstance(schema, dict):
        return {k: _clean_schema(v) for k, v in schema.items() if k != "title" or not isinstance(v, str)}
    if isinstance(schema, list):
        return [_clean_schema(v) for v in schema]
    return schema


def _doc_parts(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (description, {arg: description})."""
    doc = inspect.cleandoc(doc or "")
    m = re.search(r"^\s*(Args|Arguments|Parameters):\s*$", doc, re.M)
    if not m:
        return doc.strip(), {}
    desc, rest = doc[: m.start()].strip(), doc[m.end() :]
    args: dict[str, str] = {}
    current = None
    for line in rest.splitlines():
        am = re.match(r"^\s{0,8}(\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", line)
        if am:
            current = am.group(1)
            args[current] = am.group(3).strip()
        elif current and line.strip() and not re.match(r"^\s*(Returns|Raises|Yields):", line):
            args[current] += " " + line.strip()
        elif re.match(r"^\s*(Returns|Raises|Yields):", line):
            current = None
    return desc, args


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    example: dict[str, Any] | None = None,
    relevance: Callable[[str], float] | None = None,
) -> Any:
    """Decorator turning a typed function with a docstring into a Tool (see Tool for example/relevance)."""

    def wrap(f: Callable[..., Any]) -> Tool:
        desc, arg_docs = _doc_parts(f.__doc__ or "")
        if not (description or desc):
            raise BadRequest(f"tool '{f.__name__}' needs a docstring: the model reads it to decide when to call it")
        hints = get_type_hints(f, include_extras=True)
        fields: dict[str, Any] = {}
        for pname, p in inspect.signature(f).parameters.items():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise BadRequest(f"tool '{f.__name__}': *args/**kwargs cannot be described to a model")
            ann = hints.get(pname, str)
            default = ... if p.default is p.empty else p.default
            fields[pname] = (ann, Field(default, description=arg_docs.get(pname)))
        model = create_model(f"{f.__name__}_args", __config__=ConfigDict(extra="forbid"), **fields)
        return Tool(name or f.__name__, (description or desc).strip(), f, model, requires_approval, example, relevance)

    return wrap(fn) if fn is not None else wrap
