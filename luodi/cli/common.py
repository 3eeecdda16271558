"""What every CLI area shares: how a luodi error ends a command (its message on stderr, exit status 2)."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

from luodi.errors import LuodiError

err_console = Console(stderr=True)


def fail(e: LuodiError) -> NoReturn:
    """Print the error's message (it names the field and the fix) and exit with status 2, no traceback."""
    err_console.print(f"[red]error:[/red] {e.message}", highlight=False)
    raise typer.Exit(2)
