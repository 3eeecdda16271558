"""Agent evaluation: run a YAML suite of goals and report task success, steps and tool-call validity.

    tasks:
      - id: arith-1
        kind: arithmetic                 # arithmetic | kb | sql | multi-step | no-tool | impossible | ...
        goal: "What is 17 * 23?"
        tools: [calculator]              # default: the suite's `tools`
        expect: {answer_any: ["391"], tool: calculator}

Results are appended to a JSONL file as each task finishes, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from luodi.config import format_validation_error
from luodi.errors import ConfigError

REFUSAL = [
    "cannot",
    "can't",
    "can not",
    "unable",
    "not able",
    "don't know",
    "do not know",
    "no information",
    "not possible",
    "impossible",
    "sorry",
    "no tool",
    "not available",
    "don't have",
    "do not have",
    "not found",
    "could not find",
    "couldn't find",
    "does not exist",
    "doesn't exist",
    "no record",
    "no rows",
    "no such",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Expect(_Strict):
    answer_any: list[str] = Field(default_factory=list)  # the answer contains one of these (case-insensitive)
    answer_all: list[str] = Field(default_factory=list)
    tool: str | None = None  # this tool was called
    tools_all: list[str] = Field(default_factory=list)  # all of these were called (multi-step)
    no_tool: bool = False  # answered without any tool
    refuse: bool = False  # says it cannot (impossible tasks); a limit stop also counts as graceful


class EvalTask(_Strict):
    id: str
    kind: str = "general"
    goal: str
    tools: list[str] | None = None
    expect: Expect = Field(default_factory=Expect)


class EvalSuite(_Strict):
    tools: list[str] = Field(default_factory=lambda: ["calculator", "sql", "kb_search", "current_time"])
    max_steps: int = Field(5, ge=1)
    max_tool_calls: int = Field(4, ge=1)
    max_seconds: float = Field(180.0, gt=0)
    route: bool | Literal["strict"] = True  # see luodi.agent.runtime.Agent(route=...)
    tasks: list[EvalTask]


def load_suite(path: str | Path) -> EvalSuite:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"task file '{p}' not found")
    try:
        suite = EvalSuite.model_validate(yaml.safe_load(p.read_text(encoding="utf-8")))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(p))) from e
    ids = [t.id for t in suite.tasks]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ConfigError(f"{p}: task ids must be unique; repeated: {', '.join(sorted(dup))}", param="tasks")
    return suite


def _contains(text: str, needle: str) -> bool:
    t, n = text.lower(), needle.lower()
    if re.fullmatch(r"-?\d+(\.\d+)?", n):  # numbers: match whole numbers, tolerate thousands separators
        return re.search(rf"(?<![\d.]){re.escape(n)}(?![\d])", t.replace(",", "")) is not None
    return n in t


def score(task: EvalTask, res: dict[str, Any]) -> list[str]:
    """Problems with one result ([] = success)."""
    e, ans, used = task.expect, res.get("answer", ""), res.get("tools_used", [])
    problems = []
    if res.get("stop_reason") == "error":
        problems.append(f"error: {ans}")
    if e.answer_any and not any(_contains(ans, a) for a in e.answer_any):
        problems.append(f"answer has none of {e.answer_any}")
    problems += [f"answer lacks {a!r}" for a in e.answer_all if not _contains(ans, a)]
    if e.tool and e.tool not in used:
        problems.append(f"did not call {e.tool}")
    problems += [f"did not call {t}" for t in e.tools_all if t not in used]
    if e.no_tool and used:
        problems.append(f"called tools {used} though none was needed")
    if e.refuse and res.get("stop_reason") == "final_answer" and not any(_contains(ans, r) for r in REFUSAL):
        problems.append("did not say the goal is impossible")
    return problems


def run_suite(
    path: str | Path,
    *,
    model: str | None = None,
    out: str | Path | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    only: list[str] | None = None,
    db: str | None = None,
    kb: str | None = None,
    route: bool | str | None = None,
) -> dict[str, Any]:
    """Run every task (resuming from `out` when it has results) and return the summary."""
    from luodi.agent.runtime import Limits, agent_from_config

    suite = load_suite(path)
    done: dict[str, dict[str, Any]] = {}
    if out and Path(out).exists():
        for line in Path(out).read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
                done[r["id"]] = r
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by a crash
    limits = Limits(
        max_steps=suite.max_steps, max_tool_calls=suite.max_tool_calls, max_seconds=suite.max_seconds
    )
    agents: dict[tuple[str, ...], Any] = {}
    results = []
    for task in suite.tasks:
        if only and task.id not in only:
            continue
        if task.id in done:
            results.append(done[task.id])
            continue
        names = tuple(task.tools if task.tools is not None else suite.tools)
        if names not in agents:
            agents[names] = agent_from_config(
                {"names": list(names), "db": db, "kb": kb, "route": suite.route if route is None else route},
                model=model,
                limits=limits,
            )
        res = agents[names].run(task.goal).to_dict()
        res.pop("events", None)
        row = {"id": task.id, "kind": task.kind, "goal": task.goal, **res}
        row["problems"] = score(task, row)
        row["success"] = not row["problems"]
        results.append(row)
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            with open(out, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
        if on_result:
            on_result(row)
    return summarize(results)


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    n = max(1, len(results))
    turns = sum(r.get("steps", 0) for r in results)
    invalid = sum(r.get("invalid_calls", 0) for r in results)
    kinds: dict[str, list[bool]] = {}
    for r in results:
        kinds.setdefault(r["kind"], []).append(bool(r["success"]))
    return {
        "tasks": len(results),
        "success_rate": sum(r["success"] for r in results) / n,
        "by_kind": {k: {"tasks": len(v), "success_rate": sum(v) / len(v)} for k, v in sorted(kinds.items())},
        "mean_steps": turns / n,
        "tool_calls": sum(r.get("tool_calls", 0) for r in results),
        "tool_call_validity": 1 - invalid / max(1, turns),  # model turns that parsed and validated
        "stop_reasons": {
            s: sum(r.get("stop_reason") == s for r in results)
            for s in sorted({r.get("stop_reason") for r in results})
        },
        "mean_seconds": sum(r.get("seconds", 0.0) for r in results) / n,
        "completion_tokens": sum(r.get("completion_tokens", 0) for r in results),
        "results": results,
    }
