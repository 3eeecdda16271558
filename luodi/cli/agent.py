"""CLI verbs for agents and the customer-service assistant (thin: everything lives in luodi.agent).

luodi agent run "goal" [--tools calculator,sql] [--model path.gguf] [--thread ID]
luodi agent approve|reject APPROVAL_ID            luodi agent eval examples/agent-tasks.yaml
luodi assistant chat [APP]                         luodi assistant test examples/assistant-tests.yaml
luodi assistant tickets                            luodi assistant answer TICKET_ID "text"
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from luodi.cli.common import fail
from luodi.errors import LuodiError

console = Console(stderr=True)
out = Console()


def _print_event(ev: dict[str, Any]) -> None:
    t = ev["type"]
    if t == "start":
        console.print(f"[bold]thread[/bold] {ev['thread_id']}  tools: {', '.join(ev['tools']) or 'none'}")
    elif t == "memory":
        console.print("[dim]recalled:[/dim] " + " | ".join(ev["recalled"]), highlight=False)
    elif t == "plan":
        marks = {"done": "[green][x][/green]", "doing": "[yellow][>][/yellow]", "pending": "[ ]"}
        console.print("[bold]plan[/bold]" + (f" (revision {ev['revisions']})" if ev["revisions"] else ""))
        for task in ev["tasks"]:
            console.print(f"  {marks[task['status']]} {task['text']}", highlight=False)
    elif t == "tool_call":
        console.print(
            f"[cyan]→ {ev['name']}[/cyan] {json.dumps(ev['arguments'], ensure_ascii=False)}", highlight=False
        )
    elif t == "observation":
        console.print(f"[magenta]← {ev['name']}[/magenta] {ev['text'][:500]}", highlight=False)
    elif t == "invalid":
        console.print(f"[red]invalid output[/red] {escape(ev['error'][:300])}", highlight=False)
    elif t == "approval_required":
        console.print(
            f"[yellow]approval {ev['approval_id']} needed[/yellow] for {ev['name']} "
            f"{json.dumps(ev['arguments'])}: `luodi agent approve {ev['approval_id']}` or reject"
        )
    elif t == "final":
        r = ev["result"]
        console.print(
            f"[dim]stop: {r['stop_reason']} · steps {r['steps']} · tool calls {r['tool_calls']} · "
            f"invalid {r['invalid_calls']} · tokens {r['completion_tokens']} · {r['seconds']}s[/dim]"
        )
        out.print(ev["answer"], highlight=False)


async def _stream(events) -> None:
    async for ev in events:
        _print_event(ev)


def _route(value: str | None) -> bool | str | None:
    if value is None:
        return None
    if value not in ("on", "off", "strict"):
        raise typer.BadParameter(f"--route must be on, off or strict, got {value!r}")
    return {"on": True, "off": False}.get(value, value)


def register(app: typer.Typer) -> None:
    agent = typer.Typer(no_args_is_help=True, help="Tool-using agents: run goals, approve calls, evaluate.")
    assistant = typer.Typer(no_args_is_help=True, help="The customer-service assistant (task: assistant).")
    app.add_typer(agent, name="agent")
    app.add_typer(assistant, name="assistant")

    @agent.command("run")
    def run_cmd(
        goal: Annotated[str, typer.Argument(help="what the agent should achieve")],
        tools: Annotated[
            str, typer.Option(help="comma-separated built-in tools")
        ] = "calculator,sql,kb_search,current_time",
        model: Annotated[
            str | None, typer.Option(help="chat model: bundled:<name>, a .gguf file or an HF dir")
        ] = None,
        thread: Annotated[str | None, typer.Option(help="continue this thread id")] = None,
        db: Annotated[
            str | None, typer.Option(help="SQLite database for the sql tool (default: demo bank)")
        ] = None,
        kb: Annotated[str, typer.Option(help="knowledge base for kb_search")] = "bank-faq",  # = DEMO_KB (lazy CLI)
        approve: Annotated[str, typer.Option(help="comma-separated tools that need a human's approval")] = "",
        max_steps: Annotated[int, typer.Option(min=1)] = 6,
        max_seconds: Annotated[float, typer.Option(min=1)] = 300,
        memory: Annotated[str | None, typer.Option(help="long-term memory scope (off when omitted)")] = None,
        route: Annotated[str, typer.Option(help="on | off | strict: tool routing for small models")] = "on",
    ):
        """Run an agent on a goal and stream its trace (plan, tool calls, observations, answer)."""
        from luodi.agent.runtime import Limits, agent_from_config

        names = [t.strip() for t in tools.split(",") if t.strip()]
        try:
            a = agent_from_config(
                {
                    "names": names,
                    "db": db,
                    "kb": kb,
                    "approval": [t for t in approve.split(",") if t],
                    "route": _route(route),
                },
                model=model,
                limits=Limits(max_steps=max_steps, max_seconds=max_seconds),
                memory_scope=memory,
            )
            asyncio.run(_stream(a.stream(goal, thread)))
        except LuodiError as e:
            fail(e)

    def _decide(approval_id: int, ok: bool, model: str | None) -> None:
        from luodi.agent.runtime import resume_after_approval

        try:
            resumed = resume_after_approval(approval_id, ok, actor="cli", model=model)
            console.print(f"approval {approval_id}: {resumed.approval['status']}")
            asyncio.run(_stream(resumed.events))
        except LuodiError as e:
            fail(e)

    @agent.command("approve")
    def approve_cmd(approval_id: int, model: Annotated[str | None, typer.Option()] = None):
        """Approve a paused tool call and resume the agent."""
        _decide(approval_id, True, model)

    @agent.command("reject")
    def reject_cmd(approval_id: int, model: Annotated[str | None, typer.Option()] = None):
        """Reject a paused tool call; the agent resumes without it."""
        _decide(approval_id, False, model)

    @agent.command("thread")
    def thread_cmd(thread_id: str):
        """Print a stored agent or assistant conversation."""
        from luodi.agent import memory

        try:
            th = memory.get_thread(thread_id)
        except LuodiError as e:
            fail(e)
        for m in th["messages"]:
            out.print(f"[bold]{m['role']}[/bold]: {m['content']}", highlight=False)

    @agent.command("eval")
    def eval_cmd(
        tasks: Annotated[str, typer.Argument(help="task suite YAML, e.g. examples/agent-tasks.yaml")],
        model: Annotated[str | None, typer.Option(help="chat model (default: the bundled one)")] = None,
        out_file: Annotated[str | None, typer.Option("--out", help="JSONL results; re-run to resume")] = None,
        only: Annotated[str | None, typer.Option(help="comma-separated task ids")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
        route: Annotated[str | None, typer.Option(help="on | off | strict (default: the suite's)")] = None,
    ):
        """Run an agent task suite; report success rate, steps and tool-call validity."""
        from luodi.agent.evals import load_suite, run_suite

        try:
            picked = [x for x in (only or "").split(",") if x]
            n = len([t for t in load_suite(tasks).tasks if not picked or t.id in picked])
            count = [0]

            def show(r: dict[str, Any]) -> None:
                count[0] += 1
                mark = "[green]✓[/green]" if r["success"] else "[red]✗[/red]"
                console.print(
                    f"{mark} [{count[0]}/{n}] {r['id']} ({r['stop_reason']}, {r['steps']} steps): "
                    f"{r['answer'][:90]!r} {'; '.join(r['problems'])}",
                    highlight=False,
                )

            s = run_suite(
                tasks,
                model=model,
                out=out_file,
                on_result=show,
                only=picked or None,
                route=_route(route),
            )
        except KeyboardInterrupt:
            console.print(
                "[yellow]interrupted[/yellow]"
                + (" — re-run with the same --out to resume" if out_file else "")
            )
            raise typer.Exit(130) from None
        except LuodiError as e:
            fail(e)
        if json_out:
            out.print_json(json.dumps({k: v for k, v in s.items() if k != "results"}))
            return
        t = Table(title=f"agent eval: {tasks}")
        for col in ("kind", "tasks", "success"):
            t.add_column(col)
        for k, v in s["by_kind"].items():
            t.add_row(k, str(v["tasks"]), f"{v['success_rate']:.0%}")
        t.add_row("[bold]all[/bold]", str(s["tasks"]), f"[bold]{s['success_rate']:.0%}[/bold]")
        out.print(t)
        out.print(
            f"mean steps {s['mean_steps']:.2f} · tool-call validity {s['tool_call_validity']:.1%} · "
            f"mean {s['mean_seconds']:.1f}s/task · stops {s['stop_reasons']}"
        )

    # ------------------------------------------------------------------------------- assistant
    @assistant.command("chat")
    def chat_cmd(
        app_ref: Annotated[str, typer.Argument(help="assistant app name or YAML")] = "customer-service",
    ):
        """Chat with an assistant in the terminal (empty line or Ctrl-D to quit)."""
        from luodi.agent import memory
        from luodi.agent.assistant import load_assistant

        try:
            a = load_assistant(app_ref)
            tid = a.start()
        except LuodiError as e:
            fail(e)
        out.print(f"[bold]bot[/bold]: {a.opts.greeting}", highlight=False)
        seen = max(m["id"] for m in memory.get_thread(tid)["messages"])
        while True:
            try:
                text = input("you: ").strip()
            except (EOFError, KeyboardInterrupt):
                break
            if not text:
                break
            for m in memory.messages_after(tid, seen):  # a human agent may have answered meanwhile
                if m["role"] == "human_agent":
                    out.print(f"[bold green]human[/bold green]: {m['content']}", highlight=False)
            try:
                r = a.respond(text, tid)
            except LuodiError as e:
                console.print(f"[red]{escape(e.message)}[/red]")
                continue
            seen = max(m["id"] for m in memory.get_thread(tid)["messages"])
            out.print(
                f"[bold]bot[/bold]: {r.reply}  [dim]({r.intent} {r.confidence:.2f}, {r.action})[/dim]",
                highlight=False,
            )
        console.print(f"thread {tid}")

    @assistant.command("test")
    def test_cmd(
        tests: Annotated[str, typer.Argument(help="conversation tests YAML")],
        app_ref: Annotated[str | None, typer.Option("--app", help="override the suite's app")] = None,
        verbose: Annotated[bool, typer.Option("-v", help="print every turn")] = False,
    ):
        """Play conversation tests; report per-turn intent accuracy and task success rate."""
        from luodi.agent.assistant import run_tests

        def show(c: dict[str, Any]) -> None:
            mark = "[green]✓[/green]" if c["passed"] else "[red]✗[/red]"
            console.print(f"{mark} {c['name']}", highlight=False)
            for t in c["turns"]:
                if verbose or t["problems"]:
                    console.print(
                        f"    you: {t['user']}\n    bot: {t['reply']} [dim]({t['intent']} "
                        f"{t['confidence']}, {t['action']})[/dim] {'; '.join(t['problems'])}",
                        highlight=False,
                    )

        try:
            r = run_tests(tests, app=app_ref, progress=show)
        except LuodiError as e:
            fail(e)
        out.print(
            f"task success {r['task_success_rate']:.1%} ({len(r['conversations'])} conversations) · "
            f"intent accuracy {r['intent_accuracy']:.1%} ({r['intent_turns']} turns) · "
            f"turn pass rate {r['turn_pass_rate']:.1%}"
        )
        if r["task_success_rate"] < 1.0:
            raise typer.Exit(1)

    @assistant.command("tickets")
    def tickets_cmd(status: Annotated[str, typer.Option(help="open | answered | closed | all")] = "open"):
        """List hand-off tickets."""
        from luodi.agent.assistant import list_tickets

        try:
            rows = list_tickets(None if status == "all" else status)
        except LuodiError as e:
            fail(e)
        t = Table()
        for col in ("id", "status", "thread", "subject"):
            t.add_column(col)
        for r in rows:
            t.add_row(str(r["id"]), r["status"], r["thread_id"] or "-", r["subject"])
        out.print(t)

    @assistant.command("answer")
    def answer_cmd(ticket_id: int, text: str, close: bool = False):
        """Answer a ticket as a human agent; the answer is appended to the customer's conversation."""
        from luodi.agent.assistant import answer_ticket

        try:
            r = answer_ticket(ticket_id, text, actor="cli", close=close)
        except LuodiError as e:
            fail(e)
        out.print(f"ticket {r['id']} {r['status']}; sent to thread {r['thread_id']}")
