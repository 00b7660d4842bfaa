"""Find the tree a command works on, whatever its codebase (the seam's entry point)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Union

from yolopatch.targets import ultralytics
from yolopatch.targets.base import Target
from yolopatch.targets.detect import refuse_unsupported
from yolopatch.tree import Tree, not_a_tree, start_folders, yolov5_tree_at

if TYPE_CHECKING:
    from yolopatch.targets.yolov7 import Yolov7Tree

AnyTree = Union[Tree, ultralytics.UltralyticsTree, "Yolov7Tree"]


def locate_any(start: Path, allow_installed: bool = False) -> AnyTree:
    """The YOLOv5, YOLOv7 or Ultralytics tree at ``start`` or above it; YOLOv9 trees are refused with one line,
    an installed ultralytics copy unless ``allow_installed``."""
    return open_target(start, allow_installed).tree  # type: ignore[return-value]


def open_target(start: Path, allow_installed: bool = False) -> Target:
    """The target of the tree at ``start`` or above it (the nearest folder that holds a known codebase)."""
    # The YOLOv5-family targets are imported only when the tree is not Ultralytics: they bring the YOLOv5
    # transforms, a tenth of what a whole Ultralytics apply may take.
    for folder in start_folders(start):
        found = ultralytics.tree_at(folder, allow_installed)
        if found is not None:
            return ultralytics.UltralyticsTarget(found)
        from yolopatch.targets import yolov7

        seven = yolov7.tree_at(folder)
        if seven is not None:
            return yolov7.Yolov7Target(seven)
        refuse_unsupported(folder)
        tree = yolov5_tree_at(folder)
        if tree is not None:
            from yolopatch.targets.yolov5 import Yolov5Target

            return Yolov5Target(tree)
    raise not_a_tree(start, "YOLOv5, YOLOv7 or Ultralytics")


def is_ultralytics(tree: AnyTree) -> bool:
    return isinstance(tree, ultralytics.UltralyticsTree)
