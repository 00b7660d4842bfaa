"""Which YOLO codebase a folder holds: the seam every command starts from.

``codebase_at(folder)`` recognises, from the files alone (``ast``, nothing imported):
- ``yolov5``: ``models/yolo.py`` + ``models/common.py`` (a checkout) or ``yolov5/models/...`` (the package);
- ``ultralytics``: ``ultralytics/nn/tasks.py`` (a source checkout, an unpacked sdist or wheel) or a folder
  that is itself the ``ultralytics`` package (an installed copy in site-packages);
- ``yolov7``: ``IDetect`` (or IAuxDetect, IKeypoint, IBin) in models/yolo.py, in a checkout or a packaged
  copy such as yolov7-package (``targets.yolov7``); commands that support only YOLOv5 so far refuse it;
- codebases yolopatch knows but does not support yet: YOLOv9 (``DualDDetect``/``RepNCSPELAN4``), refused
  with one line that says what was found.
"""

from __future__ import annotations

import ast
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import FrozenSet, Iterator, Optional

from yolopatch.errors import YolopatchError

SUPPORTED = {
    "yolov5": "YOLOv5 v5.0 to master (git checkout or the yolov5 package layout)",
    "ultralytics": "Ultralytics 8.0 to 8.4 (YOLOv8, YOLO11, YOLO12, YOLO26, RT-DETR): source checkout or unpacked "
                   "package",
    "yolov7": "YOLOv7 (WongKinYiu/yolov7 checkout, or a packaged copy such as yolov7-package)",
}
# One line for `--help` and `list`: which codebases and versions yolopatch patches.
SUPPORTED_LINE = "YOLOv5 v5.0 to master, Ultralytics 8.0 to 8.4 (YOLOv8, YOLO11, YOLO12, YOLO26, RT-DETR), YOLOv7"
NOT_YET = {
    "yolov9": "YOLOv9",
}


@dataclass(frozen=True)
class Found:
    """A codebase recognised at ``root``; ``models`` is the folder holding models/yolo.py, where it has one."""

    codebase: str
    root: Path
    evidence: str


def _class_names(path: Path) -> FrozenSet[str]:
    try:
        tree = ast.parse(path.read_bytes().decode("utf-8", errors="replace").lstrip("\ufeff"))
    except (OSError, SyntaxError, ValueError):
        return frozenset()
    return frozenset(node.name for node in tree.body if isinstance(node, ast.ClassDef))


def yolo_family(models: Path) -> Optional[str]:
    """"yolov7" / "yolov9" when ``models`` (a folder with yolo.py and common.py) is one of those forks."""
    yolo_classes = _class_names(models / "yolo.py")
    if yolo_classes & {"IDetect", "IAuxDetect", "IKeypoint", "IBin"}:
        return "yolov7"
    if yolo_classes & {"DualDDetect", "DualDetect", "TripleDDetect"} or "RepNCSPELAN4" in _class_names(
            models / "common.py"):
        return "yolov9"
    return None


def models_dirs(folder: Path) -> Iterator[Path]:
    """models/ folders of a checkout (``folder/models``) or of a packaged copy (``folder/<pkg>/models``)."""
    if (folder / "models" / "yolo.py").is_file():
        yield folder / "models"
    try:
        children = sorted(child for child in folder.iterdir() if child.is_dir())
    except OSError:
        return
    for child in children:
        if (child / "models" / "yolo.py").is_file() and (child / "__init__.py").is_file():
            yield child / "models"


def refuse_unsupported(folder: Path) -> None:
    """Raise when ``folder`` holds a YOLO codebase yolopatch does not support yet (YOLOv9), or a YOLOv7 tree
    (``targets.locate.open_target`` finds YOLOv7 first: only commands that support YOLOv5 alone get here)."""
    for models in models_dirs(folder):
        family = yolo_family(models)
        if family == "yolov7":
            raise YolopatchError(f"this is a YOLOv7 tree ({models / 'yolo.py'} defines its IDetect head); this "
                                 f"command supports YOLOv5 trees only so far", path=folder,
                                 hint="apply, revert, status and variant support YOLOv7 trees")
        if family is not None:
            supported = "; ".join(SUPPORTED.values())
            raise YolopatchError(
                f"this is a {NOT_YET[family]} tree ({models / 'yolo.py'} defines its {_evidence(family)}); "
                f"yolopatch does not support {NOT_YET[family]} yet", path=folder,
                hint=f"supported: {supported}")


def _evidence(family: str) -> str:
    return {"yolov7": "IDetect head", "yolov9": "DualDDetect head or RepNCSPELAN4 block"}[family]


def ultralytics_package(folder: Path) -> Optional[Path]:
    """The ``ultralytics`` package folder at ``folder`` (``folder/ultralytics`` or ``folder`` itself)."""
    for candidate in (folder / "ultralytics", folder):
        if candidate.name == "ultralytics" and (candidate / "nn" / "tasks.py").is_file() and (
                candidate / "nn" / "modules" / "__init__.py").is_file():
            return candidate
    return None


def installed_copy(package: Path) -> bool:
    """True when ``package`` lies in a site-packages (or Debian's dist-packages) folder: an installed copy."""
    resolved = package.resolve()
    places = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    return "site-packages" in resolved.parts or "dist-packages" in resolved.parts or resolved.parent in places


def ultralytics_root(package: Path) -> Path:
    """The tree an ``ultralytics`` package folder belongs to. From inside a checkout's package folder, the
    tree is still the checkout (its parent); an installed copy is its own root (site-packages is nobody's
    tree)."""
    return package if installed_copy(package) else package.parent
