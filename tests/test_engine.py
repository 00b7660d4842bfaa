"""apply / revert / status / list on real YOLOv5 trees from the package index."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from tests import yolov5_trees
from tests.yolov5_trees import snapshot
from yolopatch import catalog, changes
from yolopatch.cli import app
from yolopatch.commands.apply import apply
from yolopatch.commands.revert import revert
from yolopatch.commands.status import collect
from yolopatch.errors import YolopatchError
from yolopatch.transforms import common_py

MakeTree = Callable[..., Path]
runner = CliRunner()


def models(root: Path) -> Path:
    return yolov5_trees.models_dir(root)


def class_names(path: Path) -> set:
    return {node.name for node in ast.parse(path.read_bytes().decode("utf-8")).body if isinstance(node, ast.ClassDef)}


def parse_model_tests(path: Path) -> list:
    tree = ast.parse(path.read_bytes().decode("utf-8"))
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "parse_model")
    return [ast.unparse(node.test) for node in ast.walk(function) if isinstance(node, ast.If)]


@pytest.mark.parametrize("version,layout", yolov5_trees.all_trees())
def test_every_module_applies_and_reverts_byte_for_byte(make_tree: MakeTree, version: str, layout: str) -> None:
    root = make_tree(version, layout)
    before = snapshot(root)
    for spec in catalog.all_modules():
        assert apply(root, [spec.key]) == 0
        assert spec.class_name in class_names(models(root) / "common.py")
        assert f"m is {spec.class_name}" in parse_model_tests(models(root) / "yolo.py")
        assert (models(root) / f"yolov5s-{spec.key}.yaml").is_file()
        if layout == "master":
            source = (models(root) / "yolo.py").read_text(encoding="utf-8")
            assert f"    {spec.class_name},\n)" in source
        once = snapshot(root)
        assert apply(root, [spec.key]) == 0  # idempotent: writes nothing
        assert snapshot(root) == once
        assert collect(root)["modules"][spec.key]["status"] == "applied"
        assert revert(root, [spec.key]) == 0
        assert snapshot(root) == before, f"{spec.key} did not revert byte for byte"


def test_apply_all_then_revert_all(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    before = snapshot(root)
    assert apply(root, ["all"]) == 0
    report = collect(root)
    assert {info["status"] for info in report["modules"].values()} == {"applied"}
    assert len(report["variants"]) == len(catalog.all_modules())
    assert revert(root, []) == 0
    assert snapshot(root) == before


def test_crlf_tree_round_trip(make_tree: MakeTree) -> None:
    root = make_tree("6.2", "checkout")
    for name in ("common.py", "yolo.py"):
        path = models(root) / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    before = snapshot(root)
    assert apply(root, ["soca", "gam"], variants=False) == 0
    for name in ("common.py", "yolo.py"):
        data = (models(root) / name).read_bytes()
        assert b"\n" not in data.replace(b"\r\n", b""), f"{name} got LF line endings"
    assert revert(root, []) == 0
    assert snapshot(root) == before


def test_user_edits_between_apply_and_revert_are_kept(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    common, yolo = models(root) / "common.py", models(root) / "yolo.py"
    assert apply(root, ["sge"], variants=False) == 0
    common.write_bytes(common.read_bytes().replace(b"import math\n", b"import math  # user comment\n", 1))
    yolo.write_bytes(yolo.read_bytes() + b"\n# user's own line\n")
    expected_common = common.read_bytes()
    assert revert(root, ["sge"]) == 0
    assert b"import math  # user comment\n" in common.read_bytes()
    assert yolo.read_bytes().endswith(b"\n# user's own line\n")
    assert b"SpatialGroupEnhance" not in common.read_bytes() and b"SpatialGroupEnhance" not in yolo.read_bytes()
    assert len(common.read_bytes()) < len(expected_common)


def test_edited_insertion_blocks_revert_unless_forced(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    common = models(root) / "common.py"
    assert apply(root, ["soca"], variants=False) == 0
    text = common.read_text(encoding="utf-8")
    line = common_py.find_modules(text)["soca"].line
    lines = text.splitlines(keepends=True)
    lines.insert(line, "    edited_by_hand = True\n")
    common.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(YolopatchError, match="edited by hand") as caught:
        revert(root, ["soca"])
    assert f"common.py:{line}" in str(caught.value)
    assert revert(root, ["soca"], force=True) == 0
    assert "class SOCA" not in common.read_text(encoding="utf-8")


def test_hand_pasted_class_refuses_then_replace_swaps(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    common, yolo = models(root) / "common.py", models(root) / "yolo.py"
    blog = "\n\nclass GAM(nn.Module):\n    def __init__(self, c1, c2):\n        super().__init__()\n"
    common.write_bytes(common.read_bytes() + blog.encode())
    yolo_text = yolo.read_text(encoding="utf-8").replace("C3x}", "C3x, GAM}")
    yolo.write_text(yolo_text, encoding="utf-8")
    before = snapshot(root)
    with pytest.raises(YolopatchError, match="class GAM already defined") as caught:
        apply(root, ["gam"])
    line = common.read_text(encoding="utf-8").splitlines().index("class GAM(nn.Module):") + 1
    assert f"common.py:{line}" in str(caught.value) and "--replace" in str(caught.value)
    assert snapshot(root) == before
    assert apply(root, ["gam"], replace=True) == 0
    assert common.read_text(encoding="utf-8").count("class GAM(") == 1
    assert "C3x, GAM}" not in yolo.read_text(encoding="utf-8")
    assert collect(root)["modules"]["gam"]["status"] == "applied"


def test_injected_failure_between_two_writes_leaves_tree_unchanged(make_tree: MakeTree,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree("7.0", "checkout")
    before = snapshot(root)
    calls = []

    def failing_replace(source: Path, target: Path) -> None:
        calls.append(target)
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        os.replace(source, target)

    monkeypatch.setattr(changes, "_replace", failing_replace)
    with pytest.raises(YolopatchError, match="injected") as caught:
        apply(root, ["soca"])
    assert len(calls) == 2
    assert str(caught.value).startswith(f"{models(root) / 'yolo.py'}: cannot write: disk full (injected)")
    assert snapshot(root) == before  # no temporaries, no backups, first file restored


def test_unparseable_file_and_foreign_directory_write_nothing(make_tree: MakeTree, tmp_path: Path) -> None:
    root = make_tree("7.0", "checkout")
    common = models(root) / "common.py"
    common.write_bytes(common.read_bytes() + b"\ndef broken(:\n")
    before = snapshot(root)
    with pytest.raises(YolopatchError, match="cannot parse") as caught:
        apply(root, ["soca"])
    assert "common.py:" in str(caught.value)
    assert snapshot(root) == before
    empty = tmp_path / "not-yolo"
    empty.mkdir()
    with pytest.raises(YolopatchError, match="not inside a YOLOv5.* or Ultralytics tree"):
        apply(empty, ["soca"])


def test_unrecognisable_parse_model(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    yolo = models(root) / "yolo.py"
    yolo.write_text(yolo.read_text(encoding="utf-8").replace("def parse_model(", "def parse_model_renamed("),
                    encoding="utf-8")
    with pytest.raises(YolopatchError, match="parse_model not recognised"):
        apply(root, ["soca"])


def test_older_yolopatch_patch_is_recognised_as_outdated_and_updated(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    spec = catalog.get("sge")
    common = models(root) / "common.py"
    older = common_py.Template(spec.key, spec.version - 1 if spec.version > 1 else 0, spec.class_name,
                               spec.source.replace("class SpatialGroupEnhance(nn.Module):",
                                                   "class SpatialGroupEnhance(nn.Module):\n    older = True\n"))
    common.write_text(common_py.insert(common.read_text(encoding="utf-8"), older), encoding="utf-8")
    assert apply(root, ["sge"], variants=False) == 0  # registers it; the class is updated in place
    assert collect(root)["modules"]["sge"]["status"] == "applied"
    assert "older = True" not in common.read_text(encoding="utf-8")
    common.write_text(common_py.insert(common.read_text(encoding="utf-8"), older), encoding="utf-8")
    assert collect(root)["modules"]["sge"]["status"] == "outdated"


def test_copied_tree_keeps_its_state(make_tree: MakeTree, tmp_path: Path) -> None:
    import shutil

    root = make_tree("6.1", "package")
    assert apply(root, ["double-attention"]) == 0
    copy = tmp_path / "elsewhere"
    shutil.copytree(root, copy)
    assert collect(copy)["modules"]["double-attention"]["status"] == "applied"
    assert revert(copy, []) == 0
    assert snapshot(copy) == snapshot(make_tree("6.1", "package"))


def test_cli_exit_codes_dry_run_and_aliases(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    before = snapshot(root)
    result = runner.invoke(app, ["apply", "Sea_Attention", "--repo", str(root), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "+class SeaAttention(nn.Module):  # yolopatch: sea-attention" in result.output
    assert "+++ b/models/yolov5s-sea-attention.yaml" in result.output
    assert snapshot(root) == before
    result = runner.invoke(app, ["apply", "nonexistent", "--repo", str(root)])
    assert result.exit_code == 2
    assert "unknown module 'nonexistent'" in result.output
    result = runner.invoke(app, ["apply", "GAM_Attention", "DoubleAttentionLayer", "spatialgroupenhance",
                                 "--repo", str(models(root))])  # found upward from a subdirectory
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["apply", "gam", "--repo", str(root)])
    assert result.exit_code == 0 and "nothing to do" in result.output
    result = runner.invoke(app, ["unpatch", "--repo", str(root)])
    assert result.exit_code == 0, result.output
    assert snapshot(root) == before
    result = runner.invoke(app, ["revert", "--repo", str(root)])
    assert result.exit_code == 0 and "nothing to do" in result.output


def test_error_is_one_line_without_traceback(make_tree: MakeTree, tmp_path: Path) -> None:
    result = runner.invoke(app, ["apply", "soca", "--repo", str(tmp_path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_status_and_list_json(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "package")
    assert apply(root, ["soca"]) == 0
    result = runner.invoke(app, ["status", "--repo", str(root), "--json"])
    report = json.loads(result.output)
    assert report["layout"] == "package" and report["version"] == "7.0.14"
    assert report["modules"]["soca"]["status"] == "applied"
    assert report["modules"]["gam"]["status"] == "not applied"
    assert report["variants"][0]["path"] == "yolov5/models/yolov5s-soca.yaml"
    listing = json.loads(runner.invoke(app, ["list", "--json", "--repo", str(root)]).output)
    assert [entry["key"] for entry in listing] == sorted(spec.key for spec in catalog.all_modules())
    soca = next(entry for entry in listing if entry["key"] == "soca")
    assert soca["status"] == "applied" and soca["placement"] == ["p5"] and soca["year"] == 2019
    plain = runner.invoke(app, ["list"])
    assert plain.exit_code == 0 and "SpatialGroupEnhance" in plain.output


def test_list_does_not_import_torch_or_libcst() -> None:
    import subprocess
    import sys

    code = ("import sys; from yolopatch.cli import app\n"
            "try:\n    app(['list'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'libcst' in sys.modules)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                            check=True).stdout
    assert output.strip().splitlines()[-1] == "False False"
