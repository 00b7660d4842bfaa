"""The frame of every command that writes to a tree: its lock, and the recovery of a killed run.

    with locked(tree):
        ...read, compute the FileChanges, write_all(changes, tree.state_dir)...

Under the lock, a journal left by a run that was killed (kill -9, power loss) is rolled back first,
and the temporary/backup files of such runs are removed, so that leftovers never block a command.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from yolopatch import ui
from yolopatch.changes import clean_leftovers, recover, tree_lock
from yolopatch.tree import Tree


@contextlib.contextmanager
def locked(tree: Tree) -> Iterator[None]:
    with tree_lock(tree.root):
        restored = recover(tree.state_dir)
        if restored:
            names = ", ".join(tree.relative(path) for path in restored)
            ui.info(f"rolled back an interrupted yolopatch run: restored {names}")
        clean_leftovers(tree.writable_folders())
        yield
