"""What the agent's model sees and must say on each turn: the system prompt (tools and recalled memories),
worked examples, the conversation history fitted to the context window, and the JSON shapes it is
constrained to. Also reads an answer a small model cut off at its token limit."""

from __future__ import annotations

import json
import re
from typing import Any

from luodi.agent import memory
from luodi.agent.planner import PLAN_SCHEMA
from luodi.agent.tools import Tool
from luodi.llm.toolcalls import call_schema, tool_signature

SYSTEM = """You are a careful assistant. Reach the user's goal step by step, using tools when they help.
{tools}
Reply with exactly one JSON object: "plan" lists the steps still to do, then either "name" and "arguments"
to call a tool, or "content" with the final answer. Answer from tool results; never invent facts or numbers.
If the goal is impossible or no tool can help, say so in "content"."""

MAX_EXAMPLES = 3  # worked examples (earlier turns) shown to the model

ANSWER_SCHEMA: dict[str, Any] = {  # a plan and the final answer, no tool call
    "type": "object",
    "properties": {"plan": PLAN_SCHEMA, "content": {"type": "string"}},
    "required": ["plan", "content"],
    "additionalProperties": False,
}

BEST_EFFORT_SCHEMA: dict[str, Any] = {  # at a limit: just the answer
    "type": "object",
    "properties": {"content": {"type": "string"}},
    "required": ["content"],
    "additionalProperties": False,
}


def step_schema(tools: list[Tool], choice: str = "auto") -> dict[str, Any]:
    """A plan, then a call to one of `tools` (or, with choice "auto", the final answer)."""
    schema = call_schema([t.spec() for t in tools], choice, extra_properties={"plan": PLAN_SCHEMA})
    return schema if schema is not None else ANSWER_SCHEMA  # no tools: a plan and an answer


def system_prompt(template: str, tools: list[Tool], recalled: list[str]) -> str:
    if tools:
        listed = "You can use these tools:\n" + "\n".join(tool_signature(t.spec()) for t in tools)
    else:
        listed = "You have no tools; answer directly."
    text = template.format(tools=listed)
    if recalled:
        text += "\nThings you remember from earlier conversations:\n" + "\n".join(f"- {r}" for r in recalled)
    return text


def worked_examples(tools: list[Tool]) -> list[dict[str, str]]:
    """Each tool's worked example as earlier turns: goal, call, result, answer."""
    out: list[dict[str, str]] = []
    for t in [t for t in tools if t.example][:MAX_EXAMPLES]:
        ex = t.example or {}
        call = {"plan": ex.get("plan", ["answer"]), "name": t.name, "arguments": ex["arguments"]}
        answer = {"plan": ["answer"], "content": ex["answer"]}
        out += [
            {"role": "user", "content": ex["goal"]},
            {"role": "assistant", "content": json.dumps(call, ensure_ascii=False)},
            {"role": "user", "content": f"Result of {t.name}: {ex['result']}"},
            {"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)},
        ]
    return out


def history(thread_id: str) -> list[dict[str, str]]:
    """The stored conversation as chat turns: tool results and a human agent's words as user turns."""
    out = []
    for m in memory.get_thread(thread_id)["messages"]:
        if m["role"] == "tool":
            out.append({"role": "user", "content": f"Result of {m['meta'].get('name', 'the tool')}: {m['content']}"})
        elif m["role"] in ("user", "assistant"):
            out.append({"role": m["role"], "content": m["content"]})
        elif m["role"] == "human_agent":
            out.append({"role": "user", "content": f"A human agent said: {m['content']}"})
    return out


def fit_prompt(
    engine: Any, system: str, turns: list[dict[str, str]], examples: list[dict[str, str]], reserve: int
) -> str:
    """Chat prompt leaving `reserve` tokens for the reply: drop the examples, then the oldest middle turns."""
    budget = int(getattr(engine, "n_ctx", 2048)) - reserve - 8
    msgs, examples = list(turns), list(examples)
    while True:
        prompt = engine.chat_prompt([{"role": "system", "content": system}, *examples, *msgs])
        if len(engine.tokenize(prompt)) <= budget or len(msgs) <= 1:
            return prompt
        if examples:  # worked examples go first
            examples = []
            continue
        del msgs[1 if len(msgs) > 2 else 0]  # keep the first user goal and the most recent turns


def salvage_content(text: str) -> str | None:
    """The beginning of a final answer cut off mid-string, without its repeated sentences (or None)."""
    m = re.match(r'\s*\{\s*"plan"\s*:\s*\[.*?\]\s*,\s*"content"\s*:\s*"(.*)$', text, re.S)
    if not m:
        return None
    raw = m.group(1)
    try:
        body = json.loads('"' + raw.rstrip("\\") + '"')
    except json.JSONDecodeError:
        body = raw.replace('\\"', '"').replace("\\n", "\n")
    out: list[str] = []
    keys: set[str] = set()
    for sent in re.split(r"(?<=[.!?])\s+", body.strip()):
        key = " ".join(re.findall(r"[a-z]+", sent.lower())[:4])  # same opening words: a loop
        if not key or key in keys:
            break
        keys.add(key)
        out.append(sent)
    if len(out) > 1 and not re.search(r"[.!?]$", out[-1]):
        out.pop()  # drop a half sentence at the cut
    return " ".join(out).strip() or None
