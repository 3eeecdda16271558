"""CLI verbs for knowledge bases: luodi kb create|add|list|docs|search|ask|eval|delete (all via luodi.rag)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from luodi.cli.common import fail
from luodi.config import on_off_or_file
from luodi.errors import LuodiError

console = Console(stderr=True)
out = Console()


def register(app: typer.Typer) -> None:
    kb = typer.Typer(no_args_is_help=True, help="Knowledge bases: add documents, search, ask with citations.")
    app.add_typer(kb, name="kb")

    @kb.command("create")
    def create_cmd(
        name: Annotated[str, typer.Argument(help="knowledge base name, e.g. product-docs")],
        chunk_tokens: Annotated[int, typer.Option(help="max encoder tokens per chunk")] = 200,
        overlap: Annotated[int, typer.Option(help="sentences repeated between neighbouring chunks")] = 1,
        min_score: Annotated[float | None, typer.Option(help="'not found' threshold on best cosine")] = None,
        pii: Annotated[
            str,
            typer.Option(help="redact PII from documents and questions: on, off, or a YAML file of PII settings"),
        ] = "off",
        injection: Annotated[
            str,
            typer.Option(help="screen retrieved passages for prompt injection: on, off, or a YAML file of "
                         "injection-guard settings (docs/security-guard.md)"),
        ] = "off",
    ):
        """Create an empty knowledge base."""
        from luodi import rag

        try:
            info = rag.create_kb(
                name, chunk_tokens=chunk_tokens, overlap=overlap, min_score=min_score,
                pii=on_off_or_file(pii, "--pii", "PII settings"),
                injection=on_off_or_file(injection, "--injection", "injection-guard settings"),
            )
        except LuodiError as e:
            fail(e)
        out.print(f"created knowledge base '{info['name']}' ({json.dumps(info['config'])})")

    @kb.command("add")
    def add_cmd(
        name: Annotated[str, typer.Argument(help="knowledge base name")],
        paths: Annotated[list[str], typer.Argument(help="files or directories (txt, md, html, pdf, docx)")],
    ):
        """Add documents (directories recursively). Unchanged files are skipped; re-run to resume."""
        from luodi import rag

        try:
            r = rag.add_paths(name, paths, progress=True)
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted[/yellow]: run `luodi kb add {name} ...` again to resume")
            raise typer.Exit(130) from None
        except LuodiError as e:
            fail(e)
        if r.recovered:
            console.print(f"cleaned up {r.recovered} half-added document(s) from an interrupted run")
        out.print(
            f"added {len(r.added)} document(s) ({r.chunks} chunks), skipped {len(r.skipped)} unchanged, "
            f"replaced {len(r.replaced)}, failed {len(r.failed)}"
        )
        if r.pii_removed:
            types = sorted({t for ts in r.pii_removed.values() for t in ts})
            console.print(f"PII redacted in {len(r.pii_removed)} document(s): {', '.join(types)}")
        for src, err in r.failed.items():
            console.print(f"[red]failed[/red] {escape(str(src))}: {escape(str(err))}", highlight=False)
        if r.failed and not r.added and not r.skipped:
            raise typer.Exit(1)

    @kb.command("list")
    def list_cmd():
        """List knowledge bases."""
        from luodi import rag

        t = Table(title="knowledge bases")
        for col in ("name", "documents", "chunks", "created"):
            t.add_column(col)
        for k in rag.list_kbs():
            t.add_row(k["name"], str(k["documents"]), str(k["chunks"]), (k["created_at"] or "")[:19])
        out.print(t)

    @kb.command("docs")
    def docs_cmd(name: Annotated[str, typer.Argument(help="knowledge base name")]):
        """List a knowledge base's documents."""
        from luodi import rag

        try:
            docs = rag.list_documents(name)
        except LuodiError as e:
            fail(e)
        t = Table(title=f"documents in '{name}'")
        for col in ("id", "source", "chunks", "status"):
            t.add_column(col)
        for d in docs:
            t.add_row(str(d["id"]), d["source"], str(d["chunks"]), d["status"])
        out.print(t)

    @kb.command("search")
    def search_cmd(
        name: Annotated[str, typer.Argument(help="knowledge base name")],
        query: Annotated[str, typer.Argument(help="what to look for")],
        k: Annotated[int, typer.Option(help="passages to return")] = 5,
        mode: Annotated[str, typer.Option(help="hybrid | dense | bm25")] = "hybrid",
    ):
        """Show the passages that best match a query, with source and character span."""
        from luodi import rag

        try:
            res = rag.search(name, query, k=k, mode=mode)
        except LuodiError as e:
            fail(e)
        for i, h in enumerate(res.hits, 1):
            out.print(f"[bold][{i}][/bold] {h.source} [{h.start}:{h.end}] cos={h.dense:.3f}", highlight=False)
            out.print(h.text, highlight=False, markup=False)
        if not res.found:
            console.print(f"(best similarity {res.best_dense:.3f} < {res.min_score}: likely not in this KB)")

    @kb.command("ask")
    def ask_cmd(
        name: Annotated[str, typer.Argument(help="knowledge base name")],
        question: Annotated[str, typer.Argument(help="the question")],
        k: Annotated[int, typer.Option(help="passages given to the LLM")] = 3,
        as_json: Annotated[bool, typer.Option("--json", help="print the whole answer as JSON")] = False,
    ):
        """Answer a question from the knowledge base, streaming, with citations (file and span)."""
        from luodi.llm import run_sync
        from luodi.rag import ask_stream

        final: dict = {}

        async def consume() -> None:
            async for ev in ask_stream(name, question, k):  # the KB's pii and injection settings apply in rag
                if ev["event"] == "delta" and not as_json:
                    out.print(ev["text"], end="", highlight=False, markup=False)
                elif ev["event"] == "done":
                    final.update(ev["answer"])

        try:
            run_sync(consume())
        except LuodiError as e:
            fail(e)
        if as_json:
            out.print_json(json.dumps(final))
            return
        out.print()
        for c in final.get("citations", []):
            out.print(
                f'[dim]source:[/dim] {c["source"]} [{c["start"]}:{c["end"]}] "{c["text"]}"', highlight=False
            )
            if c.get("rank"):
                out.print(
                    f'[dim]retrieved #{c["rank"]}: score {c["retrieval_score"]:.3f}, '
                    f'cosine {c["dense"]:.3f}, BM25 {c["bm25"]:.2f}[/dim]',
                    highlight=False,
                )

    @kb.command("eval")
    def eval_cmd(
        name: Annotated[str, typer.Argument(help="knowledge base name")],
        qa: Annotated[str, typer.Argument(help='JSON lines: {"question", "source" and/or "answers"}')],
        mode: Annotated[str, typer.Option(help="hybrid | dense | bm25")] = "hybrid",
        generate: Annotated[
            int, typer.Option(help="also answer the first N questions (citation accuracy)")
        ] = 0,
    ):
        """hit@k and MRR of retrieval; with --generate N, answer and citation accuracy too."""
        from luodi import rag

        try:
            m = rag.evaluate(name, qa, mode=mode, generate=generate, progress=True)
        except LuodiError as e:
            fail(e)
        t = Table(title=f"'{name}' on {qa} ({mode})")
        t.add_column("metric")
        t.add_column("value", justify="right")
        for key, v in m.items():
            t.add_row(key, f"{v:.4f}" if isinstance(v, float) else str(v))
        out.print(t)

    @kb.command("delete")
    def delete_cmd(
        name: Annotated[str, typer.Argument(help="knowledge base name")],
        yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    ):
        """Delete a knowledge base with all its documents and index files."""
        from luodi import rag

        if not yes:
            typer.confirm(f"delete knowledge base '{name}' and all its documents?", abort=True)
        try:
            info = rag.delete_kb(name)
        except LuodiError as e:
            fail(e)
        out.print(f"deleted '{name}' ({info['documents']} documents)")
