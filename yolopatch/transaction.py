"""The frame of every command that writes to a tree: its lock, and the recovery of a killed run.

    with locked(tree):
        ...read, compute the FileChanges, write_all(changes, tree.state_dir)...

Under the lock, a journal left by a run that was killed (kill -9, power loss) is rolled back first,
and the temporary/backup files of such runs are removed, so that leftovers never block a command.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List

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
        clean_leftovers(writable_folders(tree))
        yield


def writable_folders(tree: Tree) -> List:
    """The folders yolopatch writes files into (where its temporary and backup files may be left)."""
    if getattr(tree, "codebase", "yolov5") == "ultralytics":
        package = tree.package_dir  # type: ignore[attr-defined]
        configs = sorted(path for path in tree.models_dir.glob("*") if path.is_dir())
        return sorted({package / "nn", package / "nn" / "modules", *configs})
    folders = {tree.models_dir, tree.common_py.parent, tree.yolo_py.parent, tree.models_dir / "hub"}
    if getattr(tree, "codebase", "yolov5") == "yolov7":  # variants under cfg/training and cfg/deploy
        folders |= {path for path in tree.cfg_dir.glob("*") if path.is_dir()}  # type: ignore[attr-defined]
    return sorted(folders)
