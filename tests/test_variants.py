"""yolopatch.variants: positions, the index remap, and rendering on real YOLOv5 base YAMLs."""

from __future__ import annotations

import itertools
import random
from functools import lru_cache
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import pytest
import yaml

from tests import yolov5_trees
from yolopatch import variants
from yolopatch.errors import YolopatchError

CLASSES: Dict[str, str] = {
    "soca": "SOCA",
    "sge": "SpatialGroupEnhance",
    "double-attention": "DoubleAttention",
    "gam": "GAM",
    "sea-attention": "SeaAttention",
}
DEFAULTS: Dict[str, Tuple[str, ...]] = {
    "soca": ("p5",),
    "sge": ("p4", "p5"),
    "double-attention": ("backbone:2",),
    "gam": ("p3", "p4", "p5"),
    "sea-attention": ("p4", "p5"),
}


@lru_cache(maxsize=None)
def base_text(version: str, relative: str) -> str:
    """A base YAML of a cached, read-only YOLOv5 tree, as YOLOv5 ships it."""
    return (yolov5_trees.source_tree(version, "checkout") / relative).read_text(encoding="utf-8")


def render(text: str, name: str, *modules: Tuple[str, Sequence[str]], args: Sequence[Any] = ()) -> str:
    return variants.render_variant(text, name, [(CLASSES[key], key, list(positions), list(args))
                                                for key, positions in modules])


def layers_of(text: str) -> List[list]:
    data = yaml.safe_load(text)
    return data["backbone"] + data["head"]


def sources(from_: Any, index: int) -> List[int]:
    """Absolute layers a row reads, written here independently of the code under test."""
    entries = from_ if isinstance(from_, list) else [from_]
    return [entry if entry >= 0 else index + entry for entry in entries]


def detect_row(layers: List[list]) -> Tuple[int, list]:
    index = max(i for i, row in enumerate(layers) if row[2] in ("Detect", "Segment"))
    return index, layers[index]


def row_comments(text: str) -> List[Optional[str]]:
    """The trailing comment of every layer row, found from the YAML nodes' end marks."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    nodes = {key.value: value for key, value in root.value}
    comments: List[Optional[str]] = []
    for node in nodes["backbone"].value + nodes["head"].value:
        end = node.end_mark.index
        line_end = text.find("\n", end)
        tail = text[end:line_end if line_end >= 0 else len(text)]
        comments.append(tail.split("#", 1)[1].strip() if "#" in tail else None)
    return comments


def leading_number(comment: Optional[str]) -> Optional[int]:
    digits = "".join(itertools.takewhile(str.isdigit, comment or ""))
    return int(digits) if digits else None


def assert_same_graph(base: List[list], new: List[list], inserted: Set[int]) -> None:
    """Every base layer reads the same layers as before, through any modules put on them."""
    base_of: Dict[int, int] = {}
    next_base = 0
    for index in range(len(new)):
        if index in inserted:
            assert new[index][0] == -1, f"inserted layer {index} must read -1"
            base_of[index] = base_of[index - 1]
        else:
            base_of[index] = next_base
            next_base += 1
    assert next_base == len(base)
    for index, row in enumerate(new):
        if index in inserted:
            continue
        reads = sources(row[0], index)
        assert all(0 <= source < index or source == -1 == index - 1 for source in reads), (index, row)
        assert [base_of.get(source, source) for source in reads] == sources(base[base_of[index]][0], base_of[index])
        assert all(source + 1 not in inserted for source in reads if source >= 0), \
            f"layer {index} bypasses a module inserted on its input: {row}"


# --------------------------------------------------------------------------------------------
# The blog posts' placements on the real 7.0 yolov5s.yaml


def test_soca_at_p5_is_layer_24_and_detect_reads_it() -> None:
    layers = layers_of(render(base_text("7.0", "models/yolov5s.yaml"), "yolov5s.yaml", ("soca", ["p5"])))
    assert layers[24] == [-1, 1, "SOCA", [1024]]
    assert detect_row(layers) == (25, [[17, 20, 24], 1, "Detect", ["nc", "anchors"]])


def test_sge_on_p4_p5() -> None:
    layers = layers_of(render(base_text("7.0", "models/yolov5s.yaml"), "yolov5s.yaml", ("sge", ["p4", "p5"])))
    assert layers[21] == [-1, 1, "SpatialGroupEnhance", [512]]
    assert layers[25] == [-1, 1, "SpatialGroupEnhance", [1024]]
    assert detect_row(layers)[1][0] == [17, 21, 25]
    assert [row[0] for row in layers if row[2] == "Concat"] == [[-1, 6], [-1, 4], [-1, 14], [-1, 10]]


def test_gam_on_p3_p4_p5() -> None:
    layers = layers_of(render(base_text("7.0", "models/yolov5s.yaml"), "yolov5s.yaml", ("gam", ["p3", "p4", "p5"])))
    assert [layers[i] for i in (18, 22, 26)] == [[-1, 1, "GAM", [256]], [-1, 1, "GAM", [512]], [-1, 1, "GAM", [1024]]]
    assert detect_row(layers)[1][0] == [18, 22, 26]
    # The post writes [-1, 5] and [-1, 3] here; the backbone is untouched, so they stay 6 and 4.
    assert [row[0] for row in layers if row[2] == "Concat"] == [[-1, 6], [-1, 4], [-1, 14], [-1, 10]]


def test_double_attention_after_the_first_c3() -> None:
    data = yaml.safe_load(render(base_text("7.0", "models/yolov5s.yaml"), "yolov5s.yaml",
                                 ("double-attention", ["backbone:2"])))
    layers = data["backbone"] + data["head"]
    assert len(data["backbone"]) == 11 and data["backbone"][3] == [-1, 1, "DoubleAttention", [128]]
    assert [row[0] for row in layers if row[2] == "Concat"] == [[-1, 7], [-1, 5], [-1, 15], [-1, 11]]
    assert detect_row(layers)[1][0] == [18, 21, 24]


def test_rendered_text_keeps_the_upstream_style() -> None:
    text = render(base_text("7.0", "models/yolov5s.yaml"), "yolov5s.yaml", ("sge", ["p4", "p5"]))
    lines = text.splitlines()
    assert lines[0].startswith("# yolopatch: generated from yolov5s.yaml with sge at p4,p5 (yolopatch ")
    assert lines[1] == "# YOLOv5 by Ultralytics, AGPL-3.0 license"
    assert "   [-1, 3, C3, [512, False]],  # 20 (P4/16-medium)" in lines
    assert "   [-1, 1, SpatialGroupEnhance, [512]],  # 21 SpatialGroupEnhance at p4" in lines
    assert "   [-1, 3, C3, [1024, False]],  # 24 (P5/32-large)" in lines
    assert "   [[17, 21, 25], 1, Detect, [nc, anchors]],  # Detect(P3, P4, P5)" in lines
    assert "   [[-1, 4], 1, Concat, [1]],  # cat backbone P3" in lines
    assert "" in lines[30:]  # the head's blank separator lines survive


# --------------------------------------------------------------------------------------------
# The pure remap


def row(from_: Any, module: str = "Conv") -> list:
    return [from_, 1, module, [8]]


CHAIN = [row(-1), row(-1), row(-1), row(-2), row(-3), row([-1, 2]), row([3, 4, 5], "Detect")]


def test_relative_references_crossing_the_insertion_point_keep_their_layer() -> None:
    new = variants.insert_layers(CHAIN, [(2, row(-1, "M"))])
    assert [r[0] for r in new] == [-1, -1, -1, -1, -3, -4, [-1, 3], [4, 5, 6]]
    # base 3 read -2 (layer 1): now at 4 it reads -3; base 4 read -3 (layer 1): -4;
    # base 5 read [-1, 2]: 2 carries M now, so it reads 3 (M) absolutely.


def test_a_relative_reference_to_the_insertion_layer_reads_the_module() -> None:
    new = variants.insert_layers(CHAIN, [(1, row(-1, "M"))])
    assert [r[0] for r in new] == [-1, -1, -1, -1, -2, -3, [-1, 3], [4, 5, 6]]
    assert new[2][2] == "M"
    # base 3's -2 and base 4's -3 pointed at layer 1; they now reach M at 2, so the numbers stay.
    assert_same_graph(CHAIN, new, {2})


def test_several_insertions_compose_in_one_pass() -> None:
    together = variants.insert_layers(CHAIN, [(4, row(-1, "B")), (1, row(-1, "A"))])
    first = variants.insert_layers(CHAIN, [(1, row(-1, "A"))])
    stepwise = variants.insert_layers(first, [(5, row(-1, "B"))])  # base 4 is at 5 after the first step
    assert together == stepwise
    assert_same_graph(CHAIN, together, {2, 6})


def test_insertions_on_one_layer_chain_in_order() -> None:
    new = variants.insert_layers(CHAIN, [(3, row(-1, "M1")), (3, row(-1, "M2"))])
    assert [r[2] for r in new[3:6]] == ["Conv", "M1", "M2"]
    assert new[-1][0] == [5, 6, 7]  # Detect reads M2, the end of the chain on layer 3
    assert new[6][0] == -5  # base 4 (-3 -> layer 1) is now at 6
    assert_same_graph(CHAIN, new, {4, 5})


def test_the_input_reference_of_layer_0_stays() -> None:
    new = variants.insert_layers(CHAIN, [(0, row(-1, "M"))])
    assert new[0][0] == -1 and new[1] == row(-1, "M") and new[2][0] == -1


def test_insert_layers_returns_new_lists() -> None:
    original = [list(r) for r in CHAIN]
    variants.insert_layers(CHAIN, [(2, row(-1, "M"))])
    assert CHAIN == original


@pytest.mark.parametrize("insertion", [(7, row(-1, "M")), (-1, row(-1, "M")), (2, row(-2, "M"))])
def test_insert_layers_rejects_impossible_insertions(insertion: Tuple[int, list]) -> None:
    with pytest.raises(ValueError):
        variants.insert_layers(CHAIN, [insertion])


def _random_layers(rng: random.Random, count: int) -> List[list]:
    layers = [row(-1)]
    for index in range(1, count):
        picks = sorted(rng.sample(range(index), k=min(index, rng.randint(1, 3))))
        entries = [pick if rng.random() < 0.5 else pick - index for pick in picks]
        layers.append(row(entries if len(entries) > 1 or rng.random() < 0.3 else entries[0]))
    return layers


def test_random_graphs_keep_their_meaning() -> None:
    rng = random.Random(20240607)
    for _ in range(300):
        layers = _random_layers(rng, rng.randint(2, 14))
        points = [rng.randrange(len(layers)) for _ in range(rng.randint(1, 5))]
        new = variants.insert_layers(layers, [(point, row(-1, "M")) for point in points])
        inserted = {index for index, r in enumerate(new) if r[2] == "M"}
        assert len(new) == len(layers) + len(points)
        assert_same_graph(layers, new, inserted)
        for index, (old_from, new_from) in enumerate(zip([r[0] for r in layers], [r[0] for r in new if r[2] != "M"])):
            kinds = [entry < 0 for entry in (old_from if isinstance(old_from, list) else [old_from])]
            assert kinds == [entry < 0 for entry in (new_from if isinstance(new_from, list) else [new_from])]


# --------------------------------------------------------------------------------------------
# Positions on real bases


@pytest.mark.parametrize("relative, expected", [
    ("models/yolov5s.yaml", {"p3": 17, "p4": 20, "p5": 23}),
    ("models/hub/yolov5s6.yaml", {"p3": 23, "p4": 26, "p5": 29, "p6": 32}),
    ("models/hub/yolov5-p2.yaml", {"p2": 21, "p3": 24, "p4": 27, "p5": 30}),
    ("models/hub/yolov5-p7.yaml", {"p3": 29, "p4": 32, "p5": 35, "p6": 38, "p7": 41}),
    ("models/hub/yolov5-p34.yaml", {"p3": 17, "p4": 20}),
    ("models/hub/yolov5-fpn.yaml", {"p3": 18, "p4": 14, "p5": 10}),
    ("models/hub/yolov3.yaml", {"p3": 27, "p4": 22, "p5": 15}),
    ("models/hub/yolov3-tiny.yaml", {"p4": 19, "p5": 15}),
    ("models/segment/yolov5s-seg.yaml", {"p3": 17, "p4": 20, "p5": 23}),
])
def test_p_levels_are_named_by_stride(relative: str, expected: Dict[str, int]) -> None:
    base = variants.parse_base(base_text("7.0", relative), relative.rsplit("/", 1)[1])
    assert base.p_levels == expected
    for position, index in expected.items():
        assert variants.resolve_position(base, position) == index


def test_named_and_numbered_positions() -> None:
    base = variants.parse_base(base_text("7.0", "models/yolov5s.yaml"), "yolov5s.yaml")
    assert variants.resolve_position(base, "sppf") == 9
    assert variants.resolve_position(base, "backbone:2") == 2
    assert variants.resolve_position(base, "layer:17") == 17
    assert variants.resolve_position(base, " P5 ") == 23
    assert variants.resolve_position(base, "Backbone : 9") == 9
    old = variants.parse_base(base_text("5.0", "models/yolov5s.yaml"), "yolov5s.yaml")
    assert variants.resolve_position(old, "sppf") == 8  # v5.0: SPP at 8, then C3
    offered = variants.offered_positions(base)
    assert offered[:4] == ["p3", "p4", "p5", "sppf"]
    assert "backbone:9" in offered and "layer:23" in offered and "layer:24" not in offered
    assert variants.describe_positions(base) == "p3, p4, p5, sppf, backbone:0..9, layer:0..23"


@pytest.mark.parametrize("position", ["p6", "p2", "layer:24", "layer:99", "backbone:10", "neck", "backbone:-1", ""])
def test_impossible_positions_list_what_the_base_offers(position: str) -> None:
    base = variants.parse_base(base_text("7.0", "models/yolov5s.yaml"), "yolov5s.yaml")
    with pytest.raises(YolopatchError) as caught:
        variants.resolve_position(base, position)
    assert "p3, p4, p5, sppf, backbone:0..9, layer:0..23" in str(caught.value)


def test_sppf_is_refused_where_there_is_none() -> None:
    base = variants.parse_base(base_text("7.0", "models/hub/yolov3-tiny.yaml"), "yolov3-tiny.yaml")
    with pytest.raises(YolopatchError, match="p4, p5, backbone:0..12, layer:0..19"):
        variants.resolve_position(base, "sppf")


def test_nominal_widths_follow_the_yaml() -> None:
    base = variants.parse_base(base_text("7.0", "models/yolov5s.yaml"), "yolov5s.yaml")
    assert base.widths[:10] == (64, 128, 128, 256, 256, 512, 512, 1024, 1024, 1024)
    assert base.widths[10:13] == (512, 512, 1024)  # Conv, Upsample keeps 512, Concat 512 + 512
    assert base.widths[24] is None  # Detect


# --------------------------------------------------------------------------------------------
# P6, P2, Segment and relative references in real files


def test_p6_model() -> None:
    text = base_text("7.0", "models/hub/yolov5s6.yaml")
    layers = layers_of(render(text, "yolov5s6.yaml", ("gam", ["p3", "p4", "p5", "p6"])))
    assert detect_row(layers)[1][0] == [24, 28, 32, 36]
    assert [layers[i][3] for i in (24, 28, 32, 36)] == [[256], [512], [768], [1024]]
    assert [row[0] for row in layers if row[2] == "Concat"] == [[-1, 8], [-1, 6], [-1, 4], [-1, 20],
                                                                [-1, 16], [-1, 12]]
    assert_same_graph(layers_of(text), layers, {24, 28, 32, 36})


def test_p2_model() -> None:
    text = base_text("7.0", "models/hub/yolov5-p2.yaml")
    layers = layers_of(render(text, "yolov5-p2.yaml", ("soca", ["p2"])))
    assert layers[22] == [-1, 1, "SOCA", [128]]
    assert detect_row(layers)[1][0] == [22, 25, 28, 31]
    assert_same_graph(layers_of(text), layers, {22})


def test_segment_head() -> None:
    text = base_text("7.0", "models/segment/yolov5s-seg.yaml")
    layers = layers_of(render(text, "yolov5s-seg.yaml", ("gam", ["p3", "p4", "p5"])))
    assert detect_row(layers) == (27, [[18, 22, 26], 1, "Segment", ["nc", "anchors", 32, 256]])


def test_relative_minus_two_in_yolov3_tiny() -> None:
    text = base_text("7.0", "models/hub/yolov3-tiny.yaml")
    layers = layers_of(render(text, "yolov3-tiny.yaml", ("soca", ["p5"])))
    assert layers[16] == [-1, 1, "SOCA", [512]]
    assert layers[17][0] == -3  # base 16 read -2 (layer 14, not the SOCA'd 15): now at 17, -3
    assert detect_row(layers)[1][0] == [20, 16]
    assert_same_graph(layers_of(text), layers, {16})


def test_relative_minus_two_reaching_the_insertion_layer_reads_the_module() -> None:
    text = base_text("7.0", "models/hub/yolov3.yaml")
    layers = layers_of(render(text, "yolov3.yaml", ("soca", ["layer:14"])))
    assert layers[15][2] == "SOCA" and layers[17][0] == -2  # base 16's -2 meant 14: it now reads SOCA
    assert_same_graph(layers_of(text), layers, {15})


def test_two_modules_on_one_layer_chain() -> None:
    text = render(base_text("7.0", "models/yolov5s.yaml"), "yolov5s.yaml", ("soca", ["p5"]), ("sge", ["p5"]))
    layers = layers_of(text)
    assert [r[2] for r in layers[23:27]] == ["C3", "SOCA", "SpatialGroupEnhance", "Detect"]
    assert layers[26][0] == [17, 20, 25]
    info = variants.parse_generated_header(text)
    assert info is not None and info.placements == (("soca", ("p5",)), ("sge", ("p5",)))


def test_a_layer_named_twice_for_one_module_is_refused() -> None:
    with pytest.raises(YolopatchError, match="same layer"):
        render(base_text("7.0", "models/yolov5s.yaml"), "yolov5s.yaml", ("soca", ["p5", "layer:23"]))


def test_args_follow_the_nominal_width() -> None:
    text = render(base_text("7.0", "models/yolov5s.yaml"), "yolov5s.yaml", ("soca", ["p5"]), args=[16, True, 0.5])
    assert layers_of(text)[24] == [-1, 1, "SOCA", [1024, 16, True, 0.5]]


# --------------------------------------------------------------------------------------------
# Layouts other than upstream's


BLOCK_STYLE = """\
nc: 2
depth_multiple: 1.0
width_multiple: 1.0
anchors: 1
backbone:
  - [-1, 1, Conv, [16, 3, 2]]  # 0-P1/2
  - [-1, 1, Conv, [32, 3, 2]]  # 1-P2/4
  - [-1, 1, Conv, [64, 3, 2]]  # 2-P3/8
head:
- [-1, 1, Conv, [64, 1, 1]]  # 3
- [[3], 1, Detect, [nc, anchors]]
"""


def test_block_style_lists() -> None:
    text = render(BLOCK_STYLE, "tiny.yaml", ("soca", ["p3"]), ("gam", ["backbone:0"]))
    layers = layers_of(text)
    assert [r[2] for r in layers] == ["Conv", "GAM", "Conv", "Conv", "Conv", "SOCA", "Detect"]
    assert layers[-1][0] == [5]
    assert "  - [-1, 1, GAM, [16]]  # 1 GAM at backbone:0" in text.splitlines()
    assert "- [-1, 1, SOCA, [64]]  # 5 SOCA at p3" in text.splitlines()
    assert [leading_number(c) for c in row_comments(text)] == [0, 1, 2, 3, 4, 5, None]


def test_last_row_without_trailing_comma() -> None:
    base = ("nc: 1\nanchors: 1\nbackbone:\n  [[-1, 1, Conv, [16, 3, 2]],\n   [-1, 1, SPPF, [16, 5]]]  # 1\n"
            "head:\n  [[-1, 1, Conv, [16, 3, 2]],\n   [[-1], 1, Detect, [nc, anchors]]]\n")
    layers = layers_of(render(base, "x.yaml", ("soca", ["sppf"])))
    assert [r[2] for r in layers] == ["Conv", "SPPF", "SOCA", "Conv", "Detect"]
    same_line = base.replace("[16, 3, 2]],\n   [-1, 1, SPPF", "[16, 3, 2]], [-1, 1, SPPF")
    layers = layers_of(render(same_line, "x.yaml", ("soca", ["layer:0", "layer:1"])))
    assert [r[2] for r in layers] == ["Conv", "SOCA", "SPPF", "SOCA", "Conv", "Detect"]
    assert layers[-1][0] == [-1]


def test_crlf_and_non_ascii_bases() -> None:
    text = base_text("6.0", "models/yolov5s.yaml").replace("\n", "\r\n")
    out = render(text, "yolov5s.yaml", ("soca", ["p5"]))
    assert out.isascii() and "\r" not in out
    assert out.splitlines()[1] == "# YOLOv5 by Ultralytics, GPL-3.0 license"
    assert variants.to_ascii("a \U0001F680 b \u4e2d\u6587c") == "a b c"


@pytest.mark.parametrize("relative, message", [
    ("models/hub/anchors.yaml", "not a YOLOv5 model YAML"),
])
def test_bases_that_are_not_models(relative: str, message: str) -> None:
    with pytest.raises(YolopatchError, match=message):
        variants.parse_base(base_text("7.0", relative), "anchors.yaml")


def test_invalid_yaml_names_the_line() -> None:
    broken = base_text("6.0", "models/hub/yolov5-bifpn.yaml")  # shipped broken in 6.0.7
    with pytest.raises(YolopatchError) as caught:
        variants.parse_base(broken, "yolov5-bifpn.yaml")
    assert caught.value.line == 22 and "yolov5-bifpn.yaml:22: cannot parse YAML" in str(caught.value)


def test_forward_references_are_refused() -> None:
    bad = base_text("7.0", "models/yolov5s.yaml").replace("[[-1, 6], 1, Concat", "[[-1, 16], 1, Concat")
    with pytest.raises(YolopatchError, match="reads from"):
        variants.parse_base(bad, "yolov5s.yaml")


def test_a_generated_variant_is_not_a_base() -> None:
    out = render(base_text("7.0", "models/yolov5s.yaml"), "yolov5s.yaml", ("soca", ["p5"]))
    with pytest.raises(YolopatchError, match="generate variants from yolov5s.yaml"):
        variants.render_variant(out, "yolov5s-soca.yaml", [("SGE", "sge", ["p4"], [])])


# --------------------------------------------------------------------------------------------
# Header, hash, names, specs


def test_header_round_trip_and_edit_detection() -> None:
    out = render(base_text("7.0", "models/yolov5s.yaml"), "yolov5s.yaml", ("gam", ["p3", "p4", "p5"]))
    info = variants.parse_generated_header(out)
    assert info is not None
    assert (info.base_name, info.placements, info.keys) == ("yolov5s.yaml", (("gam", ("p3", "p4", "p5")),), ("gam",))
    assert info.yolopatch_version == variants.__version__ and len(info.recorded_hash) == 12
    assert not variants.is_edited(out)
    assert not variants.is_edited(out.replace("\n", "\r\n"))  # a CRLF checkout is not an edit
    edited = out.replace("[-1, 1, GAM, [512]]", "[-1, 1, GAM, [512, 8]]")
    assert edited != out and variants.is_edited(edited)
    assert variants.parse_generated_header(base_text("7.0", "models/yolov5s.yaml")) is None
    assert variants.parse_generated_header("# yolopatch: generated from nothing useful\n") is None
    with pytest.raises(YolopatchError):
        variants.is_edited(base_text("7.0", "models/yolov5s.yaml"))


def test_variant_filenames() -> None:
    assert variants.variant_filename("yolov5s.yaml", "soca", ["p5"], ["p5"]) == "yolov5s-soca.yaml"
    assert variants.variant_filename("yolov5s.yaml", "sge", ["P5", "p4"], ["p4", "p5"]) == "yolov5s-sge.yaml"
    assert variants.variant_filename("yolov5s.yaml", "soca", ["p5", "p4"], ["p5"]) == "yolov5s-soca-p4-p5.yaml"
    assert (variants.variant_filename("yolov5s-seg.yaml", "double-attention", ["backbone:4"], ["backbone:2"])
            == "yolov5s-seg-double-attention-backbone4.yaml")
    assert variants.variant_filename("hub/yolov5s6.yaml", "gam", ["sppf", "p3"], ["p3"]) == "yolov5s6-gam-p3-sppf.yaml"


@pytest.mark.parametrize("key", sorted(CLASSES))
def test_specs(key: str) -> None:
    spec = variants.load_spec(key)
    assert (spec.key, spec.placement, spec.args) == (key, DEFAULTS[key], ())
    assert spec.note and spec.path.name == key.replace("-", "_") + ".yaml"


def test_unknown_spec() -> None:
    with pytest.raises(YolopatchError, match="no variant spec"):
        variants.load_spec("nope")


# --------------------------------------------------------------------------------------------
# Every module on every standard base of every supported release


def _bases() -> List[Tuple[str, str]]:
    found = []
    for version in yolov5_trees.VERSIONS:
        root = yolov5_trees.source_tree(version, "checkout")
        for relative in [f"models/yolov5{size}.yaml" for size in "nsmlx"] + ["models/hub/yolov5s6.yaml"]:
            if (root / relative).is_file():  # v5.0 has no yolov5n
                found.append((version, relative))
    return found


@lru_cache(maxsize=None)
def base_facts(version: str, relative: str) -> Tuple[Dict[str, Any], Dict[str, int], int]:
    """A base's data, its p-levels, and how many of its rows carry a layer-number comment."""
    source = base_text(version, relative)
    numbered = sum(leading_number(comment) is not None for comment in row_comments(source))
    return yaml.safe_load(source), variants.parse_base(source, relative).p_levels, numbered


@pytest.mark.parametrize("version, relative", _bases())
@pytest.mark.parametrize("key", sorted(CLASSES))
def test_every_module_on_every_base(key: str, version: str, relative: str) -> None:
    name = relative.rsplit("/", 1)[1]
    source = base_text(version, relative)
    spec = variants.load_spec(key)
    out = variants.render_variant(source, name, [(CLASSES[key], key, spec.placement, spec.args)])
    assert out.isascii()
    assert out == variants.render_variant(source, name, [(CLASSES[key], key, spec.placement, spec.args)])

    data, base_data = yaml.safe_load(out), base_facts(version, relative)[0]
    assert {k: v for k, v in data.items() if k not in ("backbone", "head")} == \
           {k: v for k, v in base_data.items() if k not in ("backbone", "head")}
    base_layers, layers = base_data["backbone"] + base_data["head"], data["backbone"] + data["head"]
    inserted = {index for index, r in enumerate(layers) if r[2] == CLASSES[key]}
    assert len(inserted) == len(spec.placement) and len(layers) == len(base_layers) + len(inserted)
    assert_same_graph(base_layers, layers, inserted)
    for index in inserted:  # the nominal width is the C3's it follows
        assert layers[index - 1][2] == "C3" and layers[index][3] == [layers[index - 1][3][0]]

    detect_index, detect = detect_row(layers)
    base_detect_index, base_detect = detect_row(base_layers)
    if spec.placement[0].startswith("p"):
        p_levels = base_facts(version, relative)[1]
        wanted = {p_levels[p] for p in spec.placement}
        chosen = [position for position, source_layer in enumerate(base_detect[0]) if source_layer in wanted]
        assert {detect[0][position] for position in chosen} == {i for i in inserted}
    else:
        assert all(source_layer + 1 not in inserted for source_layer in detect[0])

    for index, comment in enumerate(row_comments(out)):
        assert leading_number(comment) in (None, index), f"row {index} is commented {comment!r}"
    base_numbered = base_facts(version, relative)[2]
    assert sum(leading_number(c) is not None for c in row_comments(out)) == base_numbered + len(inserted)
    assert out.split("\n", 1)[1].split("backbone:")[0] == variants.to_ascii(source).split("backbone:")[0]

    info = variants.parse_generated_header(out)
    assert info is not None and info.base_name == name and info.placements == ((key, spec.placement),)
    assert not variants.is_edited(out)
    ours = f"[-1, 1, {CLASSES[key]}, ["
    assert variants.is_edited(out.replace(ours, f"[-1, 2, {CLASSES[key]}, [", 1))


# --------------------------------------------------------------------------------------------
# Dialects: YOLOv5 files stay in the YOLOv5 dialect (Ultralytics files: tests/targets/test_ultralytics_variants.py)


@pytest.mark.parametrize("version, relative", [
    ("5.0", "models/yolov5s.yaml"), ("7.0", "models/yolov5s.yaml"), ("7.0", "models/hub/yolov5s6.yaml"),
    ("7.0", "models/segment/yolov5s-seg.yaml"), ("7.0", "models/hub/yolov3-tiny.yaml"),
])
def test_yolov5_bases_are_detected_as_yolov5(version: str, relative: str) -> None:
    text = base_text(version, relative)
    name = relative.rsplit("/", 1)[1]
    base = variants.parse_base(text, name)
    assert base.dialect == "yolov5" and variants.detect_dialect(yaml.safe_load(text)) == "yolov5"
    # YOLOv5's modules mean the same to Ultralytics' parse_model: forcing that dialect changes nothing here
    forced = variants.parse_base(text, name, dialect="ultralytics")
    assert (forced.p_levels, forced.sppf_index, forced.widths) == (base.p_levels, base.sppf_index, base.widths)
    assert render(text, name, ("sge", ["p4"])) == variants.render_variant(
        text, name, [("SpatialGroupEnhance", "sge", ["p4"], [])], dialect="yolov5")
