"""`yolopatch clone`: git (a local bare repository stands in for GitHub), the package index, auto.

No test reaches GitHub. The package-index tests use the wheels cached by tests/yolov5_trees.py
through $YOLOPATCH_PIP_FIND_LINKS, so pip finds them locally.
"""

from __future__ import annotations

import socket
import threading
import re
import time
import zipfile
from pathlib import Path
from typing import Dict, Iterator

import git
import pytest
from typer.testing import CliRunner

from tests import yolov5_trees
from yolopatch.cli import app
from yolopatch.commands import clone as clone_module
from yolopatch.commands.clone import clone, normalise_ref, pip_download_command, remote_problem, unreachable
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.tree import CHECKOUT, PACKAGE, locate

DEAD_URL = "https://127.0.0.1:9/ultralytics/yolov5.git"  # port 9 (discard): refused at once
UNRESOLVABLE_URL = "https://yolov5.invalid/ultralytics/yolov5.git"  # .invalid never resolves (RFC 6761)
TESTER = git.Actor("tester", "tester@localhost")
V7 = clone_module.PYPI_RELEASES["v7.0"]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """A bare repository shaped like ultralytics/yolov5: a 7.0 tree tagged v7.0, one commit after the tag."""
    base = tmp_path_factory.mktemp("upstream")
    work = yolov5_trees.make_tree("7.0", "checkout", base / "work")
    repository = git.Repo.init(work)
    repository.git.add("--all")
    tagged = repository.index.commit("v7.0 release", author=TESTER, committer=TESTER)
    repository.create_tag("v7.0")
    (work / "CHANGELOG-after-release.md").write_text("work after the release\n")
    repository.git.add("--all")
    later = repository.index.commit("after the release", author=TESTER, committer=TESTER)
    bare = base / "yolov5.git"
    git.Repo.clone_from(str(work), bare, bare=True)
    return {"url": bare.as_uri(), "tagged": tagged.hexsha, "later": later.hexsha, "work": str(work)}


@pytest.fixture
def cached_wheels(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point clone's pip at the test wheel cache (the v7.0 release downloaded there once)."""
    folder = yolov5_trees.wheel(V7).parent
    monkeypatch.setenv("YOLOPATCH_PIP_FIND_LINKS", str(folder))
    return folder


@pytest.fixture
def no_git_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user.name/user.email anywhere: the package-index commit must not need them."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig-absent"))
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)


def leftovers(parent: Path, keep: str) -> list:
    return sorted(p.name for p in parent.iterdir() if p.name != keep)


# ---- git ----------------------------------------------------------------------------------------------

def test_git_source_makes_a_shallow_clone_at_the_tag(upstream: Dict[str, str], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "yolov5"
    assert clone(dest, "v7.0", "git", url=upstream["url"]) == 0

    repository = git.Repo(dest)
    assert repository.head.commit.hexsha == upstream["tagged"]  # the tag, not the later branch head
    assert [c.hexsha for c in repository.iter_commits()] == [upstream["tagged"]]
    assert repository.git.rev_parse("--is-shallow-repository") == "true"
    assert not (dest / "CHANGELOG-after-release.md").exists()
    tree = locate(dest)
    assert (tree.root, tree.layout, tree.version()) == (dest.resolve(), CHECKOUT, "v7.0")
    work = Path(upstream["work"])
    assert (dest / "models" / "common.py").read_bytes() == (work / "models" / "common.py").read_bytes()
    assert leftovers(tmp_path, "yolov5") == []  # no staging folder left next to DEST
    assert "from git" in capsys.readouterr().out


def test_git_url_comes_from_the_environment(upstream: Dict[str, str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLOPATCH_YOLOV5_URL", upstream["url"])
    dest = tmp_path / "deeper" / "yolov5"  # missing parents are made
    assert clone(dest, source="git") == 0
    assert git.Repo(dest).head.commit.hexsha == upstream["tagged"]


def test_failed_git_clone_leaves_nothing(upstream: Dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "made" / "for" / "yolov5"
    with pytest.raises(YolopatchError, match=r"v9\.9.*Remote branch v9\.9 not found"):
        clone(dest, "v9.9", "git", url=upstream["url"])
    assert list(tmp_path.iterdir()) == []  # neither DEST, nor its parents, nor a staging folder


def test_git_progress_is_reported_on_stderr(upstream: Dict[str, str], tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    clone(tmp_path / "yolov5", "v7.0", "git", url=upstream["url"])
    err = capsys.readouterr().err
    assert "cloning" in err and "receiving objects" in err and "100%" in err


# ---- package index -----------------------------------------------------------------------------------

def test_pypi_source_unpacks_the_package_and_commits_it(cached_wheels: Path, no_git_identity: None,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "yolov5"
    assert clone(dest, "v7.0", "pypi") == 0

    tree = locate(dest)
    assert (tree.root, tree.layout, tree.version()) == (dest.resolve(), PACKAGE, V7)
    with zipfile.ZipFile(yolov5_trees.wheel(V7)) as archive:
        packaged = {name: archive.read(name) for name in archive.namelist()
                    if name.startswith("yolov5/") and not name.endswith("/")}
    unpacked = {str(p.relative_to(dest)): p.read_bytes() for p in (dest / "yolov5").rglob("*") if p.is_file()}
    assert unpacked == packaged
    assert sorted(p.name for p in dest.iterdir()) == [".git", "yolov5"]  # no *.dist-info
    repository = git.Repo(dest)
    commits = list(repository.iter_commits())
    assert [c.message for c in commits] == [f"yolov5 {V7} from the package index"]
    assert (commits[0].author.name, commits[0].committer.email) == ("yolopatch", "yolopatch@localhost")
    assert repository.git.status("--porcelain") == ""
    assert len(repository.git.ls_files().splitlines()) == len([p for p in (dest / "yolov5").rglob("*") if p.is_file()])
    assert leftovers(tmp_path, "yolov5") == ["home"]
    out = capsys.readouterr().out
    assert f"from the package index (yolov5=={V7}" in out


def test_pypi_tree_keeps_bytecode_out_of_git_status(cached_wheels: Path, tmp_path: Path) -> None:
    dest = tmp_path / "yolov5"
    clone(dest, "v7.0", "pypi")
    cache = dest / "yolov5" / "models" / "__pycache__"
    cache.mkdir()
    (cache / "common.cpython-311.pyc").write_bytes(b"\0")
    assert git.Repo(dest).git.status("--porcelain") == ""


def test_pypi_v7_release_builds_without_ultralytics(cached_wheels: Path) -> None:
    """From 7.0.12 on the wheels import the `ultralytics` package; the pinned v7.0 release must not."""
    with zipfile.ZipFile(yolov5_trees.wheel(V7)) as archive:
        sources = [archive.read(name).decode("utf-8") for name in archive.namelist()
                   if name.startswith("yolov5/utils/") and name.endswith(".py")]
    assert sources
    assert not [text for text in sources if re.search(r"^(from|import) ultralytics", text, re.MULTILINE)]


def test_pypi_v5_release_needs_the_legacy_resolver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """5.0.x wheels carry metadata modern pip rejects; the table's newest 5.0 patch must still come down."""
    version = clone_module.PYPI_RELEASES["v5.0"]
    monkeypatch.setenv("YOLOPATCH_PIP_FIND_LINKS", str(yolov5_trees.wheel(version).parent))
    dest = tmp_path / "yolov5"
    assert clone(dest, "v5.0", "pypi") == 0
    assert locate(dest).version() == version


def test_pypi_refuses_a_ref_it_has_no_release_for(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="v7.0"):
        clone(tmp_path / "yolov5", "master", "pypi")
    assert list(tmp_path.iterdir()) == []


def test_pip_command_pins_the_release_and_takes_the_find_links(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setenv("YOLOPATCH_PIP_FIND_LINKS", "/wheels")
    command = pip_download_command("7.0.14", tmp_path)
    assert command[1:4] == ["-m", "pip", "download"]
    for part in ("yolov5==7.0.14", "--no-deps", "--use-deprecated=legacy-resolver", ":all:"):
        assert part in command
    assert command[-2:] == ["--find-links", "/wheels"]
    monkeypatch.delenv("YOLOPATCH_PIP_FIND_LINKS")
    assert "--find-links" not in pip_download_command("7.0.14", tmp_path)


def test_release_table_has_one_patch_release_per_tag() -> None:
    assert clone_module.PYPI_RELEASES == {"v5.0": "5.0.10", "v6.0": "6.0.7", "v6.1": "6.1.9",
                                          "v6.2": "6.2.3", "v7.0": "7.0.11"}
    assert normalise_ref("7.0") == "v7.0"
    assert normalise_ref("v6.1") == "v6.1"
    assert normalise_ref("master") == "master"


# ---- auto ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [DEAD_URL, UNRESOLVABLE_URL])
def test_auto_falls_back_to_the_package_index_when_git_is_unreachable(url: str, cached_wheels: Path,
                                                                       tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "yolov5"
    started = time.monotonic()
    assert clone(dest, url=url) == 0
    assert time.monotonic() - started < 60
    assert locate(dest).layout == PACKAGE
    captured = capsys.readouterr()
    assert "cannot be used" in captured.err and "using the package index" in captured.err
    assert "from the package index" in captured.out


def test_auto_uses_git_when_it_answers(upstream: Dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "yolov5"
    assert clone(dest, url=upstream["url"]) == 0
    assert locate(dest).layout == CHECKOUT


def test_auto_with_a_non_release_ref_and_no_git_says_why(tmp_path: Path) -> None:
    with pytest.raises(YolopatchError, match="cannot be used.*release tags only"):
        clone(tmp_path / "yolov5", "master", url=DEAD_URL)
    assert list(tmp_path.iterdir()) == []


def test_tcp_probe_is_bounded_by_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection (or name lookup) that hangs: the probe gives up after its timeout."""
    def hang(*args: object, **kwargs: object) -> socket.socket:
        time.sleep(30)
        raise TimeoutError("the fake connection gave up")  # long after the probe stopped waiting

    monkeypatch.setattr(clone_module.socket, "create_connection", hang)
    started = time.monotonic()
    problem = unreachable("https://github.com/ultralytics/yolov5.git", timeout=1.0)
    assert problem == "no answer from github.com:443 within 1 s"
    assert time.monotonic() - started < 3


def test_tcp_probe_names_the_failure() -> None:
    assert "refused" in unreachable(DEAD_URL).lower()
    assert "name lookup of yolov5.invalid failed" in unreachable(UNRESOLVABLE_URL)
    assert unreachable("file:///nonexistent/yolov5.git") == "no such path /nonexistent/yolov5.git"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An HTTP URL whose server accepts connections and never says a word (a stalling proxy)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/ultralytics/yolov5.git"
    server.close()
    for connection in held:
        connection.close()


def test_a_host_that_accepts_and_stalls_is_given_up_on(silent_server: str, cached_wheels: Path,
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    assert unreachable(silent_server) is None  # TCP alone says "fine"
    monkeypatch.setattr(clone_module, "LS_REMOTE_TIMEOUT_S", 2.0)
    started = time.monotonic()
    assert clone(tmp_path / "yolov5", url=silent_server) == 0
    assert time.monotonic() - started < 30
    assert "git ls-remote got no answer within 2 s" in capsys.readouterr().err
    assert locate(tmp_path / "yolov5").layout == PACKAGE


def test_remote_problem_finds_a_missing_tag_before_cloning(upstream: Dict[str, str]) -> None:
    assert remote_problem(upstream["url"], "v7.0") is None
    assert remote_problem(upstream["url"], "v9.9") == "no branch or tag 'v9.9' there"
    assert "does not appear to be a git repository" in remote_problem("file:///nonexistent/y.git", "v7.0")


# ---- destinations --------------------------------------------------------------------------------------

def test_foreign_destination_is_refused_and_untouched(tmp_path: Path) -> None:
    dest = tmp_path / "project"
    (dest / "src").mkdir(parents=True)
    (dest / "src" / "main.py").write_text("print('mine')\n")
    (dest / "notes.txt").write_text("keep me\n")
    before = yolov5_trees.snapshot(tmp_path, folders=True)
    result = CliRunner().invoke(app, ["clone", str(dest), "--source", "git"],
                                env={"YOLOPATCH_YOLOV5_URL": DEAD_URL})
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "not a YOLOv5 tree; nothing touched" in lines[0]
    assert yolov5_trees.snapshot(tmp_path, folders=True) == before


def test_a_file_as_destination_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "yolov5"
    dest.write_text("a file\n")
    with pytest.raises(YolopatchError, match="not a directory"):
        clone(dest, url=DEAD_URL)
    assert dest.read_text() == "a file\n"


@pytest.mark.parametrize("layout", ["checkout", "package"])
def test_existing_tree_is_reported_and_untouched(layout: str, make_tree, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    root = make_tree("6.2", layout)
    before = yolov5_trees.snapshot(tmp_path, folders=True)
    assert clone(root, source="git", url=DEAD_URL) == 0
    assert yolov5_trees.snapshot(tmp_path, folders=True) == before
    assert "already a YOLOv5 tree" in capsys.readouterr().out


def test_empty_destination_is_filled(upstream: Dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "yolov5"
    dest.mkdir()
    assert clone(dest, source="git", url=upstream["url"]) == 0
    assert locate(dest).root == dest.resolve()


# ---- the command line -------------------------------------------------------------------------------

def test_cli_clone_with_ref_and_source(upstream: Dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "yolov5"
    result = CliRunner().invoke(app, ["clone", str(dest), "--ref", "v7.0", "--source", "git"],
                                env={"YOLOPATCH_YOLOV5_URL": upstream["url"]})
    assert result.exit_code == 0, result.output
    assert git.Repo(dest).head.commit.hexsha == upstream["tagged"]


def test_cli_rejects_an_unknown_source(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["clone", str(tmp_path / "y"), "--source", "svn"])
    assert result.exit_code == 2
    assert "unknown source 'svn'" in result.output


def test_apply_with_clone_clones_first(upstream: Dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "yolov5"
    result = CliRunner().invoke(app, ["apply", "soca", "--repo", str(dest), "--clone"],
                                env={"YOLOPATCH_YOLOV5_URL": upstream["url"]})
    assert result.exit_code == 0, result.output
    assert "class SOCA(nn.Module):  # yolopatch: soca" in (dest / "models" / "common.py").read_text()
    assert (dest / "models" / "yolov5s-soca.yaml").is_file()
    changed = git.Repo(dest).git.status("--porcelain").splitlines()
    assert sorted(line[3:] for line in changed) == ["models/common.py", "models/yolo.py", "models/yolov5s-soca.yaml"]


def test_apply_with_clone_falls_back_to_the_package_index(cached_wheels: Path, tmp_path: Path) -> None:
    dest = tmp_path / "yolov5"
    result = CliRunner().invoke(app, ["apply", "gam", "--repo", str(dest), "--clone"],
                                env={"YOLOPATCH_YOLOV5_URL": DEAD_URL})
    assert result.exit_code == 0, result.output
    assert "from the package index" in result.output
    assert "# yolopatch: gam" in (dest / "yolov5" / "models" / "common.py").read_text()
