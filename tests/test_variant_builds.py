"""Every module x every scale (n, s, m, l, x) plus the P6 base yolov5s6, built by real YOLOv5 trees.

For each tree: ``apply all --scales n,s,m,l,x``, then ``variant all --base models/hub/yolov5s6.yaml``,
then one probe run (one subprocess, small images) builds every variant and its base through the
tree's own ``Model``. Per variant: it builds; its eval forward gives the base's output shapes; a
train-mode backward reaches every parameter; its parameter count is exactly the base's plus the
inserted modules' own, from the catalogue's formulas at the input widths YOLOv5's parse_model gives
(worked out here from the base YAML, and matching the widths the probe saw).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List

import pytest

from tests.test_verify import expected_insertions, probe_environment
from yolopatch import building
from yolopatch import catalog
from yolopatch.commands.apply import apply
from yolopatch.commands.variant import variant
from yolopatch.variant_files import SCALES, generated_variants
from yolopatch.tree import locate

pytestmark = pytest.mark.slow

P6_BASE = "models/hub/yolov5s6.yaml"
IMG = 64  # a multiple of the P6 stride; the P6 map is 1x1, which the batch-2 backward still handles


@pytest.mark.parametrize("version", ["7.0", "6.1", "5.0"])
def test_every_module_at_every_scale_builds(make_tree: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
                                            version: str) -> None:
    probe_environment(monkeypatch)
    root = make_tree(version, "checkout")
    tree = locate(root)
    scales = [scale for scale in SCALES if (tree.models_dir / f"yolov5{scale}.yaml").is_file()]
    assert scales == (["s", "m", "l", "x"] if version == "5.0" else list(SCALES))  # 5.0 has no yolov5n.yaml
    keys = [spec.key for spec in catalog.all_modules()]

    assert apply(root, ["all"], scales=scales) == 0
    assert variant(root, ["all"], bases=[P6_BASE]) == 0
    generated = generated_variants(tree)
    assert len(generated) == len(keys) * (len(scales) + 1)

    results = building.build_cfgs(tree, [item.path for item in generated], img=IMG, runs=0)

    problems: List[str] = []
    bases: Dict[Path, dict] = {}
    for result in results:
        name = tree.relative(result.cfg)
        record = result.record
        if record.get("error") or record.get("params_without_grad"):
            problems.append(f"{name}: {record.get('error') or record.get('params_without_grad')}")
            continue
        if result.target.role == building.BASE:
            bases[result.cfg] = record
            continue
        (key,) = result.target.keys
        base = bases[result.target.base]
        widths = expected_insertions(result.target.base, [key])[key]
        expected = base["params"] + sum(catalog.param_count(key, width) for width in widths)
        seen = [layer.in_channels for layer in result.inserted]
        if record["output_shapes"] != base["output_shapes"]:
            problems.append(f"{name}: output shapes {record['output_shapes']} != base {base['output_shapes']}")
        if seen != widths:
            problems.append(f"{name}: inserted layers saw {seen} channels, parse_model gives {widths}")
        if record["params"] != expected:
            problems.append(f"{name}: {record['params']} parameters, base + formulas = {expected}")
        if not result.ok:
            problems.append(f"{name}: verify says {result.problems}")
    assert len(bases) == len(scales) + 1
    assert problems == []
