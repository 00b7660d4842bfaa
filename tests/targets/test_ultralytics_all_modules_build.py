"""Every module through the engine on real Ultralytics trees, and every variant it writes built by Ultralytics.

`yolopatch apply all` (variants of yolov8.yaml and yolo11.yaml where the version has it), then each
generated variant at scales n and s through Ultralytics' own DetectionModel in a subprocess: forward and
backward at 64x64, the inserted layers are yolopatch's classes from ultralytics.nn.modules.yolopatch, with
finite gradients. Then revert gives the tree back byte for byte.

Every scale (issue 11: every module builds in every base model at EVERY scale): on the newest 8.4 tree, one
YAML per base (yolov8, yolo11, yolo12, yolo26) with ALL modules inserted at once, each at its default
placement (modules that share a layer are chained there; yolo12 has no SPPF, so ``sppf`` modules go to p5),
built by Ultralytics at n, s, m, l and x: twenty models, one build each, instead of 21 x 4 x 5. Forward and backward in training mode at 64x64 (P5 is 2x2), and forward hooks on every
inserted layer check that it received the width Ultralytics' scale gives that layer (min(width, max_channels)
x width multiple, rounded up to 8) and handed back a tensor of exactly its input's shape: a module that
mis-handles a width (a group or head count that does not divide it, a reduction that rounds it) fails here.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
import yaml

from tests.targets.test_ultralytics_variants import PROBE, scaled_name, scaled_width
from tests.ultralytics_trees import ultralytics_tree  # noqa: F401  (the fixture)
from tests.yolov5_trees import snapshot
from yolopatch import catalog, variants
from yolopatch.commands.apply import apply
from yolopatch.commands.revert import revert


def inserted_layers(variant: Path, class_name: str) -> List[int]:
    data = yaml.safe_load(variant.read_text(encoding="ascii"))
    rows = data["backbone"] + data["head"]
    return [index for index, row in enumerate(rows) if row[2] == class_name]


@pytest.mark.slow
@pytest.mark.parametrize("version", ["8.0.239", "8.4.190"])
def test_every_module_variant_builds_and_trains(ultralytics_tree: Callable[[str], Path], version: str,  # noqa: F811
                                                tmp_path: Path) -> None:
    root = ultralytics_tree(version)
    before = snapshot(root)
    assert apply(root, ["all"]) == 0
    models = root / "ultralytics" / "cfg" / "models"
    jobs: List[Tuple[str, List[int]]] = []
    classes = {}
    for spec in catalog.all_modules():
        for config in ("v8/yolov8", "11/yolo11"):
            variant = models / f"{config}-{spec.key}.yaml"
            if not (models / f"{config}.yaml").is_file():
                continue
            assert variant.is_file(), variant
            inserted = inserted_layers(variant, spec.class_name)
            assert inserted, variant
            for scale in ("n", "s"):
                name = scaled_name(variant.name, scale)
                jobs.append((name, inserted))
                classes[name] = spec.class_name
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "config"), "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1",
           "YOLO_VERBOSE": "False"}
    done = subprocess.run([sys.executable, "-c", PROBE, str(root), json.dumps(jobs)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert len(results) == len(jobs) >= 2 * len(catalog.all_modules())
    for found in results:
        name = found["name"]
        assert found["types"] and all(t == f"ultralytics.nn.modules.yolopatch.{classes[name]}" for t in found["types"])
        assert found["scale"] == name.split("-")[0][-1]
        assert all(found["grads"]), name
    assert revert(root, []) == 0
    assert snapshot(root) == before


EVERY_SCALE = ("n", "s", "m", "l", "x")
SCALE_BASES = ("v8/yolov8", "11/yolo11", "12/yolo12", "26/yolo26")
ALL_IN_ONE = "yolopatch-all"  # yolov8-yolopatch-all.yaml, read by Ultralytics as yolov8x-yolopatch-all.yaml at x

SCALE_PROBE = r'''
import json, sys
tree, jobs = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, tree)
import torch
import ultralytics
from ultralytics.nn.tasks import DetectionModel
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
    model = DetectionModel(name, ch=3, nc=80, verbose=False)  # builds once, stride probe included
    model.train()
    seen = {}

    def hook(index):
        def record(module, inputs, output):
            seen[index] = {"in": list(inputs[0].shape), "out": list(output.shape), "finite": bool(torch.isfinite(output).all())}
        return record

    handles = [model.model[i].register_forward_hook(hook(i)) for i in inserted]
    out = list(tensors(model(torch.rand(2, 3, 64, 64))))
    assert out, name
    sum(o.float().sum() for o in out).backward()
    for handle in handles:
        handle.remove()
    layers = [model.model[i] for i in inserted]
    results.append({
        "name": name, "scale": model.yaml.get("scale"),
        "types": [type(layer).__module__ + "." + type(layer).__name__ for layer in layers],
        "shapes": [seen.get(i) for i in inserted],
        "grads": [all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in layer.parameters())
                  for layer in layers],
        "params": sum(p.numel() for p in model.parameters()),
    })
    del model
print("RESULT " + json.dumps(results))
'''


def default_positions(base: variants.BaseModel, key: str) -> Tuple[str, ...]:
    """A module's shipped placement; ``sppf`` becomes ``p5`` on a base without SPPF (yolo12)."""
    offered = variants.offered_positions(base)
    return tuple("p5" if position == "sppf" and "sppf" not in offered else position
                 for position in variants.load_spec(key).placement)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def all_in_one(base_text: str, base_name: str) -> str:
    """The base with every catalogued module inserted at its default placement (shipped specs)."""
    base = variants.parse_base(base_text, base_name, dialect=variants.ULTRALYTICS)
    placements = []
    for spec in catalog.all_modules():
        placements.append(variants.Placement(spec.class_name, spec.key, default_positions(base, spec.key),
                                             variants.load_spec(spec.key).args, spec.registration))
    return variants.render_variant(base_text, base_name, placements, dialect=variants.ULTRALYTICS)


def expected_rows(base: variants.BaseModel) -> List[Tuple[int, str]]:
    """(the base layer each inserted row follows, its class), in the variant's row order: written from the
    shipped placements, independently of render_variant's bookkeeping."""
    rows = []
    for spec in catalog.all_modules():
        for position in default_positions(base, spec.key):
            rows.append((variants.resolve_position(base, position), spec.class_name))
    return sorted(rows, key=lambda row: row[0])  # stable: catalogue order within one layer


@pytest.mark.slow
@pytest.mark.parametrize("version, scales", [("8.4", EVERY_SCALE), ("8.1", ("n", "s")), ("8.2", ("n", "s")),
                                             ("8.3.0", ("n", "s")), ("8.3", ("n", "s"))])
def test_all_modules_together_build_at_every_scale(ultralytics_tree: Callable[[str], Path],  # noqa: F811
                                                   tmp_path: Path, version: str, scales: Tuple[str, ...]) -> None:
    """8.4 at every scale of yolov8/yolo11/yolo12/yolo26; 8.1 to 8.3 at n and s of the bases they ship (8.0 and
    8.4: every variant at n and s in the test above)."""
    root = ultralytics_tree(version)
    assert apply(root, ["all"], variants=False) == 0
    models = root / "ultralytics" / "cfg" / "models"
    jobs: List[Tuple[str, List[int]]] = []
    expected: Dict[str, List[Tuple[str, int]]] = {}
    configs = [config for config in SCALE_BASES if (models / f"{config}.yaml").is_file()]
    assert configs[0] == "v8/yolov8" and (version != "8.4" or configs == list(SCALE_BASES))
    for config in configs:
        base_name = f"{config.split('/')[1]}.yaml"
        text = (models / f"{config}.yaml").read_text(encoding="utf-8")
        base = variants.parse_base(text, base_name, dialect=variants.ULTRALYTICS)
        variant = models / f"{config}-{ALL_IN_ONE}.yaml"
        variant.write_text(all_in_one(text, base_name), encoding="ascii")
        rows = expected_rows(base)
        assert len(rows) >= len(catalog.all_modules())
        layers = yaml.safe_load(variant.read_text(encoding="ascii"))
        layers = layers["backbone"] + layers["head"]
        inserted = [after + 1 + number for number, (after, _) in enumerate(rows)]
        assert [layers[index][2] for index in inserted] == [name for _, name in rows]
        assert sum(1 for row in layers if row[2] in {spec.class_name for spec in catalog.all_modules()}) == len(rows)
        for scale in scales:
            name = scaled_name(variant.name, scale)
            jobs.append((name, inserted))
            expected[name] = [(class_name, scaled_width(base, after, scale)) for after, class_name in rows]
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "config"), "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1",
           "YOLO_VERBOSE": "False"}
    started, cpu = time.monotonic(), children_cpu()
    done = subprocess.run([sys.executable, "-c", SCALE_PROBE, str(root), json.dumps(jobs)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1500)
    print(f"{len(jobs)} all-module models built and trained in {time.monotonic() - started:.0f} s "
          f"({children_cpu() - cpu:.0f} CPU-s)")
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert [found["name"] for found in results] == [name for name, _ in jobs]
    params = {}
    for found in results:
        name, want = found["name"], expected[found["name"]]
        assert found["scale"] == name.split("-")[0][-1], found["scale"]
        assert found["types"] == [f"ultralytics.nn.modules.yolopatch.{class_name}" for class_name, _ in want], name
        for (class_name, width), shapes in zip(want, found["shapes"]):
            assert shapes is not None, (name, class_name)
            assert shapes["in"] == [2, width, *shapes["in"][2:]], (name, class_name, shapes, width)
            assert shapes["out"] == shapes["in"] and shapes["finite"], (name, class_name, shapes)
        assert all(found["grads"]), (name, [t for t, ok in zip(found["types"], found["grads"]) if not ok])
        params[name] = found["params"]
    for config in (config.split("/")[1] for config in configs):  # each scale: a bigger model than the last
        counts = [params[f"{config}{scale}-{ALL_IN_ONE}.yaml"] for scale in scales]
        assert counts == sorted(counts) and len(set(counts)) == len(counts), counts


@pytest.mark.slow
def test_all_modules_together_build_in_rtdetr(ultralytics_tree: Callable[[str], Path]) -> None:  # noqa: F811
    """RT-DETR (rtdetr-l, its only scale) with every module at its default placement, built by the probe verify
    uses (RTDETRDetectionModel; its training forward needs labels, so the backward runs in eval mode)."""
    from yolopatch import building
    from yolopatch.targets.locate import open_target

    root = ultralytics_tree("8.4")
    assert apply(root, ["all"], variants=False) == 0
    folder = root / "ultralytics" / "cfg" / "models" / "rt-detr"
    variant = folder / f"rtdetr-l-{ALL_IN_ONE}.yaml"
    variant.write_text(all_in_one((folder / "rtdetr-l.yaml").read_text(encoding="utf-8"), "rtdetr-l.yaml"),
                       encoding="ascii")
    layers = yaml.safe_load(variant.read_text(encoding="ascii"))
    names = [row[2] for row in layers["backbone"] + layers["head"]]
    assert {spec.class_name for spec in catalog.all_modules()} <= set(names)
    results = {result.cfg.name: result for result in building.build_cfgs(open_target(root).tree, [variant], img=64,
                                                                          runs=0)}
    assert set(results) == {"rtdetr-l.yaml", variant.name}  # the variant, and its base beside it
    for result in results.values():
        assert result.ok, (result.cfg.name, result.problems)
        assert result.record["model_class"] == "RTDETRDetectionModel"
    # every inserted layer's parameters are exactly the catalogue's formula at the width the probe saw
    inserted = results[variant.name].inserted
    assert {layer.class_name for layer in inserted} == {spec.class_name for spec in catalog.all_modules()}
    assert all(layer.checked and layer.ok for layer in inserted), [layer for layer in inserted if not layer.ok]
