"""The command line as a user meets it: exit codes, one-line errors, pipes, widths and printed paths.

Most tests run ``python -m yolopatch`` in a subprocess (the console entry users run), because
terminal width, broken pipes and exit codes only show there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from tests import yolov5_trees
from yolopatch import building, paths, ui
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.tree import locate

MakeTree = Callable[..., Path]


def cli(*args: str, cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "COLUMNS": "100", **(env or {})}
    return subprocess.run([sys.executable, "-m", "yolopatch", *args], capture_output=True, text=True, cwd=cwd,
                          env=environment, timeout=300)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr and "Usage:" not in result.stderr
    return lines[0]


# --------------------------------------------------------------------------------------------
# Exit codes and one-line usage errors (issue 9, item 16)


@pytest.mark.parametrize("args, expected", [
    (["apply", "soca", "--foo"], "error: no such option: --foo (try yolopatch apply --help)"),
    (["apply"], "error: missing argument 'modules' (try yolopatch apply --help)"),
    (["check", "--format", "xml"],
     "error: invalid value for '--format': 'xml' is not one of text, json, github (try yolopatch check --help)"),
    (["verify", "--runs", "-1"], "error: invalid value for '--runs': -1 is not in the range x>=0 (try yolopatch verify --help)"),
    (["nosuch"], "error: no such command 'nosuch' (try yolopatch --help)"),
    (["show", "nosuch"], "error: unknown module 'nosuch'; choose one of: "),
])
def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path, args: List[str], expected: str) -> None:
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert one_error_line(result).startswith(expected)
    assert result.stdout == ""


@pytest.mark.parametrize("args, expected", [
    (["--scales", "q"], "error: unknown scale(s) q"),
    (["--at", "p9"], "error: position 'p9' "),
    (["--at", "layer:\uff11\uff12"], "error: position 'layer:\uff11\uff12' "),  # full-width digits: no non-ASCII file name
    (["--base", "nosuch.yaml"], "error: base model YAML 'nosuch.yaml' not found"),
])
def test_bad_values_in_a_tree_exit_2(make_tree: MakeTree, args: List[str], expected: str) -> None:
    root = make_tree("7.0", "checkout")
    before = yolov5_trees.snapshot(root)
    result = cli("apply", "soca", *args, cwd=root)
    assert result.returncode == 2
    assert one_error_line(result).startswith(expected)
    assert yolov5_trees.snapshot(root) == before


def test_missing_verify_cfg_is_a_usage_error_naming_where_it_looked(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "package")
    result = cli("verify", "models/nosuch.yaml", cwd=root)
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith("error: model YAML 'models/nosuch.yaml' not found (looked at models/nosuch.yaml, "
                           "yolov5/models/nosuch.yaml, yolov5/models/models/nosuch.yaml")


def test_help_and_version_exit_0(tmp_path: Path) -> None:
    assert cli("--version", cwd=tmp_path).stdout.strip().startswith("yolopatch ")
    for args in (["--help"], ["apply", "--help"], ["show", "--help"]):
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 0 and "Usage" in result.stdout and result.stderr == ""


def test_bare_yolopatch_shows_the_help(tmp_path: Path) -> None:
    result = cli(cwd=tmp_path)
    assert result.returncode == 2  # click's convention for a missing command
    assert "Usage" in result.stdout + result.stderr and "apply" in result.stdout + result.stderr


def test_no_tree_names_the_directory(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-tree"
    folder.mkdir()
    result = cli("status", cwd=folder)
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"neither {folder.resolve()} nor a folder above it" in line  # the directory, by name
    assert ": .;" not in line and not line.startswith("error: .:")
    assert cli("check", cwd=folder).returncode == 2  # check: could not run


# --------------------------------------------------------------------------------------------
# Broken pipes (issue 9, item 17)


@pytest.mark.parametrize("args", [["apply", "soca", "sge", "--dry-run"], ["list"], ["show", "soca"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(make_tree: MakeTree, args: List[str]) -> None:
    root = make_tree("7.0", "checkout")
    before = yolov5_trees.snapshot(root)
    process = subprocess.Popen([sys.executable, "-m", "yolopatch", *args], cwd=root, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "100"})
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # like `| head -0`: every write to stdout fails with EPIPE
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 1
    assert stderr == ""  # no traceback, no "Exception ignored ... BrokenPipeError"
    assert yolov5_trees.snapshot(root) == before


def test_head_1_gets_the_first_line(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    result = subprocess.run(f"{sys.executable} -m yolopatch apply soca sge --dry-run | head -1", shell=True,
                            cwd=root, capture_output=True, text=True, timeout=300)
    assert result.stdout == "--- a/models/common.py\n"
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


# --------------------------------------------------------------------------------------------
# Widths (issue 14, item 4)


@pytest.mark.parametrize("columns", [60, 80, 100, 140])
def test_piped_output_honours_columns(tmp_path: Path, columns: int) -> None:
    result = cli("list", cwd=tmp_path, env={"COLUMNS": str(columns)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    assert lines[0].split()[0] == "key" and lines[2].split()[0] == "cbam"


def test_terminal_width_prefers_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ui.terminal_width({"COLUMNS": "123"}) == 123

    def no_terminal(descriptor: int = 1) -> os.terminal_size:
        raise OSError("not a terminal")

    monkeypatch.setattr(os, "get_terminal_size", no_terminal)
    assert ui.terminal_width({}) == ui.FALLBACK_WIDTH == 100
    assert ui.terminal_width({"COLUMNS": "wide"}) == 100
    monkeypatch.setattr(os, "get_terminal_size", lambda descriptor=1: os.terminal_size((77, 20)))
    assert ui.terminal_width({}) == 77


# --------------------------------------------------------------------------------------------
# Printed paths (issue 14, item 2)


def test_display_path(tmp_path: Path) -> None:
    here = tmp_path / "work"
    assert ui.display_path(here / "yolov5" / "models" / "common.py", cwd=here) == "yolov5/models/common.py"
    assert ui.display_path("yolov5/../yolov5/models", cwd=here) == "yolov5/models"
    assert ui.display_path(here, cwd=here) == str(here)
    assert ui.display_path(tmp_path / "elsewhere" / "a.py", cwd=here) == str(tmp_path / "elsewhere" / "a.py")


def test_apply_with_clone_prints_paths_that_open_from_here(make_tree: MakeTree, tmp_path: Path) -> None:
    """The issue's example: `apply all --repo ./yolov5` printed yolov5/models/... for ./yolov5/yolov5/models/..."""
    root = make_tree("7.0", "package")
    result = cli("apply", "soca", "--repo", root.name, cwd=root.parent)
    assert result.returncode == 0, result.stderr
    printed = [line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith(("updated ", "created "))]
    assert printed and all((root.parent / path).is_file() for path in printed), result.stdout


# --------------------------------------------------------------------------------------------
# Model YAML paths as the user sees the tree (issue 14, item 3): yolopatch/paths.py


def test_model_yaml_from_the_root_of_the_package_layout(make_tree: MakeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree("7.0", "package")
    tree = locate(root)
    monkeypatch.chdir(root)
    hub = root / "yolov5" / "models" / "hub" / "yolov5s6.yaml"
    assert paths.resolve_model_yaml(tree, "models/hub/yolov5s6.yaml") == hub.resolve()
    assert paths.resolve_model_yaml(tree, "yolov5/models/hub/yolov5s6.yaml") == hub.resolve()
    assert paths.resolve_model_yaml(tree, "yolov5s6.yaml") == hub.resolve()  # a bare name: models/, then hub/
    assert paths.resolve_model_yaml(tree, str(hub)) == hub.resolve()
    monkeypatch.chdir(root / "yolov5" / "models" / "hub")
    assert paths.resolve_model_yaml(tree, "yolov5s6.yaml") == hub.resolve()


def test_model_yaml_relative_to_the_current_directory_first(make_tree: MakeTree, tmp_path: Path) -> None:
    root = make_tree("7.0", "checkout")
    tree = locate(root)
    mine = tmp_path / "elsewhere" / "models" / "yolov5s.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("# my own\n")
    assert paths.resolve_model_yaml(tree, "models/yolov5s.yaml", cwd=tmp_path / "elsewhere") == mine.resolve()
    assert paths.resolve_model_yaml(tree, "models/yolov5s.yaml", cwd=tmp_path) == (root / "models" / "yolov5s.yaml").resolve()


def test_missing_model_yaml_is_a_usage_error(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "package")
    tree = locate(root)
    with pytest.raises(UsageError) as raised:
        paths.resolve_model_yaml(tree, "models/nosuch.yaml", what="base model YAML", cwd=root)
    assert raised.value.exit_code == 2
    assert str(raised.value).startswith("base model YAML 'models/nosuch.yaml' not found (looked at "
                                        "models/nosuch.yaml, yolov5/models/nosuch.yaml, ")
    assert isinstance(raised.value, YolopatchError)


# --------------------------------------------------------------------------------------------
# verify's latency column (issue 14, item 5): the probe's timing order and the statistics


class _FakeTorch:
    """What yolopatch/probe.py's timing needs of torch: no_grad()."""

    @staticmethod
    def no_grad() -> "contextlib.AbstractContextManager[None]":
        import contextlib

        return contextlib.nullcontext()


def test_probe_warms_up_then_alternates_the_order() -> None:
    from yolopatch import probe

    calls: List[str] = []
    models = [lambda image, name=name: calls.append(name) for name in ("variant", "base")]
    times = probe.alternating_times(_FakeTorch, models, None, runs=3, warmup=2)
    assert calls == ["variant", "base"] * 2 + ["variant", "base", "base", "variant", "variant", "base"]
    assert [len(column) for column in times] == [3, 3] and all(t >= 0 for column in times for t in column)


def test_probe_groups_variants_with_their_base() -> None:
    from yolopatch import probe

    groups = probe.latency_groups(["b", "v1", "v2", "lonely"], [["b", "v1"], ["b", "v2"]])
    assert groups == [("b", ["v1", "v2"]), ("lonely", [])]


def test_latency_statistics() -> None:
    from yolopatch.building import Spread, latency_delta

    spread = Spread.of([10.0, 11.0, 12.0, 13.0, 100.0])  # one slow run moves the median by nothing
    assert spread is not None and spread.median == 12.0 and (spread.q1, spread.q3) == (11.0, 13.0)
    assert spread.half_iqr == 1.0
    assert Spread.of([]) is None and Spread.of([5.0]) == Spread(5.0, 5.0, 5.0)
    base = [100.0, 104.0, 98.0, 101.0, 250.0]  # round 5: the machine was busy for both
    clear = latency_delta([110.0, 113.0, 109.0, 111.0, 262.0], base)
    assert clear is not None and clear.median == 10.0 and not clear.noise
    noisy = latency_delta([99.0, 106.0, 97.0, 103.0, 249.0], base)
    assert noisy is not None and noisy.noise  # differences -1, +2, -1, +2, -1: straddle zero
    assert latency_delta([], []) is None


def test_latency_cells() -> None:
    from yolopatch.commands import verify
    from yolopatch.building import ModelResult, Target

    result = ModelResult(Target(Path("v.yaml"), building.VARIANT), {}, "")
    assert verify._latency_cell(result) == "-" and verify._latency_delta_cell(result) == "-"
    result.latency_runs, result.base_latency_runs = [110.0, 113.0, 109.0], [100.0, 104.0, 98.0]
    assert verify._latency_cell(result) == "110.0 ±1.0"
    assert verify._latency_delta_cell(result) == "+10.0"
    result.latency_runs = [99.0, 106.0, 97.0]
    assert verify._latency_delta_cell(result).endswith(" (noise)")
    assert result.value("latency_ms") == 99.0 and result.delta("latency_ms") == -1.0
    assert verify.busy_models([result]) == []  # ±2.25 ms around 99 ms
    result.latency_runs = [99.0, 150.0, 97.0]
    assert verify.busy_models([result]) == [result]  # ±13.25 ms around 99 ms: over 10 %
