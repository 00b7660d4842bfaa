"""Terminal output: one stdout console for results, one stderr console for messages (Rich)."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table

# Piped output is read by tools and grep: do not fold tables at 80 columns there.
_PIPED_WIDTH = None if sys.stdout.isatty() else 200
stdout = Console(highlight=False, soft_wrap=True, width=_PIPED_WIDTH)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def info(message: str) -> None:
    stderr.print(message, markup=False)


def done(message: str) -> None:
    stdout.print(message, markup=False)


def error(message: str) -> None:
    stderr.print(f"error: {message}", style="bold red", markup=False)


def diff(text: str) -> None:
    """A unified diff: highlighted on a terminal, plain when piped."""
    if not text:
        return
    if stdout.is_terminal:
        from rich.syntax import Syntax  # pygments: only worth loading for a terminal

        stdout.print(Syntax(text, "diff", theme="ansi_dark", background_color="default"))
    else:
        stdout.file.write(text)
        stdout.file.flush()


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*(str(cell) for cell in row))
    stdout.print(grid)


def print_json(data: Any) -> None:
    stdout.file.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    stdout.file.flush()
