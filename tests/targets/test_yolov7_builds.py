"""Every module's variants of yolov7 and yolov7-tiny, built by each YOLOv7 tree's own ``models.yolo.Model``.

Per tree: ``apply all`` (variants of cfg/training/yolov7.yaml and yolov7-tiny.yaml, and their cfg/deploy
twins), then one probe run (``building.build_cfgs``: one subprocess, 64x64 images) builds every variant and
its base. Per variant: it builds; its eval forward gives the base's output shapes; a train-mode backward
reaches every parameter; its parameter count is the base's plus the inserted module's formula at the input
width the probe saw (verify's own judgement), and that width is the one the variant's YAML row names (all
YOLOv7 configs have width_multiple 1.0): the YOLOv7 dialect's widths after SPPCSPC, RepConv, MP and the
ELAN Concats are YOLOv7's. The cfg/deploy twins are built on the checkout only (the same code builds
them: Detect instead of IDetect); the package trees build every training variant.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from tests import yolov7_trees
from tests.yolov7_trees import yolov7_tree  # noqa: F401  (the fixture)
from yolopatch import building
from yolopatch import catalog, variants
from yolopatch.commands.apply import apply
from yolopatch.targets.locate import open_target
from yolopatch.variant_files import generated_variants

pytestmark = pytest.mark.slow

IMG = 64


@pytest.mark.parametrize("kind", ["checkout", "yolov7-package", "yolov7-easy", "sas-yolov7"])
def test_every_variant_of_yolov7_and_tiny_builds(yolov7_tree: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
                                                 kind: str) -> None:
    # yolov7-package's utils import `wget` (for weight downloads) at start-up: the real module, from its sdist
    paths = [str(yolov7_trees.shim_path())] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    root = yolov7_tree(kind, cfg_beside=True)
    assert apply(root, ["all"]) == 0
    tree = open_target(root).tree
    generated = generated_variants(tree)  # type: ignore[arg-type]
    keys = [spec.key for spec in catalog.all_modules()]
    assert len(generated) == 4 * len(keys)
    chosen = [item.path for item in generated if kind == "checkout" or item.path.parent.name == "training"]

    results = building.build_cfgs(tree, chosen, img=IMG, runs=0)  # type: ignore[arg-type]

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
        base = bases[result.target.base]  # type: ignore[index]
        if record["output_shapes"] != base["output_shapes"]:
            problems.append(f"{name}: output shapes {record['output_shapes']} != base {base['output_shapes']}")
        seen = [layer.in_channels for layer in result.inserted]
        written = _inserted_widths(result.cfg)
        if not seen or seen != written:
            problems.append(f"{name}: inserted layers saw {seen} channels, the YAML rows name {written}")
        if not result.ok:
            problems.append(f"{name}: verify says {result.problems}")
    assert len(bases) == (4 if kind == "checkout" else 2)
    assert len(results) == len(chosen) + len(bases)
    assert problems == []


def _inserted_widths(path: Path) -> List[int]:
    """The width argument of each row yolopatch inserted (registration "no-width" rows have none: the
    input width then is the previous row's, which the probe checks through the parameter formula)."""
    text = path.read_text(encoding="utf-8")
    info = variants.parse_generated_header(text)
    assert info is not None
    (key,) = info.keys
    spec = catalog.get(key)
    base = variants.parse_base(text.split("\n", 1)[1], path.name, variants.YOLOV7)
    rows = [(index, row) for index, row in enumerate(base.layers) if row[2] == spec.class_name]
    if spec.registration == "width":
        return [row[3][0] for _, row in rows]
    return [base.widths[index - 1] for index, _ in rows]  # type: ignore[misc]
