"""The Ultralytics registration edits, applied by hand to real trees of every pinned release, give a
YAML-named attention layer that Ultralytics' own DetectionModel builds, runs forward and backward, and (8.4)
that its restricted checkpoint loader accepts.

Ultralytics runs in a subprocess with the tree first on sys.path: it is never imported into pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import yaml

from tests import ultralytics_trees
from tests.ultralytics_trees import ultralytics_tree  # noqa: F401  (the fixture)
from yolopatch.targets import ultralytics_edits as ue
from yolopatch.transforms.common_py import Template

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SGE = Template(key="sge", version=1, class_name="SpatialGroupEnhance",
               source=(REPO / "templates" / "sge.py").read_text(encoding="utf-8"))
LAYER = [-1, 1, "SpatialGroupEnhance", [1024]]  # the YAML convention: a width placeholder, kept at every scale

# Per base config: where it lives, its file-name stem, and the expected `from` of the layers that
# change when SGE goes in after the last backbone layer (worked out by hand from the upstream YAMLs).
CONFIGS = {
    "yolov8": ("ultralytics/cfg/models/v8/yolov8.yaml", {
        # SPPF is 9; SGE becomes 10 and takes SPPF's place for everything that read SPPF
        "sge_index": 10, "remapped": {11: -1, 21: [-1, 10], 18: [-1, 13], 23: [16, 19, 22]},
    }),
    "yolo11": ("ultralytics/cfg/models/11/yolo11.yaml", {
        # C2PSA is 10; SGE becomes 11
        "sge_index": 11, "remapped": {12: -1, 13: [-1, 6], 16: [-1, 4], 19: [-1, 14], 22: [-1, 11],
                                      24: [17, 20, 23]},
    }),
}

PROBE = r'''
import importlib.util, json, sys, types
tree, jobs, checkpoint_check = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "1"
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
from ultralytics.nn.tasks import DetectionModel
assert ultralytics.__file__.startswith(tree), ultralytics.__file__
torch.manual_seed(0)
results = []


def tensors(out):
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, dict):
        for value in out.values():
            yield from tensors(value)
    elif isinstance(out, (list, tuple)):
        for value in out:
            yield from tensors(value)


for cfg, index, train in jobs:
    model = DetectionModel(cfg, ch=3, nc=80, verbose=False)
    layer = model.model[index]
    found = {"cfg": cfg, "scale": model.yaml.get("scale"), "type": type(layer).__module__ + "." + type(layer).__name__,
             "c1": layer.c1, "layers": len(model.model), "detect_from": model.model[-1].f}
    if train:
        model.train()
        out = list(tensors(model(torch.rand(2, 3, 64, 64))))  # a list (8.0 to 8.3) or a dict of them (8.4)
        sum(o.float().sum() for o in out).backward()
        found["grads"] = [bool(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0)
                          for p in layer.parameters()]
        found["shapes"] = [list(o.shape) for o in out]
        if checkpoint_check:
            from ultralytics.nn.tasks import torch_safe_load
            path = cfg + ".pt"
            torch.save({"model": model.eval(), "train_args": {}}, path)
            loaded, _ = torch_safe_load(path, safe_only=True)
            again = loaded["model"].model[index]
            found["safe_load"] = type(again).__module__ + "." + type(again).__name__
            found["safe_load_equal"] = all(torch.equal(a, b) for a, b in zip(layer.state_dict().values(),
                                                                               again.state_dict().values()))
            outside = types.ModuleType("yolopatch_outside")  # the same class, defined outside ultralytics.nn.modules
            exec(open(tree + "/ultralytics/nn/modules/yolopatch.py").read(), outside.__dict__)
            sys.modules["yolopatch_outside"] = outside
            model.model[index] = outside.SpatialGroupEnhance(layer.c1)
            torch.save({"model": model, "train_args": {}}, path)
            try:
                torch_safe_load(path, safe_only=True)
                found["outside_refused"] = False
            except TypeError as error:
                found["outside_refused"] = "outside the supported" in str(error)
    results.append(found)
print("RESULT " + json.dumps(results))
'''


def apply_by_hand(root: Path) -> None:
    """The four registration edits for SGE, written as the engine will (width shape)."""
    (root / ue.MODULE_FILE).write_text(ue.insert_class(ue.MODULE_FILE_STUB, SGE), encoding="utf-8")
    init, tasks = root / ue.MODULES_INIT, root / ue.TASKS
    text = init.read_text(encoding="utf-8")
    text = ue.add_all_name(ue.add_marked_import(text, ue.OWN_MODULE, SGE.class_name, SGE.key), SGE.class_name, SGE.key)
    init.write_text(text, encoding="utf-8")
    text = tasks.read_text(encoding="utf-8")
    text = ue.register(ue.add_import_name(text, ue.MODULES_PACKAGE, SGE.class_name, SGE.key), SGE.class_name, SGE.key)
    tasks.write_text(text, encoding="utf-8")


def with_sge(base: Dict[str, Any]) -> Tuple[Dict[str, Any], int]:
    """``base`` with SGE after its last backbone layer: references to later layers move up by one, and
    references to the layer SGE follows now read SGE."""
    position = len(base["backbone"])

    def moved(source: int) -> int:
        return source if source < 0 or source < position - 1 else source + 1

    def remap(row: List[Any]) -> List[Any]:
        f = row[0]
        return [[moved(x) for x in f] if isinstance(f, list) else moved(f), *row[1:]]

    variant = dict(base)
    variant["backbone"] = [*base["backbone"], list(LAYER)]
    variant["head"] = [remap(row) for row in base["head"]]
    return variant, position


def write_variant(root: Path, config: str, scale: str, dest: Path) -> Tuple[Path, int]:
    relative, expected = CONFIGS[config]
    base = yaml.safe_load((root / relative).read_text(encoding="utf-8"))
    variant, index = with_sge(base)
    assert index == expected["sge_index"]
    rows = variant["backbone"] + variant["head"]
    for row, source in expected["remapped"].items():
        assert rows[row][0] == source, (config, row, rows[row])
    path = dest / f"{config}{scale}-sge.yaml"
    path.write_text(yaml.safe_dump(variant, sort_keys=False), encoding="ascii")
    return path, index


def run_probe(root: Path, jobs: List[Tuple[str, int, bool]], checkpoint_check: bool,
              cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "YOLO_CONFIG_DIR": str(cwd / "config"), "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1",
           "YOLO_VERBOSE": "False"}
    return subprocess.run([sys.executable, "-c", PROBE, str(root), json.dumps(jobs), "1" if checkpoint_check else "0"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def probe(root: Path, jobs: List[Tuple[str, int, bool]], checkpoint_check: bool, cwd: Path) -> List[Dict[str, Any]]:
    done = run_probe(root, jobs, checkpoint_check, cwd)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("version", list(ultralytics_trees.VERSIONS))
def test_sge_builds_trains_and_loads(version: str, ultralytics_tree, tmp_path: Path) -> None:  # noqa: F811
    root = ultralytics_tree(version)
    apply_by_hand(root)
    configs = [c for c in CONFIGS if (root / CONFIGS[c][0]).is_file()]
    assert configs == (["yolov8", "yolo11"] if version in ("8.3.0", "8.3", "8.4") else ["yolov8"])
    jobs = []
    for config in configs:
        for scale, train in (("n", True), ("s", False)):
            path, index = write_variant(root, config, scale, tmp_path)
            jobs.append((str(path), index, train))
    results = probe(root, jobs, checkpoint_check=version == "8.4", cwd=tmp_path)
    for (cfg, index, train), found in zip(jobs, results):
        scale = Path(cfg).stem.split("-")[0][-1]
        assert found["scale"] == scale
        assert found["type"] == "ultralytics.nn.modules.yolopatch.SpatialGroupEnhance"
        assert found["c1"] == {"n": 256, "s": 512}[scale]  # the backbone's last width at this scale, not 1024
        assert found["detect_from"] == CONFIGS[Path(cfg).stem.split("-")[0][:-1]][1]["remapped"][found["layers"] - 1]
        if train:
            assert found["grads"] == [True, True]
            maps = [shape[2:] for shape in found["shapes"] if len(shape) == 4]  # the P3, P4, P5 outputs
            assert maps[:3] == [[8, 8], [4, 4], [2, 2]], found["shapes"]
    if version == "8.4":
        trained = [found for found in results if "safe_load" in found]
        assert trained and all(found["safe_load"] == "ultralytics.nn.modules.yolopatch.SpatialGroupEnhance"
                               and found["safe_load_equal"] and found["outside_refused"] for found in trained)


def test_exported_but_not_imported_in_tasks_is_a_key_error(ultralytics_tree, tmp_path: Path) -> None:  # noqa: F811
    """Why tasks.py's import list is edited: parse_model looks YAML names up in tasks.py's globals(), so a
    class exported from nn/modules (as the built-in CBAM is) but not imported there cannot be named."""
    root = ultralytics_tree("8.4")
    apply_by_hand(root)
    tasks = root / ue.TASKS
    tasks.write_text(ue.remove_import_name(tasks.read_text(encoding="utf-8"), ue.MODULES_PACKAGE, SGE.class_name),
                     encoding="utf-8")
    path, index = write_variant(root, "yolov8", "n", tmp_path)
    done = run_probe(root, [(str(path), index, False)], False, tmp_path)
    assert done.returncode != 0
    assert "KeyError: 'SpatialGroupEnhance'" in done.stderr, done.stderr[-2000:]
