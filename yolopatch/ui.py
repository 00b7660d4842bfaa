"""Terminal output: one stdout console for results, one stderr console for messages (Rich)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from rich.console import Console
from rich.table import Table

# Width of tables when neither COLUMNS nor any terminal says how wide: CI logs, `> file`, `| grep`
# without a terminal. Wide enough for `yolopatch list` (designed for 100 columns) not to fold.
FALLBACK_WIDTH = 100


def terminal_width(environ: Optional[Mapping[str, str]] = None) -> int:
    """Columns for tables: $COLUMNS when set (also when piped), else the terminal's width.

    Like ``shutil.get_terminal_size``, but the terminal is looked for on stdout, stderr and stdin,
    so that ``yolopatch list | less`` on a terminal still fits that terminal.
    """
    environ = os.environ if environ is None else environ
    columns = environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    for descriptor in (1, 2, 0):
        try:
            return os.get_terminal_size(descriptor).columns or FALLBACK_WIDTH
        except (OSError, ValueError):
            continue
    return FALLBACK_WIDTH


_WIDTH = terminal_width()
stdout = Console(highlight=False, soft_wrap=True, width=_WIDTH)
stderr = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)


def display_path(path: Union[str, Path], cwd: Optional[Path] = None) -> str:
    """``path`` as the user can open it from where they stand: relative to the current directory
    when it lies below it, else absolute (``..`` is never used: it breaks with symlinked folders).
    The current directory itself is absolute too: "in /work/yolov5" says more than "in ."."""
    here = Path(os.path.abspath(cwd if cwd is not None else os.getcwd()))
    absolute = Path(os.path.abspath(here / path))
    try:
        relative = absolute.relative_to(here)
    except ValueError:
        return str(absolute)
    return str(relative) if relative.parts else str(absolute)


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


def flush() -> bool:
    """Flush stdout; when its reader has gone (``| head -1``), stop writing to it quietly (False)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        return False
    return True


def silence_stdout() -> None:
    """Point stdout at the null device after a broken pipe, so that the flush at interpreter exit
    does not raise again (the recipe of the Python docs' note on SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test runner's capture)
        pass
