"""Every module through the engine on real Ultralytics trees, and every variant it writes built by Ultralytics.

`yolopatch apply all` (variants of yolov8.yaml and yolo11.yaml where the version has it), then each
generated variant at scales n and s through Ultralytics' own DetectionModel in a subprocess: forward and
backward at 64x64, the inserted layers are yolopatch's classes from ultralytics.nn.modules.yolopatch, with
finite gradients. Then revert gives the tree back byte for byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Tuple

import pytest
import yaml

from tests.targets.test_ultralytics_variants import PROBE, scaled_name
from tests.ultralytics_trees import ultralytics_tree  # noqa: F401  (the fixture)
from tests.yolov5_trees import snapshot
from yolopatch import catalog
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
