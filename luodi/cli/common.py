"""What every CLI area shares: how a luodi error ends a command (its message on stderr, exit status 2) and the
`--set KEY=VALUE` option."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from luodi.errors import LuodiError

err_console = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="change one config value for this command, dotted path and YAML value (repeatable), "
        "e.g. --set data.split.seed=1",
    ),
]


def fail(e: LuodiError) -> NoReturn:
    """Print the error's message (it names the field and the fix) and exit with status 2, no traceback."""
    # escaped: a message may hold brackets that are not markup (pip install 'luodi[ray]', a list of values)
    err_console.print(f"[red]error:[/red] {escape(e.message)}", highlight=False)
    raise typer.Exit(2)
