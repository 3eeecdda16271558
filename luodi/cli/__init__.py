"""The `luodi` command line: one typer app; each area registers its commands from its own module."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="luodi (落地): put large models to real use.")

# Each module defines register(app) and only calls into luodi's Python API.
for _mod in ("llm", "apps", "kb", "agent"):
    try:
        importlib.import_module(f"luodi.cli.{_mod}").register(app)
    except ModuleNotFoundError as e:  # an area not written yet
        if e.name != f"luodi.cli.{_mod}":
            raise


def main() -> None:
    app()
