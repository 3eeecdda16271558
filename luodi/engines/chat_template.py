"""Render chat messages with a model's Jinja2 chat template (as stored in GGUF or tokenizer_config)."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from luodi.errors import BadRequest

# ChatML, used when a model ships no template.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check OpenAI-style messages and flatten content-part lists to plain text."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise BadRequest(f"messages[{i}] must be an object with a 'role' and 'content'", param="messages")
        content = m.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):
            parts = []
            for p in content:
                if isinstance(p, dict) and p.get("type") == "text":
                    parts.append(str(p.get("text", "")))
                elif isinstance(p, str):
                    parts.append(p)
                else:
                    kind = p.get("type") if isinstance(p, dict) else type(p).__name__
                    raise BadRequest(f"messages[{i}].content has a part of type {kind!r}; "
                                     "this model accepts only text parts", param="messages")
            content = "".join(parts)
        elif not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string or a list of text parts",
                             param="messages")
        out.append({**m, "content": content})
    return out


@lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg: str):
        raise TemplateError(msg)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render_chat(template: str | None, messages: list[dict[str, Any]], *, bos_token: str = "",
                eos_token: str = "", tools: list[dict] | None = None) -> str:
    """The prompt text for `messages`, ending where the assistant's reply begins."""
    from jinja2 import TemplateError

    msgs = normalize_messages(messages)
    try:
        return _compile(template or CHATML).render(
            messages=msgs, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token, tools=tools
        )
    except TemplateError as e:
        raise BadRequest(f"the model's chat template rejected these messages: {e}", param="messages") from e
