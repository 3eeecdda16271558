"""`luodi anonymize DATA`: a table generalized to k-anonymity and distinct l-diversity (luodi.privacy.anonymize)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from luodi.cli.common import fail
from luodi.errors import BadRequest, LuodiError

console = Console(stderr=True)


def write_data(frame: Any, out: Path) -> None:
    """The table in the format its suffix names, written atomically (csv when the suffix says nothing)."""
    from luodi.atomic import atomic_path

    writers = {".parquet": frame.to_parquet, ".jsonl": lambda p: frame.to_json(p, orient="records", lines=True),
               ".json": lambda p: frame.to_json(p, orient="records"), ".tsv": lambda p: frame.to_csv(p, sep="\t",
               index=False)}
    with atomic_path(out, suffix=out.suffix) as tmp:
        writers.get(out.suffix.lower(), lambda p: frame.to_csv(p, index=False))(tmp)


def register(app: typer.Typer) -> None:
    @app.command("anonymize")
    def anonymize_cmd(
        data: Annotated[str, typer.Argument(help="app YAML (its whole table) or a csv/tsv/json/jsonl/parquet file")],
        quasi: Annotated[str, typer.Option("--quasi", help="quasi-identifier columns, e.g. age,zip,sex")],
        out: Annotated[Path, typer.Option("--out", help="where the anonymized table goes (format by suffix)")],
        k: Annotated[int, typer.Option("--k", help="each quasi-identifier combination is shared by >= k rows")] = 10,
        l: Annotated[int, typer.Option("--l", help="distinct sensitive values per group (1: off)")] = 1,  # noqa: E741
        sensitive: Annotated[
            str | None, typer.Option("--sensitive", help="the sensitive column (needed for --l > 1)")
        ] = None,
        max_suppression: Annotated[
            float, typer.Option("--max-suppression", help="largest share of rows that may be dropped")
        ] = 0.02,
    ):
        """Generalize the quasi-identifiers (Mondrian) until every row hides among >= k others with >= l
        distinct sensitive values; prints what it cost (rows suppressed, information loss)."""
        from luodi.privacy.anonymize import anonymize, anonymize_config, read_source

        try:
            cfg = anonymize_config({"quasi": [c.strip() for c in quasi.split(",") if c.strip()], "k": k, "l": l,
                                    "sensitive": sensitive, "max_suppression": max_suppression})
            if out.exists() and out.is_dir():
                raise BadRequest(f"--out '{out}' is a folder; give a file name such as {out / 'anonymized.csv'}",
                                 param="out")
            result = anonymize(read_source(data), cfg)
            write_data(result.frame, out)
        except LuodiError as e:
            fail(e)
        r = result.report
        console.print(
            f"{r['kept']} rows in {r['classes']} groups (smallest {r['k_reached']}, k {r['k']}"
            + (f"; fewest distinct '{r['sensitive']}' {r['l_reached']}, l {r['l']}" if r["l_reached"] else "")
            + f"); suppressed {r['suppressed']} ({r['suppressed_share']:.2%}); information loss (NCP) {r['ncp']:.3f}",
            highlight=False,
        )
        print(json.dumps(r))
        console.print(f"written to {out}", highlight=False)
