"""`luodi optimize` and `luodi export`: thin faces of luodi.apps.optimize and luodi.apps.export."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from luodi.cli.common import SetOption, fail
from luodi.config import parse_overrides
from luodi.errors import LuodiError

console = Console(stderr=True)
out = Console()


HEADERS = {"size_mb": "MB", "parameters": "params", "p50_ms": "p50 ms", "p95_ms": "p95 ms",
           "rows_per_s_batch1": "rows/s @1", "rows_per_s_batch32": "rows/s @32", "agreement": "agree"}


def trade_off_table(result: dict) -> Table:
    """The baseline and the optimized run side by side, as `luodi optimize` prints it."""
    from luodi.apps.compare import COLUMNS

    table = result["table"]
    t = Table(title=f"{result['run']['app']} {result['run']['version']}: {' + '.join(result['methods'])} "
                    f"from {result['base_version']} ({table['metric']} on {table['valid_rows']} validation rows)")
    t.add_column("model", no_wrap=True)
    for c in COLUMNS:
        t.add_column(HEADERS.get(c, c), justify="right")
    for name, row in table["rows"].items():
        t.add_row(name, *("" if row.get(c) is None else str(row[c]) for c in COLUMNS))
    t.columns[COLUMNS.index("quality") + 1].header = table["metric"]
    t.caption = ", ".join(f"{k} {v}" for k, v in table["ratios"].items())
    return t


def register(app: typer.Typer) -> None:
    @app.command("optimize")
    def optimize_cmd(
        app_file: Annotated[str, typer.Argument(help="App YAML file or trained app name")],
        method: Annotated[str, typer.Option(
            "--method", "-m", help="onnx | int8 | fp16 | distill | prune | gguf (those the app's task offers)")],
        version: Annotated[str | None, typer.Option(help="the run to start from (default: the served one)")] = None,
        set_: SetOption = None,
    ):
        """Make a new run version from a trained one (ONNX, int8, float16) and print it beside its baseline."""
        from luodi.apps.optimize import optimize

        try:
            res = optimize(app_file, method, version=version, overrides=parse_overrides(set_),
                           log=lambda m: console.print(m, highlight=False))
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]: the partial run is marked interrupted; run it again")
            raise typer.Exit(130) from None
        except LuodiError as e:
            fail(e)
        out.print(trade_off_table(res))
        out.print(f"run: {res['run']['path']}\nserve it: luodi promote {res['run']['app']} {res['run']['version']}")

    @app.command("export")
    def export_cmd(
        app_file: Annotated[str, typer.Argument(help="App YAML file or trained app name")],
        out_dir: Annotated[str, typer.Option("--out", help="the bundle's folder (replaced if it exists)")],
        format: Annotated[str, typer.Option("--format", help="onnx")] = "onnx",
        version: Annotated[str | None, typer.Option(help="the run to export (default: the served one)")] = None,
    ):
        """Write a standalone bundle: model, preprocessing as data, README and a predict.py that needs only
        onnxruntime and numpy (+ tokenizers for text, Pillow for images): every trainable task but text-generation."""
        from luodi.apps.export import export

        try:
            res = export(app_file, out_dir, format=format, version=version)
        except LuodiError as e:
            fail(e)
        out.print(f"{res['app']} {res['version']} -> {res['out']}: {', '.join(res['files'])}", highlight=False)
