"""The one domain error: its message is written for the user, one line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


class YolopatchError(Exception):
    """A refusal or failure the user can act on: what, where, what to do.

    The CLI prints ``str(error)`` on one line and exits with ``exit_code``.
    """

    def __init__(self, message: str, *, path: Optional[Path] = None, line: Optional[int] = None,
                 hint: Optional[str] = None, exit_code: int = 1) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.hint = hint
        self.exit_code = exit_code
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        hint = f"; {self.hint}" if self.hint else ""
        return f"{where}{self.message}{hint}"


class UsageError(YolopatchError):
    """Bad command-line input (exit code 2)."""

    def __init__(self, message: str, *, hint: Optional[str] = None) -> None:
        super().__init__(message, hint=hint, exit_code=2)
