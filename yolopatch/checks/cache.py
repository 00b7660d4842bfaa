"""The last clean `yolopatch check` of a tree, remembered by a digest of everything the check reads.

`check` runs on every commit (pre-commit, CI), and a clean tree is the common case. When nothing the
check reads has changed since a clean run, it prints the same clean result without importing libcst or
parsing a file. The key (``input_key``) is a digest of:

- this yolopatch: its version, the size and mtime of each of its ``.py`` files (an edited checkout),
  the contents of the templates and placement specs (the catalogue), the Python running it and the
  libraries whose behaviour the check depends on (libcst, PyYAML);
- the command: codebase, tree root, ``--installed``, ``--python``;
- the tree's files, by content: every file under ``models/`` (YOLOv5: common.py, yolo.py,
  experimental.py, every YAML, leftovers of killed runs) or under ``ultralytics/nn`` and
  ``ultralytics/cfg/models`` plus ``ultralytics/__init__.py`` (Ultralytics), everything in ``.yolopatch/``
  (journals, the list of variants written elsewhere, records), and the folders of those variants;
- checkpoints (``runs/**/weights/*.pt``, ``*.pt``), by path, size, mtime, ctime and inode (hashing
  gigabytes of weights would cost more than the check);
- Ultralytics: the package folder ``import ultralytics`` resolves to in the chosen interpreter.

Only a fully clean result is stored (no finding at all, warnings included), so the cache can only ever
replay "ok". The cache lives outside the tree (``$YOLOPATCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/yolopatch``,
else ``~/.cache/yolopatch``), one small JSON file per tree; check writes nothing into the tree. Any error
reading or writing it means no cache, never a failure.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from yolopatch import __version__
from yolopatch.targets.detect import (models_dirs, refuse_unsupported, ultralytics_package, ultralytics_root,
                                      yolo_family)
from yolopatch.tree import start_folders, yolov5_tree_at

CACHE_ENV = "YOLOPATCH_CACHE_DIR"
DISABLE_ENV = "YOLOPATCH_NO_CACHE"
STATE_DIR = ".yolopatch"
REGISTRY = "variants.json"
# The same patterns as checkpoints.YOLOV5 / checkpoints.ULTRALYTICS (a test keeps them equal): importing
# checkpoints would load PyYAML and the catalogue on every run.
CHECKPOINT_PATTERNS = ("runs/**/weights/*.pt", "*.pt")
LIBRARIES = ("libcst", "yaml")
FORMAT = 1


@dataclass(frozen=True)
class Located:
    """The tree a check runs on, as far as the cache needs it: ``folder`` is ``models/`` (YOLOv5) or the
    ``ultralytics`` package folder."""

    codebase: str
    root: Path
    folder: Path


@dataclass(frozen=True)
class Entry:
    """A remembered clean result."""

    modules_present: int
    variants: int
    extra: Dict[str, Any]


def enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "") in ("", "0")


def located_of(tree: Any) -> Located:
    """``Located`` for a tree from ``targets.locate`` (YOLOv5's ``Tree`` or an ``UltralyticsTree``)."""
    codebase = getattr(tree, "codebase", "yolov5")
    return Located(codebase, tree.root, tree.package_dir if codebase == "ultralytics" else tree.models_dir)


def locate_light(repo: Path) -> Optional[Located]:
    """The tree ``targets.locate`` would find, from the same detection functions but without loading the
    targets (libcst); None when anything is unusual (the full path then reports it)."""
    try:
        for folder in start_folders(repo):
            package = ultralytics_package(folder)
            if package is not None:
                return Located("ultralytics", ultralytics_root(package), package)
            if any(yolo_family(models) == "yolov7" for models in models_dirs(folder)):
                from yolopatch.targets import yolov7  # loads libcst: YOLOv7 trees pay ~0.2 s more

                seven = yolov7.tree_at(folder)
                return located_of(seven) if seven is not None else None
            refuse_unsupported(folder)
            tree = yolov5_tree_at(folder)
            if tree is not None:
                return Located("yolov5", tree.root, tree.models_dir)
    except Exception:  # noqa: BLE001 - the full check explains every problem
        return None
    return None


# ----------------------------------------------------------------------------------------------
# The key


def input_key(located: Located, *, installed: bool, python: Optional[str],
              interpreter_answer: Optional[str] = None) -> str:
    """The digest of everything a check of ``located`` reads (see the module docstring);
    ``interpreter_answer``: Ultralytics, where the interpreter's ``import ultralytics`` resolves."""
    digest = hashlib.blake2b(digest_size=20)

    def add(*parts: object) -> None:
        for part in parts:
            digest.update(str(part).encode("utf-8", "surrogateescape") + b"\0")

    add("yolopatch-check", FORMAT, __version__, sys.version, sys.executable)
    _add_yolopatch(add)
    add("tree", located.codebase, located.root, located.folder, installed, python, interpreter_answer)
    if located.codebase == "ultralytics":
        folders = [located.folder / "nn", located.folder / "cfg" / "models"]
        _add_file(add, located.folder / "__init__.py")
    else:
        folders = [located.folder]
    for folder in folders:
        _add_tree(add, folder)
    state = located.root / STATE_DIR
    _add_tree(add, state)
    for folder in _registered_folders(located.root, state):
        _add_folder(add, folder)
    for path in _checkpoints(located.root):
        _add_stat(add, path)
    return digest.hexdigest()


def _add_yolopatch(add: Any) -> None:
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        _add_stat(add, path)
    from yolopatch.resources import data_dir

    for name in ("templates", "yaml_variants"):
        try:
            _add_tree(add, data_dir(name))
        except FileNotFoundError:
            add("no data", name)
    for library in LIBRARIES:
        try:
            spec = importlib.util.find_spec(library)
        except (ImportError, ValueError):
            spec = None
        origin = getattr(spec, "origin", None)
        add("library", library, origin)
        if origin:
            _add_stat(add, Path(origin))


def _add_file(add: Any, path: Path) -> None:
    try:
        add("file", path, hashlib.blake2b(path.read_bytes(), digest_size=20).hexdigest())
    except OSError as error:
        add("unreadable", path, type(error).__name__)


def _add_stat(add: Any, path: Path) -> None:
    try:
        info = path.stat()
    except OSError as error:
        add("missing", path, type(error).__name__)
        return
    add("stat", path, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def _add_tree(add: Any, folder: Path) -> None:
    """Every file below ``folder`` by content (``__pycache__`` left out); links, folders and odd files by name."""
    if not folder.is_dir():
        add("no folder", folder)
        return
    for current, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if name != "__pycache__")
        add("folder", current, *folders)
        for name in sorted(files):
            path = Path(current) / name
            if path.is_file():
                _add_file(add, path)
            else:
                add("entry", path, path.is_symlink())


def _add_folder(add: Any, folder: Path) -> None:
    """One folder, not below: every entry by name, size and mtime, its YAMLs by content."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        add("unreadable folder", folder, type(error).__name__)
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.name.endswith((".yaml", ".yml")) and entry.is_file():
            _add_file(add, path)
        else:
            _add_stat(add, path)


def _registered_folders(root: Path, state: Path) -> List[Path]:
    """The folders of the variants listed in ``.yolopatch/variants.json`` (written outside models/)."""
    try:
        names = json.loads((state / REGISTRY).read_text(encoding="utf-8"))["variants"]
        return sorted({(root / name).parent for name in names})
    except (OSError, ValueError, KeyError, TypeError):
        return []  # no registry, or one the check itself reports (its contents are in the key anyway)


def _checkpoints(root: Path) -> Iterable[Path]:
    found = set()
    for pattern in CHECKPOINT_PATTERNS:
        try:
            found.update(path for path in root.glob(pattern))
        except OSError:
            continue
    return sorted(found)


# ----------------------------------------------------------------------------------------------
# Reading and writing entries


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "yolopatch"


def _entry_path(located: Located) -> Path:
    name = hashlib.blake2b(f"{located.codebase}\0{located.root}".encode("utf-8", "surrogateescape"),
                           digest_size=10).hexdigest()
    return cache_dir() / f"check-{name}.json"


def load(located: Located, key: str) -> Optional[Entry]:
    """The remembered clean result for ``key``; None when there is none (or it was for other inputs)."""
    try:
        data = json.loads(_entry_path(located).read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        return Entry(int(data["modules_present"]), int(data["variants"]), dict(data.get("extra") or {}))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def store(located: Located, key: str, entry: Entry) -> None:
    """Remember a clean result (atomically; silently nothing when the cache folder is not writable)."""
    path = _entry_path(located)
    document = {"key": key, "root": str(located.root), "modules_present": entry.modules_present,
                "variants": entry.variants, "extra": entry.extra}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(document), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        try:
            temporary.unlink()
        except OSError:
            pass
