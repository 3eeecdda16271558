"""CLI verb `luodi quantize-llm`: re-quantize a chat GGUF, compare perplexity and tokens/s, export one copy."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from luodi.cli.common import fail
from luodi.errors import BadRequest, LuodiError

console = Console()
err_console = Console(stderr=True)

DEFAULT_MODEL = "bundled:smollm2-135m-instruct"
DEFAULT_TYPES = ("q8_0", "q4_k_m", "q4_0")


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def table(rows: list[dict]) -> Table:
    """The report as a rich table: the source first, then each re-quantized type."""
    t = Table(title="weight formats against the source", caption="tok/s: prompt (one batch), generation (one "
              "stream); ×: against the source")
    for col in ("type", "MB", "ppl", "Δ ppl", "prompt tok/s", "gen tok/s", "prompt ×", "gen ×"):
        t.add_column(col, justify="left" if col == "type" else "right", no_wrap=col == "type")
    for r in rows:
        t.add_row(f"{r['type']} (source)" if r["source"] else r["type"], f"{r['file_mb']:.1f}",
                  _fmt(r["perplexity"], ".3f"), _fmt(r["ppl_delta_pct"], "+.2f", "%"),
                  _fmt(r["prompt_tok_s"], ".1f"), _fmt(r["gen_tok_s"], ".1f"),
                  _fmt(r["prompt_ratio"], ".2f"), _fmt(r["gen_ratio"], ".2f"))
    return t


def _eval_text(eval_file: Path | None) -> list[str] | None:
    if eval_file is None:
        return None
    if not eval_file.is_file():
        raise BadRequest(f"--eval-file: '{eval_file}' is not a file (give a UTF-8 text file)", param="eval_file")
    try:
        text = eval_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"--eval-file: '{eval_file}' is not UTF-8 text (byte {e.start})", param="eval_file") from None
    if not text.strip():
        raise BadRequest(f"--eval-file: '{eval_file}' is empty", param="eval_file")
    return [text]


def register(app: typer.Typer) -> None:
    @app.command("quantize-llm")
    def quantize_llm(
        model: Annotated[str, typer.Argument(help="chat model: a .gguf file or bundled:<name>")] = DEFAULT_MODEL,
        types: Annotated[list[str] | None, typer.Option(
            "--type", "-t", help="weight format, repeatable or comma-separated (default: q8_0, q4_k_m, q4_0)")] = None,
        eval_file: Annotated[Path | None, typer.Option(
            "--eval-file", help="held-out UTF-8 text for perplexity (without it: size and speed only)")] = None,
        tokens: Annotated[int, typer.Option("--tokens", min=1, help="tokens of --eval-file scored")] = 20_000,
        out: Annotated[Path | None, typer.Option("--out", help="copy the re-quantized GGUF here (one --type)")] = None,
        n_ctx: Annotated[int, typer.Option("--ctx", min=16, help="perplexity window in tokens")] = 512,
        threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads (default: all)")] = None,
    ):
        """Re-quantize a chat GGUF to llama.cpp weight formats (q8_0, q4_k_m, q4_0, ...) and compare each with
        the source: file size, perplexity on --eval-file, prompt and generation tokens/s; --out exports one."""
        try:
            from luodi.engines.requantize import REQUANT_TYPES as allowed

            names = [n.strip().lower() for t in (types or DEFAULT_TYPES) for n in t.split(",") if n.strip()]
            bad = [n for n in names if n not in allowed]
            if bad or not names:
                raise BadRequest(f"--type: unknown weight format {', '.join(repr(b) for b in bad) or '(none)'}; "
                                 f"choose from: {', '.join(allowed)}", param="type")
            if out is not None and len(set(names)) != 1:
                raise BadRequest(f"--out copies one re-quantized model: give exactly one --type (got {len(names)})",
                                 param="out")
            if out is not None and out.suffix != ".gguf":
                raise BadRequest(f"--out: '{out}' should end in .gguf", param="out")
            texts = _eval_text(eval_file)
            from luodi.models import resolve

            src = resolve(model)
            if src.kind != "gguf":
                raise BadRequest(f"MODEL: '{model}' is a {src.kind}, not a GGUF file; quantize-llm re-quantizes "
                                 "GGUF models (convert it with llama.cpp's convert_hf_to_gguf.py first)",
                                 param="model")
            from luodi.engines.perplexity import quantize_report

            rows = quantize_report(src.path, names, texts, max_tokens=tokens, n_ctx=n_ctx, threads=threads,
                                   progress=lambda m: err_console.print(f"[dim]{m}[/dim]", highlight=False))
        except LuodiError as e:
            fail(e)
        console.print(table(rows))
        scored = rows[0].get("tokens") or 0
        if texts is None:
            err_console.print("no --eval-file: perplexity not measured", highlight=False)
        elif scored < tokens:
            err_console.print(f"--eval-file held {scored} tokens (fewer than --tokens {tokens})", highlight=False)
        if out is not None:
            from luodi.atomic import atomic_path

            with atomic_path(out) as tmp:
                shutil.copyfile(rows[1]["path"], tmp)
            err_console.print(f"wrote {out} ({rows[1]['type']}, {rows[1]['file_mb']:.1f} MB)", highlight=False)
