"""The seam: what each YOLO codebase yolopatch patches provides to the commands.

A command opens the target of a folder (``targets.open_target``), takes the tree's lock, asks the target
for a plan (a list of ``FileChange``) and hands it to ``commands._write.finish``. Everything that differs
between codebases (which files hold module code and registrations, the parse_model branch shape, the YAML
dialect and base configs, how a model is built) lives behind this protocol, in ``targets/<codebase>.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

from yolopatch.catalog import ModuleSpec
from yolopatch.changes import FileChange


class TreeLike(Protocol):
    """What every located tree has (YOLOv5's ``Tree``, ``UltralyticsTree``, ``Yolov7Tree``)."""

    root: Path
    layout: str

    @property
    def state_dir(self) -> Path: ...

    def relative(self, path: Path) -> str: ...

    def version(self) -> Optional[str]: ...


class Target(Protocol):
    """One located tree of one codebase, and the plans yolopatch makes for it (pure: read, never write)."""

    codebase: str  # "yolov5", "ultralytics", "yolov7"
    title: str  # how the codebase is named to users: "YOLOv5", "Ultralytics", "YOLOv7"
    tree: TreeLike

    def statuses(self) -> Dict[str, str]:
        """Each catalogued module's status in this tree (``statuses.APPLIED``, ``NOT_APPLIED``, ...)."""
        ...

    def plan_apply(self, specs: Sequence[ModuleSpec], *, replace: bool) -> List[FileChange]:
        """The Python-file changes that insert and register ``specs`` (refuses conflicts with one line)."""
        ...

    def plan_variants(self, specs: Sequence[ModuleSpec], *, bases: Sequence[str],
                      scales: Optional[Sequence[str]], positions: Optional[Sequence[str]]) -> List[FileChange]:
        """The variant YAMLs for ``specs`` (``bases``/``scales`` empty: the target's default bases)."""
        ...

    def plan_revert(self, keys: Sequence[str], *, force: bool) -> Tuple[List[str], List[FileChange]]:
        """The keys reverted (all present ones when ``keys`` is empty) and the changes that take them out,
        variants included."""
        ...

    def status_report(self) -> Dict[str, Any]:
        """What `yolopatch status --json` prints for this tree."""
        ...

    def print_status(self, report: Dict[str, Any]) -> None:
        """`yolopatch status` for people."""
        ...
