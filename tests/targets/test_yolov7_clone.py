"""`yolopatch clone --target yolov7`: git (a local bare repository stands in for WongKinYiu/yolov7: main and a
commit fetched alone), the package index (yolov7-wky-package's wheel unpacked as a checkout), auto, and what the
result is good for (located as a YOLOv7 checkout, apply all, revert to a clean git status).

No test reaches GitHub. The package-index tests point pip at the wheel cached by tests/yolov7_trees.py.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Dict

import git
import pytest
from typer.testing import CliRunner

from tests import yolov7_trees
from tests.test_clone import DEAD_URL, TESTER, leftovers, no_git_identity  # noqa: F401  (the fixture)
from tests.yolov5_trees import cache_root, snapshot
from yolopatch.cli import app
from yolopatch.commands import clone as clone_module
from yolopatch.commands.apply import apply
from yolopatch.commands.clone import clone, yolov7_pip_command, yolov7_pypi_serves
from yolopatch.commands.revert import revert
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.targets import yolov7
from yolopatch.targets.locate import locate_any

SCRIPTS_NOTE = "has no train.py, train_aux.py, test.py, detect.py, export.py, hubconf.py at the top"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """A bare repository shaped like WongKinYiu/yolov7: the checkout tree with a train.py, then one more commit."""
    base = tmp_path_factory.mktemp("upstream")
    work = yolov7_trees.make_tree("checkout", base / "work")
    (work / "train.py").write_text("print('train')\n")
    repository = git.Repo.init(work, initial_branch="main")
    repository.git.add("--all")
    first = repository.index.commit("the models", author=TESTER, committer=TESTER).hexsha
    (work / "README.md").write_text("later work\n")
    repository.git.add("--all")
    later = repository.index.commit("later", author=TESTER, committer=TESTER).hexsha
    bare = base / "yolov7.git"
    git.Repo.clone_from(str(work), bare, bare=True)
    return {"url": bare.as_uri(), "first": first, "main": later}


@pytest.fixture
def cached_wheel(monkeypatch: pytest.MonkeyPatch) -> Path:
    """clone's pip finds yolov7-wky-package in the test cache (downloaded there once)."""
    yolov7_trees.source_tree("checkout")
    folder = cache_root() / "yolov7-dists"
    monkeypatch.setenv("YOLOPATCH_PIP_FIND_LINKS", str(folder))
    return folder


def located(dest: Path) -> yolov7.Yolov7Tree:
    tree = locate_any(dest)
    assert isinstance(tree, yolov7.Yolov7Tree), tree
    assert (tree.root, tree.layout) == (dest.resolve(), yolov7.CHECKOUT)
    return tree


def changed_files(dest: Path) -> list:
    return sorted(line[3:] for line in git.Repo(dest).git.status("--porcelain", "--untracked-files=all").splitlines())


def head(dest: Path) -> str:
    return git.Repo(dest).head.commit.hexsha


# ---- refs --------------------------------------------------------------------------------------------------

def test_the_package_index_serves_main_and_its_commit_only() -> None:
    commit = clone_module.YOLOV7_PACKAGE_COMMIT
    assert [yolov7_pypi_serves(ref) for ref in ("main", commit, commit[:7], commit.upper()[:10])] == [True] * 4
    assert [yolov7_pypi_serves(ref) for ref in ("u5", "abc1234", commit[:6], "v0.1", "master")] == [False] * 5


def test_pip_command_pins_the_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("YOLOPATCH_PIP_FIND_LINKS", "/wheels")
    command = yolov7_pip_command(tmp_path)
    assert command[1:5] == ["-m", "pip", "download", "yolov7-wky-package==2024.9.23.1"]
    assert "--no-deps" in command and command[command.index("--only-binary") + 1] == ":all:"
    assert command[-2:] == ["--find-links", "/wheels"]


# ---- package index -----------------------------------------------------------------------------------------

def test_pypi_is_a_checkout_that_apply_all_and_revert_work_on(cached_wheel: Path, no_git_identity: None,  # noqa: F811
                                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "yolov7"
    assert clone(dest, source="pypi", target="yolov7") == 0
    captured = capsys.readouterr()
    assert "from the package index (yolov7-wky-package==2024.9.23.1: WongKinYiu/yolov7 main at a207844" in captured.out
    assert SCRIPTS_NOTE in captured.err and "python_scripts/" in captured.err
    located(dest)
    reference = yolov7_trees.source_tree("checkout")
    for relative in ("models/yolo.py", "models/common.py", "cfg/training/yolov7.yaml", "cfg/deploy/yolov7-tiny.yaml",
                     "utils/general.py"):
        assert (dest / relative).read_bytes() == (reference / relative).read_bytes(), relative
    assert (dest / "python_scripts/train.py").is_file() and (dest / "LICENSE.md").is_file()
    assert not list(dest.glob("*.dist-info")) and not (dest / "train.py").exists()
    commits = list(git.Repo(dest).iter_commits())
    assert len(commits) == 1 and commits[0].author.name == "yolopatch" and changed_files(dest) == []
    assert leftovers(tmp_path, "yolov7") == ["home"]

    assert apply(dest, ["all"]) == 0
    changed = changed_files(dest)
    assert {"models/common.py", "models/yolo.py", "cfg/training/yolov7-soca.yaml", "cfg/deploy/yolov7-soca.yaml",
            "cfg/training/yolov7-tiny-soca.yaml"} <= set(changed)
    assert revert(dest, []) == 0
    assert changed_files(dest) == []


def test_pypi_refuses_other_refs_before_downloading(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="has main only .*not 'abc1234'"):
        clone(tmp_path / "yolov7", "abc1234", "pypi", target="yolov7")
    assert list(tmp_path.iterdir()) == []


def test_auto_falls_back_to_the_package_index_for_main(cached_wheel: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "deeper" / "yolov7"
    assert clone(dest, url=DEAD_URL, target="yolov7") == 0
    captured = capsys.readouterr()
    assert "cannot be used" in captured.err and "using the package index instead" in captured.err
    located(dest)


def test_auto_with_another_commit_and_no_git_says_why(tmp_path: Path) -> None:
    with pytest.raises(YolopatchError, match="cannot be used.*main only .*not '" + "1" * 40):
        clone(tmp_path / "made" / "yolov7", "1" * 40, url=DEAD_URL, target="yolov7")
    assert list(tmp_path.iterdir()) == []


def test_unpacking_refuses_an_escaping_member(tmp_path: Path) -> None:
    wheel = tmp_path / "bad.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("models/yolo.py", "x = 1\n")
        archive.writestr("../escaped.py", "x = 1\n")
    with pytest.raises(YolopatchError, match="unsafe path '../escaped.py'"):
        clone_module.unpack_yolov7_wheel(wheel, tmp_path / "tree")
    assert not (tmp_path / "tree").exists() and not (tmp_path.parent / "escaped.py").exists()


# ---- git ---------------------------------------------------------------------------------------------------

def test_git_clones_main_by_default_from_the_environment_url(upstream: Dict[str, str], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("YOLOPATCH_YOLOV7_URL", upstream["url"])
    monkeypatch.setenv("YOLOPATCH_YOLOV5_URL", DEAD_URL)  # the YOLOv5 variable is not read for YOLOv7
    dest = tmp_path / "yolov7"
    assert clone(dest, source="git", target="yolov7") == 0
    assert head(dest) == upstream["main"] and (dest / "README.md").is_file()
    assert git.Repo(dest).git.rev_parse("--is-shallow-repository") == "true"
    located(dest)
    assert SCRIPTS_NOTE not in capsys.readouterr().err  # the repository's own train.py is there


def test_git_fetches_one_commit_alone(upstream: Dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "yolov7"
    assert clone(dest, upstream["first"], "git", url=upstream["url"], target="yolov7") == 0
    assert head(dest) == upstream["first"] and not (dest / "README.md").exists()
    assert git.Repo(dest).git.rev_parse("--is-shallow-repository") == "true"
    assert changed_files(dest) == [] and leftovers(tmp_path, "yolov7") == []


def test_git_auto_with_a_commit_uses_git_when_it_answers(upstream: Dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "yolov7"
    assert clone(dest, upstream["first"], url=upstream["url"], target="yolov7") == 0
    assert head(dest) == upstream["first"]


def test_git_failures_leave_nothing(upstream: Dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(YolopatchError, match="git fetch of commit 2{40} .*failed"):
        clone(tmp_path / "a" / "yolov7", "2" * 40, "git", url=upstream["url"], target="yolov7")
    with pytest.raises(UsageError, match="abbreviated commit"):
        clone(tmp_path / "b" / "yolov7", upstream["first"][:7], "git", url=upstream["url"], target="yolov7")
    assert list(tmp_path.iterdir()) == []


# ---- destinations and the command line ---------------------------------------------------------------------

def test_destinations_existing_foreign_and_yolov5(upstream: Dict[str, str], make_tree, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    existing = yolov7_trees.make_tree("checkout", tmp_path / "mine")
    before = snapshot(tmp_path)
    assert clone(existing, source="git", url=DEAD_URL, target="yolov7") == 0
    assert "is already a YOLOv7 tree (checkout layout" in capsys.readouterr().out
    assert snapshot(tmp_path) == before
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "main.py").write_text("print('mine')\n")
    with pytest.raises(YolopatchError, match="not a YOLOv7 tree; nothing touched"):
        clone(foreign, "main", "git", url=upstream["url"], target="yolov7")
    yolov5 = make_tree("7.0", "checkout")
    with pytest.raises(YolopatchError, match="not a YOLOv7 tree; nothing touched"):
        clone(yolov5, "main", "git", url=upstream["url"], target="yolov7")


def test_cli_target_yolov7_and_default_destination(upstream: Dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["clone", "--target", "yolov7", "--source", "git", "--ref", upstream["first"]],
                                env={"YOLOPATCH_YOLOV7_URL": upstream["url"]})
    assert result.exit_code == 0, result.output
    assert head(tmp_path / "yolov7") == upstream["first"]
    helped = CliRunner().invoke(app, ["clone", "--help"], env={"COLUMNS": "400"})
    assert "yolov7" in helped.output and "YOLOv7: main" in helped.output, helped.output
