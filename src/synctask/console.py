"""The ``synctask`` command's application and consoles, shared by the modules that add commands
to it (``cli``, and ``server.commands`` for the commands that talk to a daemon)."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["app", "out", "err", "fail"]

app = typer.Typer(
    name="synctask",
    help="Keep local datasets in sync with rate-limited data vendors.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(exc: Exception) -> NoReturn:
    """Bad input: the message, and exit 2 (never a traceback)."""
    err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True)
    err.print("Nothing was run. Fix the places above and try again.")
    raise typer.Exit(2)
