"""yolopatch.variants on Ultralytics model YAMLs: every config of every pinned release, p-levels, sppf, the
remap into Detect/Segment/Pose/OBB/RTDETRDecoder, and (slow) the variants built by Ultralytics' own code.

The fast tests read the cached trees' YAML files only (each distinct file once); the slow test runs
Ultralytics in a subprocess with the tree first on sys.path, never in the pytest process: each variant
(SGE at every p-level and sppf) written beside its base, loaded by its scaled name (``yolov8n-sge-...``)
at scales n and s, run forward and backward in training mode at 64x64. RT-DETR: in eval mode (its
decoder's training forward wants labels) at 160x160 (8.0 to 8.3 need at least 300 anchors).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
import yaml

from tests import ultralytics_trees
from tests.targets.test_ultralytics_build import apply_by_hand
from tests.test_variants import assert_same_graph, sources
from tests.ultralytics_trees import ultralytics_tree  # noqa: F401  (the fixture)
from yolopatch import variants
from yolopatch.errors import YolopatchError

SGE = ("SpatialGroupEnhance", "sge")

# Written here from the parse_model head branches of 8.0 to 8.4 (independently of yolopatch's table).
HEADS = {"Detect", "Segment", "Pose", "OBB", "WorldDetect", "v10Detect", "YOLOEDetect", "YOLOESegment", "Segment26",
         "Pose26", "OBB26", "YOLOESegment26", "RTDETRDecoder", "SemanticSegment", "Depth", "Classify"}
SPP_LIKE = {"SPP", "SPPF", "SPPELAN"}
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # safe_load's constructor, libyaml's speed


def configs(version: str) -> List[str]:
    """Every model YAML of a pinned release, relative to its tree."""
    root = ultralytics_trees.source_tree(version)
    return sorted(str(path.relative_to(root)) for path in (root / "ultralytics/cfg/models").rglob("*.yaml"))


def load(text: str) -> List[list]:
    data = yaml.load(text, Loader=LOADER)
    return data["backbone"] + data["head"]


def head_of(layers: List[list]) -> Tuple[int, list]:
    index = max(i for i, row in enumerate(layers) if row[2] in HEADS)
    return index, layers[index]


def row_comment(text: str, index: int) -> str:
    """The trailing comment of layer ``index`` in ``text``, from the YAML nodes' end marks."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)  # its marks count characters (libyaml's count bytes)
    nodes = {key.value: value for key, value in root.value}
    node = (nodes["backbone"].value + nodes["head"].value)[index]
    line_end = text.find("\n", node.end_mark.index)
    tail = text[node.end_mark.index:line_end if line_end >= 0 else len(text)]
    return tail.split("#", 1)[1].strip() if "#" in tail else ""


def levels_named_in_comment(comment: str) -> Optional[List[str]]:
    """``Detect(P3, P4, P5)`` -> ["p3", "p4", "p5"]: upstream names the head's inputs in from-order."""
    found = re.search(r"\(((?:P\d, )*P\d)\)", comment)
    return [level.strip().lower() for level in found.group(1).split(",")] if found else None


def render(text: str, name: str, positions: List[str]) -> str:
    return variants.render_variant(text, name, [(*SGE, positions, [])], dialect="ultralytics")


def check_variant(text: str, name: str, base: variants.BaseModel, positions: List[str]) -> None:
    """Render SGE at ``positions`` and check the rows, their widths, the head's inputs and the whole graph."""
    out = render(text, name, positions)
    assert out.isascii() and out.startswith(variants.HEADER_PREFIX + name + " with sge at ")
    base_layers, layers = list(base.layers), load(out)
    afters = sorted(variants.resolve_position(base, position) for position in positions)
    inserted = {after + 1 + number for number, after in enumerate(afters)}
    assert len(layers) == len(base_layers) + len(afters)
    for number, after in enumerate(afters):
        assert layers[after + 1 + number] == [-1, 1, "SpatialGroupEnhance", [base.widths[after]]], (name, positions)
    assert_same_graph(base_layers, layers, inserted)
    if base.detect_index is not None:
        new_head_index, new_head = head_of(layers)
        assert new_head_index == base.detect_index + len(afters)
        moved = {after: after + 1 + number for number, after in enumerate(afters)}
        shift = [sum(1 for after in afters if after < source) for source in range(len(base_layers))]
        expected = [moved.get(source, source + shift[source])
                    for source in sources(base_layers[base.detect_index][0], base.detect_index)]
        assert sources(new_head[0], new_head_index) == expected, (name, positions)


_seen: Dict[str, str] = {}


@pytest.mark.parametrize("version", list(ultralytics_trees.VERSIONS))
def test_every_config_at_every_named_position(version: str) -> None:
    """Every model YAML (each distinct text once over all releases) at each of p2..p6 and sppf it offers,
    then at all of them together."""
    checked = skipped = comments_read = 0
    for relative in configs(version):
        text = ultralytics_trees.read(version, relative)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if digest in _seen:
            skipped += 1
            continue
        _seen[digest] = f"{version}:{relative}"
        name = relative.rsplit("/", 1)[1]
        layers = load(text)
        auto = variants.parse_base(text, name)
        # v3 files name only YOLOv5 modules and have no scales: block; both dialects read them alike
        assert auto.dialect == ("yolov5" if relative.split("/")[-2] == "v3" else "ultralytics"), relative
        base = variants.parse_base(text, name, dialect="ultralytics")
        head_index, head = head_of(layers)
        if head[2] == "Classify":
            assert base.p_levels == {} and base.detect_index is None and base.head_module == "Classify"
            with pytest.raises(YolopatchError, match="classification model"):
                variants.resolve_position(base, "p5")
        else:
            inputs = sources(head[0], head_index)
            assert base.detect_index == head_index and sorted(base.p_levels.values()) == sorted(inputs), relative
            named = levels_named_in_comment(row_comment(text, head_index))
            if relative.endswith(("v8/yolov8.yaml", "11/yolo11.yaml", "rt-detr/rtdetr-l.yaml", "26/yolo26-p2.yaml")):
                assert named is not None, relative
            if named is not None:
                comments_read += 1
                assert {level: index for level, index in zip(named, inputs)} == base.p_levels, relative
            assert all(isinstance(base.widths[i], int) and base.widths[i] > 0 for i in inputs), relative
        spp = [index for index, row in enumerate(layers) if row[2] in SPP_LIKE]
        assert base.sppf_index == (spp[0] if len(spp) == 1 else None), relative
        positions = list(base.p_levels) + (["sppf"] if base.sppf_index is not None else [])
        for position in positions:
            check_variant(text, name, base, [position])
        if len(positions) > 1:
            check_variant(text, name, base, positions)
        checked += 1
    assert checked == len(configs(version)) - skipped
    assert comments_read > checked // 3, (comments_read, checked)  # most heads name their inputs: P3, P4, P5


@pytest.mark.parametrize("version, wanted", [
    ("8.0", ["v8/yolov8.yaml", "v8/yolov8-seg.yaml", "v8/yolov8-pose.yaml", "v8/yolov8-obb.yaml",
             "v8/yolov8-cls.yaml", "rt-detr/rtdetr-l.yaml", "rt-detr/rtdetr-resnet50.yaml"]),
    ("8.3.0", ["11/yolo11.yaml", "11/yolo11-seg.yaml", "11/yolo11-pose.yaml", "11/yolo11-obb.yaml"]),
    ("8.4", ["12/yolo12.yaml", "26/yolo26.yaml", "26/yolo26-seg.yaml", "26/yolo26-pose.yaml", "26/yolo26-obb.yaml",
             "11/yoloe-11-seg.yaml", "v10/yolov10n.yaml", "v9/yolov9e.yaml"]),
])
def test_the_loop_covers_the_families_of_the_issue(version: str, wanted: List[str]) -> None:
    listed = configs(version)
    assert all(f"ultralytics/cfg/models/{config}" in listed for config in wanted)


# --------------------------------------------------------------------------------------------
# Exact expectations, worked out by hand from the upstream files (8.4.190)


def v84(relative: str) -> str:
    return ultralytics_trees.read("8.4", f"ultralytics/cfg/models/{relative}")


def test_yolov8_positions_and_widths() -> None:
    base = variants.parse_base(v84("v8/yolov8.yaml"), "yolov8.yaml")
    assert base.dialect == "ultralytics"
    assert base.p_levels == {"p3": 15, "p4": 18, "p5": 21} and base.sppf_index == 9
    assert base.widths[:10] == (64, 128, 128, 256, 256, 512, 512, 1024, 1024, 1024)
    assert base.widths[10:16] == (1024, 1536, 512, 512, 768, 256)  # Upsample, Concat 1024+512, C2f, ...
    assert base.widths[22] is None


def test_yolov8_p5_feeds_detect() -> None:
    layers = load(render(v84("v8/yolov8.yaml"), "yolov8.yaml", ["p5"]))
    assert layers[22] == [-1, 1, "SpatialGroupEnhance", [1024]]
    assert layers[23] == [[15, 18, 22], 1, "Detect", ["nc"]]


def test_yolov8_p3_and_sppf() -> None:
    layers = load(render(v84("v8/yolov8.yaml"), "yolov8.yaml", ["p3", "sppf"]))
    assert layers[10] == [-1, 1, "SpatialGroupEnhance", [1024]] and layers[11][2] == "nn.Upsample"
    assert layers[17] == [-1, 1, "SpatialGroupEnhance", [256]]
    assert [row[0] for row in layers if row[2] == "Concat"] == [[-1, 6], [-1, 4], [-1, 13], [-1, 10]]
    assert layers[18] == [-1, 1, "Conv", [256, 3, 2]]  # reads SGE, not C2f 16
    assert layers[-1] == [[17, 20, 23], 1, "Detect", ["nc"]]


def test_yolo11_sppf_and_p5() -> None:
    layers = load(render(v84("11/yolo11.yaml"), "yolo11.yaml", ["sppf", "p5"]))
    assert layers[10] == [-1, 1, "SpatialGroupEnhance", [1024]]
    assert layers[11] == [-1, 2, "C2PSA", [1024]]
    assert [row[0] for row in layers if row[2] == "Concat"] == [[-1, 6], [-1, 4], [-1, 14], [-1, 11]]
    assert layers[24] == [-1, 1, "SpatialGroupEnhance", [1024]]
    assert layers[25] == [[17, 20, 24], 1, "Detect", ["nc"]]


def test_yolo11_pose_and_seg_heads_are_remapped() -> None:
    pose = load(render(v84("11/yolo11-pose.yaml"), "yolo11-pose.yaml", ["p4"]))
    assert pose[20] == [-1, 1, "SpatialGroupEnhance", [512]]
    assert pose[-1] == [[16, 20, 23], 1, "Pose", ["nc", "kpt_shape"]]
    seg = load(render(v84("11/yolo11-seg.yaml"), "yolo11-seg.yaml", ["p3"]))
    assert seg[17] == [-1, 1, "SpatialGroupEnhance", [256]]
    assert seg[-1] == [[17, 20, 23], 1, "Segment", ["nc", 32, 256]]


def test_rtdetr_l_p4_feeds_the_decoder() -> None:
    base = variants.parse_base(v84("rt-detr/rtdetr-l.yaml"), "rtdetr-l.yaml")
    assert base.p_levels == {"p3": 21, "p4": 24, "p5": 27} and base.sppf_index is None
    assert base.widths[:2] == (48, 128) and base.widths[9] == 2048  # HGStem/HGBlock: args[1]
    layers = load(render(v84("rt-detr/rtdetr-l.yaml"), "rtdetr-l.yaml", ["p4"]))
    assert layers[25] == [-1, 1, "SpatialGroupEnhance", [256]]
    assert layers[26] == [-1, 1, "Conv", [256, 3, 2]]
    assert layers[27] == [[-1, 12], 1, "Concat", [1]]
    assert layers[29] == [[21, 25, 28], 1, "RTDETRDecoder", ["nc"]]


def test_rtdetr_resnet50_strides_through_resnet_layers() -> None:
    base = variants.parse_base(v84("rt-detr/rtdetr-resnet50.yaml"), "rtdetr-resnet50.yaml")
    assert variants.strides(base.layers, "ultralytics")[:5] == [4, 4, 8, 16, 32]
    assert base.widths[:5] == (64, 256, 512, 1024, 2048)  # the stem's args[1], the others args[1] * 4
    assert base.p_levels == {"p3": 16, "p4": 19, "p5": 22}


def test_classify_refuses_p_levels_but_offers_the_rest() -> None:
    base = variants.parse_base(v84("v8/yolov8-cls.yaml"), "yolov8-cls.yaml")
    with pytest.raises(YolopatchError, match=r"classification model \(Classify head\) has no p3/p4/p5") as caught:
        variants.resolve_position(base, "p3")
    assert "backbone:0..8" in str(caught.value.hint)
    layers = load(render(v84("v8/yolov8-cls.yaml"), "yolov8-cls.yaml", ["backbone:8"]))
    assert layers[9] == [-1, 1, "SpatialGroupEnhance", [1024]]
    assert layers[10] == [-1, 1, "Classify", ["nc"]]


def test_upstream_text_style_is_kept() -> None:
    text = v84("v8/yolov8.yaml")
    lines = render(text, "yolov8.yaml", ["sppf", "p4"]).splitlines()
    assert lines[0].startswith("# yolopatch: generated from yolov8.yaml with sge at sppf,p4 (yolopatch ")
    assert lines[1] == "# Ultralytics AGPL-3.0 License - https://ultralytics.com/license"  # the rocket dropped
    assert "  - [-1, 1, SPPF, [1024, 5]] # 9" in lines
    assert "  - [-1, 1, SpatialGroupEnhance, [1024]] # 10 SpatialGroupEnhance at sppf" in lines
    assert "  - [-1, 3, C2f, [512]] # 19 (P4/16-medium)" in lines
    assert "  - [-1, 1, SpatialGroupEnhance, [512]] # 20 SpatialGroupEnhance at p4" in lines
    assert "  - [[16, 20, 23], 1, Detect, [nc]] # Detect(P3, P4, P5)" in lines
    assert "  - [-1, 1, nn.Upsample, [None, 2, \"nearest\"]]" in lines
    body = text.split("\n", 1)[1]
    assert [line for line in lines[2:] if "SpatialGroupEnhance" not in line][:20] == body.splitlines()[:20]


def test_dialect_detection_and_override() -> None:
    assert variants.detect_dialect({"scales": {"n": [0.33, 0.25, 1024]}, "backbone": [], "head": []}) == "ultralytics"
    v9 = yaml.safe_load(v84("v9/yolov9c.yaml"))
    assert "scales" not in v9 and variants.detect_dialect(v9) == "ultralytics"  # by its modules (RepNCSPELAN4, ...)
    v5 = {"depth_multiple": 0.33, "backbone": [[-1, 1, "Conv", [64, 6, 2, 2]]], "head": [[-1, 1, "C3", [64]]]}
    assert variants.detect_dialect(v5) == "yolov5"
    text = v84("v8/yolov8.yaml")
    forced = variants.parse_base(text, "yolov8.yaml", dialect="yolov5")
    assert forced.dialect == "yolov5" and forced.widths[12] == 1536  # C2f unknown to YOLOv5: keeps its input's
    assert variants.parse_base(text, "yolov8.yaml").widths[12] == 512
    with pytest.raises(YolopatchError, match="unknown model YAML dialect"):
        variants.parse_base(text, "yolov8.yaml", dialect="yolov6")


def test_variant_names_keep_the_scale_slot() -> None:
    """``yolov8-sge.yaml`` is loaded as ``yolov8n-sge.yaml``; the slow test below loads it so."""
    assert variants.variant_filename("yolov8.yaml", "sge", ["p4", "p5"], ["p4", "p5"]) == "yolov8-sge.yaml"
    assert variants.variant_filename("yolo11.yaml", "sge", ["sppf", "p5"], ["p4", "p5"]) == "yolo11-sge-p5-sppf.yaml"


# --------------------------------------------------------------------------------------------
# Slow: the variants built, run forward and backward by Ultralytics' own code

PROBE = r'''
import importlib.util, json, sys, types
tree, jobs = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, tree)
if importlib.util.find_spec("hub_sdk") is None:  # 8.0 imports it at start-up for HUB URLs only
    hub = types.ModuleType("hub_sdk")
    hub.HUB_API_ROOT = hub.HUB_WEB_ROOT = "https://hub.invalid"
    hub.HUBClient = object
    hub.config = types.ModuleType("hub_sdk.config")
    hub.config.HUB_WEB_ROOT = hub.HUB_WEB_ROOT
    sys.modules["hub_sdk"], sys.modules["hub_sdk.config"] = hub, hub.config
import torch
import ultralytics
from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel
assert ultralytics.__file__.startswith(tree), ultralytics.__file__
torch.manual_seed(0)


def tensors(out):
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, dict):
        for value in out.values():
            yield from tensors(value)
    elif isinstance(out, (list, tuple)):
        for value in out:
            yield from tensors(value)


results = []
for name, inserted in jobs:
    kind = RTDETRDetectionModel if "rtdetr" in name else DetectionModel
    model = kind(name, ch=3, nc=80, verbose=False)  # a bare name: found beside its base under cfg/models
    model.train(kind is DetectionModel)  # RTDETRDecoder's training forward wants a batch of labels
    size = 64 if kind is DetectionModel else 160  # 8.0 to 8.3's decoder needs >= 300 anchors (its queries)
    out = list(tensors(model(torch.rand(2, 3, size, size))))
    sum(o.float().sum() for o in out).backward()
    layers = [model.model[i] for i in inserted]
    results.append({
        "name": name, "scale": model.yaml.get("scale"), "yaml_file": model.yaml.get("yaml_file"),
        "types": [type(layer).__module__ + "." + type(layer).__name__ for layer in layers],
        "c1": [getattr(layer, "c1", None) for layer in layers], "head_from": model.model[-1].f, "layers": len(model.model),
        "grads": [all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in layer.parameters())
                  for layer in layers],
        "outputs": len(out),
    })
print("RESULT " + json.dumps(results))
'''

SLOW_VERSIONS = ("8.0", "8.3", "8.4")
SLOW_CONFIGS = ("v8/yolov8.yaml", "11/yolo11.yaml", "12/yolo12.yaml", "26/yolo26.yaml", "rt-detr/rtdetr-l.yaml")


def make_divisible(value: float, divisor: int = 8) -> int:
    return math.ceil(value / divisor) * divisor


def scaled_width(base: variants.BaseModel, index: int, scale: str) -> int:
    """The width Ultralytics builds for a channel-setting layer at ``scale`` (parse_model's rule)."""
    _, width, max_channels = base.data["scales"][scale]
    return make_divisible(min(base.widths[index], max_channels) * width)


def scaled_name(variant: str, scale: str) -> str:
    """``yolov8-sge.yaml`` -> ``yolov8n-sge.yaml``: the scale letter after the leading ``yolo...<digits>``."""
    stem, rest = variant.split("-", 1)
    return f"{stem}{scale}-{rest}"


@pytest.mark.slow
@pytest.mark.parametrize("version", SLOW_VERSIONS)
def test_variants_build_and_train_in_ultralytics(version: str, ultralytics_tree, tmp_path: Path) -> None:  # noqa: F811
    root = ultralytics_tree(version)
    apply_by_hand(root)
    jobs: List[Tuple[str, List[int]]] = []
    expected: Dict[str, Dict[str, Any]] = {}
    models = root / "ultralytics/cfg/models"
    present = [config for config in SLOW_CONFIGS if (models / config).is_file()]
    assert present == {"8.0": ["v8/yolov8.yaml", "rt-detr/rtdetr-l.yaml"],
                       "8.3": ["v8/yolov8.yaml", "11/yolo11.yaml", "12/yolo12.yaml", "rt-detr/rtdetr-l.yaml"],
                       "8.4": list(SLOW_CONFIGS)}[version]
    for config in present:
        path = models / config
        text = path.read_text(encoding="utf-8")
        base = variants.parse_base(text, path.name)
        positions = list(base.p_levels) + (["sppf"] if base.sppf_index is not None else [])
        variant = variants.variant_filename(path.name, "sge", positions, ["p4", "p5"])
        (path.parent / variant).write_text(render(text, path.name, positions), encoding="ascii")
        afters = sorted(variants.resolve_position(base, position) for position in positions)
        inserted = [after + 1 + number for number, after in enumerate(afters)]
        head = [inserted[afters.index(source)] for source in sources(base.layers[base.detect_index][0],
                                                                    base.detect_index)]
        scales = ["n", "s"] if "rtdetr" not in config else [""]
        for scale in scales:
            name = scaled_name(variant, scale) if scale else variant
            jobs.append((name, inserted))
            expected[name] = {"scale": scale or None, "head": head, "layers": len(base.layers) + len(inserted),
                              "c1": [scaled_width(base, after, scale or "l") for after in afters]}
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "config"), "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1",
           "YOLO_VERBOSE": "False"}
    done = subprocess.run([sys.executable, "-c", PROBE, str(root), json.dumps(jobs)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert [found["name"] for found in results] == [name for name, _ in jobs]
    for found in results:
        want = expected[found["name"]]
        if want["scale"] is not None:
            assert found["scale"] == want["scale"], found
        assert found["types"] == ["ultralytics.nn.modules.yolopatch.SpatialGroupEnhance"] * len(want["c1"]), found
        assert found["c1"] == want["c1"], found
        assert found["head_from"] == want["head"] and found["layers"] == want["layers"], found
        assert all(found["grads"]), found
