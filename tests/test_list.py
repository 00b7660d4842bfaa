"""`yolopatch list` and `yolopatch show`: a compact table for 20+ modules, details per module, and
the state in a tree read from markers without torch or libcst."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from tests.import_probe import imported, run_yolopatch
from yolopatch import catalog
from yolopatch.commands import list_modules
from yolopatch import inventory
from yolopatch.inventory import APPLIED, HAND_PASTED, NOT_APPLIED, OUTDATED, PARTIAL, marker_states, scan_markers

MakeTree = Callable[..., Path]

def run(args: List[str], cwd: Path, columns: int = 100) -> subprocess.CompletedProcess:
    return run_yolopatch(args, cwd, columns)


def heavy(result: subprocess.CompletedProcess) -> List[str]:
    """The heavy packages the command imported (`list` and `show` must import none)."""
    return sorted({name.split(".")[0] for name in imported(result)} & {"torch", "libcst", "numpy", "git"})


def rows(stdout: str) -> Dict[str, List[str]]:
    """key -> the row's cells (split on runs of two or more spaces)."""
    found = {}
    keys = {spec.key for spec in catalog.all_modules()}
    for line in stdout.splitlines():
        cells = [cell for cell in re.split(r"\s{2,}", line.strip()) if cell]
        if cells and cells[0] in keys:
            found[cells[0]] = cells
    return found


# --------------------------------------------------------------------------------------------
# The table


@pytest.mark.parametrize("where", ["outside", "tree"])
def test_list_is_one_row_per_module_within_100_columns_without_torch_or_libcst(
        make_tree: MakeTree, tmp_path: Path, where: str) -> None:
    cwd = tmp_path
    if where == "tree":
        cwd = make_tree("7.0", "checkout")
        from yolopatch.commands.apply import apply

        assert apply(cwd, ["soca"]) == 0
    result = run(["list"], cwd)
    assert result.returncode == 0, result.stderr
    assert heavy(result) == []
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    table = rows(result.stdout)
    specs = catalog.all_modules()
    assert len(specs) >= 5 and set(table) == {spec.key for spec in specs}
    assert len(lines) <= len(specs) + 6  # header, rule, one line per module, two footer lines
    header = lines[0].split()
    assert header[:3] == ["key", "class", "paper"] and "kind" in header and "params" in header
    soca = table["soca"]
    assert soca[1] == "SOCA" and soca[2].endswith(" 2019") and soca[-2 if where == "tree" else -1] == "16.7k"
    assert "channel" in soca and "p5" in soca
    if where == "tree":
        assert header[-1] == "state" and soca[-1] == "applied" and table["sge"][-1] == "-"
        assert "from yolopatch's markers" in " ".join(result.stdout.split())
    else:
        assert "state" not in header


def test_list_verbose_and_show_hold_the_long_texts(tmp_path: Path) -> None:
    spec = catalog.get("soca")
    shown = run(["show", "SecondOrderChannelAttention"], tmp_path)  # an alias
    assert shown.returncode == 0 and heavy(shown) == []
    text = " ".join(shown.stdout.split())
    for needed in (spec.paper, spec.authors, spec.summary.split()[0], spec.param_count_formula,
                   "[-1, 1, SOCA, [1024]]", "512: 66,112", "yolopatch apply soca"):
        assert needed in text, needed
    assert all(" ".join(constraint.split()) in text for constraint in spec.constraints)
    verbose = run(["list", "--verbose"], tmp_path)
    assert verbose.returncode == 0 and heavy(verbose) == []
    flat = " ".join(verbose.stdout.split())
    assert all(f"{s.key}: {s.class_name} v{s.version}" in flat for s in catalog.all_modules())


def test_list_json_and_show_json(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "package")
    from yolopatch.commands.apply import apply

    assert apply(root, ["sge"]) == 0
    result = run(["list", "--json"], root)
    assert result.returncode == 0 and heavy(result) == []
    entries = json.loads(result.stdout)
    by_key = {entry["key"]: entry for entry in entries}
    assert by_key["sge"]["status"] == APPLIED and by_key["soca"]["status"] == NOT_APPLIED
    assert by_key["soca"]["params_at"]["512"] == catalog.param_count("soca", 512) == 66_112
    shown = run(["show", "sge", "--json"], root)
    assert json.loads(shown.stdout) == by_key["sge"]


def test_paper_cell_keeps_the_year() -> None:
    spec = catalog.get("soca")
    assert list_modules.paper_cell(spec, 200) == f"{spec.paper} 2019"
    assert list_modules.paper_cell(spec, 12) == "Dai 2019"  # the first author, when the title does not fit
    sea = catalog.get("sea-attention")
    assert list_modules.paper_cell(sea, 20) == "SeaFormer 2023"  # the name before the title's colon
    cut = list_modules.paper_cell(spec, 7)
    assert cut.endswith("… 2019")


def test_compact_counts() -> None:
    assert [list_modules.compact_count(n) for n in (None, 0, 9_999, 66_112, 8_604_960)] == \
        ["-", "0", "9,999", "66.1k", "8.60M"]


# --------------------------------------------------------------------------------------------
# State from markers, without libcst


COMMON = """import torch
import torch.nn as nn


class Conv(nn.Module):
    pass


class SOCA(nn.Module):  # yolopatch: soca v{version} sha256:0123456789ab
    text = "# yolopatch: sge v1 sha256:0123456789ab"  # a marker inside a string is no marker

    class SpatialGroupEnhance:  # nested: not a top-level class
        pass


def _soca_helper(x):  # yolopatch: soca
    return x
{pasted}"""

YOLO = """def parse_model(d, ch):
    for m in layers:
        if m in {{Conv}}:
            pass
{branch}        else:
            c2 = ch[f]
"""


def states(version: int = 1, branch: bool = True, pasted: str = "") -> Dict[str, str]:
    common = COMMON.format(version=version, pasted=pasted)
    yolo = YOLO.format(branch="        elif m is SOCA:  # yolopatch: soca\n            c1 = ch[f]\n" if branch else "")
    found = marker_states(scan_markers(common), scan_markers(yolo), catalog.all_modules())
    return {key: found[key] for key in ("soca", "sge")}


def test_marker_states() -> None:
    soca = catalog.get("soca")
    assert states(version=soca.version) == {"soca": APPLIED, "sge": NOT_APPLIED}
    assert states(version=soca.version + 1)["soca"] == OUTDATED
    assert states(version=soca.version, branch=False)["soca"] == PARTIAL
    pasted = "\n\nclass SpatialGroupEnhance(nn.Module):  # from a blog\n    pass\n"
    assert states(version=soca.version, pasted=pasted)["sge"] == HAND_PASTED


def test_marker_states_agree_with_the_engine(make_tree: MakeTree) -> None:
    """The libcst-free reading gives the engine's status for applied, absent, partial and pasted modules."""
    from yolopatch.commands.apply import apply
    from yolopatch.state import Sources, module_states
    from yolopatch.tree import locate

    root = make_tree("7.0", "checkout")
    tree = locate(root)

    def both() -> Dict[str, tuple]:
        engine = {key: state.status for key, state in module_states(Sources.read(tree)).items()}
        quick = inventory.tree_states(inventory.find_tree(root), catalog.all_modules())
        return {key: (engine[key], quick[key]) for key in engine}

    assert all(a == b == NOT_APPLIED for a, b in both().values())
    assert apply(root, ["soca", "gam"]) == 0
    pairs = both()
    assert pairs["soca"] == pairs["gam"] == (APPLIED, APPLIED)
    assert all(a == b for a, b in pairs.values()), pairs
    common = tree.common_py.read_text(encoding="utf-8")
    tree.common_py.write_text(common + "\n\nclass SpatialGroupEnhance(nn.Module):\n    pass\n", encoding="utf-8")
    pairs = both()
    assert pairs["sge"] == (HAND_PASTED, HAND_PASTED) and pairs["soca"] == (APPLIED, APPLIED)
    assert all(a == b for a, b in pairs.values()), pairs


def test_unreadable_files_give_unreadable_not_a_crash(make_tree: MakeTree) -> None:
    from yolopatch.tree import locate

    root = make_tree("7.0", "checkout")
    tree = locate(root)
    tree.common_py.write_text("class A:\n    '''never closed\n", encoding="utf-8")
    assert set(inventory.tree_states(inventory.find_tree(root), catalog.all_modules()).values()) == {
        inventory.UNREADABLE}
    result = run(["list"], root)
    assert result.returncode == 0 and "unreadable" in result.stdout


def test_list_and_help_say_which_codebases_are_supported(tmp_path: Path) -> None:
    listing = run(["list"], tmp_path)
    helped = run(["--help"], tmp_path, columns=200)
    for output in (listing.stdout, helped.stdout):
        assert "YOLOv5 v5.0 to master" in output and "Ultralytics 8.0 to 8.4" in output and "YOLOv7" in output
