"""`luodi audit APP`: the responsible-AI page of a trained run (luodi.audit.report.audit)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from luodi.cli.common import fail
from luodi.errors import LuodiError

out = Console()
log = Console(stderr=True)


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit_cmd(
        app_name: Annotated[str, typer.Argument(help="app name or its YAML file")],
        version: Annotated[
            str | None, typer.Option("--version", help="the run to audit (default: the served one)")
        ] = None,
        sensitive: Annotated[
            str | None, typer.Option("--sensitive", help="columns to check fairness on, e.g. sex,race")
        ] = None,
        attack: Annotated[str, typer.Option("--attack", help="fgsm | pgd (robustness)")] = "pgd",
        eps: Annotated[float | None, typer.Option("--eps", help="perturbation size (default: the area's own)")] = None,
        only: Annotated[
            str | None, typer.Option("--only", help="areas to measure, e.g. fairness,explanations (default: all)")
        ] = None,
    ):
        """Write audit.html (fairness by group, robustness, explanations, integrity, server settings) and
        audit.json beside the run's report.html."""
        from luodi.audit.report import audit

        options: dict = {"attack": attack}
        if sensitive:
            options["sensitive"] = [c.strip() for c in sensitive.split(",") if c.strip()]
        if eps is not None:
            options["eps"] = eps
        areas = [a.strip() for a in only.split(",") if a.strip()] if only else None
        try:
            res = audit(app_name, version, areas=areas, log=lambda m: log.print(m, highlight=False), **options)
        except LuodiError as e:
            fail(e)
        for title, sec in res["sections"].items():
            out.print(f"{title}: {sec['status']} {sec['note']}", highlight=False)
        out.print(f"audit written to {res['html']}", highlight=False)
