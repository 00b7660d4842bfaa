"""What yolopatch applied to a tree, read from its markers alone (no libcst, no torch): `list` and `show`.

The markers yolopatch leaves on the lines it inserts (``# yolopatch: soca v1 sha256:...``) are read with the
standard library's tokenizer; the files are found from paths alone for every target. `status` and `check`
also verify the inserted code itself (hand edits), through the targets.
"""

from __future__ import annotations

import io
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Set

from yolopatch.catalog import ModuleSpec
from yolopatch.errors import YolopatchError
from yolopatch.statuses import APPLIED, HAND_PASTED, NOT_APPLIED, OUTDATED, PARTIAL, UNREADABLE
from yolopatch.targets.detect import (models_dirs, refuse_unsupported, ultralytics_package, ultralytics_root,
                                      yolo_family)
from yolopatch.tree import not_a_tree, start_folders

MARKER_PREFIX = "# yolopatch:"  # the marker format of yolopatch/transforms/markers.py


# --------------------------------------------------------------------------------------------
# State from the markers (no libcst)


@dataclass(frozen=True)
class MarkerScan:
    """What the yolopatch markers and top-level class names of one Python file say."""

    versions: Mapping[str, Optional[int]]  # module key -> template version on its marked main class
    keys: Set[str]  # every module key with a marker in the file
    unmarked_classes: Set[str]  # top-level classes without a marker on their header line


def scan_markers(source: str) -> MarkerScan:
    """Markers (``# yolopatch: soca v1 sha256:...``) and unmarked top-level classes of ``source``.

    Uses ``tokenize`` (comments are tokens there; ``ast`` drops them): no libcst, no regex over
    Python. Raises ``tokenize.TokenError`` or ``SyntaxError`` for text that does not tokenize.
    """
    versions: Dict[str, Optional[int]] = {}
    keys: Set[str] = set()
    classes: Dict[int, str] = {}  # line -> top-level class defined on it
    marked_lines: Set[int] = set()
    depth, previous = 0, None
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.INDENT:
            depth += 1
        elif token.type == tokenize.DEDENT:
            depth -= 1
        elif token.type == tokenize.NAME and depth == 0 and previous is not None \
                and previous.type == tokenize.NAME and previous.string == "class":
            classes[token.start[0]] = token.string
        elif token.type == tokenize.COMMENT and token.string.startswith(MARKER_PREFIX):
            words = token.string[len(MARKER_PREFIX):].split()
            if not words or words[:2] == ["added", "import"]:
                continue
            key, version = words[0], _version(words[1:])
            keys.add(key)
            marked_lines.add(token.start[0])
            if version is not None or key not in versions:
                versions[key] = version
        if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            previous = token
    unmarked = {name for line, name in classes.items() if line not in marked_lines}
    return MarkerScan(versions, keys, unmarked)


def _version(words: Sequence[str]) -> Optional[int]:
    for word in words:
        if word.startswith("v") and word[1:].isascii() and word[1:].isdigit():
            return int(word[1:])
    return None


def marker_states(common: MarkerScan, yolo: MarkerScan, specs: Iterable[ModuleSpec]) -> Dict[str, str]:
    """Each module's state from the markers in the class file and the registry file (``MarkedFiles``).

    applied: its main class (with a version) and its parse_model branch are marked; outdated: the
    marked version is not this yolopatch's; partial: only one of the two; hand-pasted: a class of
    its name without a marker; else not applied. A hand edit inside marked code is not seen here.
    """
    states = {}
    for spec in specs:
        version = common.versions.get(spec.key)
        has_class, registered = version is not None, spec.key in yolo.keys
        if has_class and registered:
            states[spec.key] = APPLIED if version == spec.version else OUTDATED
        elif has_class or registered or spec.key in common.keys:
            states[spec.key] = PARTIAL
        elif spec.class_name in common.unmarked_classes:
            states[spec.key] = HAND_PASTED
        else:
            states[spec.key] = NOT_APPLIED
    return states


@dataclass(frozen=True)
class MarkedFiles:
    """The two files whose markers say a module's state, in any target: where its class goes and where its
    parse_model branch goes (YOLOv5/YOLOv7: models/common.py, models/yolo.py; Ultralytics:
    nn/modules/yolopatch.py, nn/tasks.py). Found from paths alone, without importing the targets (libcst)."""

    root: Path
    class_file: Path
    registry_file: Path


def marked_files_at(folder: Path) -> Optional[MarkedFiles]:
    package = ultralytics_package(folder)
    if package is not None:
        return MarkedFiles(ultralytics_root(package), package / "nn" / "modules" / "yolopatch.py",
                           package / "nn" / "tasks.py")
    for models in models_dirs(folder):  # YOLOv5 and YOLOv7: the same two files, in a checkout or a package
        family = yolo_family(models)
        if family not in (None, "yolov7"):
            refuse_unsupported(folder)
        package_of_ours = models.parent == folder or models.parent.name == "yolov5" or family == "yolov7"
        if package_of_ours and (models / "common.py").is_file():
            return MarkedFiles(folder, models / "common.py", models / "yolo.py")
    return None


def tree_states(files: MarkedFiles, specs: Sequence[ModuleSpec]) -> Dict[str, str]:
    """``marker_states`` of the tree's files; every module ``unreadable`` when one does not tokenize."""
    try:
        scans = [scan_markers(path.read_bytes().decode("utf-8")) if path.exists() else scan_markers("")
                 for path in (files.class_file, files.registry_file)]
    except (OSError, UnicodeDecodeError, SyntaxError, tokenize.TokenError):
        return {spec.key: UNREADABLE for spec in specs}
    return marker_states(scans[0], scans[1], specs)


def find_tree(repo: Optional[Path]) -> Optional[MarkedFiles]:
    """The tree at ``repo`` (must be one), else the tree around the current directory, if any."""
    try:
        for folder in start_folders(repo if repo is not None else Path.cwd()):
            found = marked_files_at(folder)
            if found is not None:
                return found
    except YolopatchError:
        if repo is not None:
            raise
        return None  # in a codebase yolopatch does not support: the catalogue alone
    if repo is not None:
        raise not_a_tree(repo, "YOLOv5, YOLOv7 or Ultralytics")
    return None  # not in a tree: the catalogue alone
