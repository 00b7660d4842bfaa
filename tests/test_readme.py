"""The README's claims, checked: its usage session runs as written on a real tree (the demo's: yolov5
v7.0 from the package index, GitHub out of reach), its CI snippets work as written, and its facts
(versions, install lines) match the code. A wrong example fails here."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import git
import pytest
import yaml

from tests import yolov5_trees
from yolopatch.commands import clone as clone_module

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
DEAD_URL = "https://127.0.0.1:9/ultralytics/yolov5.git"
V7 = clone_module.PYPI_RELEASES["v7.0"]


def section(title: str) -> str:
    """The README's text from the heading ``title`` to the next heading of the same or a higher level
    (``#`` lines inside fenced code are comments, not headings)."""
    lines, found, level, fence = [], False, 0, False
    for line in README.splitlines(keepends=True):
        if line.startswith("```"):
            fence = not fence
        heading = re.match(r"(#+) (.*)", line) if not fence else None
        if heading and found and len(heading.group(1)) <= level:
            break
        if found:
            lines.append(line)
        elif heading and heading.group(2).strip() == title:
            found, level = True, len(heading.group(1))
    assert found, f"no section {title!r} in README.md"
    return "".join(lines)


def fenced(text: str, language: str) -> List[str]:
    """The bodies of the ```language blocks in ``text``."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def yolopatch_command() -> List[str]:
    return [sys.executable, "-m", "yolopatch"]


# --------------------------------------------------------------------------------------------
# The usage session


@pytest.mark.slow
def test_usage_session_runs_as_written(tmp_path: Path) -> None:
    lines = [line for line in fenced(section("Usage"), "bash")[0].splitlines() if line.strip()]
    env = {**os.environ, "COLUMNS": "100", "YOLOPATCH_YOLOV5_URL": DEAD_URL,
           "YOLOPATCH_PIP_FIND_LINKS": str(yolov5_trees.wheel(V7).parent)}
    cwd = tmp_path
    outputs: Dict[str, str] = {}
    for line in lines:
        words = shlex.split(line, comments=True)
        if words[0] == "cd":
            cwd = cwd / words[1]
            continue
        assert words[0] == "yolopatch", line
        result = subprocess.run(yolopatch_command() + words[1:], cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=1200)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        outputs[" ".join(words)] = result.stdout
    root = tmp_path / "yolov5"
    models = root / "yolov5" / "models"  # the package layout: GitHub was out of reach
    assert (models / "yolo.py").is_file()
    assert "yolopatch apply gam --at p4,p5 --base models/hub/yolov5s6.yaml" in outputs
    assert "models/hub/yolov5s6-gam-p4-p5.yaml" in outputs["yolopatch apply gam --at p4,p5 --base models/hub/yolov5s6.yaml"]
    # `yolopatch list` ran twice; the second time inside the tree, after `apply soca`
    assert re.search(r"^soca\s.*\sapplied\s*$", outputs["yolopatch list"], re.MULTILINE), outputs["yolopatch list"]
    verified = outputs["yolopatch verify models/yolov5s-soca.yaml --img 320"]
    assert "yolov5s-soca.yaml" in verified and "latency ms" in verified
    # The last two lines took everything out again: the tree is as cloned.
    assert git.Repo(root).git.status("--porcelain") == ""


# --------------------------------------------------------------------------------------------
# CI snippets


def _pre_commit_hook() -> Dict[str, Any]:
    config = yaml.safe_load(fenced(section("pre-commit"), "yaml")[0])
    (repo,) = config["repos"]
    assert repo["repo"] == "local"  # no rev to go stale: the repository has no release tags
    (hook,) = repo["hooks"]
    return hook


def test_pre_commit_snippet_matches_the_shipped_hook(make_tree: Any) -> None:
    hook = _pre_commit_hook()
    (shipped,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    for field in ("id", "name", "entry", "pass_filenames", "files"):
        assert hook[field] == shipped[field], field
    assert hook["language"] == "system"  # runs the yolopatch the README's install lines put on PATH
    pattern = re.compile(hook["files"])
    assert all(pattern.search(path) for path in ("models/common.py", "yolov5/models/yolo.py",
                                                 "models/hub/yolov5s6.yaml", "yolov5/models/yolov5s-soca.yml"))
    assert not any(pattern.search(path) for path in ("README.md", "utils/general.py", "models/README.txt"))
    root = make_tree("7.0", "checkout")
    from yolopatch.commands.apply import apply

    assert apply(root, ["soca"]) == 0
    entry = shlex.split(hook["entry"])
    assert entry[0] == "yolopatch"
    result = subprocess.run(yolopatch_command() + entry[1:], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    common = root / "models" / "common.py"
    common.write_text(common.read_text(encoding="utf-8").replace("class SOCA(", "class SOCA2(", 1), encoding="utf-8")
    drifted = subprocess.run(yolopatch_command() + entry[1:], cwd=root, capture_output=True, text=True, timeout=300)
    assert drifted.returncode == 1  # the commit is refused


def test_pre_commit_runs_the_hook(make_tree: Any, tmp_path: Path) -> None:
    """With pre-commit itself: the README's config in a repository holding a tree."""
    pytest.importorskip("pre_commit")
    root = make_tree("7.0", "checkout")
    from yolopatch.commands.apply import apply

    assert apply(root, ["soca"]) == 0
    config = fenced(section("pre-commit"), "yaml")[0]
    (root / ".pre-commit-config.yaml").write_text(config, encoding="utf-8")
    repository = git.Repo.init(root)
    repository.git.add("-A")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    result = subprocess.run([sys.executable, "-m", "pre_commit", "run", "--all-files"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "yolopatch check" in result.stdout and "Passed" in result.stdout, result.stdout


@pytest.mark.slow
def test_github_actions_snippet_installs_and_checks_as_written(tmp_path: Path) -> None:
    workflow = yaml.safe_load(fenced(section("GitHub Actions"), "yaml")[0])
    runs = [step["run"] for step in workflow["jobs"]["yolopatch"]["steps"] if "run" in step]
    install, check = runs
    assert shlex.split(install)[:2] == ["pip", "install"]
    wheel_path = Path(shlex.split(install)[2])
    # The README's build line, run in this checkout, gives the file the snippet installs.
    build = re.search(r"\(`(pip wheel [^`]*)`\)", section("GitHub Actions"))
    assert build, "the README says how to build the wheel"
    assert shlex.split(build.group(1)) == ["pip", "wheel", "--no-deps", "-w", str(wheel_path.parent), "."]
    workspace = tmp_path / "workspace"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(workspace / wheel_path.parent), str(REPO)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    assert (workspace / wheel_path).is_file(), sorted(p.name for p in (workspace / wheel_path.parent).iterdir())
    # `pip install` of the wheel (without dependencies: this venv has them) into a folder of its own.
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                                str(workspace / wheel_path)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr
    root = yolov5_trees.make_tree("7.0", "checkout", workspace / "yolov5")
    env = {**os.environ, "PYTHONPATH": str(site), "PATH": f"{site / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    from_wheel = subprocess.run([sys.executable, "-c", "import yolopatch; print(yolopatch.__file__)"], env=env,
                                cwd=workspace, capture_output=True, text=True)
    assert from_wheel.stdout.strip().startswith(str(site))  # not this checkout's editable install
    subprocess.run([str(site / "bin" / "yolopatch"), "apply", "soca", "--repo", str(root)], env=env, check=True,
                   capture_output=True)
    words = shlex.split(check)
    result = subprocess.run([str(site / "bin" / words[0]), *words[1:]], cwd=workspace, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


# --------------------------------------------------------------------------------------------
# Facts


def test_first_screen_says_how_to_run_yolopatch_and_how_to_install_it() -> None:
    first_screen = "\n".join(README.splitlines()[:30])
    for needed in ("bash scripts/demo.sh", "source .venv/bin/activate", "pipx install .", "uv tool install .",
                   "pip install ."):
        assert needed in first_screen, needed


def test_no_dead_references() -> None:
    assert "shared/seeds" not in README  # not in a user's clone
    assert "pip install yolopatch" not in README  # not on the package index
    assert "rev: v0.1.0" not in README  # no such tag
    assert "speed tables below" not in README


def test_package_versions_are_stated_and_explained() -> None:
    tests_versions = yolov5_trees.VERSIONS
    assert f"({', '.join(tests_versions.values())})" in README  # the Development section's list
    for version in (clone_module.PYPI_RELEASES["v7.0"], clone_module.PYPI_RELEASES["v5.0"], tests_versions["7.0"],
                    tests_versions["5.0"]):
        assert version in section("yolopatch"), version


def test_usage_lines_name_only_real_commands_and_options() -> None:
    """Every `yolopatch COMMAND --option` in the Usage section exists (checked against --help)."""
    text = section("Usage")
    commands = set(re.findall(r"^yolopatch (\w+)", text, re.MULTILINE))
    for command in sorted(commands):
        helped = subprocess.run(yolopatch_command() + [command, "--help"], capture_output=True, text=True,
                                env={**os.environ, "COLUMNS": "200"}, timeout=120)
        assert helped.returncode == 0, command
        for line in text.splitlines():
            if line.startswith(f"yolopatch {command} "):
                for option in re.findall(r"(--[a-z][a-z-]*)", line.split("#")[0]):
                    assert option in helped.stdout, f"{command} {option}"


def test_check_codes_table_is_the_real_one() -> None:
    """Every code `check` can report is in the README's table with the same meaning, and no other."""
    from yolopatch.checks.findings import CODES

    text = section("Keep it intact: `yolopatch check`")
    rows = [line.split("|")[1:3] for line in text.splitlines() if line.startswith("| `")]
    assert {code.strip().strip("`"): meaning.strip() for code, meaning in rows} == dict(CODES)


def test_codebases_table_names_every_supported_target() -> None:
    from yolopatch.targets.detect import NOT_YET, SUPPORTED

    text = section("Codebases")
    titles = {"yolov5": "YOLOv5", "ultralytics": "Ultralytics", "yolov7": "YOLOv7", "yolov9": "YOLOv9"}
    for codebase in list(SUPPORTED) + list(NOT_YET):
        assert f"\n| {titles[codebase]}" in text, codebase
