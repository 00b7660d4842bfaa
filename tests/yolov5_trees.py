"""Real YOLOv5 trees for tests, from the ``yolov5`` package on the package index.

Wheels are downloaded once with pip (no dependencies) into a cache outside the repository
(``$YOLOPATCH_TEST_CACHE`` or ``~/.cache/yolopatch-tests``) and unpacked there. Tests get fresh
copies in their own temporary folders, in one of three layouts:

- ``package``: the wheel as it is, ``<root>/yolov5/models/...`` with ``from yolov5.models...`` imports;
- ``checkout``: the package folder as the tree root, imports rewritten to ``from models...`` (libcst);
- ``master``: a 7.0 checkout whose yolo.py imports an explicit parenthesised name list, as on master.

No third-party source is committed: everything here is fetched at run time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Sequence, Union

import libcst as cst

# One release per upstream line (v5.0, v6.0, v6.1, v6.2, v7.0).
VERSIONS: Dict[str, str] = {"5.0": "5.0.9", "6.0": "6.0.7", "6.1": "6.1.9", "6.2": "6.2.3", "7.0": "7.0.14"}

# The names master's yolo.py imports from models.common (taken from yolo.py's own uses).
MASTER_COMMON_NAMES = (
    "C3", "C3SPP", "C3TR", "SPP", "SPPF", "Bottleneck", "BottleneckCSP", "C3Ghost", "C3x", "Classify",
    "Concat", "Contract", "Conv", "CrossConv", "DetectMultiBackend", "DWConv", "DWConvTranspose2d",
    "Expand", "Focus", "GhostBottleneck", "GhostConv", "Proto",
)


def cache_root() -> Path:
    root = Path(os.environ.get("YOLOPATCH_TEST_CACHE", Path.home() / ".cache" / "yolopatch-tests"))
    root.mkdir(parents=True, exist_ok=True)
    return root


_LOCKS: Dict[str, "filelock.FileLock"] = {}


def cache_lock() -> "filelock.FileLock":
    """The one lock on the test cache: pytest-xdist workers fill it one at a time (reentrant in a process)."""
    import filelock

    path = str(cache_root() / ".lock")
    if path not in _LOCKS:
        _LOCKS[path] = filelock.FileLock(path)
    return _LOCKS[path]


def wheel(version: str) -> Path:
    """The cached wheel of ``yolov5==version``, downloaded on first use."""
    folder = cache_root() / "wheels"
    found = sorted(folder.glob(f"yolov5-{version}-*.whl"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    # 5.0.x wheels carry a malformed requirement ("pycocotools>=2.0s") that pip >= 24.1 rejects
    # in its default resolver; the legacy resolver still downloads them with --no-deps.
    subprocess.run(
        [sys.executable, "-m", "pip", "download", f"yolov5=={version}", "--no-deps", "--only-binary", ":all:",
         "--use-deprecated=legacy-resolver", "--disable-pip-version-check", "-q", "-d", str(folder)],
        check=True,
    )
    return sorted(folder.glob(f"yolov5-{version}-*.whl"))[0]


def _unpacked_package(version: str) -> Path:
    target = cache_root() / "package" / version
    if not (target / "yolov5" / "models" / "yolo.py").is_file():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(wheel(version)) as archive:
            members = [name for name in archive.namelist() if name.startswith("yolov5/")]
            archive.extractall(partial, members)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


class _DropPackagePrefix(cst.CSTTransformer):
    """``from yolov5.models.common import *`` -> ``from models.common import *`` (and plain imports)."""

    def __init__(self, package: str) -> None:
        self.package = package

    def _strip(self, node: Union[cst.Attribute, cst.Name]) -> Union[cst.Attribute, cst.Name]:
        parts = cst.helpers.get_full_name_for_node(node).split(".")
        if parts[0] != self.package or len(parts) == 1:
            return node
        rest = parts[1:]
        result: Union[cst.Attribute, cst.Name] = cst.Name(rest[0])
        for part in rest[1:]:
            result = cst.Attribute(value=result, attr=cst.Name(part))
        return result

    def leave_ImportFrom(self, original: cst.ImportFrom, updated: cst.ImportFrom) -> cst.ImportFrom:
        if updated.module is None or updated.relative:
            return updated
        return updated.with_changes(module=self._strip(updated.module))

    def leave_ImportAlias(self, original: cst.ImportAlias, updated: cst.ImportAlias) -> cst.ImportAlias:
        return updated.with_changes(name=self._strip(updated.name))


def _rewrite_file(path: Path, transformer: cst.CSTTransformer) -> None:
    source = path.read_bytes().decode("utf-8")
    if "yolov5" not in source:
        return
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError:
        return  # 5.0.9 ships a models/tf.py that is not valid Python; it is never imported
    new = module.visit(transformer).code
    if new != source:
        path.write_bytes(new.encode("utf-8"))


def _unpacked_checkout(version: str) -> Path:
    target = cache_root() / "checkout" / version
    if not (target / "models" / "yolo.py").is_file():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(_unpacked_package(version) / "yolov5", partial)
        for path in partial.rglob("*.py"):
            _rewrite_file(path, _DropPackagePrefix("yolov5"))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


class _ExplicitCommonImports(cst.CSTTransformer):
    """7.0's star imports -> master's explicit, parenthesised, one-name-per-line list."""

    def leave_SimpleStatementLine(self, original: cst.SimpleStatementLine,
                                  updated: cst.SimpleStatementLine) -> Union[cst.SimpleStatementLine,
                                                                              cst.FlattenSentinel]:
        statement = updated.body[0]
        if not (isinstance(statement, cst.ImportFrom) and isinstance(statement.names, cst.ImportStar)):
            return updated
        module = cst.helpers.get_full_name_for_node(statement.module)
        if module == "models.common":
            text = "from models.common import (\n" + "".join(f"    {n},\n" for n in MASTER_COMMON_NAMES) + ")\n"
            lines = ["import math\n", "import torch\n", "from torch import nn\n", text]
            return cst.FlattenSentinel([cst.parse_statement(line) for line in lines])
        if module == "models.experimental":
            return cst.parse_statement("from models.experimental import MixConv2d\n")
        return updated


def _unpacked_master() -> Path:
    target = cache_root() / "master"
    if not (target / "models" / "yolo.py").is_file():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(_unpacked_checkout(VERSIONS["7.0"]), partial)
        _rewrite_file_always(partial / "models" / "yolo.py", _ExplicitCommonImports())
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


def _rewrite_file_always(path: Path, transformer: cst.CSTTransformer) -> None:
    source = path.read_bytes().decode("utf-8")
    path.write_bytes(cst.parse_module(source).visit(transformer).code.encode("utf-8"))


def source_tree(version: str, layout: str) -> Path:
    """The cached, read-only tree of ``version`` (a key of VERSIONS or a full version) in ``layout``."""
    full = VERSIONS.get(version, version)
    with cache_lock():
        if layout == "package":
            return _unpacked_package(full)
        if layout == "checkout":
            return _unpacked_checkout(full)
        if layout == "master":
            return _unpacked_master()
    raise ValueError(f"unknown layout {layout!r}")


def make_tree(version: str, layout: str, dest: Path) -> Path:
    """A fresh, writable copy of a tree at ``dest``; returns its root."""
    shutil.copytree(source_tree(version, layout), dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def models_dir(root: Path) -> Path:
    """``models/`` of a tree in either layout."""
    nested = root / "yolov5" / "models"
    return nested if nested.is_dir() else root / "models"


def all_trees() -> Sequence[tuple]:
    """(version, layout) pairs every engine test runs on."""
    pairs = [(version, layout) for version in VERSIONS for layout in ("package", "checkout")]
    return pairs + [("master", "master")]


def snapshot(root: Path, *, folders: bool = False, skip_git: bool = False) -> Dict[str, str]:
    """Relative path -> sha256 of every file below ``root`` (a created, deleted or changed file changes
    it); ``folders`` also records folders (as "dir"), ``skip_git`` leaves out ``.git``."""
    result = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if skip_git and ".git" in relative.parts:
            continue
        if path.is_file():
            result[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif folders and path.is_dir():
            result[str(relative)] = "dir"
    return result
