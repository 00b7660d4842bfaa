"""File changes as data: a diff to show, or a set written all-or-nothing.

Every command computes its ``FileChange`` list from pure transforms first and only then touches the
disk, through ``write_all``: each new content goes to a temporary file beside its target, then the
targets are swapped in with ``os.replace``. A failure at any point restores every target already
swapped (from a backup link) and removes the temporaries, so a tree is never left half-written.
"""

from __future__ import annotations

import difflib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from yolopatch.errors import YolopatchError

TEMP_SUFFIX = ".yolopatch-tmp"
BACKUP_SUFFIX = ".yolopatch-bak"

# Indirection so tests can inject a failure between two writes.
_replace: Callable[[Path, Path], None] = os.replace


@dataclass(frozen=True)
class FileChange:
    """``old`` -> ``new`` text of one file; ``old`` None creates it, ``new`` None deletes it."""

    path: Path
    old: Optional[str]
    new: Optional[str]

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def diff(self, root: Optional[Path] = None) -> str:
        """Unified diff of the change, with paths relative to ``root``."""
        name = str(self.path.relative_to(root)) if root else str(self.path)
        old_lines = (self.old or "").splitlines(keepends=True)
        new_lines = (self.new or "").splitlines(keepends=True)
        before = f"a/{name}" if self.old is not None else "/dev/null"
        after = f"b/{name}" if self.new is not None else "/dev/null"
        lines = difflib.unified_diff(old_lines, new_lines, before, after)
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def read_text(path: Path) -> str:
    """Read a source file as UTF-8 with its newlines untouched (CRLF stays CRLF)."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise YolopatchError(f"not valid UTF-8 ({error.reason} at byte {error.start})", path=path,
                             hint="save the file as UTF-8 and run again") from error


def _temp(path: Path) -> Path:
    return path.with_name(path.name + TEMP_SUFFIX)


def _backup(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def write_all(changes: Sequence[FileChange]) -> List[Path]:
    """Write every real change or none of them; returns the paths written."""
    pending = [change for change in changes if change.changed]
    staged: List[FileChange] = []
    swapped: List[FileChange] = []
    try:
        for change in pending:
            _check_unchanged(change)
            if change.new is not None:
                change.path.parent.mkdir(parents=True, exist_ok=True)
                _temp(change.path).write_bytes(change.new.encode("utf-8"))
            if change.old is not None:
                _keep_backup(change.path)
            staged.append(change)
        for change in pending:
            if change.new is not None:
                _replace(_temp(change.path), change.path)
            else:
                change.path.unlink()
            swapped.append(change)
    except BaseException:
        _roll_back(staged, swapped)
        raise
    for change in staged:
        _backup(change.path).unlink(missing_ok=True)
    return [change.path for change in pending]


def _keep_backup(path: Path) -> None:
    try:
        os.link(path, _backup(path))
    except OSError:  # no hard links on this file system
        shutil.copy2(path, _backup(path))


def _check_unchanged(change: FileChange) -> None:
    """Refuse when the file changed on disk since it was read (another editor, another run)."""
    exists = change.path.exists()
    if change.old is None and exists:
        raise YolopatchError("file appeared while yolopatch was working", path=change.path, hint="run again")
    if change.old is not None and (not exists or read_text(change.path) != change.old):
        raise YolopatchError("file changed while yolopatch was working", path=change.path, hint="run again")


def _roll_back(staged: Sequence[FileChange], swapped: Sequence[FileChange]) -> None:
    for change in swapped:
        if change.old is None:
            change.path.unlink(missing_ok=True)
        else:
            os.replace(_backup(change.path), change.path)
    for change in staged:
        _temp(change.path).unlink(missing_ok=True)
        _backup(change.path).unlink(missing_ok=True)
