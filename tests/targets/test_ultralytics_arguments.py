"""verify's argument check on Ultralytics: a misspelt hyper-parameter in a row of yolopatch's module.

Ultralytics' parse_model (8.0 to 8.4) turns a string argument into ``locals()[a]`` or ``ast.literal_eval(a)``
and keeps the string when that raises ValueError, so ``[1024, redution]`` reaches SOCA as the string
'redution'. The probe checks the rows of yolopatch's own modules first (``probe.argument_problems``); rows of
Ultralytics' modules are left alone, since its YAMLs pass strings on purpose (TorchVision's ``resnet18``).
The rule's tests use a stand-in for tasks.py (no torch); the last runs the real 8.4 tree in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

from tests.targets.stand_in import module_with_parse_model
from tests.ultralytics_trees import ultralytics_tree  # noqa: F401  (the fixture)
from yolopatch import building, probe
from yolopatch.commands.apply import apply


class _Ours:
    """A module as yolopatch's module file defines it."""

    def __init__(self, c1: int, c2: Optional[int] = None, reduction: int = 16) -> None:
        self.args = (c1, c2, reduction)


_Ours.__module__ = "ultralytics.nn.modules.yolopatch"


class _Theirs:
    def __init__(self, *args: Any) -> None:
        self.args = args


def stand_in_tasks() -> types.ModuleType:
    namespace: Dict[str, Any] = {"SOCA": _Ours, "TorchVision": _Theirs, "Conv": _Theirs}
    return module_with_parse_model(  # the locals of Ultralytics' parse_model
        "ultralytics.nn.tasks", namespace, "d, ch, verbose=True",
        "    nc, act, scales = (d.get(x) for x in ('nc', 'activation', 'scales'))\n"
        "    depth, width, kpt_shape = (d.get(x, 1.0) for x in ('depth_multiple', 'width_multiple', 'kpt_shape'))\n"
        "    layers, save, c2 = [], [], ch[-1]\n")


YAML = """nc: 80
backbone:
  - [-1, 1, Conv, [64, 3, 2]] # 0
  - [-1, 1, SOCA, [1024, ARG]] # 1
  - [-1, 1, TorchVision, [512, resnet18, DEFAULT, True, 2]] # 2
head:
  - [-1, 1, Conv, [nc, 1, 1, redution]] # 3
"""


@pytest.mark.parametrize("argument", ["16", "nc", "width", "None", "True", "2.5", "'16'", "[4, 8]"])
def test_what_parse_model_evaluates_passes(argument: str) -> None:
    assert probe.argument_problems(YAML.replace("ARG", argument), stand_in_tasks(), probe.ULTRALYTICS) == []


@pytest.mark.parametrize("argument, why", [
    ("redution", "argument 'redution' is neither a Python literal nor a name parse_model defines (did you mean "
                 "'reduction'?): parse_model would silently keep the string 'redution'"),
    ("nc // 2", "argument 'nc // 2' is neither a Python literal nor a name parse_model defines"),
    ("widht", "argument 'widht' is neither a Python literal nor a name parse_model defines (did you mean 'width'?)"),
])
def test_a_misspelt_argument_of_our_module_is_found_on_its_line(argument: str, why: str) -> None:
    problems = probe.argument_problems(YAML.replace("ARG", argument), stand_in_tasks(), probe.ULTRALYTICS)
    assert [(problem["line"], problem["row"]) for problem in problems] == [(4, 1)], problems
    assert problems[0]["message"].startswith(f"row 1 (SOCA): {why}"), problems[0]["message"]


def test_rows_of_ultralytics_modules_and_loud_failures_are_left_alone() -> None:
    """TorchVision's strings and Conv's misspelt one (row 3) are Ultralytics' own; ``1024 redution`` is a
    SyntaxError in parse_model's literal_eval, which stops the build with its own message."""
    assert probe.argument_problems(YAML.replace("ARG", "1024 redution"), stand_in_tasks(), probe.ULTRALYTICS) == []


# ---- the real tree -----------------------------------------------------------------------------------------

ROW_ARGS_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import probe
module = probe.import_tree(sys.argv[2], "ultralytics.nn.tasks")
found = {}
for cfg in sys.argv[3:]:
    with open(cfg, encoding="utf-8", errors="replace") as handle:
        found[cfg] = probe.argument_problems(handle.read(), module, probe.ULTRALYTICS)
print(json.dumps(found))
"""


def argument_problems_in_tree(root: Path, cfgs: List[Path]) -> Dict[str, List[Dict[str, Any]]]:
    folder = building.probe_path().parent
    done = subprocess.run([sys.executable, "-c", ROW_ARGS_SCRIPT, str(folder), str(root), *map(str, cfgs)],
                          capture_output=True, text=True, cwd=root, timeout=600,
                          env={**os.environ, "YOLO_OFFLINE": "true"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
def test_every_yaml_of_a_patched_8_4_tree_passes_and_a_typo_does_not(
        ultralytics_tree: Callable[[str], Path]) -> None:  # noqa: F811
    root = ultralytics_tree("8.4")
    assert apply(root, ["all"]) == 0
    models = root / "ultralytics" / "cfg" / "models"
    typo = models / "v8" / "yolov8-typo.yaml"
    text = (models / "v8" / "yolov8-se.yaml").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if ", SE, [" in line)
    typo.write_text(text.replace(row, row.replace("]]", ", redution]]"), 1), encoding="utf-8")
    cfgs = sorted(models.rglob("*.yaml"))
    assert len(cfgs) > 100 and sum(1 for cfg in cfgs if "yolopatch" in cfg.read_text(encoding="utf-8")) >= 42

    found = argument_problems_in_tree(root, cfgs)

    flagged = {cfg: problems for cfg, problems in found.items() if problems}
    assert list(flagged) == [str(typo)], flagged
    (problem,) = flagged[str(typo)]
    assert problem["line"] == 1 + text.splitlines().index(row)
    assert "(SE): argument 'redution' is neither a Python literal nor a name parse_model defines (did you mean " \
           "'reduction'?)" in problem["message"]
