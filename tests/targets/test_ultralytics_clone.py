"""`yolopatch clone --target ultralytics`: git (a local bare repository stands in for GitHub), the package
index (the release's source distribution), auto, and what the result is good for (located, applied).

No test reaches GitHub. The package-index tests download sdists with pip (its HTTP cache makes reruns
cheap); the git tests build a bare repository from the cached 8.3.0, 8.3.253 and 8.4.190 trees.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import time
from pathlib import Path
from typing import Dict

import git
import pytest
from typer.testing import CliRunner

from tests import ultralytics_trees
from tests.test_clone import DEAD_URL, TESTER, leftovers, no_git_identity  # noqa: F401  (the fixture)
from tests.yolov5_trees import snapshot
from yolopatch.cli import app
from yolopatch.commands import clone as clone_module
from yolopatch.commands.apply import apply
from yolopatch.commands.clone import Release, clone, parse_release, ultralytics_pip_command
from yolopatch.commands.revert import revert
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.targets import ultralytics
from yolopatch.targets.locate import locate_any

# The 8.3 line is closed (8.4 is out), so its newest release is fixed: pip's resolution of 8.3.* must find it.
LAST_83 = ultralytics_trees.VERSIONS["8.3"]
NEWEST = ultralytics_trees.VERSIONS["8.4"]
TAGGED = {"v8.3.0": "8.3.0", f"v{LAST_83}": LAST_83, f"v{NEWEST}": NEWEST}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """A bare repository shaped like ultralytics/ultralytics: three release tags (one annotated, as upstream's
    are), then a commit on main after the last one."""
    base = tmp_path_factory.mktemp("upstream")
    work = base / "work"
    work.mkdir()
    repository = git.Repo.init(work, initial_branch="main")
    commits = {}
    for tag, version in TAGGED.items():
        if (work / "ultralytics").exists():
            shutil.rmtree(work / "ultralytics")
        shutil.copytree(ultralytics_trees.source_tree(version) / "ultralytics", work / "ultralytics",
                        ignore=shutil.ignore_patterns("__pycache__"))
        repository.git.add("--all")
        commits[tag] = repository.index.commit(f"release {version}", author=TESTER, committer=TESTER).hexsha
        repository.create_tag(tag, message=f"ultralytics {version}" if tag == f"v{LAST_83}" else None)
    (work / "NEWS.md").write_text("work after the release\n")
    repository.git.add("--all")
    commits["main"] = repository.index.commit("after the release", author=TESTER, committer=TESTER).hexsha
    bare = base / "ultralytics.git"
    git.Repo.clone_from(str(work), bare, bare=True)
    return {"url": bare.as_uri(), **commits}


def head(dest: Path) -> str:
    return git.Repo(dest).head.commit.hexsha


def located(dest: Path) -> ultralytics.UltralyticsTree:
    tree = locate_any(dest)
    assert isinstance(tree, ultralytics.UltralyticsTree), tree
    assert (tree.root, tree.layout) == (dest.resolve(), ultralytics.SOURCE)
    return tree


def changed_files(dest: Path) -> list:
    return sorted(line[3:] for line in git.Repo(dest).git.status("--porcelain", "--untracked-files=all").splitlines())


# ---- refs ----------------------------------------------------------------------------------------------

def test_refs_name_a_release_a_line_or_neither() -> None:
    assert parse_release("8.4.190") == parse_release("v8.4.190") == Release(8, 4, 190)
    assert parse_release("8.3.x") == parse_release("8.3.*") == parse_release("v8.3") == Release(8, 3)
    assert [parse_release(ref) for ref in ("main", "8", "8.x.1", "8.3.1rc1", "abc1234", "")] == [None] * 6
    assert (Release(8, 3).requirement, Release(8, 4, 190).requirement) == ("ultralytics==8.3.*", "ultralytics==8.4.190")
    assert (Release(8, 3).tag, Release(8, 4, 190).tag, str(Release(8, 3))) == (None, "v8.4.190", "8.3.x")


def test_default_release_is_the_newest_tested_one_and_help_says_so() -> None:
    assert clone_module.ULTRALYTICS_REF == NEWEST  # the release every module is built in (slow tests)
    for command in ("clone", "demo"):
        helped = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
        assert f"a release ({NEWEST}, the default)" in helped.output, helped.output


def test_pip_command_asks_for_the_source_distribution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("YOLOPATCH_PIP_FIND_LINKS", "/sdists")
    command = ultralytics_pip_command("ultralytics==8.3.*", tmp_path, isolated=False)
    assert command[1:5] == ["-m", "pip", "download", "ultralytics==8.3.*"]
    assert command[command.index("--no-binary") + 1] == ":all:"
    assert "--no-deps" in command and "--no-build-isolation" in command and command[-2:] == ["--find-links", "/sdists"]
    monkeypatch.delenv("YOLOPATCH_PIP_FIND_LINKS")
    assert "--no-build-isolation" not in ultralytics_pip_command("ultralytics==8.3.*", tmp_path)


# ---- git -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ref, tag", [("8.3.x", f"v{LAST_83}"), ("v8.3.0", "v8.3.0"), ("8.4.190", f"v{NEWEST}"),
                                      ("main", "main")])
def test_git_clones_a_release_a_line_or_a_branch(upstream: Dict[str, str], ref: str, tag: str,
                                                 tmp_path: Path) -> None:
    dest = tmp_path / "ultralytics"
    assert clone(dest, ref, "git", url=upstream["url"], target="ultralytics") == 0
    assert head(dest) == upstream[tag]
    assert git.Repo(dest).git.rev_parse("--is-shallow-repository") == "true"
    tree = located(dest)
    assert tree.version() == TAGGED.get(tag, NEWEST)
    assert leftovers(tmp_path, "ultralytics") == []


def test_git_default_ref_and_url_from_the_environment(upstream: Dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("YOLOPATCH_ULTRALYTICS_URL", upstream["url"])
    monkeypatch.setenv("YOLOPATCH_YOLOV5_URL", DEAD_URL)  # the YOLOv5 variable is not read for Ultralytics
    dest = tmp_path / "deeper" / "ultralytics"
    assert clone(dest, source="git", target="ultralytics") == 0
    assert head(dest) == upstream[f"v{clone_module.ULTRALYTICS_REF}"]


def test_git_line_without_a_release_leaves_nothing(upstream: Dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "made" / "ultralytics"
    with pytest.raises(YolopatchError, match=r"has no release 8\.9\.x: no tag v8\.9\.\* there"):
        clone(dest, "8.9.x", "git", url=upstream["url"], target="ultralytics")
    assert list(tmp_path.iterdir()) == []


def test_auto_uses_git_when_it_answers(upstream: Dict[str, str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "ultralytics"
    assert clone(dest, "8.4.x", url=upstream["url"], target="ultralytics") == 0
    assert head(dest) == upstream[f"v{NEWEST}"]
    assert f"from git ({upstream['url']} at v{NEWEST})" in capsys.readouterr().out


def test_auto_with_a_branch_and_no_git_says_why(tmp_path: Path) -> None:
    with pytest.raises(YolopatchError, match="cannot be used.*releases only, not 'main'"):
        clone(tmp_path / "ultralytics", "main", url=DEAD_URL, target="ultralytics")
    with pytest.raises(UsageError, match="releases only, not 'main'"):
        clone(tmp_path / "ultralytics", "main", "pypi", target="ultralytics")
    assert list(tmp_path.iterdir()) == []


# ---- package index ---------------------------------------------------------------------------------------

def test_pypi_release_is_a_source_tree_that_apply_and_revert_work_on(no_git_identity: None,  # noqa: F811
                                                                      tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "ultralytics"
    assert clone(dest, NEWEST, "pypi", target="ultralytics") == 0
    assert f"from the package index (ultralytics=={NEWEST}, source distribution" in capsys.readouterr().out
    tree = located(dest)
    assert tree.version() == NEWEST
    assert (dest / "pyproject.toml").is_file() and not list(dest.glob("*.egg-info"))  # `pip install -e .` works
    for relative in ("ultralytics/nn/tasks.py", "ultralytics/nn/modules/__init__.py", "ultralytics/cfg/models/v8/yolov8.yaml"):
        assert (dest / relative).read_bytes() == (ultralytics_trees.source_tree(NEWEST) / relative).read_bytes()
    repository = git.Repo(dest)
    commits = list(repository.iter_commits())
    assert [c.message for c in commits] == [f"ultralytics {NEWEST} from the package index"]
    assert commits[0].author.name == "yolopatch" and changed_files(dest) == []
    assert leftovers(tmp_path, "ultralytics") == ["home"]

    assert apply(dest, ["all"]) == 0
    changed = changed_files(dest)
    assert {"ultralytics/nn/modules/__init__.py", "ultralytics/nn/modules/yolopatch.py", "ultralytics/nn/tasks.py",
            "ultralytics/cfg/models/v8/yolov8-soca.yaml", "ultralytics/cfg/models/11/yolo11-soca.yaml"} <= set(changed)
    assert all(name.startswith(("ultralytics/nn/", "ultralytics/cfg/models/")) for name in changed), changed
    assert revert(dest, []) == 0
    assert changed_files(dest) == []


def test_auto_falls_back_to_the_newest_release_of_a_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "ultralytics"
    started = time.monotonic()
    assert clone(dest, "8.3.x", url=DEAD_URL, target="ultralytics") == 0
    captured = capsys.readouterr()
    assert "cannot be used" in captured.err and "using the package index" in captured.err
    assert f"(ultralytics=={LAST_83}, the newest 8.3.x release, source distribution" in captured.out
    assert located(dest).version() == LAST_83
    assert apply(dest, ["soca", "simam"]) == 0
    assert "class SOCA(nn.Module):  # yolopatch: soca" in (dest / "ultralytics/nn/modules/yolopatch.py").read_text()
    print(f"8.3.x from the package index, applied: {time.monotonic() - started:.1f} s")


def make_sdist(path: Path, members: Dict[str, bytes], links: Dict[str, str] = {}) -> Path:  # noqa: B006
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return path


def test_sdist_unpacking_strips_the_top_folder_and_refuses_escapes(tmp_path: Path) -> None:
    good = make_sdist(tmp_path / "ultralytics-9.9.9.tar.gz", {
        "ultralytics-9.9.9/pyproject.toml": b"[project]\n", "ultralytics-9.9.9/ultralytics/nn/tasks.py": b"x = 1\n",
        "ultralytics-9.9.9/ultralytics.egg-info/PKG-INFO": b"meta\n"}, links={"ultralytics-9.9.9/link": "/etc/passwd"})
    clone_module._unpack_sdist(good, tmp_path / "tree")
    assert sorted(str(p.relative_to(tmp_path / "tree")) for p in (tmp_path / "tree").rglob("*") if p.is_file()) == [
        "pyproject.toml", "ultralytics/nn/tasks.py"]
    bad = make_sdist(tmp_path / "bad.tar.gz", {"ultralytics-9.9.9/../../escaped.py": b"x = 1\n"})
    with pytest.raises(YolopatchError, match="unsafe path"):
        clone_module._unpack_sdist(bad, tmp_path / "bad")
    assert not (tmp_path / "escaped.py").exists() and not (tmp_path / "bad").exists()


# ---- destinations and the command line -------------------------------------------------------------------

def test_destinations_foreign_existing_and_yolov5(upstream: Dict[str, str], make_tree, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "main.py").write_text("print('mine')\n")
    with pytest.raises(YolopatchError, match="not an Ultralytics tree; nothing touched"):
        clone(foreign, "main", "git", url=upstream["url"], target="ultralytics")
    yolov5 = make_tree("7.0", "checkout")
    with pytest.raises(YolopatchError, match="not an Ultralytics tree; nothing touched"):
        clone(yolov5, "main", "git", url=upstream["url"], target="ultralytics")
    existing = ultralytics_trees.make_tree("8.2", tmp_path / "u82")
    before = snapshot(tmp_path)
    assert clone(existing, source="git", url=DEAD_URL, target="ultralytics") == 0
    assert "already an Ultralytics tree (source layout, version 8.2.103)" in capsys.readouterr().out
    assert snapshot(tmp_path) == before


def test_cli_target_option_and_default_destination(upstream: Dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["clone", "--target", "ultralytics", "--source", "git", "--ref", "8.3.x"],
                           env={"YOLOPATCH_ULTRALYTICS_URL": upstream["url"]})
    assert result.exit_code == 0, result.output
    assert head(tmp_path / "ultralytics") == upstream[f"v{LAST_83}"]
    result = runner.invoke(app, ["clone", "x", "--target", "yolov9"])
    assert result.exit_code == 2 and "unknown target 'yolov9'" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ultralytics"]
