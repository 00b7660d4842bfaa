"""Find the tree a command works on, whatever its codebase (the seam's entry point)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

from yolopatch.targets import ultralytics
from yolopatch.targets.detect import refuse_unsupported
from yolopatch.tree import Tree, not_a_tree, start_folders, yolov5_tree_at

AnyTree = Union[Tree, ultralytics.UltralyticsTree]


def locate_any(start: Path, allow_installed: bool = False) -> AnyTree:
    """The YOLOv5 or Ultralytics tree at ``start`` or above it; YOLOv7/YOLOv9 trees are refused with one line,
    an installed ultralytics copy unless ``allow_installed``."""
    for folder in start_folders(start):
        found = ultralytics.tree_at(folder, allow_installed)
        if found is not None:
            return found
        refuse_unsupported(folder)
        tree = yolov5_tree_at(folder)
        if tree is not None:
            return tree
    raise not_a_tree(start, "YOLOv5 or Ultralytics")


def is_ultralytics(tree: AnyTree) -> bool:
    return isinstance(tree, ultralytics.UltralyticsTree)
