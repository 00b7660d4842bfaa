"""yolopatch.checkpoints: pickle globals without unpickling, what a tree's checkpoints need, layer maps.

The layer maps are checked against the rendered variant text (a separate code path: text edits on
the YAML), on real YOLOv5 base YAMLs; the probe's tensor move is checked on small state dicts.
"""

from __future__ import annotations

import io
import pickle
import sys
import types
from pathlib import Path
from typing import Any, Iterator, List, Sequence, Tuple

import pytest
import torch
import yaml

from tests import yolov5_trees
from yolopatch import catalog, checkpoints, variants, weights_probe
from yolopatch.checkpoints import YOLOV5, Insertion

CLASSES = {"soca": "SOCA", "sge": "SpatialGroupEnhance", "double-attention": "DoubleAttention", "gam": "GAM",
           "sea-attention": "SeaAttention"}


# --------------------------------------------------------------------------------------------
# Pickle globals


@pytest.fixture
def fake_common(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """A module named ``models.common`` holding classes named like yolopatch's (and YOLOv5's Conv)."""
    package, module = types.ModuleType("models"), types.ModuleType("models.common")
    for name in ("SOCA", "SeaAttentionConvBN", "SeaAttention", "Conv"):
        cls = type(name, (), {"__module__": "models.common"})
        setattr(module, name, cls)
    package.common = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "models", package)
    monkeypatch.setitem(sys.modules, "models.common", module)
    yield module


def _objects(module: types.ModuleType) -> List[Any]:
    return [module.Conv(), module.SeaAttentionConvBN(), module.SOCA(), module.SeaAttention(), {"x": [1, 2]}]


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_pickle_globals_names_every_class(fake_common: types.ModuleType, protocol: int) -> None:
    data = pickle.dumps(_objects(fake_common), protocol=protocol)
    found = checkpoints.pickle_globals(io.BytesIO(data))
    assert {("models.common", name) for name in ("Conv", "SeaAttentionConvBN", "SOCA", "SeaAttention")} <= found
    # protocol 4+ writes the module name once and fetches it from the memo for the other classes
    assert all(module == "models.common" for module, name in found if name in ("SOCA", "SeaAttention"))


def test_pickle_globals_does_not_unpickle(fake_common: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    data = pickle.dumps(_objects(fake_common), protocol=2)
    monkeypatch.delitem(sys.modules, "models.common")  # unpickling would now fail
    with pytest.raises((ModuleNotFoundError, AttributeError)):
        pickle.loads(data)
    assert ("models.common", "SOCA") in checkpoints.pickle_globals(io.BytesIO(data))


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_checkpoints_in_both_formats(fake_common: types.ModuleType, tmp_path: Path, zip_format: bool) -> None:
    path = tmp_path / "best.pt"
    torch.save({"model": fake_common.SOCA(), "weights": torch.ones(3)}, path,
               _use_new_zipfile_serialization=zip_format)
    found = checkpoints.checkpoint_globals(path)
    assert ("models.common", "SOCA") in found
    assert ("models.common", "SeaAttention") not in found


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "text.pt").write_text("not a checkpoint at all\n", encoding="utf-8")
    with pytest.raises(checkpoints.UnreadableCheckpoint):
        checkpoints.checkpoint_globals(tmp_path / "text.pt")
    needs = checkpoints.checkpoint_needs(tmp_path)
    assert [(item.path.name, item.modules, bool(item.error)) for item in needs] == [("text.pt", {}, True)]


def test_needed_modules_by_template_classes() -> None:
    owners = checkpoints.template_classes()
    assert owners["SOCA"] == "soca" and owners["SeaAttentionConvBN"] == "sea-attention"
    found = frozenset({("models.common", "SeaAttentionConvBN"), ("models.common", "SeaAttention"),
                       ("yolov5.models.common", "SOCA"), ("models.common", "Conv"),
                       ("somewhere.else", "GAM"), ("torch.nn.modules.conv", "Conv2d")})
    assert checkpoints.needed_modules(found, YOLOV5, owners) == {
        "sea-attention": ("SeaAttention", "SeaAttentionConvBN"), "soca": ("SOCA",)}


def test_find_checkpoints_where_yolov5_keeps_them(tmp_path: Path) -> None:
    for relative in ("runs/train/exp/weights/best.pt", "runs/train/exp2/weights/last.pt", "yolov5s.pt",
                     "runs/train/exp/other.pt", "models/yolov5s.pt", "runs/train/exp/weights/notes.txt"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    found = [path.relative_to(tmp_path.resolve()).as_posix() for path in checkpoints.find_checkpoints(tmp_path)]
    assert found == ["runs/train/exp/weights/best.pt", "runs/train/exp2/weights/last.pt", "yolov5s.pt"]


def test_checkpoint_needs_and_needing(fake_common: types.ModuleType, tmp_path: Path) -> None:
    weights = tmp_path / "runs" / "train" / "exp" / "weights"
    weights.mkdir(parents=True)
    torch.save({"model": fake_common.SOCA()}, weights / "best.pt")
    torch.save({"model": fake_common.Conv()}, tmp_path / "yolov5s.pt")
    needs = checkpoints.checkpoint_needs(tmp_path)
    assert {item.path.name: item.modules for item in needs} == {"best.pt": {"soca": ("SOCA",)}, "yolov5s.pt": {}}
    assert checkpoints.needing(needs, ["soca", "gam"]) == {"soca": [(weights / "best.pt").resolve()]}


# --------------------------------------------------------------------------------------------
# Layer maps, against the rendered variants


def _base(version: str = "7.0", relative: str = "models/yolov5s.yaml") -> variants.BaseModel:
    text = (yolov5_trees.source_tree(version, "checkout") / relative).read_text(encoding="utf-8")
    return variants.parse_base(text, Path(relative).name)


def _insertions(base: variants.BaseModel, *modules: Tuple[str, Sequence[str]]) -> List[Insertion]:
    return checkpoints.insertions_of(base, [variants.Placement(CLASSES[key], key, list(positions))
                                            for key, positions in modules])


def _rendered_rows(base: variants.BaseModel, *modules: Tuple[str, Sequence[str]]) -> List[list]:
    text = variants.render_variant(base.text, base.name, [(CLASSES[key], key, list(positions))
                                                          for key, positions in modules])
    data = yaml.safe_load(text)
    return data["backbone"] + data["head"]


MODULE_SETS = [
    (("soca", ("p5",)),),
    (("double-attention", ("backbone:2",)),),
    (("gam", ("p3", "p4", "p5")),),
    (("sge", ("p4", "p5")), ("soca", ("p5",))),  # two modules, chained on p5
    (("soca", ("sppf", "p3")), ("sea-attention", ("backbone:0", "p5"))),
]


@pytest.mark.parametrize("version,relative", [("7.0", "models/yolov5s.yaml"), ("5.0", "models/yolov5s.yaml"),
                                              ("7.0", "models/hub/yolov5s6.yaml")])
@pytest.mark.parametrize("modules", MODULE_SETS)
def test_base_layers_land_where_the_rendered_variant_has_them(version: str, relative: str,
                                                              modules: Sequence[Tuple[str, Sequence[str]]]) -> None:
    base = _base(version, relative)
    target = _insertions(base, *modules)
    option = checkpoints.transfer_candidates(base, target)[0]
    rows = _rendered_rows(base, *modules)
    assert option.description == base.name and checkpoints.rows_match(list(base.layers), option.rows)
    assert sorted(option.layer_map) == list(range(len(base.layers)))
    for j, t in option.layer_map.items():  # the same module with the same arguments
        assert rows[t][1:] == list(base.layers[j][1:]), (j, t)
    inserted = sorted(set(range(len(rows))) - set(option.layer_map.values()))
    assert sorted(rows[t][2] for t in inserted) == sorted(item.class_name for item in target)
    assert len(inserted) == len(target) and all(rows[t][0] == -1 for t in inserted)
    assert checkpoints.rows_match(rows, checkpoints.expected_rows(base, target))


def test_variant_of_a_variant_keeps_its_inserted_layer() -> None:
    base = _base()
    target = _insertions(base, ("sge", ("p4", "p5")), ("soca", ("p5",)))
    options = checkpoints.transfer_candidates(base, target)
    soca = next(option for option in options if option.description == "yolov5s.yaml with soca at p5")
    source_rows, target_rows = _rendered_rows(base, ("soca", ("p5",))), \
        _rendered_rows(base, ("sge", ("p4", "p5")), ("soca", ("p5",)))
    assert checkpoints.rows_match(source_rows, soca.rows)
    assert not checkpoints.rows_match(source_rows, options[0].rows)  # the plain base does not match
    assert sorted(soca.layer_map) == list(range(len(source_rows)))  # every source layer has a place
    for j, t in soca.layer_map.items():
        assert source_rows[j][1:3] == target_rows[t][1:3], (j, t)
    assert source_rows[24][2] == "SOCA" and target_rows[soca.layer_map[24]][2] == "SOCA"


def test_a_module_the_target_lacks_has_no_counterpart() -> None:
    base = _base()
    soca_only = _insertions(base, ("soca", ("p5",)))
    target = _insertions(base, ("sge", ("p4", "p5")))
    options = checkpoints.transfer_candidates(base, target, [soca_only])
    option = options[-1]
    assert option.description == "yolov5s.yaml with soca at p5"
    assert 24 not in option.layer_map and len(option.layer_map) == len(base.layers)
    # the subsets of the target come first: base, sge at p4, sge at p5, both
    assert [item.description for item in options] == [
        "yolov5s.yaml", "yolov5s.yaml with sge at p4", "yolov5s.yaml with sge at p5", "yolov5s.yaml with sge at p4,p5",
        "yolov5s.yaml with soca at p5"]


def test_rows_match_wildcards_and_refuses_other_models() -> None:
    v7, v5 = _base("7.0"), _base("5.0")
    assert checkpoints.rows_match([list(row) for row in v7.layers], list(v7.layers))
    assert not checkpoints.rows_match([list(row) for row in v5.layers], list(v7.layers))  # Focus stem vs 6x6 conv
    assert checkpoints.rows_match([[-1, 1, "SOCA", [1024, 8]]], [[-1, 1, "SOCA", None]])
    assert checkpoints.rows_match([[-1, 1, "GAM", [1]]], [None])
    assert not checkpoints.rows_match([[-1, 1, "GAM", [1]]], [[-1, 1, "SOCA", None]])
    for actual, expected in ([[[-1, 1, "SOCA", [8]]], [[-1, 1, "SOCA", None]]], [[[-2, 1, "C3", []]], [None, None]]):
        assert weights_probe.rows_match(actual, expected) == checkpoints.rows_match(actual, expected)


# --------------------------------------------------------------------------------------------
# The probe's tensor move


def test_transfer_moves_by_the_map_and_names_mismatches() -> None:
    source = {"model.0.w": torch.arange(2.0), "model.1.w": torch.arange(3.0), "model.1.b": torch.ones(1),
              "model.2.w": torch.arange(4.0), "model.2.anchors": torch.ones(2)}
    target = {"model.0.w": torch.zeros(2), "model.1.fresh": torch.zeros(7), "model.2.w": torch.zeros(3),
              "model.2.b": torch.zeros(1), "model.3.w": torch.zeros(5), "model.3.anchors": torch.zeros(2)}
    layers = [torch.nn.Identity(), torch.nn.ReLU(), torch.nn.Tanh()]
    new, report = weights_probe.transfer(source, target, {0: 0, 1: 2, 2: 3}, layers,
                                         [torch.nn.Identity(), torch.nn.Sigmoid(), torch.nn.ReLU(), torch.nn.Tanh()])
    assert torch.equal(new["model.2.w"], torch.arange(3.0)) and torch.equal(new["model.2.b"], torch.ones(1))
    assert torch.equal(new["model.0.w"], torch.arange(2.0)) and torch.equal(new["model.3.anchors"], torch.ones(2))
    assert torch.equal(new["model.1.fresh"], torch.zeros(7)) and torch.equal(new["model.3.w"], torch.zeros(5))
    by_source = {entry["source"]: entry for entry in report["layers"]}
    assert [(j, e["target"], e["tensors"], e["transferred"]) for j, e in sorted(by_source.items())] == [
        (0, 0, 1, 1), (1, 2, 2, 2), (2, 3, 2, 1)]
    assert by_source[2]["mismatches"] == [["model.2.w", [4], "model.3.w", [5]]]
    assert by_source[1]["class"] == "ReLU" and by_source[1]["target_class"] == "ReLU"
    assert report["fresh"] == [{"target": 1, "class": "Sigmoid", "tensors": 1}]


def test_catalogue_classes_are_all_owned() -> None:
    owners = checkpoints.template_classes()
    assert {spec.class_name for spec in catalog.all_modules()} <= set(owners)
    assert set(owners.values()) == {spec.key for spec in catalog.all_modules()}


# --------------------------------------------------------------------------------------------
# Ultralytics: yolopatch's classes under ultralytics.nn.modules.yolopatch, and what 8.4's safe loader refuses


def _fake_module(monkeypatch: pytest.MonkeyPatch, dotted: str, *names: str) -> types.ModuleType:
    """A module ``dotted`` (its parent packages too, where absent) holding empty classes ``names``."""
    parts = dotted.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        if name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    module = sys.modules[dotted]
    for name in names:
        setattr(module, name, type(name, (), {"__module__": dotted}))
    return module


@pytest.fixture
def fake_ultralytics(monkeypatch: pytest.MonkeyPatch) -> Tuple[types.ModuleType, ...]:
    """Classes where a patched Ultralytics tree pickles them, and where hand-pasted ones end up."""
    return (_fake_module(monkeypatch, "ultralytics.nn.modules.yolopatch", "SOCA", "CBAM", "SeaAttentionConvBN"),
            _fake_module(monkeypatch, "ultralytics.nn.modules.block", "C2f"),
            _fake_module(monkeypatch, "ultralytics.nn.tasks", "DetectionModel"),
            _fake_module(monkeypatch, "ultralytics.nn.attention", "SOCA"),
            _fake_module(monkeypatch, "my_blocks", "Block"),
            _fake_module(monkeypatch, "ultralytics.nn.modules.extra.deeper", "Gate"))


def test_ultralytics_needs_only_classes_under_its_module_file(fake_ultralytics: Tuple[types.ModuleType, ...],
                                                              tmp_path: Path) -> None:
    ours, block, tasks, pasted, _, _ = fake_ultralytics
    weights = tmp_path / "runs" / "detect" / "train" / "weights"
    weights.mkdir(parents=True)
    torch.save({"model": [tasks.DetectionModel(), block.C2f(), ours.SOCA(), ours.CBAM()], "ema": None},
               weights / "last.pt")
    torch.save({"model": [tasks.DetectionModel(), pasted.SOCA()]}, tmp_path / "pasted.pt")
    torch.save({"model": [ours.SeaAttentionConvBN()]}, tmp_path / "runs" / "detect" / "train" / "not-weights.pt")
    needs = checkpoints.checkpoint_needs(tmp_path, checkpoints.ULTRALYTICS)
    assert {item.path.name: item.modules for item in needs} == {
        "last.pt": {"cbam": ("CBAM",), "soca": ("SOCA",)}, "pasted.pt": {}}
    # YOLOv5's rule does not see Ultralytics' classes, and the other way round
    assert all(not item.modules for item in checkpoints.checkpoint_needs(tmp_path, YOLOV5))
    assert checkpoints.format_for("ultralytics") is checkpoints.ULTRALYTICS
    assert checkpoints.format_for("yolov5") is YOLOV5


@pytest.mark.parametrize("zip_format", [True, False])
def test_foreign_ultralytics_classes(fake_ultralytics: Tuple[types.ModuleType, ...], tmp_path: Path,
                                     zip_format: bool) -> None:
    ours, block, tasks, pasted, mine, deeper = fake_ultralytics
    allowed = {"model": tasks.DetectionModel(), "layers": [block.C2f(), ours.SOCA(), torch.nn.Conv2d(1, 1, 1)],
               "sets": {1, 2}, "numbers": torch.ones(2, dtype=torch.float16), "ordered": __import__("collections")
               .OrderedDict(a=1), "path": Path("x")}
    torch.save(allowed, tmp_path / "fine.pt", _use_new_zipfile_serialization=zip_format)
    assert checkpoints.foreign_ultralytics_classes(tmp_path / "fine.pt") == []
    torch.save({**allowed, "extra": [pasted.SOCA(), mine.Block(), deeper.Gate(), io.BytesIO]},
               tmp_path / "foreign.pt", _use_new_zipfile_serialization=zip_format)
    assert checkpoints.foreign_ultralytics_classes(tmp_path / "foreign.pt") == [
        "_io.BytesIO", "my_blocks.Block", "ultralytics.nn.attention.SOCA", "ultralytics.nn.modules.extra.deeper.Gate"]
    (tmp_path / "text.pt").write_text("no checkpoint\n", encoding="utf-8")
    with pytest.raises(checkpoints.UnreadableCheckpoint):
        checkpoints.foreign_ultralytics_classes(tmp_path / "text.pt")


@pytest.mark.parametrize("module,name,safe", [
    ("ultralytics.nn.modules.yolopatch", "SOCA", True), ("ultralytics.nn.modules", "C2f", True),
    ("ultralytics.nn.tasks", "DetectionModel", True), ("ultralytics.utils.loss", "v8DetectionLoss", True),
    ("torch.nn.modules.conv", "Conv2d", True), ("torch._utils", "_rebuild_tensor_v2", True),
    ("builtins", "set", True), ("ultralytics.utils", "IterableSimpleNamespace", True),
    ("ultralytics.nn.attention", "SOCA", False), ("ultralytics.utils", "LOGGER", False),
    ("models.common", "SOCA", False), ("torch.ao.nn.quantized.modules.conv", "Conv2d", False),
    ("builtins", "eval", False), ("torchvision.models.resnet", "ResNet", False),
])
def test_safe_for_ultralytics_follows_the_84_rule(module: str, name: str, safe: bool) -> None:
    assert checkpoints.safe_for_ultralytics(module, name) is safe
