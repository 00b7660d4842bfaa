"""`yolopatch check` on YOLOv7 trees, through the command line as a user runs it: a tree with every module
applied is intact (exit 0), and a parse_model branch taken out by hand is found (exit 1, the file and the fix).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from tests.yolov7_trees import models_dir, yolov7_tree  # noqa: F401  (the fixture)
from yolopatch import catalog
from yolopatch.commands.apply import apply


def check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolopatch", "check", "--repo", str(root)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "COLUMNS": "400"})


def without_branch(yolo_py: Path, class_name: str, key: str) -> None:
    """Take the ``elif m is CLASS:  # yolopatch: KEY`` branch out of parse_model, as a hand edit would."""
    text = yolo_py.read_text(encoding="utf-8")
    start = text.index(f"        elif m is {class_name}:  # yolopatch: {key}\n")
    end = text.index("        elif ", start + 1)
    yolo_py.write_text(text[:start] + text[end:], encoding="utf-8")


@pytest.mark.parametrize("kind", ["checkout"])  # the package trees: tests/targets/test_yolov7_cli.py, in-process
def test_check_sees_an_intact_tree_and_a_missing_registration(yolov7_tree: Callable[..., Path], kind: str) -> None:
    root = yolov7_tree(kind, cfg_beside=True)
    assert apply(root, ["all"]) == 0

    intact = check(root)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "yolopatch's changes in" in intact.stdout and f"are intact ({len(catalog.all_modules())} module(s) applied" in intact.stdout

    yolo_py = models_dir(kind, root) / "yolo.py"
    without_branch(yolo_py, "SOCA", "soca")
    broken = check(root)

    assert broken.returncode == 1, broken.stdout + broken.stderr
    output = broken.stdout + broken.stderr
    found = [line for line in output.splitlines() if "missing-registration" in line]
    assert len(found) == 1, output
    where, line = found[0].split(": ", 1)[0].rsplit(":", 2)[:2]
    assert Path(where).resolve() == yolo_py.resolve() and line.isdigit(), found[0]
    assert "SOCA is in" in found[0] and "parse_model has no branch for it" in found[0]
    assert "fix: yolopatch apply soca" in found[0]
