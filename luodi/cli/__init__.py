"""The `luodi` command line: one typer app; each area registers its commands from its own module."""

from __future__ import annotations

import typer

from luodi.cli import agent, anonymize, apps, audit, federated, kb, keys, llm, monitor, optimize, package, pii, quantize

app = typer.Typer(no_args_is_help=True, add_completion=False, help="luodi (落地): put large models to real use.")

# Each area registers its commands and only calls into luodi's Python API.
for area in (llm, keys, quantize, apps, optimize, audit, kb, agent, pii, anonymize, package, federated, monitor):
    area.register(app)


def main() -> None:
    app()
