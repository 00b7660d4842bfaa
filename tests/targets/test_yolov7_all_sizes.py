"""Every module in every YOLOv7 model size at once (issue 11), built by the checkout's own ``models.yolo.Model``.

``apply all`` (code only) on the checkout tree, then one YAML per model of cfg/training (yolov7, yolov7-tiny,
yolov7x and the P6 models w6, e6, d6, e6e with their IAuxDetect heads) and of cfg/deploy (the same seven
with Detect heads, and yolov7-tiny-silu) with ALL catalogued modules inserted, each at its default YOLOv7
placement (``backbone:K`` by meaning, as ``apply`` places it; modules that share a layer are chained there);
on the P6 models the modules placed on p3, p4 and p5 also go on p6 (1024 to 1536 wide, a width no P5
model has). One probe run (``building.build_cfgs``: one subprocess) builds the fifteen variants and their
fifteen bases at 64x64, a multiple of the P6 models' stride 64 (their P6 map is 1x1; the train-mode
backward has batch 2, enough for BatchNorm).

Per variant: it builds; the eval forward gives the base's output shapes; a train-mode backward reaches
every parameter; the inserted layers are exactly the expected classes after the expected base layers; each
received the width the YOLOv7 dialect gives that base layer (64 to 1536 across the sizes) and holds exactly
the parameters of its catalogue formula at that width (verify's own judgement, on yolopatch's current
code). A module that mis-handles a width (a group count that does not divide it, a reduction that rounds
it) fails here, on the sizes whose widths expose it: ShuffleAttention with the official ``groups`` rule
fails to build at 320 (yolov7x, e6, e6e), an SE bottleneck rounded to a multiple of 8 is off its formula at
960 (e6, e6e) only; yolov7 and yolov7-tiny (tests/targets/test_yolov7_builds.py) show neither.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
import yaml

from tests.yolov7_trees import yolov7_tree  # noqa: F401  (the fixture)
from yolopatch import building, catalog, variants
from yolopatch.commands.apply import apply
from yolopatch.targets import yolov7
from yolopatch.targets.locate import open_target

pytestmark = pytest.mark.slow

IMG = 64  # the smallest size every model takes: a multiple of 64, the P6 models' largest stride
ALL_IN_ONE = "yolopatch-all"  # cfg/training/yolov7-w6-yolopatch-all.yaml and its cfg/deploy twin


def placements(base: variants.BaseModel) -> List[variants.Placement]:
    """Every catalogued module at its default placement on a YOLOv7 ``base`` (as ``apply`` translates it); on
    a P6 model a module placed on every head input (p3, p4 and p5) also goes on p6, the widest (1024 to 1536)."""
    found = []
    for spec in catalog.all_modules():
        default = variants.load_spec(spec.key)
        positions = yolov7.default_positions(default.placement, base)
        if "p6" in base.p_levels and {"p3", "p4", "p5"} <= set(positions):
            positions = (*positions, "p6")
        found.append(variants.Placement(spec.class_name, spec.key, positions, default.args, spec.registration))
    return found


def expected_rows(base: variants.BaseModel) -> List[Tuple[int, str]]:
    """(the base layer each inserted row follows, its class), in the variant's row order."""
    rows = [(variants.resolve_position(base, position), placement.class_name)
            for placement in placements(base) for position in placement.positions]
    return sorted(rows, key=lambda row: row[0])  # stable: catalogue order within one layer


def write_all_in_one(base_path: Path) -> Tuple[Path, List[Tuple[int, str]], List[int]]:
    """The all-module variant beside ``base_path``; its expected rows, and the base widths they read."""
    text = base_path.read_text(encoding="utf-8")
    base = variants.parse_base(text, base_path.name, dialect=variants.YOLOV7)
    variant = base_path.with_name(f"{base_path.stem}-{ALL_IN_ONE}.yaml")
    variant.write_text(variants.render_variant(text, base_path.name, placements(base), dialect=variants.YOLOV7),
                       encoding="ascii")
    rows = expected_rows(base)
    layers = yaml.safe_load(variant.read_text(encoding="ascii"))
    layers = layers["backbone"] + layers["head"]
    inserted = [after + 1 + number for number, (after, _) in enumerate(rows)]
    assert [layers[index][2] for index in inserted] == [name for _, name in rows], variant
    classes = {spec.class_name for spec in catalog.all_modules()}
    assert sum(1 for row in layers if row[2] in classes) == len(rows), variant
    assert len(layers) == len(base.layers) + len(rows)
    return variant, rows, [base.widths[after] for after, _ in rows]  # type: ignore[misc]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_every_module_in_every_yolov7_size_builds(yolov7_tree: Callable[..., Path]) -> None:  # noqa: F811
    root = yolov7_tree("checkout")
    assert apply(root, ["all"], variants=False) == 0
    tree = open_target(root).tree
    bases = sorted(tree.training_dir.glob("*.yaml"))  # type: ignore[union-attr]
    assert {path.stem for path in bases} == set(yolov7.MODELS.values())
    deploy = sorted(tree.deploy_dir.glob("*.yaml"))  # type: ignore[union-attr]
    twins = [yolov7.deploy_twin(tree, base) for base in bases]  # type: ignore[arg-type]
    assert None not in twins and {path.stem for path in deploy} == {*yolov7.MODELS.values(), "yolov7-tiny-silu"}
    expected: Dict[Path, Tuple[List[Tuple[int, str]], List[int]]] = {}
    for base_path in bases + deploy:
        variant, rows, widths = write_all_in_one(base_path)
        assert len(rows) > len(catalog.all_modules())  # several modules go on p3, p4 and p5
        expected[variant.resolve()] = (rows, widths)

    started, cpu = time.monotonic(), children_cpu()
    results = building.build_cfgs(tree, list(expected), img=IMG, runs=0)  # type: ignore[arg-type]
    print(f"{len(results)} YOLOv7 models ({len(expected)} all-module variants and their bases) built at {IMG}x{IMG} "
          f"in {time.monotonic() - started:.0f} s ({children_cpu() - cpu:.0f} CPU-s)")

    assert len(results) == 2 * len(expected)
    problems: List[str] = []
    for result in results:
        name = tree.relative(result.cfg)  # type: ignore[union-attr]
        if not result.ok:  # a build, forward or backward error; parameters off the formula; shapes off the base's
            problems.append(f"{name}: {result.problems}")
            continue
        if result.target.role == building.BASE:
            continue
        rows, widths = expected[result.cfg]
        mine, base = result.record.get("output_shapes"), (result.base_record or {}).get("output_shapes")
        if not mine or mine != base:
            problems.append(f"{name}: output shapes {mine} != the base's {base}")
        inserted = result.inserted
        layers = [(layer.layer, layer.class_name) for layer in inserted]
        want = [(after + 1 + number, class_name) for number, (after, class_name) in enumerate(rows)]
        if layers != want:
            problems.append(f"{name}: inserted layers {layers}, expected {want}")
        if [layer.in_channels for layer in inserted] != widths:
            problems.append(f"{name}: inserted layers saw {[layer.in_channels for layer in inserted]} channels, "
                            f"the base's widths there are {widths}")
        wrong = [layer for layer in inserted
                 if not (layer.checked and layer.expected_params is not None and layer.ok)]
        if wrong:
            problems.append(f"{name}: parameters off the formula (or unchecked): {wrong}")
    assert not problems, "\n".join(problems)
