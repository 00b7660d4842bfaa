"""YOLOv7 trees (tests/yolov7_trees.py): found in every layout, the parse_model and common.py edits on the
real files (before/after, idempotent, round trip), and the YOLOv7 dialect of the variant YAMLs (widths,
p-levels, sppf, default placements by meaning, every absolute index remapped, the cfg/deploy twin,
the old -> new index map). Pure and fast: nothing is built here (test_yolov7_builds.py builds).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Callable, List

import pytest

from tests import yolov7_trees
from tests.yolov7_trees import yolov7_tree  # noqa: F401  (the fixture)
from yolopatch import catalog, engine, variants
from yolopatch.errors import YolopatchError
from yolopatch.state import APPLIED, Sources, module_states
from yolopatch.targets import yolov7
from yolopatch.targets.locate import open_target
from yolopatch.transforms import yolo_py
from yolopatch.tree import locate

KINDS = sorted(yolov7_trees.TREES)


def cfg(relative: str) -> str:
    """A YAML of the checkout's cfg/, as text."""
    return (yolov7_trees.source_tree("checkout") / "cfg" / relative).read_bytes().decode("utf-8")


def yolo_text(kind: str) -> str:
    return (yolov7_trees.models_dir(kind, yolov7_trees.source_tree(kind)) / "yolo.py").read_bytes().decode("utf-8")


# --------------------------------------------------------------------------------------------
# Finding the tree


@pytest.mark.parametrize("kind", KINDS)
def test_every_layout_is_found_from_root_models_and_package(kind: str) -> None:
    root = yolov7_trees.source_tree(kind)
    package = yolov7_trees.TREES[kind].package
    expected_layout = yolov7.PACKAGE if package else yolov7.CHECKOUT
    starts = [root, yolov7_trees.models_dir(kind, root)] + ([root / package] if package else [])
    for start in starts:
        target = open_target(start)
        assert isinstance(target, yolov7.Yolov7Target), start
        assert (target.tree.root, target.tree.layout, target.tree.package) == (root, expected_layout, package)
        assert target.tree.yolo_py == yolov7_trees.models_dir(kind, root) / "yolo.py"
    assert target.codebase == "yolov7" and target.title == "YOLOv7"
    assert target.tree.models_module == (f"{package}.models" if package else "models")
    assert target.tree.training_dir.is_dir() == (kind in ("checkout", "sas-yolov7"))


@pytest.mark.parametrize("kind", ["checkout", "yolov7-package"])
def test_yolov5_only_commands_refuse_a_yolov7_tree_in_one_line(kind: str) -> None:
    """Before this target existed a YOLOv7 checkout passed as YOLOv5; commands not on the seam yet refuse it."""
    with pytest.raises(YolopatchError, match="this is a YOLOv7 tree") as caught:
        locate(yolov7_trees.source_tree(kind))
    assert "supports YOLOv5 trees only" in str(caught.value) and "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# The Python edits, on the real files


@pytest.mark.parametrize("kind", KINDS)
def test_parse_model_branch_before_after_idempotent_and_round_trip(kind: str) -> None:
    original = yolo_text(kind)
    facts = yolo_py.facts(original)
    assert facts.container == "list" and not facts.explicit_common_imports
    patched = yolo_py.register(original, "SOCA", "soca")
    newline = "\r\n" if "\r\n" in original else "\n"
    assert (newline == "\r\n") == (kind == "yolov7-easy")
    before, after = original.split(newline), patched.split(newline)
    operations = [op for op in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes()
                  if op[0] != "equal"]
    assert [op[0] for op in operations] == ["insert"]  # lines added in one place, nothing else touched
    at, end = operations[0][3], operations[0][4]
    assert [line.strip() for line in after[at:end]] == ["elif m is SOCA:  # yolopatch: soca", "c1 = ch[f]",
                                                        "c2 = c1", "args = [c1, c2, *args[1:]]"]
    assert after[at - 2].strip() == "elif m is Expand:" and after[end].strip() == "else:"  # before the last else
    assert after[:at] + after[end:] == before
    assert yolo_py.register(patched, "SOCA", "soca") == patched
    assert yolo_py.unregister(patched, "SOCA", "soca") == original
    assert yolo_py.registered_keys(patched)["soca"].registration == "width"


def test_engine_applies_every_module_idempotently_and_reverts_to_the_same_bytes() -> None:
    tree = open_target(yolov7_trees.source_tree("checkout")).tree
    sources = Sources.read(tree)  # type: ignore[arg-type]
    specs = catalog.all_modules()
    common, yolo = engine.patched_sources(sources, specs)
    patched = Sources(tree, common, yolo)  # type: ignore[arg-type]
    assert {state.status for state in module_states(patched).values()} == {APPLIED}
    assert engine.patched_sources(patched, specs) == (common, yolo)
    assert engine.reverted_sources(patched, [spec.key for spec in specs]) == (sources.common, sources.yolo)


# --------------------------------------------------------------------------------------------
# The YOLOv7 dialect


@pytest.mark.parametrize("name, p_levels, sppf, widths", [
    ("training/yolov7.yaml", {"p3": 102, "p4": 103, "p5": 104}, 51, [256, 512, 1024]),
    ("deploy/yolov7.yaml", {"p3": 102, "p4": 103, "p5": 104}, 51, [256, 512, 1024]),
    ("training/yolov7-tiny.yaml", {"p3": 74, "p4": 75, "p5": 76}, 37, [128, 256, 512]),  # SP block's output
    ("training/yolov7x.yaml", {"p3": 118, "p4": 119, "p5": 120}, 59, [320, 640, 1280]),
    # IAuxDetect reads 8 layers: the lead heads, then the auxiliary ones
    ("training/yolov7-w6.yaml", {"p3": 114, "p4": 115, "p5": 116, "p6": 117}, 47, [256, 512, 768, 1024]),
    ("deploy/yolov7-e6e.yaml", {"p3": 257, "p4": 258, "p5": 259, "p6": 260}, 112, [320, 640, 960, 1280]),
])
def test_yolov7_yamls_read_by_meaning(name: str, p_levels: dict, sppf: int, widths: List[int]) -> None:
    base = variants.parse_base(cfg(name), name)
    assert base.dialect == variants.YOLOV7
    assert base.p_levels == p_levels and base.sppf_index == sppf
    assert [base.widths[index] for index in p_levels.values()] == widths


def test_widths_and_strides_through_yolov7_blocks() -> None:
    """Worked out by hand from the YAMLs: ELAN Concats sum their four 64-wide inputs, MP keeps the width and
    halves, the MP/Conv-s2 Concat takes its first input's stride, SPPCSPC is 512; yolov7-tiny's SP pools keep
    stride 1 and their Concat is four times 256."""
    seven = variants.parse_base(cfg("training/yolov7.yaml"), "yolov7.yaml")
    strides = variants.strides(seven.layers, seven.dialect)
    assert [seven.widths[i] for i in (10, 11, 12, 16, 50, 51)] == [256, 256, 256, 256, 1024, 512]
    assert [strides[i] for i in (3, 11, 12, 16, 50, 51)] == [4, 4, 8, 8, 32, 32]
    tiny = variants.parse_base(cfg("training/yolov7-tiny.yaml"), "yolov7-tiny.yaml")
    tiny_strides = variants.strides(tiny.layers, tiny.dialect)
    assert [tiny.widths[i] for i in (7, 8, 34, 37)] == [64, 64, 1024, 256]
    assert [tiny_strides[i] for i in (7, 8, 31, 37)] == [4, 8, 32, 32]


def test_yolov5_dialect_would_get_yolov7_widths_wrong() -> None:
    """What the issue saw: read as YOLOv5, SPPCSPC/RepConv keep their input's width and MP no stride."""
    text = cfg("training/yolov7.yaml")
    as_v5 = variants.parse_base(text, "yolov7.yaml", dialect=variants.YOLOV5)
    as_v7 = variants.parse_base(text, "yolov7.yaml")
    assert as_v7.widths[51] == 512 and as_v5.widths[51] != 512  # SPPCSPC
    assert as_v7.widths[102] == 256 and as_v5.widths[102] != 256  # RepConv
    assert as_v5.sppf_index is None and as_v7.sppf_index == 51


@pytest.mark.parametrize("key, base_name, expected", [
    ("se", "yolov7.yaml", ("layer:50",)),  # backbone:8 on yolov5s: the last backbone layer at stride 32
    ("se", "yolov7-tiny.yaml", ("layer:28",)),
    ("double-attention", "yolov7.yaml", ("layer:11",)),  # backbone:2: the end of the P2/4 stage
    ("double-attention", "yolov7-tiny.yaml", ("layer:7",)),
    ("soca", "yolov7.yaml", ("p5",)),
    ("lska", "yolov7-tiny.yaml", ("sppf",)),
])
def test_default_placements_by_meaning(key: str, base_name: str, expected: tuple) -> None:
    base = variants.parse_base(cfg(f"training/{base_name}"), base_name)
    assert yolov7.default_positions(variants.load_spec(key).placement, base) == expected


def _absolute_sources(layers: List[list]) -> List[List[int]]:
    return [variants.resolve_from(row[0], index) for index, row in enumerate(layers)]


@pytest.mark.parametrize("name", ["training/yolov7.yaml", "training/yolov7-tiny.yaml", "training/yolov7-w6.yaml",
                                  "deploy/yolov7-e6e.yaml"])
def test_every_absolute_index_is_remapped(name: str) -> None:
    """Modules at p3, p4, p5 and sppf at once: every base layer reads the same layers as before (through the
    inserted module where one was put on them), whatever the mix of absolute and relative indices."""
    text = cfg(name)
    base = variants.parse_base(text, name)
    placement = variants.Placement("CBAM", "cbam", (*base.p_levels, "sppf"))
    rendered = variants.render_variant(text, name, [placement], dialect=variants.YOLOV7)
    variant = variants.parse_base(rendered.split("\n", 1)[1], name)
    mapping = variants.index_map(text, name, [placement], variants.YOLOV7)
    inserted_after = {mapping[index] + 1: index for index in [*base.p_levels.values(), base.sppf_index]}
    assert len(variant.layers) == len(base.layers) + len(base.p_levels) + 1
    assert sorted(mapping.values()) == sorted(set(range(len(variant.layers))) - set(inserted_after))
    reads_through = {after: new for new, after in inserted_after.items()}
    for old, sources in enumerate(_absolute_sources(list(base.layers))):
        new_sources = _absolute_sources(list(variant.layers))[mapping[old]]
        assert new_sources == [reads_through.get(s, mapping.get(s, s)) if s >= 0 else s for s in sources], old
        assert variant.layers[mapping[old]][1:] == list(base.layers[old][1:])
    for new, after in inserted_after.items():
        assert variant.layers[new] == [-1, 1, "CBAM", [base.widths[after]]]
    head = variant.layers[variant.detect_index]
    assert head[0] == [reads_through[index] for index in base.layers[base.detect_index][0][:len(base.p_levels)]] + \
        [mapping[index] for index in base.layers[base.detect_index][0][len(base.p_levels):]]


def test_index_map_of_a_known_variant() -> None:
    """SE after layer 50 of yolov7.yaml: 0..50 stay, SPPCSPC 51 -> 52, IDetect 105 -> 106."""
    mapping = variants.index_map(cfg("training/yolov7.yaml"), "yolov7.yaml",
                                 [variants.Placement("SE", "se", ("layer:50",))], variants.YOLOV7)
    assert [mapping[i] for i in (0, 50, 51, 104, 105)] == [0, 50, 52, 105, 106]


@pytest.mark.parametrize("key", ["se", "soca", "cbam", "lsk"])
def test_deploy_twin_has_the_same_insertion(yolov7_tree: Callable[..., Path], key: str) -> None:
    """yolov7.yaml and yolov7-tiny.yaml differ from their cfg/deploy twins only in the head (IDetect ->
    Detect): so do their variants, and the index maps are the same."""
    target = open_target(yolov7_tree("checkout"))
    tree: yolov7.Yolov7Tree = target.tree  # type: ignore[assignment]
    changes = target.plan_variants([catalog.get(key)], bases=(), scales=None, positions=None)
    by_path = {change.path: change.new for change in changes}
    for stem in ("yolov7", "yolov7-tiny"):
        training = by_path[tree.training_dir / f"{stem}-{key}.yaml"]
        deploy = by_path[tree.deploy_dir / f"{stem}-{key}.yaml"]
        assert training is not None and deploy is not None
        assert training.split("\n", 1)[1].replace("IDetect", "Detect") == deploy.split("\n", 1)[1]
    registry = by_path[tree.state_dir / "variants.json"]
    assert registry is not None and f"cfg/deploy/yolov7-tiny-{key}.yaml" in registry


def test_detect_dialect_tells_yolov7_from_yolov5() -> None:
    import yaml

    for name in ("training/yolov7.yaml", "deploy/yolov7-tiny.yaml", "training/yolov7-e6.yaml"):
        assert variants.detect_dialect(yaml.safe_load(cfg(name))) == variants.YOLOV7, name
    v5 = {"backbone": [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "SPPF", [64]]], "head": [[[0, 1], 1, "Detect", []]]}
    assert variants.detect_dialect(v5) == variants.YOLOV5
