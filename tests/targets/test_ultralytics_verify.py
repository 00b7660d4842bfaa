"""`yolopatch verify` on real Ultralytics trees (the newest 8.4 and the last 8.0, from the package index).

One verify run per tree, through the console entry point, in a subprocess: `apply soca simam` (a module with
a width and one without), a SOCA variant of another task's model (8.4: YOLOv8-seg, built by
SegmentationModel; 8.0: RT-DETR-l, built by RTDETRDetectionModel at its only scale, l), and a variant
broken by hand. The numbers are checked against what is known
without the probe: the base models' parameters and GFLOPs as Ultralytics documents them (YOLOv8n 3.2M /
8.7 GFLOPs at 640, YOLOv8s 11.2M / 28.6, YOLO11n 2.6M / 6.5; FLOPs of convolutions grow with the image
area, so a small image is scaled up), and the parameter deltas from the catalogue's formulas at the widths
Ultralytics' parse_model gives the layers the variants follow (YAML width x the scale's width multiple).
Ultralytics runs only in the probe's subprocess, never in pytest's process.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from tests.ultralytics_trees import ultralytics_tree  # noqa: F401  (the fixture)
from tests.yolov5_trees import snapshot
from yolopatch import building
from yolopatch import catalog
from yolopatch.commands import verify as verify_module
from yolopatch.commands.apply import apply
from yolopatch.commands.variant import variant
from yolopatch.errors import UsageError
from yolopatch.targets.locate import locate_any

pytestmark = pytest.mark.slow

IMG = 128  # small: the FLOPs of the base models are checked scaled to 640
MODELS = "ultralytics/cfg/models"

# Ultralytics' documented numbers (docs.ultralytics.com model tables; params as its model summary prints them).
DOCUMENTED = {("yolov8", "n"): (3_157_200, 8.7), ("yolov8", "s"): (11_166_560, 28.6), ("yolo11", "n"): (2_624_080, 6.5)}
# Inputs of the inserted layers: SOCA at p5, SimAM at p3, p4, p5, i.e. after the head's C2f/C3k2 rows of
# width 256, 512 and 1024 (the same in yolov8.yaml and yolo11.yaml), times the scale's width multiple.
WIDTH_MULTIPLE = {"n": 0.25, "s": 0.50}
YAML_WIDTHS = {"soca": [1024], "simam": [256, 512, 1024]}

FIELDS = {"cfg", "role", "scale", "model_class", "base", "modules", "ok", "params", "gflops", "latency_ms",
          "latency_spread_ms", "latency_runs_ms", "output_shapes", "backward_ok", "backward_img",
          "params_without_grad", "params_unchecked", "delta", "inserted", "problems", "notes", "error", "stage",
          "reproduce"}


def widths(key: str, scale: str) -> List[int]:
    return [int(width * WIDTH_MULTIPLE[scale]) for width in YAML_WIDTHS[key]]


def break_by_hand(root: Path, variant: str) -> Path:
    """A copy of a generated variant (its yolopatch header kept, so verify picks it up) whose SOCA row names a
    class no tree has: Ultralytics' parse_model fails on it with a KeyError."""
    source = root / MODELS / variant
    broken = source.with_name(source.name.replace("-soca", "-broken"))
    broken.write_text(source.read_text(encoding="ascii").replace("SOCA, [1024]", "NoSuchLayer, [1024]", 1),
                      encoding="ascii")
    return broken


def misspell(root: Path, variant: str) -> Path:
    """A copy of a generated variant whose SOCA row passes a misspelt hyper-parameter, which Ultralytics'
    parse_model would keep as the string 'redution': the probe's argument check reports it, unbuilt."""
    source = root / MODELS / variant
    typo = source.with_name(source.name.replace("-soca", "-typo"))
    typo.write_text(source.read_text(encoding="ascii").replace("SOCA, [1024]", "SOCA, [1024, redution]", 1),
                    encoding="ascii")
    return typo


def run_verify(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "300", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "yolopatch", "verify", "--repo", str(root), "--img", str(IMG),
                           "--runs", "1", "--json", *args], capture_output=True, text=True, timeout=900, env=env)


def check_models(by_cfg: Dict[str, Dict[str, Any]], configs: List[str], scale: str, broken: str) -> None:
    """Bases with Ultralytics' documented numbers, variants with exact formula deltas, the broken one failed;
    each model checked is taken out of ``by_cfg``."""
    for model in by_cfg.values():
        assert set(model) == FIELDS
    for config in configs:
        folder = f"{MODELS}/{'v8' if config == 'yolov8' else '11'}"
        base = by_cfg.pop(f"{folder}/{config}.yaml")
        params, gflops = DOCUMENTED[(config, scale)]
        assert base["ok"] and base["role"] == "base" and base["scale"] == scale, base
        assert base["model_class"] == "DetectionModel" and base["params"] == params
        assert base["gflops"] * (640 / IMG) ** 2 == pytest.approx(gflops, abs=0.05)
        assert base["backward_ok"] and base["params_without_grad"] == [] and base["backward_img"] == IMG
        for key in ("soca", "simam"):
            variant = by_cfg.pop(f"{folder}/{config}-{key}.yaml")
            assert variant["ok"] and variant["problems"] == [] and variant["role"] == "variant", variant
            assert variant["modules"] == [key] and variant["base"] == f"{folder}/{config}.yaml"
            assert variant["scale"] == scale and variant["model_class"] == "DetectionModel"
            expected = [catalog.param_count(key, c) for c in widths(key, scale)]
            assert [layer["in_channels"] for layer in variant["inserted"]] == widths(key, scale)
            assert [layer["params"] for layer in variant["inserted"]] == expected
            assert all(layer["ok"] and layer["expected_params"] == layer["params"] for layer in variant["inserted"])
            assert variant["delta"]["params"] == sum(expected) == variant["params"] - base["params"]
            assert variant["output_shapes"] == base["output_shapes"]
            assert variant["backward_ok"] and variant["params_without_grad"] == []
            assert len(variant["latency_runs_ms"]) == 1 and variant["latency_ms"] > 0
            assert (variant["delta"]["gflops"] > 0) == (key == "soca")  # SimAM's work is element-wise: not counted
    failed = by_cfg.pop(broken)
    assert not failed["ok"] and failed["stage"] == "build" and failed["error"] == "KeyError: 'NoSuchLayer'"
    assert failed["problems"] == ["build failed: KeyError: 'NoSuchLayer'"]


def check_failure_lines(stderr: str, broken: Path, scale_args: List[str]) -> None:
    """The failed model is named with its error, then a command that rebuilds it alone at the same scale."""
    lines = stderr.splitlines()
    assert f"error: {broken}: build failed: KeyError: 'NoSuchLayer'" in lines, stderr
    reproduce = lines[lines.index(f"error: {broken}: build failed: KeyError: 'NoSuchLayer'") + 1]
    command = shlex.split(reproduce[len("  reproduce: "):])
    assert command[0] == sys.executable and command[-1] == str(broken)
    assert command[command.index("--codebase") + 1] == "ultralytics"
    assert command[command.index("--module") + 1] == "ultralytics.nn.tasks"
    assert ("--scale" in command) == bool(scale_args)


def test_verify_on_8_4_at_the_default_scale(ultralytics_tree: Callable[[str], Path]) -> None:  # noqa: F811
    root = ultralytics_tree("8.4")
    assert apply(root, ["soca", "simam"]) == 0
    assert variant(root, ["soca"], bases=[f"{MODELS}/v8/yolov8-seg.yaml"]) == 0
    broken = break_by_hand(root, "11/yolo11-soca.yaml")
    typo = misspell(root, "v8/yolov8-soca.yaml")
    tree = locate_any(root)
    # before any model is built: CFG names as Ultralytics users type them, and --scale checks
    assert [t.path for t in building.targets(tree, [Path("yolov8-soca.yaml")])] == [
        (root / MODELS / name).resolve() for name in ("v8/yolov8.yaml", "v8/yolov8-soca.yaml")]
    with pytest.raises(UsageError) as scaled_name:
        verify_module.verify(root, [Path("yolov8n-soca.yaml")])
    assert scaled_name.value.hint == ("Ultralytics reads yolov8n-soca.yaml as yolov8-soca.yaml at scale n: "
                                      "pass yolov8-soca.yaml --scale n")
    with pytest.raises(UsageError, match="unknown scale 'q'"):
        verify_module.verify(root, scale="q")
    before = snapshot(root)

    result = run_verify(root)

    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["codebase"] == "ultralytics" and report["version"] == "8.4.190" and report["scale"] == "n"
    assert report["layout"] == "source" and report["img"] == IMG and not report["ok"]
    assert report["network_attempts"] == [] and report["stubbed"] == []  # 8.4: YOLO_OFFLINE is enough
    by_cfg = {model["cfg"]: model for model in report["models"]}
    check_models(by_cfg, ["yolov8", "yolo11"], "n", f"{MODELS}/11/yolo11-broken.yaml")
    seg, seg_soca = by_cfg.pop(f"{MODELS}/v8/yolov8-seg.yaml"), by_cfg.pop(f"{MODELS}/v8/yolov8-seg-soca.yaml")
    misspelt = by_cfg.pop(f"{MODELS}/v8/yolov8-typo.yaml")
    assert by_cfg == {}
    assert not misspelt["ok"] and misspelt["stage"] == "arguments" and len(misspelt["problems"]) == 1
    line = 1 + typo.read_text(encoding="ascii").splitlines().index(
        next(row for row in typo.read_text(encoding="ascii").splitlines() if "redution" in row))
    assert misspelt["problems"][0].endswith(
        f"yolov8-typo.yaml:{line}: row 22 (SOCA): argument 'redution' is neither a Python literal nor a name "
        "parse_model defines (did you mean 'reduction'?): parse_model would silently keep the string 'redution'")
    assert seg["model_class"] == seg_soca["model_class"] == "SegmentationModel" and seg_soca["ok"], seg_soca
    assert seg["params"] == 3_409_968  # YOLOv8n-seg: 3.4M (Ultralytics' summary prints 3,409,968)
    assert seg_soca["delta"]["params"] == catalog.param_count("soca", 256)
    assert seg_soca["output_shapes"] == seg["output_shapes"] and len(seg["output_shapes"][0]) == 2  # boxes, masks
    check_failure_lines(result.stderr, broken, [])
    assert "warning:" not in result.stderr
    assert snapshot(root) == before  # verify writes nothing into the tree


def test_verify_on_8_0_at_scale_s(ultralytics_tree: Callable[[str], Path]) -> None:  # noqa: F811
    root = ultralytics_tree("8.0")
    assert apply(root, ["soca", "simam"]) == 0
    assert variant(root, ["soca"], bases=[f"{MODELS}/rt-detr/rtdetr-l.yaml"]) == 0
    broken = break_by_hand(root, "v8/yolov8-soca.yaml")
    before = snapshot(root)

    result = run_verify(root, "--scale", "s")

    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["codebase"] == "ultralytics" and report["version"] == "8.0.239" and report["scale"] == "s"
    by_cfg = {model["cfg"]: model for model in report["models"]}
    check_models(by_cfg, ["yolov8"], "s", f"{MODELS}/v8/yolov8-broken.yaml")
    detr, detr_soca = by_cfg.pop(f"{MODELS}/rt-detr/rtdetr-l.yaml"), by_cfg.pop(f"{MODELS}/rt-detr/rtdetr-l-soca.yaml")
    assert by_cfg == {}
    for model in (detr, detr_soca):  # rtdetr-l.yaml offers scale l only: built at l, with a note saying so
        assert model["ok"] and model["model_class"] == "RTDETRDetectionModel" and model["scale"] == "l", model
        assert any(note.startswith("built at scale l: --scale s applies") for note in model["notes"])
        # eval-mode backward: only the decoder's label-only parameters (denoising, intermediate heads) are unchecked
        decoder = "model.28." if model is detr else "model.29."  # the decoder: the last layer
        assert model["params_unchecked"] and all(name.startswith(decoder) for name in model["params_unchecked"])
        assert model["params_without_grad"] == []
    assert detr["params"] == 32_970_476  # RT-DETR-l: 32M (Ultralytics' summary prints 32,970,476)
    assert detr_soca["delta"]["params"] == catalog.param_count("soca", 256)  # p5 of RT-DETR-l: 256 wide
    assert detr_soca["output_shapes"] == detr["output_shapes"]
    check_failure_lines(result.stderr, broken, ["--scale", "s"])
    # 8.0 checks connectivity at import (DNS servers, port 53) whatever YOLO_OFFLINE says: blocked, reported
    assert report["network_attempts"] and all(attempt.startswith("connection to (") and attempt.endswith(", 53)")
                                              for attempt in report["network_attempts"]), report["network_attempts"]
    assert result.stderr.count("warning: the tree attempted network access, blocked") == len(report["network_attempts"])
    if __import__("importlib.util").util.find_spec("hub_sdk") is None:  # 8.0 imports it at start-up
        assert report["stubbed"] == ["hub_sdk"] and "note: hub_sdk is not installed" in result.stderr
    assert snapshot(root) == before
