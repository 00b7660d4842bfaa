"""`yolopatch verify` on real YOLOv5 trees (5.0, 6.1, 7.0; checkout and package layouts).

Every test that builds models runs the real probe (yolopatch/probe.py) in a subprocess with this
venv's interpreter, torch and the tree's own code. The numbers are checked against what can be
worked out without the probe: parameter deltas from the catalogue's formulas at the input widths
YOLOv5's parse_model gives (base YAML width x width_multiple, rounded up to a multiple of 8), and
the base yolov5s FLOPs against the numbers YOLOv5 documents.

The yolov5 7.0.x wheels import ``ultralytics.utils.checks`` (a declared dependency of that wheel,
absent from a git checkout of v7.0): ``ultralytics_site()`` fetches that wheel from the package
index once (no dependencies; the venv already holds what it imports) and tests put it on the
probe's PYTHONPATH.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import pytest

from tests import yolov5_trees
from tests.yolov5_trees import snapshot as tree_snapshot
from yolopatch import building
from yolopatch import catalog, variants
from yolopatch.commands import verify as verify_module
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.tree import locate

pytestmark = pytest.mark.slow

ULTRALYTICS_VERSION = "8.4.190"

# Modules whose args[0] is their output width in YOLOv5's parse_model (v5.0 to 7.0).
CHANNEL_MODULES = frozenset({
    "Conv", "GhostConv", "Bottleneck", "GhostBottleneck", "SPP", "SPPF", "DWConv", "MixConv2d", "Focus",
    "CrossConv", "BottleneckCSP", "C3", "C3TR", "C3SPP", "C3Ghost", "C3x", "nn.ConvTranspose2d",
    "DWConvTranspose2d",
})

# YOLOv5's documented yolov5s numbers at 640 (README tables): v5.0 (Focus stem) 7.3M params,
# 17.0 GFLOPs; v6.0 and later (6x6 conv stem, SPPF) 7.2M params, 16.5 GFLOPs.
DOCUMENTED_YOLOV5S = {"5.0": (7_276_605, 17.0), "6.0": (7_235_389, 16.5), "6.1": (7_235_389, 16.5),
                      "7.0": (7_235_389, 16.5)}


# --------------------------------------------------------------------------------------------
# Helpers shared with tests/test_variant_builds.py


def ultralytics_site() -> Path:
    """A folder holding the ``ultralytics`` package (the 7.0.x wheels import it), fetched once."""
    with yolov5_trees.cache_lock():
        return _ultralytics_site()


def _ultralytics_site() -> Path:
    target = yolov5_trees.cache_root() / f"ultralytics-{ULTRALYTICS_VERSION}"
    if (target / "ultralytics" / "__init__.py").is_file():
        return target
    folder = yolov5_trees.cache_root() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    pattern = f"ultralytics-{ULTRALYTICS_VERSION}-*.whl"
    if not sorted(folder.glob(pattern)):
        subprocess.run([sys.executable, "-m", "pip", "download", f"ultralytics=={ULTRALYTICS_VERSION}", "--no-deps",
                        "--only-binary", ":all:", "--disable-pip-version-check", "-q", "-d", str(folder)], check=True)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(sorted(folder.glob(pattern))[0]) as archive:
        archive.extractall(partial, [name for name in archive.namelist() if name.startswith("ultralytics/")])
    partial.rename(target)
    return target


def probe_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the probe's interpreter import ultralytics (for the 7.0 trees)."""
    paths = [str(ultralytics_site())] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))


def make_divisible(value: float, divisor: int = 8) -> int:
    return math.ceil(value / divisor) * divisor


def scaled_widths(layers: Sequence[List[Any]], width_multiple: float) -> List[Optional[int]]:
    """Actual output channels of every layer, by YOLOv5's parse_model rules (v5.0 to 7.0)."""
    widths: List[Optional[int]] = []

    def source(from_: int, index: int) -> Optional[int]:
        absolute = from_ if from_ >= 0 else index + from_
        return 3 if absolute < 0 else widths[absolute]

    for index, (from_, _, module, args) in enumerate(layers):
        first = from_[0] if isinstance(from_, list) else from_
        if module in CHANNEL_MODULES:
            widths.append(make_divisible(args[0] * width_multiple))
        elif module == "Concat":
            widths.append(sum(source(f, index) for f in from_))  # type: ignore[misc]
        elif variants.is_detect_like(module):
            widths.append(None)
        else:
            widths.append(source(first, index))
    return widths


def expected_insertions(base_path: Path, keys: Sequence[str]) -> Dict[str, List[int]]:
    """Per module key: the input widths of the layers its default placement inserts on ``base_path``."""
    text = base_path.read_text(encoding="utf-8")
    base = variants.parse_base(text, base_path.name)
    widths = scaled_widths(base.layers, float(base.data.get("width_multiple", 1.0)))
    found = {}
    for key in keys:
        spec = catalog.get(key)
        found[key] = [widths[variants.resolve_position(base, position)] for position in spec.placement]
    return found


def formula_params(key: str, widths: Sequence[int]) -> int:
    return sum(catalog.param_count(key, width) for width in widths)


def cli(*args: str, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """``python -m yolopatch ARGS`` in a subprocess (the console entry point users run)."""
    env = {**os.environ, "COLUMNS": "400"}  # Rich's table width when not on a terminal: no wrapped cells
    return subprocess.run([sys.executable, "-m", "yolopatch", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=1800, env=env)


def apply(root: Path, *args: str) -> None:
    result = cli("apply", *args, "--repo", str(root))
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------
# The numbers verify reports


MODEL_FIELDS = {"cfg", "role", "scale", "model_class", "base", "modules", "ok", "params", "gflops", "latency_ms",
                "latency_spread_ms", "latency_runs_ms", "output_shapes",
                "backward_ok", "backward_img", "params_without_grad", "params_unchecked", "delta", "inserted",
                "problems", "notes", "error", "stage", "reproduce"}


# 6.0 loads Arial.ttf while importing utils/plots.py and downloads it when missing: verify must
# build it offline all the same.
@pytest.mark.parametrize("version, layout", [("5.0", "checkout"), ("6.0", "checkout"), ("6.1", "package"),
                                             ("7.0", "checkout")])
def test_verify_reports_documented_flops_and_formula_deltas(make_tree: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
                                                            version: str, layout: str) -> None:
    probe_environment(monkeypatch)
    root = make_tree(version, layout)
    tree = locate(root)
    apply(root, "soca", "sge")
    before = tree_snapshot(root)

    result = cli("verify", "--repo", str(root), "--img", "640", "--runs", "2", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert tree_snapshot(root) == before  # verify writes nothing into the tree (no __pycache__ either)
    assert set(report) == {"root", "codebase", "version", "layout", "python", "python_version", "torch", "img", "scale",
                           "ok", "network_attempts", "stubbed", "models"}
    assert report["ok"] and report["img"] == 640 and report["layout"] == layout and report["root"] == str(tree.root)
    assert report["codebase"] == "yolov5" and report["version"] is None and report["scale"] is None
    assert report["stubbed"] == []
    assert report["python"] == sys.executable and report["torch"].startswith("2.")
    assert report["network_attempts"] == []
    prefix = tree.relative(tree.models_dir)
    assert [model["cfg"] for model in report["models"]] == [
        f"{prefix}/yolov5s.yaml", f"{prefix}/yolov5s-sge.yaml", f"{prefix}/yolov5s-soca.yaml"]
    for model in report["models"]:
        assert set(model) == MODEL_FIELDS
        assert model["ok"] and model["error"] is None and model["problems"] == [] and model["stage"] is None
        assert isinstance(model["params"], int) and isinstance(model["gflops"], float)
        assert model["backward_ok"] and model["params_without_grad"] == [] and model["backward_img"] == 128
        assert model["params_unchecked"] == [] and model["scale"] is None
        assert model["model_class"] in ("Model", "DetectionModel")
        assert model["latency_ms"] > 0 and model["latency_spread_ms"] >= 0
        assert len(model["latency_runs_ms"]) == (2 if model["role"] == "variant" else 4)  # the base: 2 per variant
    base, *variant_list = report["models"]
    params, gflops = DOCUMENTED_YOLOV5S[version]
    assert base["role"] == "base" and base["params"] == params and base["delta"] is None and base["inserted"] == []
    assert base["gflops"] == pytest.approx(gflops, rel=0.03)  # FlopCounterMode: convolutions, 2 per MAC
    assert base["output_shapes"][0] == [1, 25200, 85]

    widths = expected_insertions(tree.models_dir / "yolov5s.yaml", ["soca", "sge"])
    assert widths == {"soca": [512], "sge": [256, 512]}
    for key, variant in zip(("sge", "soca"), variant_list):
        assert variant["role"] == "variant" and variant["modules"] == [key]
        assert variant["base"] == f"{prefix}/yolov5s.yaml"
        assert set(variant["delta"]) == {"params", "gflops", "latency_ms", "latency_noise"}
        assert isinstance(variant["delta"]["latency_noise"], bool)
        assert variant["delta"]["params"] == formula_params(key, widths[key])
        assert variant["params"] == base["params"] + formula_params(key, widths[key])
        assert [layer["in_channels"] for layer in variant["inserted"]] == widths[key]
        assert [layer["params"] for layer in variant["inserted"]] == [catalog.param_count(key, c) for c in widths[key]]
        assert all(layer["ok"] and layer["params"] == layer["expected_params"] for layer in variant["inserted"])
        assert {tuple(layer) for layer in variant["inserted"]} == {
            ("layer", "class", "module", "in_channels", "params", "expected_params", "ok")}
        assert variant["output_shapes"] == base["output_shapes"]
    # SOCA's covariance is a matrix product FlopCounterMode counts. SGE's only counted work is the
    # group similarity g . x_i, one batched matrix product: 2 * C * H * W flops at P4 (640/16) and P5 (640/32).
    sge, soca = variant_list
    assert soca["delta"]["gflops"] > 0
    sge_flops = sum(2 * c * (640 // stride) ** 2 for c, stride in zip(widths["sge"], (16, 32))) / 1e9
    assert sge["delta"]["gflops"] == pytest.approx(sge_flops, rel=1e-6)


# --------------------------------------------------------------------------------------------
# Failures


def test_failing_model_exits_1_with_a_reproduce_command(make_tree: Callable[..., Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    probe_environment(monkeypatch)
    root = make_tree("6.1", "checkout")
    apply(root, "gam")
    text = (root / "models" / "yolov5n.yaml").read_text(encoding="utf-8")
    head = text.index("head:")
    broken = root / "models" / "broken.yaml"
    broken.write_text(text[:head] + text[head:].replace("Conv,", "NoSuchLayer,", 1), encoding="utf-8")

    result = cli("verify", "models/broken.yaml", "models/yolov5s-gam.yaml", "--repo", str(root), "--img", "64")

    assert result.returncode == 1
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.stdout.splitlines()
            if line.startswith("│")]
    assert [row[0] for row in rows[:3]] == ["broken.yaml", "yolov5s.yaml", "yolov5s-gam.yaml"]
    assert [row[-1] for row in rows[:3]] == ["FAILED", "ok", "ok"]  # one failure does not stop the others
    assert rows[2][2] == "+8,604,960"  # GAM at P3, P4, P5 of yolov5s: 410,080 + 1,639,360 + 6,555,520
    assert rows[3:] == [["yolov5s-gam.yaml", "18", "GAM", "128", "410,080", "410,080", "ok"],
                        ["yolov5s-gam.yaml", "22", "GAM", "256", "1,639,360", "1,639,360", "ok"],
                        ["yolov5s-gam.yaml", "26", "GAM", "512", "6,555,520", "6,555,520", "ok"]]
    assert "image 64x64" in result.stdout
    errors = result.stderr.splitlines()
    assert errors[0] == f"error: {broken}: build failed: NameError: name 'NoSuchLayer' is not defined"
    assert errors[1].startswith("  reproduce: ")
    command = shlex.split(errors[1][len("  reproduce: "):])
    assert command[0] == sys.executable and command[-1] == str(broken)

    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 1
    records = [json.loads(line) for line in again.stdout.splitlines()]  # stdout holds only the records
    assert [record["kind"] for record in records] == ["env", "result", "done"]
    assert records[1]["stage"] == "build"
    assert records[1]["error"] == "NameError: name 'NoSuchLayer' is not defined"
    assert "Traceback" in again.stderr and "NoSuchLayer" in again.stderr


def test_missing_dependency_is_one_line(make_tree: Callable[..., Path]) -> None:
    root = make_tree("6.1", "checkout")
    general = root / "utils" / "general.py"
    general.write_text("import yolopatch_absent_dependency\n" + general.read_text(encoding="utf-8"), encoding="utf-8")
    apply(root, "soca")

    result = cli("verify", "--repo", str(root), "--img", "64")

    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: the interpreter {sys.executable} lacks 'yolopatch_absent_dependency': "
                               "pip install yolopatch_absent_dependency")
    assert result.stdout == ""


def test_interpreter_without_torch_is_named(make_tree: Callable[..., Path], tmp_path: Path) -> None:
    root = make_tree("6.1", "checkout")
    apply(root, "soca")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    bare = tmp_path / "bare" / ("Scripts" if os.name == "nt" else "bin") / "python"

    result = cli("verify", "--repo", str(root), "--python", str(bare))

    assert result.returncode == 1
    assert result.stderr.startswith(f"error: the interpreter {bare} lacks 'torch': pip install torch")


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("ultralytics") is not None,
                    reason="this interpreter has ultralytics")
def test_yolov5_7_wheel_without_ultralytics_names_it(make_tree: Callable[..., Path]) -> None:
    root = make_tree("7.0", "package")
    apply(root, "soca")

    result = cli("verify", "--repo", str(root), "--img", "64")

    assert result.returncode == 1
    assert f"the interpreter {sys.executable} lacks 'ultralytics': pip install ultralytics" in result.stderr


def test_unknown_interpreter_is_a_usage_error(make_tree: Callable[..., Path], tmp_path: Path) -> None:
    root = make_tree("6.1", "checkout")
    apply(root, "soca")

    result = cli("verify", "--repo", str(root), "--python", str(tmp_path / "no" / "python"))

    assert result.returncode == 2
    assert "no Python interpreter at" in result.stderr


def test_no_variants_is_an_error(make_tree: Callable[..., Path]) -> None:
    root = make_tree("6.1", "checkout")

    result = cli("verify", "--repo", str(root))

    assert result.returncode == 1
    assert "no yolopatch variant YAMLs in this tree" in result.stderr


def test_scale_is_refused_on_a_yolov5_tree(make_tree: Callable[..., Path]) -> None:
    """A YOLOv5 variant is built at its base's scale (yolov5s-soca.yaml: s); --scale is Ultralytics'."""
    tree = locate(make_tree("6.1", "checkout"))

    with pytest.raises(UsageError, match="--scale is for Ultralytics trees"):
        verify_module.verify(tree.root, scale="s")
    assert "--codebase" not in building.probe_command(sys.executable, tree, [tree.models_dir / "yolov5s.yaml"], 64)


def test_a_hanging_tree_is_stopped(make_tree: Callable[..., Path]) -> None:
    root = make_tree("6.1", "checkout")
    common = root / "models" / "common.py"
    common.write_text(common.read_text(encoding="utf-8") + "\nimport time\ntime.sleep(3600)\n", encoding="utf-8")
    tree = locate(root)
    started = time.monotonic()

    with pytest.raises(YolopatchError, match=r"the probe could not start with .*: no output in 5 s"):
        building.run_probe(sys.executable, tree, [tree.models_dir / "yolov5n.yaml"], 64, 0, idle_timeout=5)

    assert time.monotonic() - started < 60


# --------------------------------------------------------------------------------------------
# Offline


DOWNLOADS = '''
try:  # yolopatch test: YOLOv5's own font download (v6.1+), pip and requests, all at import time
    from utils.general import check_font as _check_font
    _check_font("Arial.Unicode.ttf")  # what 6.1+ plots non-ASCII labels with
except Exception as _error:
    print("font download failed:", _error)
try:
    import subprocess as _subprocess
    _subprocess.check_output("pip install yolopatch-no-such-package", shell=True)
except Exception as _error:
    print("pip failed:", _error)
try:
    import requests as _requests
    _requests.get("https://github.com/ultralytics/yolov5", timeout=30)
except Exception as _error:
    print("requests failed:", _error)
'''


def test_verify_blocks_and_reports_every_download(make_tree: Callable[..., Path], tmp_path: Path) -> None:
    root = make_tree("6.1", "checkout")
    apply(root, "sge")
    common = root / "models" / "common.py"
    common.write_text(common.read_text(encoding="utf-8") + DOWNLOADS, encoding="utf-8")
    before = tree_snapshot(root)
    home = tmp_path / "home"
    home.mkdir()

    result = subprocess.run([sys.executable, "-m", "yolopatch", "verify", "--repo", str(root), "--img", "64", "--json"],
                            capture_output=True, text=True, timeout=900, env={**os.environ, "HOME": str(home)})

    assert result.returncode == 0, result.stderr
    attempts = json.loads(result.stdout)["network_attempts"]
    assert any("https://ultralytics.com/assets/Arial.Unicode.ttf" in attempt for attempt in attempts), attempts
    assert any("pip install yolopatch-no-such-package" in attempt for attempt in attempts), attempts
    assert any("github.com" in attempt for attempt in attempts), attempts
    assert result.stderr.count("warning: the tree attempted network access, blocked") == len(attempts)
    assert tree_snapshot(root) == before
    written = [path for path in home.rglob("*") if "Ultralytics" in path.parts or path.suffix == ".ttf"]
    assert written == []  # no Ultralytics config dir, no font in the user's home (matplotlib may cache there)


# --------------------------------------------------------------------------------------------
# Pure parts


def test_inserted_layers_use_the_row_hyperparameters_and_repeats() -> None:
    text = ("depth_multiple: 0.33\nwidth_multiple: 0.50\nbackbone:\n  [[-1, 1, Conv, [64, 6, 2, 2]],\n"
            "   [-1, 1, SOCA, [64, 4]],\n   [-1, 3, SOCA, [64]],\n  ]\nhead:\n  [[-1, 1, Conv, [64, 1, 1]]]\n")
    layers = [{"index": 0, "type": "models.common.Conv", "params": 3488, "in_channels": 3},
              {"index": 1, "type": "models.common.SOCA", "params": 1, "in_channels": 32},
              {"index": 2, "type": "models.common.SOCA", "params": 2, "in_channels": 32}]
    soca = catalog.get("soca")

    found = building.inserted_layers(text, layers, [soca], {"soca"})

    assert [(layer.layer, layer.class_name, layer.in_channels) for layer in found] == [(1, "SOCA", 32), (2, "SOCA", 32)]
    assert found[0].expected_params == soca.param_count(32, reduction=4)
    assert found[1].expected_params == soca.param_count(32)  # n=3 at depth 0.33 -> round(0.99) = 1 module
    assert not found[0].ok and found[0].checked


def test_inserted_layers_no_width_rows_pass_hyperparameters_only() -> None:
    """A "no-width" module's YAML args are all hyper-parameters (SimAM: [e_lambda]); a width module's
    follow the width. SE stands in for a no-width module with parameters, so that the counts differ."""
    se = catalog.get("se")
    no_width = dataclasses.replace(se, registration="no-width")
    text = "backbone:\n  [[-1, 1, Conv, [64, 3, 2]],\n   [-1, 1, SE, [4]]]\nhead:\n  [[-1, 1, Conv, [64, 1, 1]]]\n"
    layers = [{"index": 1, "type": "SE", "params": 0, "in_channels": 64}]

    as_no_width = building.inserted_layers(text, layers, [no_width], set())[0]
    as_width = building.inserted_layers(text, layers, [se], set())[0]

    assert as_no_width.expected_params == se.param_count(64, reduction=4)
    assert as_width.expected_params == se.param_count(64)


def test_inserted_layers_repeat_by_the_ultralytics_scale_depth() -> None:
    text = ("scales:\n  n: [0.33, 0.25, 1024]\n  l: [1.00, 1.00, 512]\nbackbone:\n  [[-1, 1, Conv, [64, 3, 2]],\n"
            "   [-1, 3, SOCA, [1024]]]\nhead:\n  [[-1, 1, Conv, [64, 1, 1]]]\n")
    layers = [{"index": 1, "type": "ultralytics.nn.modules.yolopatch.SOCA", "params": 0, "in_channels": 16}]
    soca = catalog.get("soca")

    at_n = building.inserted_layers(text, layers, [soca], set(), scale="n")[0]
    at_l = building.inserted_layers(text, layers, [soca], set(), scale="l")[0]

    assert at_n.expected_params == soca.param_count(16)  # n=3 at depth 0.33: round(0.99) = 1 module
    assert at_l.expected_params == 3 * soca.param_count(16)


def test_scaled_ultralytics_names() -> None:
    assert building._unscaled_name("yolov8n-soca.yaml") == ("yolov8-soca.yaml", "n")
    assert building._unscaled_name("yolo11x-simam-p3.yaml") == ("yolo11-simam-p3.yaml", "x")
    assert building._unscaled_name("yolov8s.yaml") == ("yolov8.yaml", "s")
    assert building._unscaled_name("yolov8-soca.yaml") is None
    assert building._unscaled_name("rtdetr-l.yaml") is None


@pytest.mark.parametrize("version", ["5.0", "6.1", "7.0"])
def test_upstream_yamls_pass_the_argument_check_and_a_typo_does_not(make_tree: Callable[..., Path],
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    version: str) -> None:
    """5.0's parse_model keeps a failed eval's string with a bare except, 6.1 and 7.0 on a NameError: every
    model YAML of the release passes probe.argument_problems (the rule verify runs before building), and
    yolov5s.yaml with `anchor` for `anchors` is found on its line (tests/targets/test_yolov7_verify.py: YOLOv7)."""
    from tests.targets.test_yolov7_verify import argument_problems_in_tree

    probe_environment(monkeypatch)
    root = make_tree(version, "checkout")
    upstream = sorted((root / "models").rglob("*.yaml"))
    assert len(upstream) >= 15
    text = (root / "models" / "yolov5s.yaml").read_text(encoding="utf-8")
    row = "Detect, [nc, anchors]"
    typo = root / "models" / "typo.yaml"
    typo.write_text(text.replace(row, "Detect, [nc, anchor]"), encoding="utf-8")

    found = argument_problems_in_tree(root, "models.yolo", upstream + [typo])

    assert {cfg: problems for cfg, problems in found.items() if problems} == {str(typo): [{
        "line": 1 + text[:text.index(row)].count("\n"), "row": 24,
        "message": "row 24 (Detect): argument 'anchor' is defined neither in models.yolo nor in parse_model "
                   "(did you mean 'anchors'?): parse_model would silently keep the string 'anchor'"}]}
