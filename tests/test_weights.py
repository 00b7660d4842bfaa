"""`yolopatch weights` on real YOLOv5 trees, and the checkpoints that need the patch (status, check, revert).

The base checkpoints are built here (no download): the tree's own ``Model`` with random weights
(every BatchNorm different, so a tensor loaded into the wrong layer shows), saved in YOLOv5's
format (``{"epoch", "model": <Model>.half(), "optimizer": None, ...}``). Each written checkpoint
is then checked by a script of this file, run with the tree's code and independent of yolopatch:

- the map: the variant's rows minus the inserted modules' rows are the base's rows, in order;
  every base tensor must sit, bit for bit, at its layer's new index;
- forward hooks: every layer before the first inserted one gives exactly the base's output;
- train.py's own transfer (``intersect_dicts`` by key and shape, anchors excluded with --cfg) from
  the written checkpoint into ``Model(cfg)`` takes every item but the anchors; from the base
  checkpoint (what people do today) it takes fewer.

The 1-epoch ``train.py`` run (``test_train_py_reports_the_transfer``) needs what old YOLOv5 needs
with today's libraries (``shared/notes/real-workflow.md``) and offline stand-ins for what the 7.0.x
wheel's train.py imports (``OFFLINE_SITE``, on PYTHONPATH: no edit of the tree),
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, no auto-install, a local font.
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

from tests.test_verify import probe_environment
from yolopatch import catalog, checkpoints, variants
from yolopatch.commands import check as check_module
from yolopatch.commands.apply import apply
from yolopatch.commands.revert import revert
from yolopatch.commands.status import collect
from yolopatch.commands.variant import variant
from yolopatch.commands.weights import out_paths, plan_target, plan_targets
from yolopatch.errors import YolopatchError, UsageError
from yolopatch.tree import locate

TREES = [("5.0", "checkout"), ("6.1", "checkout"), ("7.0", "checkout"), ("master", "master")]

# Run with the tree's code (``$YOLO_MODULE``: models.yolo, or yolov5.models.yolo in the package layout):
# argv = a JSON list of [model YAML, checkpoint to write, seed].
BUILD_BASE = r'''
import copy, datetime, importlib, json, os, sys, torch
sys.path.insert(0, os.getcwd())
yolo = importlib.import_module(os.environ["YOLO_MODULE"])
Model = getattr(yolo, "Model", None) or yolo.DetectionModel
for cfg, out, seed in json.loads(sys.argv[1]):
    torch.manual_seed(seed)
    model = Model(cfg)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if "anchor" in name or not tensor.is_floating_point():
                continue
            fill = torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor) * 0.05
            tensor.copy_(fill)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save({"epoch": 3, "best_fitness": None, "model": copy.deepcopy(model).half(), "ema": None, "updates": None,
                "optimizer": None, "date": datetime.datetime.now().isoformat()}, out)
'''

# Run with the tree's code (``$YOLO_MODULE``): argv = a JSON list of [base.pt, written.pt, variant.yaml,
# [inserted class names]].
INDEPENDENT_CHECK = r'''
import copy, importlib, json, os, sys, torch, yaml
sys.path.insert(0, os.getcwd())
yolo = importlib.import_module(os.environ["YOLO_MODULE"])
Model = getattr(yolo, "Model", None) or yolo.DetectionModel
load = lambda path: torch.load(path, map_location="cpu", weights_only=False)

def record(store, index):
    return lambda module, args, output: store.__setitem__(index, output)

def outputs(net, image):
    store = {}
    hooks = [layer.register_forward_hook(record(store, i)) for i, layer in enumerate(net.model)]
    with torch.no_grad():
        net(image)
    for hook in hooks:
        hook.remove()
    return store

image = torch.rand(1, 3, 64, 64)
results = []
for base_path, written_path, cfg, inserted in json.loads(sys.argv[1]):
    base = load(base_path)["model"]
    base_state = base.state_dict()
    base_out = outputs(copy.deepcopy(base).float().eval(), image)
    written = load(written_path)
    model = written["model"]
    with open(cfg, encoding="ascii", errors="ignore") as handle:
        data = yaml.safe_load(handle)
    rows = data["backbone"] + data["head"]
    kept = [index for index, row in enumerate(rows) if row[2] not in inserted]
    assert len(kept) == len(base.model), (len(kept), len(base.model))
    moved = wrong = 0
    written_state = model.state_dict()
    for key, tensor in base_state.items():
        _, number, rest = key.split(".", 2)
        target = written_state.get(f"model.{kept[int(number)]}.{rest}")
        if target is not None and target.dtype == tensor.dtype and torch.equal(target, tensor):
            moved += 1
        else:
            wrong += 1
    first = next(index for index in range(len(rows)) if index not in kept)
    new_out = outputs(model.float().eval(), image)
    same_before = [i for i in range(first) if torch.equal(base_out[i], new_out[i])]
    db = Model(cfg, ch=3).state_dict()
    def intersect(state):
        return {k: v for k, v in state.items() if k in db and "anchor" not in k and v.shape == db[k].shape}
    results.append({"moved": moved, "wrong": wrong, "base_tensors": len(base_state), "first_inserted": first,
                    "same_before": len(same_before),
                    "train_transferred": len(intersect(load(written_path)["model"].float().state_dict())),
                    "naive_transferred": len(intersect(base.float().state_dict())), "items": len(db),
                    "anchors": sum("anchor" in k for k in db), "epoch": written["epoch"],
                    "optimizer": written["optimizer"], "ema": written["ema"]})
print("RESULT " + json.dumps(results))
'''


def default_keys() -> List[str]:
    """Every catalogue module with a default placement (a shipped variant spec)."""
    return [spec.key for spec in catalog.all_modules() if spec.placement]


def _run_in_tree(root: Path, script: str, *args: str) -> str:
    module = f"{locate(root).models_module}.yolo"
    result = subprocess.run([sys.executable, "-c", script, *args], cwd=root, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "YOLO_MODULE": module}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def build_bases(root: Path, models: Sequence[Tuple[str, Path, int]]) -> None:
    """BUILD_BASE in one process: (model YAML relative to the root, checkpoint path, seed) each."""
    _run_in_tree(root, BUILD_BASE, json.dumps([[cfg, str(out), seed] for cfg, out, seed in models]))


def independent_check(root: Path, written: Sequence[Tuple[Path, Path, Path, Sequence[str]]]) -> List[Dict[str, Any]]:
    """INDEPENDENT_CHECK in one process on (base checkpoint, written checkpoint, variant YAML, inserted
    class names) each."""
    items = [[str(base), str(path), str(cfg), list(classes)] for base, path, cfg, classes in written]
    output = _run_in_tree(root, INDEPENDENT_CHECK, json.dumps(items))
    return json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[len("RESULT "):])


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolopatch", *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=1800)


def weights_json(root: Path, checkpoint: Path, cfgs: Sequence[Path], *extra: str) -> Dict[str, Any]:
    args = ["weights", str(checkpoint), *[arg for cfg in cfgs for arg in ("--to", str(cfg))], "--json", *extra]
    result = cli(root, *args)
    assert result.stdout, result.stderr[-3000:]
    report = json.loads(result.stdout)
    report["exit_code"] = result.returncode
    report["stderr"] = result.stderr
    return report


def _complete(target: Dict[str, Any]) -> None:
    """The report says: every source tensor moved, nothing mismatched, the forward check passed."""
    assert target["ok"], target["problems"]
    assert target["transferred"] == target["source_tensors"]
    assert all(not entry["mismatches"] and not entry["missing"] for entry in target["layers"])
    check = target["check"]
    assert check["failures"] == [] and check["layers_equal"] == check["layers_checked"] > 0
    assert check["before"] == list(range(check["first_inserted"])) and check["first_inserted"] > 0
    assert target["train_transferred"] < target["target_tensors"]  # the anchors


# --------------------------------------------------------------------------------------------
# Every default variant, on every supported tree


@pytest.mark.slow
@pytest.mark.parametrize("version,layout", TREES)
def test_every_default_variant_gets_every_base_tensor(make_tree: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
                                                      version: str, layout: str) -> None:
    probe_environment(monkeypatch)
    root = make_tree(version, layout)
    tree = locate(root)
    keys = default_keys()
    assert apply(root, keys) == 0
    base = root / "yolov5s.pt"
    build_bases(root, [("models/yolov5s.yaml", base, 1)])
    cfgs = [tree.models_dir / f"yolov5s-{key}.yaml" for key in keys]
    report = weights_json(root, base, cfgs)
    assert report["exit_code"] == 0, report["stderr"][-3000:]
    assert report["source"]["which"] == "model" and report["source"]["dtype"] == "float16"
    owners = checkpoints.template_classes()
    written = [(base, root / f"yolov5s-{key}.pt", cfg, [name for name, owner in owners.items() if owner == key])
               for key, cfg in zip(keys, cfgs)]
    base_layers = None
    for target, found in zip(report["targets"], independent_check(root, written)):
        _complete(target)
        assert target["source_as"] == "yolov5s.yaml"
        assert found["wrong"] == 0 and found["moved"] == found["base_tensors"] == target["source_tensors"]
        assert found["same_before"] == found["first_inserted"] == target["check"]["first_inserted"]
        assert found["train_transferred"] == found["items"] - found["anchors"] == target["train_transferred"]
        assert found["items"] == target["target_tensors"]
        assert found["naive_transferred"] < found["train_transferred"]  # what --weights yolov5s.pt gives today
        assert (found["epoch"], found["optimizer"], found["ema"]) == (-1, None, None)
        print(f"{target['cfg']}: {target['transferred']}/{target['source_tensors']} base tensors; train.py would "
              f"report {found['train_transferred']}/{found['items']} from the written checkpoint, "
              f"{found['naive_transferred']}/{found['items']} from the base")
        base_layers = base_layers or target["check"]["layers_checked"]
        assert target["check"]["layers_checked"] == base_layers  # every base layer, tensors or not

    # the checkpoints at the root need their modules: revert refuses, names them, --force goes on
    soca = root / "runs" / "train" / "exp" / "weights" / "best.pt"
    soca.parent.mkdir(parents=True)
    (root / "yolov5s-soca.pt").rename(soca)
    for key in keys:
        if key != "soca":
            (root / f"yolov5s-{key}.pt").unlink()
    needs = {item["path"]: item["modules"] for item in collect(root)["checkpoints"]}
    assert needs == {"runs/train/exp/weights/best.pt": {"soca": ["SOCA"]}}
    with pytest.raises(YolopatchError, match=r"1 checkpoint\(s\) in this tree need soca .*runs/train/exp/weights/best.pt"):
        revert(root, ["soca"])
    with pytest.raises(YolopatchError, match="need soca"):
        revert(root, [])
    assert (tree.models_dir / "yolov5s-soca.yaml").is_file()
    assert revert(root, ["gam"]) == 0  # nothing needs gam
    assert check_module.collect(tree).findings == []
    assert revert(root, ["soca"], force=True) == 0
    findings = check_module.collect(tree).findings
    assert [(f.code, f.path) for f in findings] == [("checkpoint-needs-module", soca.resolve())]
    assert "SOCA" in findings[0].message and "yolopatch apply soca" in findings[0].fix
    assert apply(root, ["soca"]) == 0
    assert check_module.collect(tree).findings == []


# --------------------------------------------------------------------------------------------
# Several modules, variants of variants, another scale, another width (7.0)


def _write_variant(tree_models: Path, base_name: str, name: str, modules: Sequence[tuple]) -> Path:
    base_text = (tree_models / base_name).read_text(encoding="utf-8")
    placements = [variants.Placement(catalog.get(key).class_name, key, positions, variants.load_spec(key).args)
                  for key, positions in modules]
    path = tree_models / name
    path.write_text(variants.render_variant(base_text, base_name, placements), encoding="utf-8")
    return path


@pytest.mark.slow
def test_several_modules_variants_of_variants_scales_and_widths(make_tree: Callable[..., Path],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    probe_environment(monkeypatch)
    root = make_tree("7.0", "checkout")
    tree = locate(root)
    assert apply(root, ["soca", "sge"]) == 0
    assert variant(root, ["soca"], scales=["n", "m"]) == 0
    both = _write_variant(tree.models_dir, "yolov5s.yaml", "yolov5s-sge-soca.yaml",
                          [("sge", ("p4", "p5")), ("soca", ("p5",))])
    base_s, base_n, other = root / "yolov5s.pt", root / "yolov5n.pt", root / "yolov5s6.pt"
    build_bases(root, [("models/yolov5s.yaml", base_s, 1), ("models/yolov5n.yaml", base_n, 2),
                       ("models/hub/yolov5s6.yaml", other, 3)])
    models = tree.models_dir

    report = weights_json(root, base_s, [models / "yolov5s-soca.yaml", both, models / "yolov5m-soca.yaml"])
    soca, several, wider = report["targets"]
    _complete(soca)
    _complete(several)
    assert [item["class"] for item in several["fresh"]] == ["SpatialGroupEnhance", "SpatialGroupEnhance", "SOCA"]
    # yolov5s.pt into the m-scale variant: same layers, other widths: every mismatch is named
    assert wider["ok"] and report["exit_code"] == 0
    mismatched = [item for entry in wider["layers"] for item in entry["mismatches"]]
    assert mismatched and wider["transferred"] + len(mismatched) == wider["source_tensors"]
    assert ["model.0.conv.weight", [32, 3, 6, 6], "model.0.conv.weight", [48, 3, 6, 6]] in mismatched
    assert "does not fit" in report["stderr"]

    # a variant's checkpoint into a variant with more modules: its SOCA layer keeps its tensors
    more = weights_json(root, root / "yolov5s-soca.pt", [both], "--out", str(root / "from-soca.pt"))
    (target,) = more["targets"]
    _complete(target)
    assert target["source_as"] == "yolov5s.yaml with soca at p5"
    assert target["source_tensors"] == soca["target_tensors"]
    assert [item["class"] for item in target["fresh"]] == ["SpatialGroupEnhance", "SpatialGroupEnhance"]

    # another scale
    small = weights_json(root, base_n, [models / "yolov5n-soca.yaml"])
    _complete(small["targets"][0])
    found = independent_check(root, [(base_s, root / "yolov5s-sge-soca.pt", both, ["SpatialGroupEnhance", "SOCA"]),
                                     (base_n, root / "yolov5n-soca.pt", models / "yolov5n-soca.yaml", ["SOCA"])])
    assert [(item["wrong"], item["moved"]) for item in found] == [(0, item["base_tensors"]) for item in found]
    assert found[0]["same_before"] == found[0]["first_inserted"] == several["check"]["first_inserted"]

    # a checkpoint of another model: refused, nothing written
    refused = weights_json(root, other, [models / "yolov5s-soca.yaml"], "--out", str(root / "nope.pt"))
    assert refused["exit_code"] == 1 and not refused["ok"]
    assert "neither yolov5s.yaml nor a variant of it" in refused["targets"][0]["problems"][0]
    assert not (root / "nope.pt").exists()


# --------------------------------------------------------------------------------------------
# The package layout: <root>/yolov5/models/..., classes pickled under yolov5.models.common


@pytest.mark.slow
def test_package_layout(make_tree: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    probe_environment(monkeypatch)
    root = make_tree("7.0", "package")
    tree = locate(root)
    assert tree.models_module == "yolov5.models" and tree.models_dir == root / "yolov5" / "models"
    assert apply(root, ["soca"]) == 0
    base, cfg = root / "yolov5s.pt", tree.models_dir / "yolov5s-soca.yaml"
    build_bases(root, [("yolov5/models/yolov5s.yaml", base, 1)])
    report = weights_json(root, base, [Path("yolov5s-soca.yaml")])  # found in yolov5/models/
    assert report["exit_code"] == 0, report["stderr"][-3000:]
    (target,) = report["targets"]
    _complete(target)
    assert target["cfg"] == "yolov5/models/yolov5s-soca.yaml" and target["out"] == str(root / "yolov5s-soca.pt")
    (found,) = independent_check(root, [(base, root / "yolov5s-soca.pt", cfg, ["SOCA"])])
    assert found["wrong"] == 0 and found["moved"] == found["base_tensors"] == target["source_tensors"]
    assert found["same_before"] == found["first_inserted"] == target["check"]["first_inserted"]
    assert found["train_transferred"] == found["items"] - found["anchors"] == target["train_transferred"]
    # the written checkpoint names yolopatch's class under the package: status sees it, revert refuses
    assert ("yolov5.models.common", "SOCA") in checkpoints.checkpoint_globals(root / "yolov5s-soca.pt")
    best = root / "runs" / "train" / "exp" / "weights" / "best.pt"
    best.parent.mkdir(parents=True)
    (root / "yolov5s-soca.pt").rename(best)
    assert {item["path"]: item["modules"] for item in collect(root)["checkpoints"]} == {
        "runs/train/exp/weights/best.pt": {"soca": ["SOCA"]}}
    with pytest.raises(YolopatchError, match="need soca"):
        revert(root, ["soca"])


# --------------------------------------------------------------------------------------------
# Refusals that need no torch


def test_refusals(make_tree: Callable[..., Path]) -> None:
    root = make_tree("7.0", "checkout")
    tree = locate(root)
    assert apply(root, ["soca"]) == 0
    models = tree.models_dir
    with pytest.raises(YolopatchError, match="not a yolopatch-generated variant"):
        plan_target(models / "yolov5s.yaml", root / "x.pt")
    variant_path = models / "yolov5s-soca.yaml"
    text = variant_path.read_text(encoding="utf-8")
    variant_path.write_text(text.replace("[-1, 1, SOCA, [1024]]", "[-1, 1, SOCA, [1024]],\n   [-1, 1, SOCA, [1024]]"),
                            encoding="utf-8")
    with pytest.raises(YolopatchError, match="no longer yolov5s.yaml with soca at p5"):
        plan_target(variant_path, root / "x.pt")
    variant_path.write_text(text, encoding="utf-8")
    assert plan_target(variant_path, root / "x.pt").candidates[0].description == "yolov5s.yaml"
    (root / "yolov5s.pt").write_bytes(b"")
    (root / "yolov5s-soca.pt").write_bytes(b"")
    checkpoint = (root / "yolov5s.pt").resolve()
    with pytest.raises(YolopatchError, match="a file of this name exists"):
        out_paths(checkpoint, [variant_path], None, force=False)
    assert out_paths(checkpoint, [variant_path], None, force=True) == [checkpoint.parent / "yolov5s-soca.pt"]
    with pytest.raises(UsageError, match="exactly one --to"):
        out_paths(checkpoint, [variant_path, variant_path], root / "a.pt", force=False)
    with pytest.raises(UsageError, match="is the source checkpoint"):
        out_paths(checkpoint, [variant_path], checkpoint, force=True)
    result = cli(root, "weights", "yolov5s.pt", "--to", "models/yolov5s.yaml", "--out", "x.pt")
    assert result.returncode == 1 and "not a yolopatch-generated variant" in result.stderr
    result = cli(root, "weights", "yolov5s.pt", "--to", "models/yolov5s-soca.yaml", "--scale", "n", "--force")
    assert result.returncode == 2 and "--scale is for Ultralytics" in result.stderr
    (plan,) = plan_targets(tree, checkpoint, [Path("yolov5s-soca.yaml")], None, True)
    assert (plan.cfg, plan.out, plan.scale) == (variant_path.resolve(), checkpoint.parent / "yolov5s-soca.pt", None)


# --------------------------------------------------------------------------------------------
# YOLOv5's own train.py confirms the count


# train.py of the yolov5 7.0.x wheels (the trees here) imports the yolov5 package itself, roboflow and
# huggingface_hub at the top, and looks every --weights up on the Hugging Face hub first: offline
# stand-ins on PYTHONPATH, plus np.trapz (gone in numpy 2) for utils/metrics.py.
OFFLINE_SITE = {
    "sitecustomize.py": "import numpy\nif not hasattr(numpy, 'trapz'):\n    numpy.trapz = numpy.trapezoid\n",
    "yolov5/__init__.py": "__version__ = '7.0'\n",
    "roboflow/__init__.py": "class Roboflow:\n    pass\n",
    "roboflow/core/__init__.py": "",
    "roboflow/core/version.py": "class Version:\n    pass\n",
    "huggingface_hub/__init__.py": (
        "from huggingface_hub.utils._errors import RepositoryNotFoundError\n"
        "def list_repo_files(*args, **kwargs):\n    raise RepositoryNotFoundError('offline')\n"
        "hf_hub_download = list_repo_files\n"),
    "huggingface_hub/utils/__init__.py": "",
    "huggingface_hub/utils/_errors.py": "class RepositoryNotFoundError(Exception):\n    pass\n",
    "huggingface_hub/utils/_validators.py": "class HFValidationError(Exception):\n    pass\n",
}


def offline_site(folder: Path) -> Path:
    for relative, text in OFFLINE_SITE.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text, encoding="utf-8")
    return folder


def config_dir(folder: Path) -> Path:
    """YOLOv5's config dir with an Arial.ttf (matplotlib's DejaVuSans): train.py downloads it otherwise."""
    import matplotlib

    folder.mkdir(parents=True)
    source = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    (folder / "Arial.ttf").write_bytes(source.read_bytes())
    return folder


def synthetic_dataset(folder: Path, images: int = 4, nc: int = 80) -> Path:
    """A tiny detection dataset: random 64x64 images, one or two random boxes each."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (folder / "images" / split).mkdir(parents=True)
        (folder / "labels" / split).mkdir(parents=True)
        for index in range(images):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
                folder / "images" / split / f"{index}.jpg")
            rows = [f"{rng.integers(nc)} {rng.uniform(0.3, 0.7):.3f} {rng.uniform(0.3, 0.7):.3f} 0.300 0.300"
                    for _ in range(1 + index % 2)]
            (folder / "labels" / split / f"{index}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    data = folder / "data.yaml"
    data.write_text(json.dumps({"path": str(folder), "train": "images/train", "val": "images/val", "nc": nc,
                                "names": [f"class{i}" for i in range(nc)]}), encoding="utf-8")
    return data


@pytest.mark.slow
def test_train_py_reports_the_transfer(make_tree: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    probe_environment(monkeypatch)
    root = make_tree("7.0", "checkout")
    tree = locate(root)
    assert apply(root, ["sge"]) == 0
    cfg = tree.models_dir / "yolov5s-sge.yaml"
    base = root / "yolov5s.pt"
    build_bases(root, [("models/yolov5s.yaml", base, 1)])
    report = weights_json(root, base, [cfg])
    (target,) = report["targets"]
    _complete(target)
    site = offline_site(tmp_path / "site")
    data = synthetic_dataset(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "YOLOv5_AUTOINSTALL": "false", "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1", "YOLOV5_CONFIG_DIR": str(config_dir(tmp_path / "config"))}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "train.py", "--weights", str(root / "yolov5s-sge.pt"), "--cfg", str(cfg), "--data", str(data),
         "--epochs", "1", "--img", "64", "--batch-size", "2", "--workers", "0", "--device", "cpu",
         "--noplots", "--noautoanchor", "--project", str(tmp_path / "runs"), "--name", "exp"],
        cwd=root, capture_output=True, text=True, env=env, timeout=1200)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    line = next(line for line in output.splitlines() if "Transferred" in line)
    print(f"train.py: {time.perf_counter() - started:.1f} s: {line.strip()}")
    assert f"Transferred {target['train_transferred']}/{target['target_tensors']} items" in line
    assert (tmp_path / "runs" / "exp" / "weights" / "last.pt").is_file()  # the epoch ran to the end
    # (from the base checkpoint as it is, train.py's rule takes 306/353: INDEPENDENT_CHECK's naive count)
