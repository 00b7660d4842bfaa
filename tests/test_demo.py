"""`yolopatch demo`: clone (auto source), apply all five modules, verify, print the revert command.

The git URL points at a dead address, so auto falls back to the package index (as it does on machines
without GitHub) and no test reaches GitHub; pip finds the cached wheel through $YOLOPATCH_PIP_FIND_LINKS.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import git
import pytest

from tests import yolov5_trees
from yolopatch import catalog
from yolopatch.commands import clone as clone_module
from yolopatch.commands import demo as demo_module
from yolopatch.commands import verify as verify_module
from yolopatch.state import APPLIED, Sources, module_states
from yolopatch.tree import PACKAGE, locate

DEAD_URL = "https://127.0.0.1:9/ultralytics/yolov5.git"
V7 = clone_module.PYPI_RELEASES["v7.0"]
KEYS = sorted(spec.key for spec in catalog.all_modules())


def statuses(root: Path) -> Dict[str, str]:
    return {key: state.status for key, state in module_states(Sources.read(locate(root))).items()}


def changed_files(root: Path) -> List[str]:
    return sorted(line[3:] for line in git.Repo(root).git.status("--porcelain").splitlines())


@pytest.fixture
def offline_github(monkeypatch: pytest.MonkeyPatch) -> Dict[str, str]:
    """Environment in which GitHub is out of reach and pip finds the v7.0 wheel in the test cache."""
    values = {"YOLOPATCH_YOLOV5_URL": DEAD_URL,
              "YOLOPATCH_PIP_FIND_LINKS": str(yolov5_trees.wheel(V7).parent)}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def fake_verify(monkeypatch: pytest.MonkeyPatch) -> List[dict]:
    """Record verify's calls instead of building models (the end-to-end test below builds them)."""
    calls: List[dict] = []

    def verify(repo: Path, cfgs=(), *, python=None, img=640, as_json=False, runs=7) -> int:
        calls.append({"repo": repo, "img": img, "python": python, "runs": runs, "statuses": statuses(repo)})
        return int(os.environ.get("FAKE_VERIFY_EXIT", "0"))

    monkeypatch.setattr(verify_module, "verify", verify)
    return calls


@pytest.mark.slow
def test_demo_end_to_end(offline_github: Dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "yolov5-demo"
    yolopatch = str(Path(sys.executable).with_name("yolopatch"))
    env = {**os.environ, **offline_github, "COLUMNS": "250"}
    started = time.monotonic()
    result = subprocess.run([yolopatch, "demo", "--dest", str(dest), "--img", "64"], env=env,
                            capture_output=True, text=True, timeout=1800)
    elapsed = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    print(f"demo --img 64 took {elapsed:.0f} s")

    # 1. the tree came from the package index
    assert "cannot be used" in result.stderr and "using the package index" in result.stderr
    assert f"from the package index (yolov5=={V7}" in out
    assert locate(dest).layout == PACKAGE
    # 2. all five modules applied, one variant each
    assert statuses(dest) == {key: APPLIED for key in KEYS}
    assert changed_files(dest) == sorted(["yolov5/models/common.py", "yolov5/models/yolo.py"]
                                         + [f"yolov5/models/yolov5s-{key}.yaml" for key in KEYS])
    # 3. the verify table: the base and all five variants, each measured and ok
    for name in ["yolov5s"] + [f"yolov5s-{key}" for key in KEYS]:
        row = next((line for line in out.splitlines() if f" {name}.yaml " in line), None)
        assert row is not None, f"{name} missing from the table:\n{out}"
        assert re.search(r"[\d,]{7,}", row) and row.rstrip(" │|").endswith("ok"), row
    assert "GFLOPs" in out and "latency ms" in out and "FAILED" not in out
    assert [f"Step {n}/3" in out for n in (1, 2, 3)] == [True] * 3
    # 4. it ends on the revert command, and that command puts the tree back to its first commit
    last = [line.strip() for line in out.splitlines() if line.strip()][-1]
    assert last == f"yolopatch revert --repo {shlex.quote(str(dest))}"
    command = shlex.split(last)
    reverted = subprocess.run([yolopatch, *command[1:]], env=env, capture_output=True, text=True)
    assert reverted.returncode == 0, reverted.stdout + reverted.stderr
    repository = git.Repo(dest)
    assert repository.git.status("--porcelain") == ""
    assert [c.message for c in repository.iter_commits()] == [f"yolov5 {V7} from the package index"]


def test_demo_steps_in_order_and_ends_on_the_revert_command(offline_github: Dict[str, str], fake_verify: List[dict],
                                                            tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "demo"
    assert demo_module.demo(dest, img=96) == 0
    out = capsys.readouterr().out
    assert [(call["img"], call["runs"]) for call in fake_verify] == [(96, demo_module.DEMO_RUNS)]
    assert fake_verify[0]["statuses"] == {key: APPLIED for key in KEYS}  # verify ran after apply
    assert out.index("Step 1/3") < out.index("from the package index") < out.index("Step 2/3") \
        < out.index("applied") < out.index("Step 3/3") < out.index("Done")
    assert out.rstrip().endswith(demo_module.revert_command(dest))


def test_demo_reuses_a_tree_and_is_repeatable(offline_github: Dict[str, str], fake_verify: List[dict],
                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "demo"
    assert clone_module.clone(dest) == 0
    from yolopatch.commands.apply import apply

    apply(dest, ["soca"], positions=["p3"])  # an earlier run, placed differently: must be reverted first
    assert (dest / "yolov5" / "models" / "yolov5s-soca-p3.yaml").is_file()
    assert demo_module.demo(dest, img=64) == 0
    first = yolov5_trees.snapshot(dest, skip_git=True)
    assert not (dest / "yolov5" / "models" / "yolov5s-soca-p3.yaml").exists()
    assert "already a YOLOv5 tree: reusing it" in capsys.readouterr().out

    assert demo_module.demo(dest, img=64) == 0
    assert yolov5_trees.snapshot(dest, skip_git=True) == first
    assert len(fake_verify) == 2
    assert changed_files(dest) == sorted(["yolov5/models/common.py", "yolov5/models/yolo.py"]
                                         + [f"yolov5/models/yolov5s-{key}.yaml" for key in KEYS])


def test_demo_refuses_a_foreign_destination(offline_github: Dict[str, str], fake_verify: List[dict],
                                            tmp_path: Path) -> None:
    from typer.testing import CliRunner
    from yolopatch.cli import app

    dest = tmp_path / "project"
    dest.mkdir()
    (dest / "main.py").write_text("print('mine')\n")
    result = CliRunner().invoke(app, ["demo", "--dest", str(dest)])
    assert result.exit_code == 1
    assert "not a YOLOv5 tree; nothing touched" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["project"] and [p.name for p in dest.iterdir()] == ["main.py"]
    assert fake_verify == []


def test_demo_passes_on_a_failing_verify(offline_github: Dict[str, str], fake_verify: List[dict],
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("FAKE_VERIFY_EXIT", "1")
    dest = tmp_path / "demo"
    assert demo_module.demo(dest, img=64) == 1
    captured = capsys.readouterr()
    assert "step 3 (verify" in captured.err and "Done" not in captured.out
    assert captured.out.rstrip().endswith(demo_module.revert_command(dest))


def test_demo_checks_the_image_size_before_touching_anything(fake_verify: List[dict], tmp_path: Path) -> None:
    from yolopatch.errors import UsageError

    with pytest.raises(UsageError, match="--img 100 is not a positive multiple of 32"):
        demo_module.demo(tmp_path / "demo", img=100)
    assert list(tmp_path.iterdir()) == [] and fake_verify == []


# ---- --target ultralytics -------------------------------------------------------------------------------

from tests.targets.test_ultralytics_clone import NEWEST, upstream  # noqa: E402,F401  (the fixture)
from yolopatch.targets import ultralytics as ultralytics_target  # noqa: E402

ULTRALYTICS_DEAD_URL = "https://127.0.0.1:9/ultralytics/ultralytics.git"


def ultralytics_statuses(root: Path) -> Dict[str, str]:
    tree = ultralytics_target.tree_at(root)
    assert tree is not None, root
    states = ultralytics_target.module_states(ultralytics_target.Texts.read(tree))
    return {key: state.status for key, state in states.items()}


def ultralytics_changed(root: Path) -> List[str]:
    return sorted(line[3:] for line in git.Repo(root).git.status("--porcelain", "--untracked-files=all").splitlines())


def expected_ultralytics_changes() -> List[str]:
    models = "ultralytics/cfg/models"
    return sorted(["ultralytics/nn/modules/__init__.py", "ultralytics/nn/modules/yolopatch.py", "ultralytics/nn/tasks.py"]
                  + [f"{models}/{base}-{key}.yaml" for base in ("v8/yolov8", "11/yolo11") for key in KEYS])


@pytest.fixture
def fake_ultralytics_verify(monkeypatch: pytest.MonkeyPatch) -> List[dict]:
    calls: List[dict] = []

    def verify(repo: Path, cfgs=(), *, python=None, img=640, as_json=False, runs=7, scale=None) -> int:
        calls.append({"repo": repo, "img": img, "runs": runs, "statuses": ultralytics_statuses(repo)})
        return 0

    monkeypatch.setattr(verify_module, "verify", verify)
    return calls


def test_ultralytics_demo_clones_applies_verifies_and_repeats(upstream: Dict[str, str],  # noqa: F811
                                                              fake_ultralytics_verify: List[dict],
                                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("YOLOPATCH_ULTRALYTICS_URL", upstream["url"])
    dest = tmp_path / "ultralytics-demo"
    assert demo_module.demo(dest, img=64, target="ultralytics") == 0
    out = capsys.readouterr().out
    assert git.Repo(dest).head.commit.hexsha == upstream[f"v{NEWEST}"]  # the default release, from git
    assert [(call["img"], call["runs"]) for call in fake_ultralytics_verify] == [(64, demo_module.DEMO_RUNS)]
    assert fake_ultralytics_verify[0]["statuses"] == {key: APPLIED for key in KEYS}  # verify ran after apply
    assert out.index("Step 1/3") < out.index("get an Ultralytics tree") < out.index("cloned Ultralytics") \
        < out.index("Step 2/3") < out.index("applied") < out.index("Step 3/3") < out.index("Done")
    assert f"All {len(KEYS)} modules are in" in out and "with one variant YAML each of yolov8.yaml and yolo11.yaml" in out
    assert out.rstrip().endswith(demo_module.revert_command(dest))
    assert ultralytics_changed(dest) == expected_ultralytics_changes()
    first = yolov5_trees.snapshot(dest, skip_git=True)

    assert demo_module.demo(dest, img=64, target="ultralytics") == 0  # a second run reuses and starts over
    assert "is already an Ultralytics tree: reusing it" in capsys.readouterr().out
    assert yolov5_trees.snapshot(dest, skip_git=True) == first and len(fake_ultralytics_verify) == 2


def test_ultralytics_demo_refuses_a_yolov5_tree_and_an_unknown_target(fake_ultralytics_verify: List[dict],
                                                                        make_tree, tmp_path: Path) -> None:
    from yolopatch.errors import UsageError, YolopatchError

    root = make_tree("7.0", "checkout")
    before = yolov5_trees.snapshot(tmp_path, folders=True)
    with pytest.raises(YolopatchError, match="not an Ultralytics tree; nothing touched"):
        demo_module.demo(root, img=64, target="ultralytics", source="git")
    with pytest.raises(UsageError, match="unknown target 'yolov9'"):
        demo_module.demo(tmp_path / "new", target="yolov9")
    assert yolov5_trees.snapshot(tmp_path, folders=True) == before and fake_ultralytics_verify == []


@pytest.mark.slow
def test_ultralytics_demo_end_to_end(tmp_path: Path) -> None:
    """The CLI without GitHub: the 8.4 source distribution from the package index, all modules, the real verify."""
    dest = tmp_path / "ultralytics-demo"
    yolopatch = str(Path(sys.executable).with_name("yolopatch"))
    env = {**os.environ, "YOLOPATCH_ULTRALYTICS_URL": ULTRALYTICS_DEAD_URL, "COLUMNS": "250",
           "YOLO_CONFIG_DIR": str(tmp_path / "config")}
    started = time.monotonic()
    result = subprocess.run([yolopatch, "demo", "--target", "ultralytics", "--dest", str(dest), "--img", "64",
                             "--runs", "1"], env=env, capture_output=True, text=True, timeout=1800)
    print(f"demo --target ultralytics --img 64 took {time.monotonic() - started:.0f} s")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "using the package index" in result.stderr and f"(ultralytics=={NEWEST}, source distribution" in out
    assert ultralytics_statuses(dest) == {key: APPLIED for key in KEYS}
    assert ultralytics_changed(dest) == expected_ultralytics_changes()
    for name in ["yolov8", "yolo11"] + [f"{base}-{key}" for base in ("yolov8", "yolo11") for key in KEYS]:
        row = next((line for line in out.splitlines() if f"{name}.yaml " in line), None)
        assert row is not None, f"{name} missing from the table:\n{out}"
        assert row.rstrip(" │|").endswith("ok"), row
    assert "FAILED" not in out
    last = [line.strip() for line in out.splitlines() if line.strip()][-1]
    reverted = subprocess.run([yolopatch, *shlex.split(last)[1:]], env=env, capture_output=True, text=True)
    assert reverted.returncode == 0, reverted.stdout + reverted.stderr
    assert ultralytics_changed(dest) == []
