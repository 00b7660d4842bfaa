"""`yolopatch weights` on real Ultralytics trees (8.4 and 8.3), and checkpoints trained on a patched tree.

The base checkpoints are built here (no download): the tree's own ``DetectionModel`` with random weights
(every BatchNorm different, so a tensor loaded into the wrong layer shows), saved in Ultralytics' format
as ``strip_optimizer`` leaves it (``{"model": <model>.half(), "ema": None, "train_args": ..., ...}``). Each
written checkpoint is then checked by ``INDEPENDENT_CHECK``, run with the tree's code and independent of
yolopatch:

- the map: the written model's rows minus the inserted modules' rows are the base's rows, in order; every
  base tensor must sit, bit for bit, at its layer's new index;
- forward hooks: every layer before the first inserted one gives exactly the base's output;
- Ultralytics' own ``YOLO(cfg).load(written)`` logs "Transferred M/M items" (every tensor: the inserted
  layers' fresh ones come with the file), ``YOLO(cfg).load(base)`` fewer (what users get today);
- 8.4's restricted loader (``torch_safe_load(..., safe_only=True)``) reads the written file.

Ultralytics runs in subprocesses with the tree first on sys.path: it is never imported into pytest.
Training (``test_trained_checkpoint_loads_with_the_safe_loader``) needs ``polars`` (8.4's trainer reads its
results CSV with it), which the test environment lacks: a stand-in on PYTHONPATH (``POLARS_STANDIN``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import pytest

from tests.test_weights import config_dir, default_keys, synthetic_dataset
from tests.ultralytics_trees import ultralytics_tree  # noqa: F401  (the fixture)
from yolopatch import catalog, checkpoints, variants
from yolopatch.commands.weights import SCALE, find_ultralytics_cfg, plan_targets
from yolopatch.errors import YolopatchError
from yolopatch.targets.locate import locate_any

# Run with the tree's code: argv = a JSON list of [model YAML name, checkpoint to write, seed].
BUILD_BASE = r'''
import copy, datetime, json, os, sys, torch
sys.path.insert(0, os.getcwd())
import ultralytics
from ultralytics.nn.tasks import DetectionModel
for cfg, out, seed in json.loads(sys.argv[1]):
    torch.manual_seed(seed)
    model = DetectionModel(cfg, verbose=False)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if not tensor.is_floating_point() or ".dfl." in name:
                continue
            fill = torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor) * 0.05
            tensor.copy_(fill)
    model.names = {i: f"class{i}" for i in range(model.yaml["nc"])}
    model.args = {"imgsz": 640, "task": "detect", "data": "coco.yaml"}
    saved = copy.deepcopy(model).half()
    for parameter in saved.parameters():
        parameter.requires_grad = False
    torch.save({"date": datetime.datetime.now().isoformat(), "version": ultralytics.__version__, "epoch": -1,
                "best_fitness": None, "model": saved, "ema": None, "updates": None, "optimizer": None,
                "train_args": {"model": cfg, "data": "coco.yaml", "imgsz": 640, "task": "detect"}}, out)
'''

# Run with the tree's code: argv = a JSON list of [base.pt, written.pt, scaled YAML name, [inserted classes]].
INDEPENDENT_CHECK = r'''
import copy, json, logging, os, sys, torch
sys.path.insert(0, os.getcwd())
from ultralytics import YOLO
from ultralytics.nn import tasks

lines = []


class Keep(logging.Handler):
    def emit(self, record):
        lines.append(record.getMessage())


logging.getLogger("ultralytics").addHandler(Keep())
load = lambda path: torch.load(path, map_location="cpu", weights_only=False)


def outputs(net, image):
    store = {}
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: store.__setitem__(i, o))
             for i, layer in enumerate(net.model)]
    with torch.no_grad():
        net(image)
    for hook in hooks:
        hook.remove()
    return store


def same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def transferred(cfg, weights):
    del lines[:]
    YOLO(cfg).load(weights)
    return [line for line in lines if "Transferred" in line][-1]


image = torch.rand(1, 3, 64, 64)
results = []
for base_path, written_path, cfg, inserted in json.loads(sys.argv[1]):
    base = load(base_path)["model"]
    written = load(written_path)
    model = written["model"]
    rows = model.yaml["backbone"] + model.yaml["head"]
    kept = [index for index, row in enumerate(rows) if row[2] not in inserted]
    assert len(kept) == len(base.model), (len(kept), len(base.model))
    state = model.state_dict()
    moved = wrong = 0
    for key, tensor in base.state_dict().items():
        _, number, rest = key.split(".", 2)
        target = state.get(f"model.{kept[int(number)]}.{rest}")
        ok = target is not None and target.dtype == tensor.dtype and torch.equal(target, tensor)
        moved, wrong = moved + ok, wrong + (not ok)
    first = next(index for index in range(len(rows)) if index not in kept)
    base_out = outputs(copy.deepcopy(base).float().eval(), image)
    new_out = outputs(copy.deepcopy(model).float().eval(), image)
    safe = None
    if hasattr(tasks, "_SafeLoad"):
        safe = type(tasks.torch_safe_load(written_path, safe_only=True)[0]["model"]).__name__
    results.append({"moved": moved, "wrong": wrong, "base_tensors": len(base.state_dict()), "first_inserted": first,
                    "same_before": sum(same(base_out[i], new_out[i]) for i in range(first)),
                    "epoch": written["epoch"], "ema": written["ema"], "optimizer": written["optimizer"],
                    "scale": model.yaml.get("scale"), "safe": safe, "names": len(model.names),
                    "load_line": transferred(cfg, written_path), "naive_line": transferred(cfg, base_path)})
print("RESULT " + json.dumps(results))
'''


def tree_env(tmp_path: Path, *site: Path) -> Dict[str, str]:
    """Offline Ultralytics: its config dir (with a font) under tmp_path, no HUB, one thread."""
    folder = tmp_path / "yolo-config"
    if not folder.exists():
        config_dir(folder)
    path = [str(item) for item in site] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "YOLO_CONFIG_DIR": str(folder), "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "True",
            "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(path), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def run_in_tree(root: Path, env: Dict[str, str], script: str, *args: str) -> str:
    result = subprocess.run([sys.executable, "-c", script, *args], cwd=root, capture_output=True, text=True,
                            env=env, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


def build_bases(root: Path, env: Dict[str, str], models: Sequence[Tuple[str, Path, int]]) -> None:
    run_in_tree(root, env, BUILD_BASE, json.dumps([[cfg, str(out), seed] for cfg, out, seed in models]))


def independent_check(root: Path, env: Dict[str, str],
                      items: Sequence[Tuple[Path, Path, str, Sequence[str]]]) -> List[Dict[str, Any]]:
    output = run_in_tree(root, env, INDEPENDENT_CHECK,
                         json.dumps([[str(base), str(out), cfg, list(classes)] for base, out, cfg, classes in items]))
    return json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[len("RESULT "):])


def weights_json(root: Path, env: Dict[str, str], checkpoint: Path, cfgs: Sequence[Path], *extra: str) -> Dict[str, Any]:
    args = ["weights", str(checkpoint), *[arg for cfg in cfgs for arg in ("--to", str(cfg))], "--json", *extra]
    result = subprocess.run([sys.executable, "-m", "yolopatch", *args], cwd=root, capture_output=True, text=True,
                            env=env, timeout=1800)
    assert result.stdout, result.stderr[-3000:]
    report = json.loads(result.stdout)
    report["exit_code"], report["stderr"] = result.returncode, result.stderr
    return report


def _apply(root: Path, keys: Sequence[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "yolopatch", "apply", *keys, "--repo", str(root)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _complete(target: Dict[str, Any]) -> None:
    """The report says: every source tensor moved, nothing mismatched, the forward check and the loaders passed."""
    assert target["ok"], target["problems"]
    assert target["transferred"] == target["source_tensors"]
    assert all(not entry["mismatches"] and not entry["missing"] for entry in target["layers"])
    check = target["check"]
    assert check["failures"] == [] and check["layers_equal"] == check["layers_checked"] > 0
    assert check["before"] == list(range(check["first_inserted"])) and check["first_inserted"] > 0
    assert target["load_transferred"] == target["target_tensors"] > target["naive_transferred"]
    assert target["loader"]["safe_load_error"] in (None, "n/a")


def inserted_classes(key: str) -> List[str]:
    return sorted(name for name, owner in checkpoints.template_classes().items() if owner == key)


# --------------------------------------------------------------------------------------------
# 8.4: every default variant of yolov8 and yolo11 at scale n


@pytest.mark.slow
def test_every_default_variant_gets_every_base_tensor(ultralytics_tree: Callable[[str], Path],
                                                      tmp_path: Path) -> None:
    root = ultralytics_tree("8.4")
    keys = default_keys()
    _apply(root, keys)
    env = tree_env(tmp_path)
    models = root / "ultralytics" / "cfg" / "models"
    bases = {"yolov8": (models / "v8", root / "yolov8n.pt", 355), "yolo11": (models / "11", root / "yolo11n.pt", 499)}
    build_bases(root, env, [("yolov8n.yaml", bases["yolov8"][1], 1), ("yolo11n.yaml", bases["yolo11"][1], 2)])
    started = time.perf_counter()
    for stem, (folder, base, tensors) in bases.items():
        cfgs = [folder / f"{stem}-{key}.yaml" for key in keys]
        report = weights_json(root, env, base, cfgs)
        assert report["exit_code"] == 0, report["stderr"][-3000:]
        assert report["source"]["which"] == "model" and report["source"]["dtype"] == "float16"
        items = []
        for key, target in zip(keys, report["targets"]):
            _complete(target)
            assert target["source_as"] == f"{stem}.yaml" and target["scale"] == "n"
            assert target["source_tensors"] == tensors
            assert target["out"] == str(root / f"{stem}n-{key}.pt")  # the name Ultralytics reads the scale from
            items.append((base, Path(target["out"]), f"{stem}n-{key}.yaml", inserted_classes(key)))
        for key, target, found in zip(keys, report["targets"], independent_check(root, env, items)):
            assert found["wrong"] == 0 and found["moved"] == found["base_tensors"] == tensors, key
            assert found["same_before"] == found["first_inserted"] == target["check"]["first_inserted"], key
            total = target["target_tensors"]
            assert found["load_line"].startswith(f"Transferred {total}/{total} items"), (key, found["load_line"])
            assert found["naive_line"].startswith(f"Transferred {target['naive_transferred']}/{total} items"), key
            assert (found["epoch"], found["ema"], found["optimizer"], found["scale"]) == (-1, None, None, "n")
            assert found["safe"] == "DetectionModel" and found["names"] == 80
            assert checkpoints.foreign_ultralytics_classes(Path(target["out"])) == []
            print(f"{stem}-{key}: {target['transferred']}/{tensors} base tensors; YOLO().load: "
                  f"{found['load_line'].split(' items')[0]} from the written file, "
                  f"{target['naive_transferred']}/{total} from the base")
    print(f"weights + independent check, 42 variants: {time.perf_counter() - started:.1f} s")

    # the written checkpoints need their modules (pickled under ultralytics.nn.modules.yolopatch)
    needs = {item.path.name: item.modules for item in checkpoints.checkpoint_needs(root, checkpoints.ULTRALYTICS)}
    assert needs["yolov8n.pt"] == {} and needs["yolo11n-soca.pt"] == {"soca": ("SOCA",)}
    assert needs["yolov8n-cbam.pt"] == {"cbam": ("CBAM",)}  # tasks.py imports CBAM from yolopatch's file
    assert needs["yolov8n-sea-attention.pt"] == {"sea-attention": ("SeaAttention", "SeaAttentionConvBN")}


# --------------------------------------------------------------------------------------------
# 8.3: scaled names, another scale, several modules, variants of variants, another model


def _write_variant(folder: Path, base_name: str, name: str, modules: Sequence[Tuple[str, Sequence[str]]]) -> Path:
    placements = [variants.Placement(catalog.get(key).class_name, key, positions, variants.load_spec(key).args)
                  for key, positions in modules]
    path = folder / name
    text = variants.render_variant((folder / base_name).read_text(encoding="utf-8"), base_name, placements)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.slow
def test_scales_several_modules_and_variants_of_variants(ultralytics_tree: Callable[[str], Path],
                                                         tmp_path: Path) -> None:
    root = ultralytics_tree("8.3")
    _apply(root, ["soca", "sge"])
    env = tree_env(tmp_path)
    v8 = root / "ultralytics" / "cfg" / "models" / "v8"
    both = _write_variant(v8, "yolov8.yaml", "yolov8-sge-soca.yaml", [("sge", ("p4", "p5")), ("soca", ("p5",))])
    base, other = root / "yolov8n.pt", root / "yolo11n.pt"
    build_bases(root, env, [("yolov8n.yaml", base, 1), ("yolo11n.yaml", other, 2)])

    # a scaled name finds the variant and gives the scale; the two-module variant at the source's scale
    report = weights_json(root, env, base, [Path("yolov8n-soca.yaml"), both])
    assert report["exit_code"] == 0, report["stderr"][-3000:]
    soca, several = report["targets"]
    for target in (soca, several):
        _complete(target)
        assert target["scale"] == "n"
    assert soca["out"] == str(root / "yolov8n-soca.pt") and several["out"] == str(root / "yolov8n-sge-soca.pt")
    assert [item["class"] for item in several["fresh"]] == ["SpatialGroupEnhance", "SpatialGroupEnhance", "SOCA"]
    found = independent_check(root, env, [(base, root / "yolov8n-sge-soca.pt", "yolov8n-sge-soca.yaml",
                                           ["SOCA", "SpatialGroupEnhance"])])[0]
    assert found["wrong"] == 0 and found["same_before"] == found["first_inserted"] == several["check"]["first_inserted"]
    total = several["target_tensors"]
    assert found["load_line"].startswith(f"Transferred {total}/{total} items") and found["safe"] is None  # 8.3

    # the soca checkpoint into the two-module variant: its SOCA layer keeps its tensors
    more = weights_json(root, env, root / "yolov8n-soca.pt", [both], "--out", str(root / "from-soca.pt"))
    (target,) = more["targets"]
    _complete(target)
    assert target["source_as"] == "yolov8.yaml with soca at p5" and target["source_tensors"] == soca["target_tensors"]
    assert [item["class"] for item in target["fresh"]] == ["SpatialGroupEnhance", "SpatialGroupEnhance"]
    soca_layer = next(entry for entry in target["layers"] if entry["class"] == "SOCA")
    assert soca_layer["transferred"] == soca_layer["tensors"] == 4

    # the same variant twice: at the source's scale (n: its file exists, refused without --force) and at s (same
    # layers, other widths: every mismatch is named, the rest moves)
    both_scales = weights_json(root, env, base, [v8 / "yolov8-soca.yaml", Path("yolov8s-soca.yaml")])
    again, wider = both_scales["targets"]
    assert both_scales["exit_code"] == 1 and "yolov8n-soca.pt exists" in again["problems"][0]
    assert wider["ok"] and wider["scale"] == "s" and wider["out"] == str(root / "yolov8s-soca.pt")
    mismatched = [item for entry in wider["layers"] for item in entry["mismatches"]]
    assert mismatched and wider["transferred"] + len(mismatched) == wider["source_tensors"]
    assert ["model.0.conv.weight", [16, 3, 3, 3], "model.0.conv.weight", [32, 3, 3, 3]] in mismatched
    assert "does not fit" in both_scales["stderr"]

    # a checkpoint of another model: refused, nothing written
    refused = weights_json(root, env, other, [v8 / "yolov8-soca.yaml"], "--out", str(root / "nope.pt"))
    assert refused["exit_code"] == 1 and "neither yolov8.yaml nor a variant of it" in refused["targets"][0]["problems"][0]
    assert not (root / "nope.pt").exists()


# --------------------------------------------------------------------------------------------
# 8.4: train one epoch from the written checkpoint; the trainer's checkpoint loads with the safe loader


# 8.4's trainer reads its results CSV with polars (a requirement of ultralytics, absent from the test
# environment): the one function it calls, on PYTHONPATH.
POLARS_STANDIN = '''import csv, io


class _Frame:
    def __init__(self, rows):
        self.rows = rows

    def to_dict(self, as_series=True):
        return {key: [row[key] for row in self.rows] for key in (self.rows[0] if self.rows else {})}


def read_csv(source, infer_schema_length=None, **kwargs):
    text = source.decode() if isinstance(source, bytes) else open(source, encoding="utf-8").read()
    return _Frame(list(csv.DictReader(io.StringIO(text))))
'''

TRAIN = r'''
import os, sys
sys.path.insert(0, os.getcwd())
from ultralytics import YOLO
weights, data, project = sys.argv[1:4]
YOLO(weights).train(data=data, epochs=1, imgsz=64, batch=2, workers=0, device="cpu", plots=False, amp=False,
                    project=project, name="train", exist_ok=True, seed=0)
'''

# Run with the tree's code after training: the trainer's checkpoint through the restricted loader, and a
# class from outside ultralytics.nn.modules refused by it. argv = [last.pt, path for the foreign checkpoint].
SAFE_LOAD = r'''
import json, os, sys, torch
os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"
sys.path.insert(0, os.getcwd())
from ultralytics.nn import tasks
last, foreign_path = sys.argv[1:3]
model, checkpoint = tasks.load_checkpoint(last)
layer = model.model[22]
with torch.no_grad():
    out = model(torch.rand(1, 3, 64, 64))
import ultralytics.nn.pasted as pasted
checkpoint["model"].model[22] = pasted.Pasted()
torch.save(checkpoint, foreign_path)
try:
    tasks.torch_safe_load(foreign_path, safe_only=True)
    refused = None
except TypeError as error:
    refused = str(error)
from ultralytics.utils import SAFE_LOAD
print("RESULT " + json.dumps({"class": type(layer).__module__ + "." + type(layer).__name__, "safe": SAFE_LOAD,
                              "out": type(out).__name__, "refused": refused}))
'''


@pytest.mark.slow
def test_trained_checkpoint_loads_with_the_safe_loader(ultralytics_tree: Callable[[str], Path],
                                                       tmp_path: Path) -> None:
    root = ultralytics_tree("8.4")
    _apply(root, ["soca"])
    site = tmp_path / "site"
    (site / "polars").mkdir(parents=True)
    (site / "polars" / "__init__.py").write_text(POLARS_STANDIN, encoding="utf-8")
    env = tree_env(tmp_path, site)
    base = root / "yolov8n.pt"
    build_bases(root, env, [("yolov8n.yaml", base, 1)])
    report = weights_json(root, env, base, [Path("yolov8-soca.yaml")])
    (target,) = report["targets"]
    _complete(target)
    data = synthetic_dataset(tmp_path / "data")
    started = time.perf_counter()
    output = run_in_tree(root, env, TRAIN, target["out"], str(data), str(root / "runs" / "detect"))
    line = next(line for line in output.splitlines() if "Transferred" in line)
    print(f"1 epoch: {time.perf_counter() - started:.1f} s: {line.strip()}")
    total = target["target_tensors"]
    assert f"Transferred {total}/{total} items" in line  # the trainer takes every tensor of the written file
    last = root / "runs" / "detect" / "train" / "weights" / "last.pt"
    assert last.is_file()

    # what yolopatch reads from the trained checkpoint without unpickling it
    needs = {item.path.relative_to(root.resolve()).as_posix(): item.modules
             for item in checkpoints.checkpoint_needs(root, checkpoints.ULTRALYTICS)}
    assert needs["runs/detect/train/weights/last.pt"] == {"soca": ("SOCA",)}
    assert needs["runs/detect/train/weights/best.pt"] == {"soca": ("SOCA",)}
    assert checkpoints.foreign_ultralytics_classes(last) == []

    # the tree's restricted loader reads it and runs it; a class outside ultralytics.nn.modules is refused
    (root / "ultralytics" / "nn" / "pasted.py").write_text(
        "import torch.nn as nn\n\n\nclass Pasted(nn.Identity):\n    pass\n", encoding="utf-8")
    foreign = root / "runs" / "foreign.pt"
    result = json.loads(next(line for line in run_in_tree(root, env, SAFE_LOAD, str(last), str(foreign)).splitlines()
                             if line.startswith("RESULT "))[len("RESULT "):])
    assert result["class"] == "ultralytics.nn.modules.yolopatch.SOCA" and result["safe"]
    assert result["refused"] and "outside the supported" in result["refused"]
    assert checkpoints.foreign_ultralytics_classes(foreign) == ["ultralytics.nn.pasted.Pasted"]


# --------------------------------------------------------------------------------------------
# Planning (no torch)


def test_plans_on_an_ultralytics_tree(ultralytics_tree: Callable[[str], Path]) -> None:
    root = ultralytics_tree("8.4")
    _apply(root, ["soca"])
    tree = locate_any(root)
    v8 = root / "ultralytics" / "cfg" / "models" / "v8"
    (root / "yolov8n.pt").write_bytes(b"")
    checkpoint = (root / "yolov8n.pt").resolve()
    assert find_ultralytics_cfg(tree, Path("yolov8-soca.yaml")) == ((v8 / "yolov8-soca.yaml").resolve(), None)
    assert find_ultralytics_cfg(tree, Path("yolov8m-soca.yaml")) == ((v8 / "yolov8-soca.yaml").resolve(), "m")
    with pytest.raises(YolopatchError, match="not found"):
        find_ultralytics_cfg(tree, Path("yolov8n-gam.yaml"))
    (plan,) = plan_targets(tree, checkpoint, [Path("yolov8-soca.yaml")], None, False)
    assert plan.scale is None and plan.out == checkpoint.parent / f"yolov8{SCALE}-soca.pt"  # the probe fills it in
    (plan,) = plan_targets(tree, checkpoint, [Path("yolov8s-soca.yaml")], None, False)
    assert plan.scale == "s" and plan.out == checkpoint.parent / "yolov8s-soca.pt"
    (plan,) = plan_targets(tree, checkpoint, [v8 / "yolov8-soca.yaml"], None, False, scale="x")
    assert plan.scale == "x" and plan.out == checkpoint.parent / "yolov8x-soca.pt"
    assert plan.candidates[0].description == "yolov8.yaml" and plan.to_json()["scale"] == "x"
    (root / "yolov8x-soca.pt").write_bytes(b"")
    with pytest.raises(YolopatchError, match="a file of this name exists"):
        plan_targets(tree, checkpoint, [Path("yolov8x-soca.yaml")], None, False)
    with pytest.raises(YolopatchError, match="not a yolopatch-generated variant"):
        plan_targets(tree, checkpoint, [Path("yolov8.yaml")], None, False)
