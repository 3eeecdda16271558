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

from pydantic import Field

from luodi.agent.runtime import Limits, agent_from_config
from luodi.agent.suites import load_yaml_suite
from luodi.config import Strict
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


class Expect(Strict):
    answer_any: list[str] = Field(default_factory=list, description="the answer contains one of these (any case)")
    answer_all: list[str] = Field(default_factory=list, description="the answer contains all of these")
    tool: str | None = Field(None, description="this tool was called")
    tools_all: list[str] = Field(default_factory=list, description="all of these were called (multi-step)")
    no_tool: bool = Field(False, description="answered without any tool")
    refuse: bool = Field(False, description="says it cannot (impossible tasks); a limit stop also counts as graceful")


class EvalTask(Strict):
    id: str = Field(description="unique within the suite; results are resumed by it")
    kind: str = Field("general", description="arithmetic | kb | sql | multi-step | no-tool | impossible | ...")
    goal: str = Field(description="what the agent is asked")
    tools: list[str] | None = Field(None, description="built-in tools for this task; default: the suite's")
    expect: Expect = Field(default_factory=Expect, description="what a successful run does")


class EvalSuite(Strict):
    tools: list[str] = Field(
        default_factory=lambda: ["calculator", "sql", "kb_search", "current_time"],
        description="built-in tools of every task that names none",
    )
    max_steps: int = Field(5, ge=1, description="model turns per task")
    max_tool_calls: int = Field(4, ge=1, description="tool calls per task")
    max_seconds: float = Field(180.0, gt=0, description="wall time per task")
    route: bool | Literal["strict"] = Field(True, description="tool routing, see luodi.agent.runtime.Agent(route=...)")
    tasks: list[EvalTask] = Field(description="the goals to run")


def load_suite(path: str | Path) -> EvalSuite:
    suite = load_yaml_suite(path, EvalSuite, "task file")
    ids = [t.id for t in suite.tasks]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ConfigError(f"{path}: task ids must be unique; repeated: {', '.join(sorted(dup))}", param="tasks")
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
    suite = load_suite(path)
    done: dict[str, dict[str, Any]] = {}
    if out and Path(out).exists():
        for line in Path(out).read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
                done[r["id"]] = r
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by a crash
    limits = Limits(max_steps=suite.max_steps, max_tool_calls=suite.max_tool_calls, max_seconds=suite.max_seconds)
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
            s: sum(r.get("stop_reason") == s for r in results) for s in sorted({r.get("stop_reason") for r in results})
        },
        "mean_seconds": sum(r.get("seconds", 0.0) for r in results) / n,
        "completion_tokens": sum(r.get("completion_tokens", 0) for r in results),
        "results": results,
    }
