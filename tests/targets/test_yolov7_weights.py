"""`yolopatch weights` on YOLOv7 trees, and the checkpoints that need the patch (status, revert).

YOLOv7's checkpoint is YOLOv5's (``{"model": <Model>, "ema": ..., "optimizer": ...}``; its train.py reads
``ckpt['model'].float().state_dict()`` through ``intersect_dicts`` without the anchors), so the base
checkpoints are built as in ``tests/test_weights.py`` (its ``BUILD_BASE``: the tree's own ``Model`` from
cfg/training/<model>.yaml, random tensors, saved half) and every written checkpoint is checked again by its
``INDEPENDENT_CHECK`` (run with the tree's code, independent of yolopatch): every base tensor bit for bit at
its layer's new index, the layers before the first insertion giving exactly the base's outputs, and
train.py's own transfer rule taking every item but the anchors.

One probe run per model (all 21 default variants of yolov7-tiny in one ``weights`` call; yolov7 with three
modules in another): the checkout builds each base once.
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

from tests import yolov7_trees
from tests.test_weights import BUILD_BASE, INDEPENDENT_CHECK, default_keys, weights_json
from tests.yolov7_trees import yolov7_tree  # noqa: F401  (the fixture)
from yolopatch import checkpoints
from yolopatch.commands import check as check_module
from yolopatch.commands.apply import apply
from yolopatch.commands.revert import revert
from yolopatch.commands.status import collect
from yolopatch.commands.weights import plan_targets
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.targets.locate import open_target
from yolopatch.targets.yolov7 import Yolov7Tree

BIG_MODULES = ("double-attention", "cbam", "lska")  # yolov7.yaml: layer:11 (early), p3,p4,p5 (three rows), sppf


def _run_in_tree(root: Path, script: str, argument: Any) -> str:
    tree = open_target(root).tree
    result = subprocess.run([sys.executable, "-c", script, json.dumps(argument)], cwd=root, capture_output=True,
                            text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "YOLO_MODULE": f"{tree.models_module}.yolo"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def build_bases(root: Path, models: Sequence[Tuple[str, Path, int]]) -> None:
    """(model YAML relative to the root, checkpoint to write, seed) each, in one process."""
    _run_in_tree(root, BUILD_BASE, [[cfg, str(out), seed] for cfg, out, seed in models])


def independent_check(root: Path, items: Sequence[Tuple[Path, Path, Path, Sequence[str]]]) -> List[Dict[str, Any]]:
    output = _run_in_tree(root, INDEPENDENT_CHECK, [[str(a), str(b), str(c), list(d)] for a, b, c, d in items])
    return json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[len("RESULT "):])


def classes_of(key: str) -> List[str]:
    return [name for name, owner in checkpoints.template_classes().items() if owner == key]


def _complete(target: Dict[str, Any]) -> None:
    """Every source tensor moved, nothing mismatched, the prefix and every moved layer checked exactly."""
    assert target["ok"], target["problems"]
    assert target["transferred"] == target["source_tensors"]
    assert all(not entry["mismatches"] and not entry["missing"] for entry in target["layers"])
    check = target["check"]
    assert check["failures"] == [] and check["layers_equal"] == check["layers_checked"] > 0
    assert check["before"] == list(range(check["first_inserted"])) and check["first_inserted"] > 0
    assert target["train_transferred"] == target["target_tensors"] - 2  # IDetect's anchors, anchor_grid


def _agrees(target: Dict[str, Any], found: Dict[str, Any]) -> None:
    """The independent check agrees with the report: every base tensor at its place, the prefix exact."""
    assert found["wrong"] == 0 and found["moved"] == found["base_tensors"] == target["source_tensors"]
    assert found["same_before"] == found["first_inserted"] == target["check"]["first_inserted"]
    assert found["train_transferred"] == found["items"] - found["anchors"] == target["train_transferred"]
    assert found["items"] == target["target_tensors"]
    assert found["naive_transferred"] < found["train_transferred"]  # what --weights <base>.pt gives today
    assert (found["epoch"], found["optimizer"], found["ema"]) == (-1, None, None)


@pytest.mark.slow
def test_checkout_every_tiny_variant_three_big_ones_deploy_and_revert(yolov7_tree: Callable[..., Path]) -> None:
    started = time.process_time(), time.perf_counter()
    root = yolov7_tree("checkout")
    assert apply(root, ["all"]) == 0
    tree = open_target(root).tree
    assert isinstance(tree, Yolov7Tree)
    training, deploy = tree.training_dir, tree.deploy_dir
    tiny, big, tiny_deploy = root / "yolov7-tiny.pt", root / "yolov7.pt", root / "deploy" / "yolov7-tiny.pt"
    build_bases(root, [("cfg/training/yolov7-tiny.yaml", tiny, 1), ("cfg/training/yolov7.yaml", big, 2),
                       ("cfg/deploy/yolov7-tiny.yaml", tiny_deploy, 3)])

    # every default variant of yolov7-tiny, in one probe run
    keys = default_keys()
    assert len(keys) == 21
    cfgs = [training / f"yolov7-tiny-{key}.yaml" for key in keys]
    report = weights_json(root, tiny, cfgs)
    assert report["exit_code"] == 0, report["stderr"][-3000:]
    assert report["source"]["which"] == "model" and report["source"]["dtype"] == "float16"
    written = [(tiny, root / f"yolov7-tiny-{key}.pt", cfg, classes_of(key)) for key, cfg in zip(keys, cfgs)]
    layers_checked = set()
    for target, found in zip(report["targets"], independent_check(root, written)):
        _complete(target)
        _agrees(target, found)
        assert target["source_as"] == "yolov7-tiny.yaml" and target["source_tensors"] == 344
        layers_checked.add(target["check"]["layers_checked"])
        print(f"{target['cfg']}: {target['transferred']}/{target['source_tensors']} base tensors; train.py: "
              f"{found['train_transferred']}/{found['items']} from the written checkpoint, "
              f"{found['naive_transferred']}/{found['items']} from the base")
    assert layers_checked == {78}  # every base layer, with tensors or not

    # yolov7 (the big one): an early insertion, three insertions, one at SPPCSPC
    big_cfgs = [training / f"yolov7-{key}.yaml" for key in BIG_MODULES]
    big_report = weights_json(root, big, big_cfgs)
    assert big_report["exit_code"] == 0, big_report["stderr"][-3000:]
    found_big = independent_check(root, [(big, root / f"yolov7-{key}.pt", cfg, classes_of(key))
                                         for key, cfg in zip(BIG_MODULES, big_cfgs)])
    for target, found in zip(big_report["targets"], found_big):
        _complete(target)
        _agrees(target, found)
        print(f"{target['cfg']}: {target['transferred']}/{target['source_tensors']} base tensors, first insertion "
              f"at {target['check']['first_inserted']}; train.py: {found['train_transferred']}/{found['items']} "
              f"(from the base: {found['naive_transferred']}/{found['items']})")
    assert [len(target["fresh"]) for target in big_report["targets"]] == [1, 3, 1]

    # the deploy twin: a deploy checkpoint goes in (written as <variant>-deploy.pt); a training one is refused
    twin = weights_json(root, tiny_deploy, [deploy / "yolov7-tiny-soca.yaml"])
    (target,) = twin["targets"]
    _complete(target)
    assert target["out"] == str(root / "deploy" / "yolov7-tiny-soca-deploy.pt")
    assert {entry["class"] for entry in target["layers"]} >= {"Detect"}
    refused = weights_json(root, tiny, [deploy / "yolov7-tiny-soca.yaml"], "--out", str(root / "nope.pt"))
    assert refused["exit_code"] == 1 and not (root / "nope.pt").exists()
    (problem,) = refused["targets"][0]["problems"]
    assert "neither yolov7-tiny.yaml nor a variant" in problem and "training/yolov7-tiny-soca.yaml" in problem

    # checkpoints that need the patch: classes pickled as models.common.*; status lists them, revert refuses
    assert ("models.common", "SOCA") in checkpoints.checkpoint_globals(root / "yolov7-tiny-soca.pt")
    best = root / "runs" / "train" / "exp" / "weights" / "best.pt"
    best.parent.mkdir(parents=True)
    (root / "yolov7-tiny-soca.pt").rename(best)
    for path in root.glob("*.pt"):
        if path.name not in ("yolov7-tiny.pt", "yolov7.pt"):
            path.unlink()
    assert {item["path"]: item["modules"] for item in collect(root)["checkpoints"]} == {
        "runs/train/exp/weights/best.pt": {"soca": ["SOCA"]}}
    with pytest.raises(YolopatchError, match=r"1 checkpoint\(s\) in this tree need soca .*runs/train/exp/weights/best"):
        revert(root, ["soca"])
    with pytest.raises(YolopatchError, match="need soca"):
        revert(root, [])
    assert (training / "yolov7-tiny-soca.yaml").is_file()
    assert revert(root, ["gam"]) == 0  # nothing needs gam
    assert check_module.collect(tree).findings == []
    assert revert(root, ["soca"], force=True) == 0
    findings = check_module.collect(tree).findings
    assert [(f.code, f.path) for f in findings] == [("checkpoint-needs-module", best.resolve())]
    assert "SOCA" in findings[0].message and "yolopatch apply soca" in findings[0].fix
    print(f"CPU {time.process_time() - started[0]:.1f} s in pytest (subprocesses apart), "
          f"wall {time.perf_counter() - started[1]:.1f} s")


@pytest.mark.slow
def test_package_layout(yolov7_tree: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # yolov7-package's utils import `wget` at start-up: the real module, from its sdist
    paths = [str(yolov7_trees.shim_path())] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    root = yolov7_tree("yolov7-package", cfg_beside=True)
    assert apply(root, ["soca"]) == 0
    tree = open_target(root).tree
    assert isinstance(tree, Yolov7Tree) and tree.models_module == "yolov7_package.models"
    base = root / "yolov7-tiny.pt"
    build_bases(root, [("cfg/training/yolov7-tiny.yaml", base, 1)])
    report = weights_json(root, base, [Path("yolov7-tiny-soca.yaml")])  # a bare name: found in cfg/training
    assert report["exit_code"] == 0, report["stderr"][-3000:]
    (target,) = report["targets"]
    _complete(target)
    assert target["cfg"] == "cfg/training/yolov7-tiny-soca.yaml" and target["out"] == str(root / "yolov7-tiny-soca.pt")
    cfg = tree.training_dir / "yolov7-tiny-soca.yaml"
    (found,) = independent_check(root, [(base, root / "yolov7-tiny-soca.pt", cfg, ["SOCA"])])
    _agrees(target, found)
    assert ("yolov7_package.models.common", "SOCA") in checkpoints.checkpoint_globals(root / "yolov7-tiny-soca.pt")
    best = root / "runs" / "train" / "exp" / "weights" / "best.pt"
    best.parent.mkdir(parents=True)
    (root / "yolov7-tiny-soca.pt").rename(best)
    assert {item["path"]: item["modules"] for item in collect(root)["checkpoints"]} == {
        "runs/train/exp/weights/best.pt": {"soca": ["SOCA"]}}
    with pytest.raises(YolopatchError, match="need soca"):
        revert(root, ["soca"])


def test_planning(yolov7_tree: Callable[..., Path]) -> None:
    """Where --to is looked for, where the checkpoint goes, and what is refused (no torch)."""
    root = yolov7_tree("checkout")
    assert apply(root, ["soca"]) == 0
    tree = open_target(root).tree
    assert isinstance(tree, Yolov7Tree)
    checkpoint = root / "trained.pt"
    checkpoint.write_bytes(b"")
    to = [Path("yolov7-tiny-soca.yaml"), Path("cfg/deploy/yolov7-tiny-soca.yaml")]
    bare, deploy = plan_targets(tree, checkpoint, to, None, False)
    training = tree.training_dir / "yolov7-tiny-soca.yaml"
    assert (bare.cfg, bare.out, bare.twin) == (training, root / "yolov7-tiny-soca.pt", None)
    assert (deploy.cfg, deploy.out) == (tree.deploy_dir / "yolov7-tiny-soca.yaml", root / "yolov7-tiny-soca-deploy.pt")
    assert deploy.twin == training
    descriptions = [option.description for option in bare.candidates[:2]]
    assert descriptions == ["yolov7-tiny.yaml", "yolov7-tiny.yaml with soca at p5"]
    assert bare.candidates[0].layer_map[77] == 78  # IDetect moves past the inserted SOCA at 77
    with pytest.raises(UsageError, match="--scale is for Ultralytics"):
        plan_targets(tree, checkpoint, [Path("yolov7-tiny-soca.yaml")], None, False, scale="n")
    with pytest.raises(YolopatchError, match="not a yolopatch-generated variant"):
        plan_targets(tree, checkpoint, [Path("yolov7-tiny.yaml")], None, False)
    with pytest.raises(YolopatchError, match=r"not found \(looked in \., .*cfg/training/, cfg/deploy/\)"):
        plan_targets(tree, checkpoint, [Path("yolov7-nope.yaml")], None, False)
