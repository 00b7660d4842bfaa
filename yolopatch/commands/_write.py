"""The common tail of apply, revert and variant: show the changes (dry run) or write them all-or-nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from yolopatch import ui
from yolopatch.changes import FileChange, write_all


def finish(tree: Any, changes: Sequence[FileChange], dry_run: bool, *, what: str, verb: str,
           quiet: bool = False) -> int:
    """Show or write ``changes`` (call under ``transaction.locked(tree)``); ``quiet``: the messages go to stderr
    (stdout is the command's JSON)."""
    done = ui.info if quiet else ui.done
    real = [change for change in changes if change.changed]
    if not real:
        done(f"nothing to do: {what} already {verb} in {ui.display_path(tree.root)}")
        return 0
    if dry_run:
        for change in real:
            ui.diff(change.diff(tree.root))
        ui.info(f"dry run: {len(real)} file(s) would change; nothing written")
        return 0
    written = write_all(real, tree.state_dir)
    for path in written:
        if path.parent != tree.state_dir:
            done(f"{_verb_for(real, path)} {ui.display_path(path)}")
    done(f"{what}: {verb} ({len([p for p in written if p.parent != tree.state_dir])} file(s))")
    return 0


def _verb_for(changes: Sequence[FileChange], path: Path) -> str:
    change = next(change for change in changes if change.path == path)
    if change.old is None:
        return "created"
    return "deleted" if change.new is None else "updated"
