"""Real Ultralytics trees for tests, from the ``ultralytics`` package on the package index.

Wheels are downloaded once with pip (no dependencies) into a cache outside the repository
(``$YOLOPATCH_TEST_CACHE`` or ``~/.cache/yolopatch-tests``) and their ``ultralytics/`` package unpacked
there. A tree is a folder holding ``ultralytics/`` (as a checkout or a site-packages has it); tests get
fresh writable copies from the ``ultralytics_tree`` fixture, or read the cached files directly.

No third-party source is committed: everything here is fetched at run time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable, Dict

import pytest

from tests.yolov5_trees import cache_lock, cache_root

# One release per registration shape (checked with `pip index versions ultralytics`, 2026-11-28):
# the last 8.0.x (inline tuple), 8.1.x and 8.2.x (inline set), 8.3.0 (inline set, YOLO11 configs),
# the last 8.3.x (`base_modules = frozenset(...)`), the newest 8.4.x (frozenset, restricted safe loader).
VERSIONS: Dict[str, str] = {
    "8.0": "8.0.239",
    "8.1": "8.1.47",
    "8.2": "8.2.103",
    "8.3.0": "8.3.0",
    "8.3": "8.3.253",
    "8.4": "8.4.190",
}


def wheel(version: str) -> Path:
    """The cached wheel of ``ultralytics==version``, downloaded on first use."""
    folder = cache_root() / "ultralytics-wheels"
    found = sorted(folder.glob(f"ultralytics-{version}-*.whl"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", f"ultralytics=={version}", "--no-deps", "--only-binary", ":all:",
         "--disable-pip-version-check", "-q", "-d", str(folder)],
        check=True,
    )
    return sorted(folder.glob(f"ultralytics-{version}-*.whl"))[0]


def source_tree(version: str) -> Path:
    """The cached, read-only tree of ``version`` (a key of VERSIONS or a full version)."""
    full = VERSIONS.get(version, version)
    target = cache_root() / "ultralytics" / full
    with cache_lock():
        return _unpacked(full, target)


def _unpacked(full: str, target: Path) -> Path:
    if not (target / "ultralytics" / "nn" / "tasks.py").is_file():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(wheel(full)) as archive:
            archive.extractall(partial, [name for name in archive.namelist() if name.startswith("ultralytics/")])
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


def make_tree(version: str, dest: Path) -> Path:
    """A fresh, writable copy of a tree at ``dest``; returns its root (the folder holding ``ultralytics/``)."""
    shutil.copytree(source_tree(version), dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def read(version: str, relative: str) -> str:
    """A file of the cached tree, as text (no newline translation)."""
    return (source_tree(version) / relative).read_bytes().decode("utf-8")


@pytest.fixture
def ultralytics_tree(tmp_path: Path) -> Callable[[str], Path]:
    """``ultralytics_tree(version)`` -> a fresh writable tree under tmp_path (import this fixture by name)."""
    counter = iter(range(1_000_000))

    def build(version: str) -> Path:
        return make_tree(version, tmp_path / f"ultralytics{next(counter)}")

    return build
