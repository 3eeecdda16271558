"""`luodi package APP.yaml --out DIR`: a Docker build context serving one trained app (luodi.apps.package)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from luodi.cli.common import fail as _fail
from luodi.errors import LuodiError

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    @app.command("package")
    def package_cmd(
        app_file: Annotated[str, typer.Argument(help="App YAML file (or the app's name)")],
        out: Annotated[str, typer.Option("--out", help="folder for the build context (new or empty)")],
        version: Annotated[str | None, typer.Option(help="run version (default: the one the app serves)")] = None,
        image: Annotated[str, typer.Option(help="the luodi server image to build on")] = "luodi:latest",
    ):
        """Write a Docker build context that serves one app's trained run (FROM the luodi server image)."""
        from luodi.apps.package import package

        try:
            p = package(app_file, out, version=version, image=image)
        except LuodiError as e:
            raise _fail(e) from e
        console.print(f"packaged {p.app} {p.version} ({p.files} files) into {p.out}; build it with:\n"
                      f"  docker build -t {p.app}:{p.version} {p.out}", highlight=False)
