"""`luodi monitor APP.yaml`: the served app's drift, predictions, latency and live quality (luodi.monitor.monitor,
the same report as GET /v1/apps/{name}/monitor)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from luodi.cli.common import fail
from luodi.errors import LuodiError

out = Console()


def register(app: typer.Typer) -> None:
    @app.command("monitor")
    def monitor_cmd(
        app_file: Annotated[str, typer.Argument(help="App YAML file or trained app name")],
        hours: Annotated[float, typer.Option(help="window: logged predictions of the last hours")] = 24.0,
        limit: Annotated[int, typer.Option(help="at most this many logged predictions (the newest)")] = 10_000,
        as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    ):
        """Drift of each input feature against the training data (PSI; text: embedding centroid distance),
        predictions, latency and live quality (from feedback) per version, over the prediction log."""
        from luodi.monitor import monitor

        try:
            rep = monitor(app_file, hours, limit)
        except LuodiError as e:
            fail(e)
        if as_json:
            print(json.dumps(rep, indent=2))
            return
        w = rep["window"]
        out.print(f"[bold]{rep['app']}[/bold] serves {rep['served_version']}; {w['rows']} logged predictions in "
                  f"the last {w['hours']:g} h", highlight=False)
        t = Table(title=f"drift against {rep['drift'].get('reference_version') or '?'}'s training data")
        for c in ("feature", "kind", "score", "threshold", "rows", "drifted"):
            t.add_column(c, justify="right" if c in ("score", "threshold", "rows") else "left")
        for f in rep["drift"]["features"]:
            score = "-" if f["score"] is None else f"{f['score']:.3f}"
            t.add_row(f["feature"], f["kind"], score, f"{f['threshold']:g}", str(f["rows"]),
                      "[red]yes[/red]" if f["drifted"] else "no")
        out.print(t)
        if rep["drift"].get("note"):
            out.print(f"note: {rep['drift']['note']}", highlight=False)
        v = Table(title="versions" + (f" (serve.traffic {rep['traffic']})" if rep["traffic"] else ""))
        for c in ("version", "predictions", "p50 ms", "p95 ms", "feedback", "live quality"):
            v.add_column(c, justify="left" if c == "version" else "right")
        for r in rep["versions"]:
            q = r["quality"]
            v.add_row(r["version"], str(r["predictions"]), f"{r['latency_ms']['p50']:.1f}",
                      f"{r['latency_ms']['p95']:.1f}", str(r["feedback"]),
                      f"{q['metric']} {q['value']:.3f} ({q['rows']})" if q else "-")
        out.print(v)
