"""apply / apply again / status / check / variant / revert on every YOLOv7 tree of tests/yolov7_trees.py.

Every tree: apply all writes the modules and the variants of yolov7 and yolov7-tiny with their cfg/deploy
twins (none, and a note, where the tree has no cfg/), a second apply changes nothing, status and check
see every module applied and every variant intact, and revert gives the tree back byte for byte. One
run goes through ``python -m yolopatch`` as a user types it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict

import pytest

from tests.yolov5_trees import snapshot
from tests.yolov7_trees import yolov7_tree  # noqa: F401  (the fixture)
from yolopatch import catalog, variants
from yolopatch.checks import yolov5 as yolov5_checks
from yolopatch.checks.findings import Report
from yolopatch.commands.apply import apply
from yolopatch.commands.revert import revert
from yolopatch.commands.status import collect
from yolopatch.commands.variant import variant
from yolopatch.errors import UsageError
from yolopatch.targets import yolov7
from yolopatch.targets.locate import open_target

MakeTree = Callable[..., Path]
MODULES = len(catalog.all_modules())


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolopatch", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "120"}, timeout=300)


def tree_state(root: Path) -> Dict[str, str]:
    """Every file (sha256) and folder of the tree. Known defect, not YOLOv7's: ``changes.write_all`` tries to
    remove an empty ``.yolopatch`` before it unlinks the backups of files deleted inside it (the variant
    registry), so revert leaves that folder behind, empty; an empty ``.yolopatch`` is left out here."""
    state = snapshot(root, folders=True)
    if (root / ".yolopatch").is_dir() and not any((root / ".yolopatch").iterdir()):
        del state[".yolopatch"]
    return state


def _check_report(root: Path) -> Report:
    """YOLOv5's checks (the same two files, markers and variant headers) on the YOLOv7 tree: what
    `yolopatch check` reports once its dispatch sends "yolov7" there (it refuses the codebase so far)."""
    return yolov5_checks.collect(open_target(root).tree)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind, cfg_beside, variant_count", [
    ("yolov7-package", True, 4 * MODULES),  # yolov7 + yolov7-tiny, training + deploy, per module
    ("yolov7-easy", False, 0),  # no cfg/: modules only, and a note
    ("sas-yolov7", False, 4 * MODULES),  # cfg/ inside the package
])
def test_apply_all_again_check_and_revert(yolov7_tree: MakeTree, capsys: pytest.CaptureFixture, kind: str,
                                          cfg_beside: bool, variant_count: int) -> None:
    root = yolov7_tree(kind, cfg_beside)
    before = tree_state(root)
    assert apply(root, ["all"]) == 0
    if not variant_count:
        assert "note: no cfg/training/yolov7.yaml, cfg/training/yolov7-tiny.yaml in this tree" in \
            capsys.readouterr().err.replace("yolov7/cfg", "cfg")
    report = collect(root)
    assert report["codebase"] == "yolov7" and report["layout"] == "package"
    assert {info["status"] for info in report["modules"].values()} == {"applied"}
    assert len(report["variants"]) == variant_count and not any(v["edited"] for v in report["variants"])
    patched = tree_state(root)
    assert apply(root, ["all"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert tree_state(root) == patched
    found = _check_report(root)
    assert found.ok and found.findings == [] and found.variants == variant_count
    if kind == "yolov7-easy":  # CRLF files stay CRLF
        for name in ("common.py", "yolo.py"):
            data = (root / "yolov7" / "models" / name).read_bytes()
            assert data.count(b"\n") == data.count(b"\r\n")
    assert revert(root, []) == 0
    assert tree_state(root) == before


def test_the_command_line_end_to_end_on_a_checkout(yolov7_tree: MakeTree) -> None:
    root = yolov7_tree("checkout")
    before = tree_state(root)
    applied = cli("apply", "all", cwd=root)
    assert applied.returncode == 0, applied.stderr
    assert f"applied ({4 * MODULES + 2} file(s))" in applied.stdout  # common.py, yolo.py and the variants
    assert (root / "cfg" / "deploy" / "yolov7-tiny-soca.yaml").is_file()
    again = cli("apply", "all", cwd=root / "cfg")
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr
    status = cli("status", "--json", cwd=root)
    report = json.loads(status.stdout)
    assert report["codebase"] == "yolov7" and report["cfg"] == "cfg" and len(report["variants"]) == 4 * MODULES
    assert _check_report(root).ok
    reverted = cli("revert", cwd=root / "models")
    assert reverted.returncode == 0, reverted.stderr
    assert tree_state(root) == before


def test_variant_writes_training_and_deploy_and_their_index_maps(yolov7_tree: MakeTree) -> None:
    root = yolov7_tree("checkout")
    before = tree_state(root)
    assert apply(root, ["se"], variants=False) == 0
    assert variant(root, ["se"], positions=["p4"], scales=["tiny", "x"]) == 0
    target = open_target(root)
    assert isinstance(target, yolov7.Yolov7Target)
    maps = target.index_maps()
    assert sorted(maps) == ["cfg/deploy/yolov7-tiny-se-p4.yaml", "cfg/deploy/yolov7x-se-p4.yaml",
                            "cfg/training/yolov7-tiny-se-p4.yaml", "cfg/training/yolov7x-se-p4.yaml"]
    tiny = maps["cfg/training/yolov7-tiny-se-p4.yaml"]  # SE after layer 75 (p4): IDetect 77 -> 78
    assert (tiny[75], tiny[76], tiny[77]) == (75, 77, 78) and maps["cfg/deploy/yolov7-tiny-se-p4.yaml"] == tiny
    text = (root / "cfg" / "training" / "yolov7x-se-p4.yaml").read_text()
    assert variants.parse_generated_header(text).placements == (("se", ("p4",)),)  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="unknown YOLOv7 model"):
        variant(root, ["se"], scales=["s"])
    assert revert(root, []) == 0
    assert tree_state(root) == before
