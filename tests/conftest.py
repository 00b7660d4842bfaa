"""Shared fixtures: real YOLOv5 trees (see tests/yolov5_trees.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tests import yolov5_trees


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[[str, str], Path]:
    """``make_tree(version, layout)`` -> a fresh writable tree under tmp_path."""
    counter = iter(range(1_000_000))

    def build(version: str, layout: str = "checkout") -> Path:
        return yolov5_trees.make_tree(version, layout, tmp_path / f"tree{next(counter)}")

    return build


@pytest.fixture(autouse=True)
def _own_check_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """`yolopatch check` remembers clean results under ~/.cache/yolopatch: each test gets a folder of its own
    (subprocesses inherit it), so no test reads another's (or the user's) cache."""
    monkeypatch.setenv("YOLOPATCH_CACHE_DIR", str(tmp_path_factory.mktemp("check-cache")))
