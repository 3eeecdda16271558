"""The agent loop: perceive -> plan -> act -> observe, until a final answer or a limit.

    agent = Agent(builtin_tools(["calculator"]))
    result = agent.run("What is 17 * 23?")          # AgentResult(answer, stop_reason, steps, ...)
    async for event in agent.stream(goal): ...      # the trace, as dicts with a "type"

Every model turn is constrained-decoded to one JSON object
`{"plan": [remaining steps], "name": tool, "arguments": {...}}` or `{"plan": [...], "content": answer}`
(luodi.llm.toolcalls; the prompt pieces are in luodi.agent.prompting), so even a 135M model emits valid
calls. Invalid output, tool errors, repeated calls and rejected approvals all go back to the model as
observations. Hard limits (steps, tool calls, completion tokens, wall time, repeats) end the run
with a best-effort answer and a `stop_reason`, never an exception.
Threads live in the store: `run(goal, thread_id=...)` continues a conversation; a tool that requires
approval pauses the run (stop_reason "approval_required") until `resume_after_approval(id, approve)`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from luodi.agent import approvals, memory
from luodi.agent.assistant.demo import DEMO_KB
from luodi.agent.builtin_tools import BUILTIN_NAMES, builtin_tools
from luodi.agent.planner import Plan
from luodi.agent.prompting import (
    ANSWER_SCHEMA,
    BEST_EFFORT_SCHEMA,
    SYSTEM,
    fit_prompt,
    history,
    salvage_content,
    step_schema,
    system_prompt,
    worked_examples,
)
from luodi.agent.tools import RUN_CONTEXT, Tool, ToolError
from luodi.engines import SamplingParams, complete, get_engine
from luodi.errors import BadRequest, LuodiError
from luodi.llm import run_sync
from luodi.llm.toolcalls import ToolCallError
from luodi.llm.toolparse import parse_output

STOP_REASONS = (
    "final_answer",
    "max_steps",
    "max_tool_calls",
    "max_tokens",
    "timeout",
    "repeated_call",
    "approval_required",
    "error",
)


@dataclass
class Limits:
    max_steps: int = 6  # model turns
    max_tool_calls: int = 5
    max_tokens: int = 1500  # completion tokens over the whole run
    max_seconds: float = 120.0
    max_repeats: int = 1  # identical calls tolerated before stopping
    step_tokens: int = 200  # completion tokens per turn


@dataclass
class AgentResult:
    answer: str
    stop_reason: str
    thread_id: str
    steps: int = 0
    tool_calls: int = 0
    invalid_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    plan: dict[str, Any] = field(default_factory=dict)
    tools_used: list[str] = field(default_factory=list)
    approval_id: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _limit_reached(lim: Limits, counters: dict[str, Any], elapsed: float) -> str | None:
    """The stop reason of a hard limit the run has reached before its next turn, or None."""
    if counters["steps"] >= lim.max_steps:
        return "max_steps"
    if elapsed >= lim.max_seconds:
        return "timeout"
    if lim.max_tokens - counters["completion_tokens"] <= 8:  # too few tokens left for a turn
        return "max_tokens"
    return None


async def collect(events: AsyncIterator[dict[str, Any]]) -> AgentResult:
    """Run a trace to its end: the final result, with every event."""
    trace = [ev async for ev in events]
    res = AgentResult(**trace[-1]["result"])
    res.events = trace
    return res


# ---------------------------------------------------------------------------------------- agent


class Agent:
    """A tool-using agent over any chat engine; see the module docstring."""

    def __init__(
        self,
        tools: list[Tool] | None = None,
        *,
        model: str | None = None,
        engine: Any = None,
        limits: Limits | None = None,
        memory_scope: str | None = None,
        system: str | None = None,
        tool_config: dict[str, Any] | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        route: bool | str = True,
        injection: Any = None,
    ):
        self.tools = list(tools or [])
        # guard.injection (InjectionConfig fields, true, or None: off): a tool output that looks like a prompt
        # injection is replaced by a notice (mode block) or passed on and marked in the trace (mode flag)
        self.injection = _injection_guard(injection)
        self.by_name = {t.name: t for t in self.tools}
        if len(self.by_name) != len(self.tools):
            raise BadRequest("two tools share a name", param="tools")
        self.model = model
        self._engine = engine
        self.limits = limits or Limits()
        self.memory_scope = memory_scope
        self.system = system or SYSTEM
        self.tool_config = tool_config or {"names": [t.name for t in self.tools]}
        self.temperature = temperature
        self.seed = seed
        # first turn: require a call when a tool's relevance(goal) is high; route="strict" also makes a
        # goal no tool is relevant to answer directly (for small models that call tools at random)
        self.route = route
        self.guarded: list[dict[str, Any]] = []  # tool outputs guard.injection replaced or flagged, this process

    @property
    def engine(self):
        if self._engine is None:
            self._engine = get_engine(self.model)  # luodi.engines: shared with the server and RAG
        return self._engine

    def _routed(self, goal: str) -> list[Tool]:
        """Tools clearly relevant to the goal (perceive): the first turn must call one of them."""
        if not self.route:
            return []
        return [t for t in self.tools if t.relevance is not None and t.relevance(goal) >= 0.5]

    def _fit(self, system: str, turns: list[dict[str, str]], example_tools: list[Tool] | None = None) -> str:
        examples = worked_examples(example_tools or [])
        return fit_prompt(self.engine, system, turns, examples, self.limits.step_tokens)

    # ----------------------------------------------------------------------------- public API
    def run(self, goal: str, thread_id: str | None = None) -> AgentResult:
        """Blocking run (for the CLI and tests); see `stream` for the events."""
        return run_sync(collect(self.stream(goal, thread_id)))

    def resume(self, thread_id: str) -> AgentResult:
        return run_sync(collect(self.stream_resume(thread_id)))

    async def arun(self, goal: str, thread_id: str | None = None) -> AgentResult:
        return await collect(self.stream(goal, thread_id))

    async def aresume(self, thread_id: str) -> AgentResult:
        return await collect(self.stream_resume(thread_id))

    async def stream(self, goal: str, thread_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Start (or continue, with thread_id) a conversation with a new goal; yields trace events."""
        if not isinstance(goal, str) or not goal.strip():
            raise BadRequest("'goal' must be a non-empty string", param="goal")
        if thread_id and memory.thread_exists(thread_id):
            th = memory.get_thread(thread_id, kind="agent")
            if th["state"].get("status") == "paused":
                raise BadRequest(
                    f"thread '{thread_id}' waits for approval {th['state'].get('approval_id')}; "
                    "approve or reject it first",
                    param="thread_id",
                    status=409,
                )
            state = th["state"]
        else:
            thread_id = memory.create_thread("agent", state={}, thread_id=thread_id)
            state = {}
        state.update(
            status="running",
            goal=goal,
            tools=self.tool_config,
            plan=Plan().to_dict(),
            counters={},
            seen={},
            started=time.time(),
        )
        memory.save_state(thread_id, state)
        memory.add_message(thread_id, "user", goal)
        yield {"type": "start", "thread_id": thread_id, "goal": goal, "tools": [t.name for t in self.tools]}
        async for ev in self._loop(thread_id, state):
            yield ev

    async def stream_resume(self, thread_id: str) -> AsyncIterator[dict[str, Any]]:
        """Continue a run paused for approval, once the approval was decided."""
        th = memory.get_thread(thread_id, kind="agent")
        state = th["state"]
        if state.get("status") != "paused":
            raise BadRequest(
                f"thread '{thread_id}' is not waiting for an approval (status: {state.get('status')})",
                param="thread_id",
                status=409,
            )
        ap = approvals.get_approval(int(state["approval_id"]))
        if ap["status"] == "pending":
            raise BadRequest(
                f"approval {ap['id']} is still pending; approve or reject it first",
                param="approval_id",
                status=409,
            )
        call = state.pop("pending_call")
        state.pop("approval_id", None)
        state["status"] = "running"
        state["started"] = time.time() - state.get("counters", {}).get("seconds", 0.0)
        yield {"type": "resume", "thread_id": thread_id, "approval": ap}
        if ap["status"] == "approved":
            obs = await self._invoke(thread_id, call["name"], call["arguments"])
        else:
            obs = f"The human rejected the call to {call['name']}. Do not retry it; answer the user instead."
        memory.add_message(thread_id, "tool", obs, {"name": call["name"], "arguments": call["arguments"]})
        yield {"type": "observation", "name": call["name"], "text": obs}
        memory.save_state(thread_id, state)
        async for ev in self._loop(thread_id, state):
            yield ev

    # ----------------------------------------------------------------------------- the loop
    async def _invoke(self, thread_id: str, name: str, arguments: dict[str, Any]) -> str:
        tool = self.by_name[name]
        token = RUN_CONTEXT.set({"thread_id": thread_id})
        try:
            out = await asyncio.to_thread(tool.invoke, arguments)  # copies the context (RUN_CONTEXT)
        except ToolError as e:
            return f"Error: {e}"
        finally:
            RUN_CONTEXT.reset(token)
        if self.injection is not None and isinstance(out, str):  # indirect injection through a tool's output
            from luodi.privacy.injection import guard_tool_output

            out, verdict = await asyncio.to_thread(guard_tool_output, self.injection, name, out)
            if verdict.injected:
                self.guarded.append({"tool": name, "mode": self.injection.cfg.mode, **verdict.as_dict()})
        return out

    async def _loop(self, thread_id: str, state: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        lim = self.limits
        c = state.setdefault("counters", {})
        for k in ("steps", "tool_calls", "invalid_calls", "prompt_tokens", "completion_tokens"):
            c.setdefault(k, 0)
        seen: dict[str, str] = state.setdefault("seen", {})
        plan = Plan.from_dict(state.get("plan"))
        tools_used: list[str] = state.setdefault("tools_used", [])
        start = state.get("started", time.time())
        goal = state["goal"]
        recalled: list[str] = []
        if self.memory_scope:  # perceive: encode the goal, recall related memories
            recalled = [r.text for r in memory.LongTermMemory(self.memory_scope).search(goal, k=3)]
            if recalled:
                yield {"type": "memory", "recalled": recalled}
        system = system_prompt(self.system, self.tools, recalled)
        schema = step_schema(self.tools)
        first = c["steps"] == 0  # counters restart with each new goal
        answer_next = False
        routed = self._routed(goal) if first else []
        if routed:
            yield {"type": "route", "tools": [t.name for t in routed]}
        stop, answer, approval_id = None, None, None
        repeats = 0
        last_obs = ""
        try:
            while stop is None:
                elapsed = time.time() - start
                stop = _limit_reached(lim, c, elapsed)
                if stop:
                    break
                left = lim.max_tokens - c["completion_tokens"]
                c["steps"] += 1
                turn_schema, choice, specs = schema, "auto" if self.tools else "none", [t.spec() for t in self.tools]
                if first and not routed and self.route == "strict" and self.tools:
                    answer_next = True  # no tool is relevant: answer directly
                if first and routed:  # the goal clearly needs one of these tools: the first turn calls one
                    specs, choice, turn_schema = [t.spec() for t in routed], "required", step_schema(routed, "required")
                if answer_next:  # the model's own plan has only "answer" left after a good result
                    choice, specs, turn_schema = "none", [], ANSWER_SCHEMA
                first = answer_next = False
                # worked examples only for the routed tools: a small model copies example answers otherwise
                prompt = self._fit(system, history(thread_id), routed)
                params = SamplingParams(
                    max_tokens=min(lim.step_tokens, left),
                    temperature=self.temperature,
                    seed=self.seed,
                    json_schema=turn_schema,
                )
                try:
                    out = await asyncio.wait_for(
                        complete(self.engine, prompt, params), timeout=max(1.0, lim.max_seconds - elapsed)
                    )
                    text, pt, ct = out.text, out.prompt_tokens, out.completion_tokens
                except TimeoutError:
                    stop = "timeout"
                    break
                c["prompt_tokens"] += pt
                c["completion_tokens"] += ct
                yield {"type": "model", "step": c["steps"], "text": text, "tokens": ct}
                try:
                    out = parse_output(text, specs, choice)
                    if choice == "none":
                        obj = json.loads(text)
                        out.content, out.extra = obj.get("content", text), {"plan": obj.get("plan")}
                except (ToolCallError, json.JSONDecodeError) as e:
                    c["invalid_calls"] += 1
                    salvaged = salvage_content(text)
                    if salvaged:  # an answer cut off by max_tokens (small models ramble): keep its start
                        memory.add_message(thread_id, "assistant", text, {"invalid": True, "salvaged": True})
                        yield {"type": "invalid", "step": c["steps"], "error": "answer cut off; salvaged"}
                        answer, stop = salvaged, "final_answer"
                        break
                    fb = getattr(e, "feedback", f"Error: reply with one JSON object ({e})")
                    memory.add_message(thread_id, "assistant", text, {"invalid": True})
                    memory.add_message(thread_id, "tool", fb, {"name": "validator"})
                    yield {"type": "invalid", "step": c["steps"], "error": fb}
                    continue
                memory.add_message(thread_id, "assistant", text)
                if plan.update(out.extra.get("plan")):
                    yield {"type": "plan", "tasks": plan.to_dict()["tasks"], "revisions": plan.revisions}
                state["plan"] = plan.to_dict()
                if out.content is not None:
                    answer, stop = out.content.strip(), "final_answer"
                    break
                call = out.tool_calls[0]
                key = call.name + json.dumps(call.arguments, sort_keys=True)
                yield {
                    "type": "tool_call",
                    "step": c["steps"],
                    "name": call.name,
                    "arguments": call.arguments,
                }
                if key in seen:
                    repeats += 1
                    if repeats > lim.max_repeats:
                        stop = "repeated_call"
                        break
                    obs = (
                        f"You already called {call.name} with these arguments; the result was: {seen[key]}\n"
                        "Do not call it again. Give the final answer now."
                    )
                    memory.add_message(thread_id, "tool", obs, {"name": call.name, "repeat": True})
                    yield {"type": "observation", "name": call.name, "text": obs, "repeat": True}
                    continue
                if c["tool_calls"] >= lim.max_tool_calls:
                    stop = "max_tool_calls"
                    break
                c["tool_calls"] += 1
                tools_used.append(call.name)
                if self.by_name[call.name].requires_approval:
                    approval_id = approvals.request_approval(thread_id, call.name, call.arguments)
                    state.update(
                        status="paused",
                        approval_id=approval_id,
                        pending_call={"name": call.name, "arguments": call.arguments},
                    )
                    stop = "approval_required"
                    yield {
                        "type": "approval_required",
                        "approval_id": approval_id,
                        "name": call.name,
                        "arguments": call.arguments,
                    }
                    break
                obs = await self._invoke(thread_id, call.name, call.arguments)
                seen[key] = obs[:300]
                last_obs = obs
                answer_next = not obs.startswith("Error") and sum(t.status != "done" for t in plan.tasks) <= 1
                memory.add_message(thread_id, "tool", obs, {"name": call.name, "arguments": call.arguments})
                yield {"type": "observation", "name": call.name, "text": obs}
        except LuodiError as e:  # engine refused (context too long, overloaded): stop, don't crash
            stop = "error"
            answer = f"I could not finish: {e.message}"
        if stop not in ("final_answer", "approval_required", "error"):
            answer = await self._best_effort(thread_id, system, stop, last_obs, start)
        elif stop == "approval_required":
            answer = f"Waiting for a human to approve the call to {state['pending_call']['name']}."
        if stop != "approval_required":
            state["status"] = "done"
            if stop == "final_answer":
                plan.finish()
            state["plan"] = plan.to_dict()
            memory.add_message(thread_id, "assistant", answer or "", {"final": True, "stop_reason": stop})
            if self.memory_scope and stop == "final_answer" and answer:
                memory.LongTermMemory(self.memory_scope).add(f"Goal: {goal} -> Answer: {answer}")
        c["seconds"] = round(time.time() - start, 3)
        state["stop_reason"] = stop
        state["answer"] = answer
        memory.save_state(thread_id, state)
        result = AgentResult(
            answer=answer or "",
            stop_reason=stop,
            thread_id=thread_id,
            steps=c["steps"],
            tool_calls=c["tool_calls"],
            invalid_calls=c["invalid_calls"],
            prompt_tokens=c["prompt_tokens"],
            completion_tokens=c["completion_tokens"],
            seconds=c["seconds"],
            plan=plan.to_dict(),
            tools_used=list(tools_used),
            approval_id=approval_id,
        )
        yield {"type": "final", "answer": result.answer, "stop_reason": stop, "result": result.to_dict()}

    async def _best_effort(self, thread_id: str, system: str, stop: str, last_obs: str, start: float) -> str:
        """At a limit: one short forced answer when time allows, else the last observation."""
        lim = self.limits
        if stop not in ("timeout", "max_tokens") and time.time() - start < lim.max_seconds:
            hist = history(thread_id)
            hist.append({"role": "user", "content": "Stop using tools. Give your best final answer now."})
            try:
                prompt = self._fit(system, hist)
                text = (
                    await asyncio.wait_for(
                        complete(
                            self.engine,
                            prompt,
                            SamplingParams(max_tokens=120, temperature=0.0, json_schema=BEST_EFFORT_SCHEMA),
                        ),
                        timeout=max(1.0, lim.max_seconds - (time.time() - start) + 15),
                    )
                ).text
                content = json.loads(text).get("content", "").strip()
                if content and not re.search(r"You already called|Do not call|^Error:|^Result of", content):
                    return content  # (a small model may just parrot the last observation: not an answer)
            except (TimeoutError, json.JSONDecodeError, LuodiError):
                pass
        if last_obs:
            return f"(stopped: {stop}) Best result so far: {last_obs[:400]}"
        return f"(stopped: {stop}) I could not reach an answer."


# ---------------------------------------------------------------------------------------- from config


def _injection_guard(value: Any) -> Any:
    """An InjectionGuard (luodi.privacy.injection, one per distinct setting in the process) from an agent's
    `injection` setting, else None."""
    if value is None or value is False:
        return None
    from luodi.privacy.injection import shared_guard
    from luodi.privacy.injection_config import injection_config

    cfg = injection_config(value, where="agent injection")
    return None if cfg is None else shared_guard(cfg)


def agent_from_config(
    config: dict[str, Any] | None = None,
    *,
    model: str | None = None,
    engine: Any = None,
    limits: Limits | None = None,
    memory_scope: str | None = None,
) -> Agent:
    """An agent with built-in tools from a JSON-able config {names, db, kb, approval, route, injection} (stored per
    thread, so a paused run is rebuilt with the same tools); `engine` overrides the model (a server's)."""
    cfg = dict(config or {})
    names = cfg.get("names") or list(BUILTIN_NAMES)
    tools = builtin_tools(names, db=cfg.get("db"), kb=cfg.get("kb") or DEMO_KB, approval=cfg.get("approval"))
    cfg["names"] = names
    return Agent(
        tools,
        route=cfg.get("route", True),
        model=model or cfg.get("model"),
        engine=engine,
        limits=limits,
        memory_scope=memory_scope,
        tool_config=cfg,
        injection=cfg.get("injection"),
    )


@dataclass
class Resumed:
    approval: dict[str, Any]  # the decided approval
    agent: Agent
    events: AsyncIterator[dict[str, Any]]  # the continued run's trace, starting with "resume"


def resume_after_approval(
    approval_id: int, approve: bool, *, actor: str, reason: str = "", model: str | None = None, engine: Any = None
) -> Resumed:
    """Decide a paused tool call and continue its run with the tools it was started with: what both the
    HTTP route and the CLI do after `approve` / `reject`."""
    ap = approvals.decide(approval_id, approve, actor, reason)
    state = memory.get_thread(ap["thread_id"], kind="agent")["state"]
    agent = agent_from_config(state.get("tools"), model=model, engine=engine)
    return Resumed(ap, agent, agent.stream_resume(ap["thread_id"]))
