"""The Target seam: every command that writes goes through ``open_target``, the same way for each codebase.

Real trees: YOLOv5 7.0 (checkout) and Ultralytics 8.4 (yolo12 has no SPPF; Ultralytics exports its own CBAM).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tests import yolov7_trees
from tests.ultralytics_trees import ultralytics_tree  # noqa: F401  (the fixture)
from tests.yolov7_trees import yolov7_tree  # noqa: F401  (the fixture)
from tests.yolov5_trees import snapshot
from yolopatch import catalog, variants
from yolopatch.commands.apply import apply
from yolopatch.commands.revert import revert
from yolopatch.commands.status import collect
from yolopatch.commands.variant import variant
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.state import NOT_APPLIED
from yolopatch.targets.locate import open_target
from yolopatch.targets.ultralytics import UltralyticsTarget
from yolopatch.targets.yolov5 import Yolov5Target

MakeUltralytics = Callable[[str], Path]


def test_open_target_names_the_codebase(make_tree: Callable[..., Path], ultralytics_tree: MakeUltralytics) -> None:
    yolov5 = open_target(make_tree("7.0", "checkout") / "models")
    ultra_root = ultralytics_tree("8.4")
    ultra = open_target(ultra_root / "ultralytics" / "nn")  # from inside the package: the tree is still the checkout
    assert ultra.tree.root == ultra_root and ultra.tree.state_dir == ultra_root / ".yolopatch"
    assert isinstance(yolov5, Yolov5Target) and (yolov5.codebase, yolov5.title) == ("yolov5", "YOLOv5")
    assert isinstance(ultra, UltralyticsTarget) and (ultra.codebase, ultra.title) == ("ultralytics", "Ultralytics")
    assert set(yolov5.statuses().values()) == {NOT_APPLIED}


def test_untouched_ultralytics_tree_has_nothing_applied(ultralytics_tree: MakeUltralytics,
                                                         capsys: pytest.CaptureFixture) -> None:
    """Ultralytics exports a CBAM of its own: that alone must not make yolopatch's cbam "partial"."""
    root = ultralytics_tree("8.4")
    before = snapshot(root, folders=True)
    assert set(open_target(root).statuses().values()) == {NOT_APPLIED}
    assert revert(root, []) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert snapshot(root, folders=True) == before


def test_variant_command_on_ultralytics(ultralytics_tree: MakeUltralytics) -> None:
    root = ultralytics_tree("8.4")
    models = root / "ultralytics" / "cfg" / "models"
    with pytest.raises(YolopatchError, match="soca is not applied"):
        variant(root, ["soca"])
    assert apply(root, ["soca"], variants=False) == 0
    assert not (models / "v8" / "yolov8-soca.yaml").exists()
    assert variant(root, ["soca"]) == 0
    assert (models / "v8" / "yolov8-soca.yaml").is_file() and (models / "11" / "yolo11-soca.yaml").is_file()
    with pytest.raises(UsageError, match="--scales does not apply to Ultralytics"):
        variant(root, ["soca"], scales=["s"])
    paths = {v["path"] for v in collect(root)["variants"]}
    assert paths == {"ultralytics/cfg/models/v8/yolov8-soca.yaml", "ultralytics/cfg/models/11/yolo11-soca.yaml"}


def test_sppf_default_on_a_base_without_spp(ultralytics_tree: MakeUltralytics) -> None:
    """yolo12's backbone ends in A2C2f, not SPPF: a module placed at sppf by default goes on the backbone's
    last layer there (the file name says so); an explicit --at sppf is still refused."""
    root = ultralytics_tree("8.4")
    before = snapshot(root, folders=True)
    base = "ultralytics/cfg/models/12/yolo12.yaml"
    assert "sppf" in variants.load_spec("sk").placement  # sk's default placement
    assert apply(root, ["sk"], bases=[base]) == 0
    written = root / "ultralytics" / "cfg" / "models" / "12" / "yolo12-sk-backbone8.yaml"
    assert written.is_file()
    assert "SKAttention" in written.read_text()
    with pytest.raises(UsageError, match="position 'sppf' does not exist in yolo12.yaml"):
        variant(root, ["sk"], bases=[base], positions=["sppf"])
    assert revert(root, []) == 0
    assert snapshot(root, folders=True) == before


def test_status_names_the_ultralytics_this_interpreter_imports(ultralytics_tree: MakeUltralytics,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = ultralytics_tree("8.4")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    elsewhere = collect(root)["interpreter"]
    assert elsewhere is not None and elsewhere["is_this_tree"] is False
    monkeypatch.setenv("PYTHONPATH", str(root))
    here = collect(root)["interpreter"]
    assert here["is_this_tree"] is True and Path(here["ultralytics"]) == root / "ultralytics"


def test_list_reads_states_in_an_ultralytics_tree(ultralytics_tree: MakeUltralytics) -> None:
    from yolopatch import inventory

    root = ultralytics_tree("8.4")
    specs = [catalog.get("soca"), catalog.get("cbam")]
    assert inventory.tree_states(inventory.find_tree(root), specs) == {"soca": NOT_APPLIED, "cbam": NOT_APPLIED}
    assert apply(root, ["soca"], variants=False) == 0
    files = inventory.find_tree(root / "ultralytics" / "cfg")
    assert files is not None and files.root == root
    assert inventory.tree_states(files, specs) == {"soca": "applied", "cbam": NOT_APPLIED}


def test_revert_of_a_variant_outside_models_leaves_no_state_folder(make_tree: Callable[..., Path]) -> None:
    """The registry of variants outside models/ lives in .yolopatch/: its last removal takes the folder too."""
    root = make_tree("7.0", "checkout")
    outside = root / "configs"
    outside.mkdir()
    (outside / "mine.yaml").write_bytes((root / "models" / "yolov5s.yaml").read_bytes())
    before = snapshot(root, folders=True)
    assert apply(root, ["soca"], bases=["configs/mine.yaml"]) == 0
    assert (root / ".yolopatch" / "variants.json").is_file() and (outside / "mine-soca.yaml").is_file()
    assert revert(root, []) == 0
    assert snapshot(root, folders=True) == before


def test_variant_json_prints_every_index_map(make_tree: Callable[..., Path], ultralytics_tree: MakeUltralytics,
                                             capsys: pytest.CaptureFixture) -> None:
    import json

    for root, expected_path in ((make_tree("7.0", "checkout"), "models/yolov5s-soca.yaml"),
                                (ultralytics_tree("8.4"), "ultralytics/cfg/models/v8/yolov8-soca.yaml")):
        assert apply(root, ["soca"], variants=False) == 0
        capsys.readouterr()
        assert variant(root, ["soca"], as_json=True) == 0
        printed = {entry["path"]: entry for entry in json.loads(capsys.readouterr().out)}
        entry = printed[expected_path]
        assert entry["modules"] == ["soca"]
        mapping = {int(old): new for old, new in entry["index_map"].items()}
        # one layer inserted on the P5 output: every layer up to it keeps its index, every later one (the head's
        # Detect at least) moves up by one
        shifts = [mapping[old] - old for old in sorted(mapping)]
        assert sorted(mapping) == list(range(len(mapping))) and shifts == sorted(shifts)
        assert set(shifts) == {0, 1} and shifts[-1] == 1


@pytest.mark.parametrize("kind", ["checkout", "yolov7-package"])
def test_list_reads_states_in_a_yolov7_tree(yolov7_tree: Callable[..., Path], kind: str) -> None:
    from yolopatch import inventory

    root = yolov7_tree(kind)
    specs = [catalog.get("se"), catalog.get("gam")]
    assert apply(root, ["se"], variants=False) == 0
    files = inventory.find_tree(root)
    assert files is not None and files.class_file.parent == yolov7_trees.models_dir(kind, root)
    assert inventory.tree_states(files, specs) == {"se": "applied", "gam": NOT_APPLIED}


def test_status_and_revert_see_ultralytics_checkpoints(ultralytics_tree: MakeUltralytics,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A trained checkpoint pickles ultralytics.nn.modules.yolopatch.SOCA: status lists it, revert refuses."""
    import sys
    import types

    import torch

    root = ultralytics_tree("8.4")
    assert apply(root, ["soca"], variants=False) == 0
    names = ("ultralytics", "ultralytics.nn", "ultralytics.nn.modules", "ultralytics.nn.modules.yolopatch")
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    soca = type("SOCA", (), {"__module__": names[-1]})
    setattr(sys.modules[names[-1]], "SOCA", soca)
    weights = root / "runs" / "detect" / "train" / "weights"
    weights.mkdir(parents=True)
    torch.save({"model": soca()}, weights / "last.pt")
    report = collect(root)["checkpoints"]
    assert report == [{"path": "runs/detect/train/weights/last.pt", "modules": {"soca": ["SOCA"]}, "error": None}]
    with pytest.raises(YolopatchError, match="1 checkpoint\\(s\\) in this tree need soca"):
        revert(root, ["soca"])
    assert revert(root, ["soca"], force=True) == 0
