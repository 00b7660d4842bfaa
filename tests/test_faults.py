"""Fault injection at every write step: an OS error, a SIGTERM, and a simulated kill -9.

A write of apply (two Python files, two variants) goes through these steps, each a place to fail:
copy a file aside (backup), write a temporary file, write the journal, swap a file in. After a
failure or a signal the tree must be exactly as before, with no temporary or backup file left; after
a kill the next command must find the tree in one of the two consistent states (before, or fully
applied) and clean up. Every later command works.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from tests import yolov5_trees
from tests.yolov5_trees import snapshot
from yolopatch import changes
from yolopatch.commands.apply import apply
from yolopatch.commands.revert import revert
from yolopatch.errors import YolopatchError

MODULES = ["soca", "gam"]


class Killed(BaseException):
    """Stands for the process vanishing: nothing after it runs (no rollback, no clean-up)."""


class Injector:
    """Counts the write steps of one command and fails the ``fail_at``-th one with ``how``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int, how: str) -> None:
        self.count = 0
        self.fail_at = fail_at
        self.how = how
        self.dead = False
        self._wrap(monkeypatch, "_replace", changes._replace)
        self._wrap(monkeypatch, "_write_new_file", changes._write_new_file)
        self._wrap(monkeypatch, "_overwrite_in_place", changes._overwrite_in_place)
        self._wrap_copy(monkeypatch)
        for name in ("_roll_back", "_remove_journal", "_unlink_quietly"):
            self._skip_when_dead(monkeypatch, name, getattr(changes, name))

    def step(self) -> None:
        self.count += 1
        if self.count != self.fail_at:
            return
        if self.how == "error":
            raise OSError(28, "No space left on device")
        if self.how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.dead = True
        raise Killed()

    def _wrap(self, monkeypatch: pytest.MonkeyPatch, name: str, real: Callable) -> None:
        def wrapped(*args: object, **kwargs: object) -> object:
            self.step()
            return real(*args, **kwargs)

        monkeypatch.setattr(changes, name, wrapped)

    def _wrap_copy(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = shutil.copy2

        def copy(*args: object, **kwargs: object) -> object:
            self.step()
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(changes.shutil, "copy2", copy)

    def _skip_when_dead(self, monkeypatch: pytest.MonkeyPatch, name: str, real: Callable) -> None:
        def wrapped(*args: object, **kwargs: object) -> object:
            return None if self.dead else real(*args, **kwargs)

        monkeypatch.setattr(changes, name, wrapped)


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, object]:
    """The 7.0 tree before and after a complete apply (as snapshots), and a way to get fresh copies."""
    base = tmp_path_factory.mktemp("fault-base")
    root = yolov5_trees.make_tree("7.0", "checkout", base / "tree")
    before = snapshot(root)
    applied_root = yolov5_trees.make_tree("7.0", "checkout", base / "applied")
    assert apply(applied_root, MODULES, scales=["s", "n"]) == 0
    return {"source": root, "before": before, "after": snapshot(applied_root)}


def fresh(trees: Dict[str, object], tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(trees["source"], tmp_path / name))  # type: ignore[arg-type]


def count_steps(trees: Dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    with monkeypatch.context() as patch:
        injector = Injector(patch, fail_at=0, how="error")
        assert apply(fresh(trees, tmp_path, "count"), MODULES, scales=["s", "n"]) == 0
    return injector.count



@pytest.mark.parametrize("how", ["error", "sigterm"])
def test_failure_or_sigterm_at_every_step_leaves_the_tree_unchanged(trees: Dict[str, object], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    steps = count_steps(trees, tmp_path, monkeypatch)
    assert steps >= 4 * 2 + 1  # 2 backups, 4 temporaries, the journal, 4 swaps
    for fail_at in range(1, steps + 1):
        root = fresh(trees, tmp_path, f"{how}-{fail_at}")
        with monkeypatch.context() as patch:
            Injector(patch, fail_at, how)
            expected = YolopatchError if how == "error" else KeyboardInterrupt
            with pytest.raises(expected):
                apply(root, MODULES, scales=["s", "n"])
        assert snapshot(root) == trees["before"], f"{how} at step {fail_at}"
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert apply(root, MODULES, scales=["s", "n"]) == 0
    assert snapshot(root) == trees["after"]


def test_kill_at_every_step_is_recovered_by_the_next_command(trees: Dict[str, object], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    steps = count_steps(trees, tmp_path, monkeypatch)
    outcomes: List[Optional[str]] = []
    for fail_at in range(1, steps + 1):
        root = fresh(trees, tmp_path, f"kill-{fail_at}")
        with monkeypatch.context() as patch:
            Injector(patch, fail_at, "kill")
            with pytest.raises(Killed):
                apply(root, MODULES, scales=["s", "n"])
        assert revert(root, ["soca"], dry_run=True) == 0  # the next command: recovers, then shows a diff
        state = snapshot(root)
        outcome = "before" if state == trees["before"] else "after" if state == trees["after"] else None
        assert outcome is not None, f"kill at step {fail_at} left an inconsistent tree"
        outcomes.append(outcome)
        assert apply(root, MODULES, scales=["s", "n"]) == 0
        assert snapshot(root) == trees["after"]
    assert "before" in outcomes  # kills before the journal is gone are rolled back
