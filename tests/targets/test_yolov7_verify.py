"""`yolopatch verify` catches what YOLOv7's parse_model hides: a misspelt name in a YAML row's arguments.

YOLOv7's parse_model runs ``eval(a)`` on every string argument inside a bare ``except: pass`` (YOLOv5 5.0 the
same; 6.0 on: NameError only), so ``[512, redution]`` or ``[nc, anchor]`` reaches the module as a string and
fails far away (``TypeError: new(): invalid data type 'str'``) or builds a wrong model. The probe checks
every row first (``probe.argument_problems``) and verify reports ``FILE:LINE: row N (Module): ...``.

The rule's unit tests use a stand-in for yolo.py (no torch); the others run the real probe on the
yolov7-wky-package checkout: every upstream YAML under its cfg/ passes, and a typo fails with one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from tests import yolov7_trees
from tests.targets.stand_in import module_with_parse_model
from tests.yolov7_trees import yolov7_tree  # noqa: F401  (the fixture)
from yolopatch import building
from yolopatch import probe

ROW_ARGS_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import probe
module = probe.import_tree(sys.argv[2], sys.argv[3])
found = {}
for cfg in sys.argv[4:]:
    with open(cfg, encoding="utf-8", errors="replace") as handle:
        found[cfg] = probe.argument_problems(handle.read(), module)
print(json.dumps(found))
"""


def argument_problems_in_tree(root: Path, module: str, cfgs: List[Path]) -> Dict[str, List[Dict[str, Any]]]:
    """probe.argument_problems of every cfg, with the tree's real yolo.py imported in a subprocess."""
    folder = building.probe_path().parent
    done = subprocess.run([sys.executable, "-c", ROW_ARGS_SCRIPT, str(folder), str(root), module,
                           *[str(cfg) for cfg in cfgs]], capture_output=True, text=True, cwd=root, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


# ---- the rule, on a stand-in yolo.py -------------------------------------------------------------------------

class _Module:  # a layer class the stand-in namespace defines
    def __init__(self, *args: Any) -> None:
        self.args = args


def stand_in_yolo() -> types.ModuleType:
    namespace: Dict[str, Any] = {"nn": types.SimpleNamespace(Upsample=_Module, LeakyReLU=_Module),
                                 "Conv": _Module, "IDetect": _Module, "SOCA": _Module}
    return module_with_parse_model("models.yolo", namespace, "d, ch",  # the locals of YOLOv7's parse_model
                                   "    anchors, nc, gd, gw = d['anchors'], d['nc'], d['depth_multiple'], "
                                   "d['width_multiple']\n"
                                   "    na = 3; no = na * (nc + 5); layers, save, c2 = [], [], ch[-1]\n")


YAML = """nc: 80
depth_multiple: 1.0
width_multiple: 1.0
anchors:
  - [10,13, 16,30, 33,23]
backbone:
  [[-1, 1, Conv, [32, 3, 1, None, 1, nn.LeakyReLU(0.1)]],  # 0
   [-1, 1, SOCA, [32, ARG]],  # 1
  ]
head:
  [[-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [-1, 1, Conv, [32, 1, 1, ch, [not_evaluated]]],
   [[2], 1, IDetect, [nc, anchors]],
  ]
"""


@pytest.mark.parametrize("argument", ["16", "nc // 5", "no", "len(anchors)", "True", "None", "'bilinear'"])
def test_arguments_parse_model_can_evaluate_pass(argument: str) -> None:
    assert probe.argument_problems(YAML.replace("ARG", argument), stand_in_yolo()) == []


@pytest.mark.parametrize("argument, why", [
    ("redution", "argument 'redution' is defined neither in models.yolo nor in parse_model: parse_model would "
                 "silently keep the string 'redution'"),
    ("anchor", "argument 'anchor' is defined neither in models.yolo nor in parse_model (did you mean 'anchors'?)"),
    ("16 // reduce", "argument '16 // reduce' names 'reduce', which is defined neither"),
    ("1024 redution", "argument '1024 redution' is not a Python expression"),
    ("nn.Upsampl(2)", "argument 'nn.Upsampl(2)' fails in parse_model's eval: AttributeError"),
    ("'nearst'", "argument 'nearst' is defined neither in models.yolo nor in parse_model (did you mean 'nearest'?)"),
])
def test_a_misspelt_argument_is_found_on_its_line(argument: str, why: str) -> None:
    problems = probe.argument_problems(YAML.replace("ARG", argument), stand_in_yolo())
    assert [(problem["line"], problem["row"]) for problem in problems] == [(8, 1)], problems
    assert problems[0]["message"].startswith(f"row 1 (SOCA): {why}"), problems[0]["message"]


def test_every_problem_is_reported_and_module_names_are_left_to_the_build() -> None:
    text = YAML.replace("ARG", "redution").replace("IDetect, [nc, anchors]", "IDetec, [nc, anchor]")
    problems = probe.argument_problems(text, stand_in_yolo())
    assert [(problem["line"], problem["row"]) for problem in problems] == [(8, 1), (13, 4)]
    assert problems[1]["message"].startswith("row 4 (IDetec): argument 'anchor' is defined neither")
    error = probe.ArgumentError(problems)
    assert str(error).startswith("line 8: row 1 (SOCA): argument 'redution'") and error.problems == problems


def test_what_the_check_leaves_alone() -> None:
    assert probe.argument_problems("backbone: [[-1, 1, Conv, [32\n", stand_in_yolo()) == []  # the build says why
    assert probe.argument_problems("- just a list\n", stand_in_yolo()) == []
    assert probe.argument_problems("nc: 80\nbackbone: [[-1, 1, Conv]]\n", stand_in_yolo()) == []  # short row


# ---- the real YOLOv7 code --------------------------------------------------------------------------------

@pytest.mark.slow
def test_every_upstream_yaml_passes_and_a_typo_does_not(tmp_path: Path) -> None:
    root = yolov7_trees.make_tree("checkout", tmp_path / "yolov7")
    upstream = sorted((root / "cfg").rglob("*.yaml"))
    assert {"training", "deploy"} <= {path.parent.name for path in upstream} and len(upstream) >= 20
    typo = root / "cfg" / "training" / "typo.yaml"
    text = (root / "cfg" / "training" / "yolov7.yaml").read_text(encoding="utf-8")
    typo.write_text(text.replace("IDetect, [nc, anchors]", "IDetect, [nc, anchor]"), encoding="utf-8")

    found = argument_problems_in_tree(root, "models.yolo", upstream + [typo])

    assert {cfg: problems for cfg, problems in found.items() if problems} == {str(typo): [{
        "line": 1 + text[:text.index("IDetect, [nc, anchors]")].count("\n"), "row": 105,
        "message": "row 105 (IDetect): argument 'anchor' is defined neither in models.yolo nor in parse_model "
                   "(did you mean 'anchors'?): parse_model would silently keep the string 'anchor'"}]}


@pytest.mark.slow
def test_verify_reports_a_typo_with_its_file_and_line(yolov7_tree: Callable[..., Path]) -> None:
    root = yolov7_tree("checkout")
    done = subprocess.run([sys.executable, "-m", "yolopatch", "apply", "soca", "--repo", str(root)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    variant = root / "cfg" / "training" / "yolov7-tiny-soca.yaml"
    text = variant.read_text(encoding="utf-8")
    row = "[-1, 1, SOCA, [512]]"
    assert text.count(row) == 1
    variant.write_text(text.replace(row, "[-1, 1, SOCA, [512, redution]]"), encoding="utf-8")
    line = 1 + text[:text.index(row)].count("\n")

    done = subprocess.run([sys.executable, "-m", "yolopatch", "verify", "cfg/training/yolov7-tiny-soca.yaml",
                           "--img", "64", "--runs", "0", "--json"], capture_output=True, text=True, cwd=root,
                          timeout=900)

    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cfg/training/yolov7-tiny-soca.yaml:{line}: row 77 (SOCA): argument 'redution' is "
                      "defined neither in models.yolo nor in parse_model: parse_model would silently keep the string "
                      "'redution'"], done.stderr
    models = {model["cfg"]: model for model in json.loads(done.stdout)["models"]}
    assert models["cfg/training/yolov7-tiny.yaml"]["ok"]  # the base builds; the variant is not built
    broken = models["cfg/training/yolov7-tiny-soca.yaml"]
    assert (broken["ok"], broken["stage"], broken["params"]) == (False, "arguments", None)
