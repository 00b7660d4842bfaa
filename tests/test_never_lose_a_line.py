"""Never lose a line: every scenario of the hostile-user review, as a regression test on real trees.

Each test either gets the user's text back byte for byte after apply + revert, or checks that the
command refused with one line and wrote nothing.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import libcst as cst
import pytest

from tests import yolov5_trees
from tests.yolov5_trees import snapshot
from yolopatch import changes
from yolopatch.changes import FileChange, first_lost_line, tree_lock, write_all
from yolopatch.commands.apply import apply
from yolopatch.commands.check import collect as check_collect
from yolopatch.commands.revert import revert
from yolopatch.commands.status import collect as status_collect
from yolopatch.commands.variant import variant
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.transforms import lossless
from yolopatch.tree import locate

MakeTree = Callable[..., Path]
ROOT = Path(__file__).resolve().parents[1]


def models(root: Path) -> Path:
    return yolov5_trees.models_dir(root)


def append(path: Path, text: str) -> None:
    path.write_bytes(path.read_bytes() + text.encode("utf-8"))


def codes(root: Path) -> list:
    return [finding.code for finding in check_collect(locate(root)).findings]


# 1. libcst round trips ------------------------------------------------------------------------------

TRAILING = "\nDEBUG = False\n    # keep 1\n  \t\n    # keep 2\n"


def test_libcst_loses_trailing_indented_comments_but_lossless_parse_does_not() -> None:
    source = "x = 1\n    # keep 1\n    # keep 2\n"
    assert cst.parse_module(source).code != source  # the libcst defect this guards against
    assert lossless.parse(source).code == source
    assert lossless.parse(source.replace("\n", "\r\n")).code == source.replace("\n", "\r\n")
    assert lossless.parse(source.rstrip("\n")).code == source.rstrip("\n")


@pytest.mark.parametrize("file", ["yolo.py", "common.py"])
def test_trailing_indented_comments_survive_apply_and_revert(make_tree: MakeTree, file: str) -> None:
    root = make_tree("7.0", "checkout")
    append(models(root) / file, TRAILING)
    before = snapshot(root)
    assert apply(root, ["soca"]) == 0
    text = (models(root) / file).read_text(encoding="utf-8")
    assert "    # keep 1\n  \t\n    # keep 2\n" in text
    assert codes(root) == []
    assert revert(root, []) == 0
    assert snapshot(root) == before


def test_text_libcst_cannot_reproduce_is_refused(make_tree: MakeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree("7.0", "checkout")
    before = snapshot(root)
    real_parse = cst.parse_module

    def lossy(source: str) -> cst.Module:  # a libcst that drops a comment line in the middle of the file
        return real_parse(source.replace("# YOLOv5", "#", 1))

    monkeypatch.setattr(lossless.cst, "parse_module", lossy)
    from yolopatch.transforms import common_py, yolo_py
    common_py.parse.cache_clear()
    yolo_py.parse.cache_clear()
    with pytest.raises(YolopatchError, match="libcst cannot reproduce this file byte for byte") as caught:
        apply(root, ["soca"])
    assert str(caught.value).count("\n") == 0 and ".py:1:" in str(caught.value)
    assert snapshot(root) == before
    common_py.parse.cache_clear()
    yolo_py.parse.cache_clear()


def test_post_condition_refuses_a_write_that_loses_a_user_line(tmp_path: Path) -> None:
    target = tmp_path / "common.py"
    target.write_text("a = 1\n# user\nclass X:  # yolopatch: x\n    pass\nb = 2\n", encoding="utf-8")
    old = target.read_text(encoding="utf-8")
    assert first_lost_line(old, "a = 1\nb = 2\n", [(3, 4)]) == 2
    assert first_lost_line(old, "a = 1\n# user\nb = 2\n", [(3, 4)]) is None
    with pytest.raises(YolopatchError, match="would lose a line yolopatch did not write") as caught:
        write_all([FileChange(target, old, "a = 1\nb = 2\n", editable=((3, 4),))])
    assert f"{target}:2:" in str(caught.value)
    assert target.read_text(encoding="utf-8") == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["common.py"]


def test_post_condition_guards_every_apply(make_tree: MakeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transform bug that drops a user line is caught before anything is written."""
    from yolopatch import engine

    root = make_tree("7.0", "checkout")
    before = snapshot(root)
    real = engine._apply_all

    def buggy(sources, specs, replace):  # type: ignore[no-untyped-def]
        common, yolo = real(sources, specs, replace)
        return common.replace("import warnings\n", "", 1), yolo

    monkeypatch.setattr(engine, "_apply_all", buggy)
    with pytest.raises(YolopatchError, match="would lose a line"):
        apply(root, ["soca"])
    assert snapshot(root) == before


# 2. revert keeps what the user wrote next to inserted code ------------------------------------------

def test_revert_keeps_user_comments_above_inserted_class_and_branch(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    common, yolo = models(root) / "common.py", models(root) / "yolo.py"
    assert apply(root, ["soca"], variants=False) == 0
    common.write_text(common.read_text(encoding="utf-8").replace(
        "class SOCA(nn.Module):", "# my note on SOCA\nclass SOCA(nn.Module):"), encoding="utf-8")
    yolo.write_text(yolo.read_text(encoding="utf-8").replace(
        "        elif m is SOCA:", "        # my branch note\n        elif m is SOCA:"), encoding="utf-8")
    assert revert(root, ["soca"]) == 0
    assert "# my note on SOCA\n" in common.read_text(encoding="utf-8")
    assert "        # my branch note\n" in yolo.read_text(encoding="utf-8")
    assert "SOCA" not in common.read_text(encoding="utf-8").replace("# my note on SOCA", "")


# 3. --replace can be undone --------------------------------------------------------------------------

BLOG_CLASS = textwrap.dedent("""

    class SOCA(nn.Module):
        # pasted from a blog post
        def __init__(self, channel, reduction=8):
            super().__init__()
            self.channel = channel

        def forward(self, x):
            return x
""")


def _paste_blog_soca(root: Path) -> None:
    append(models(root) / "common.py", BLOG_CLASS)
    yolo = models(root) / "yolo.py"
    text = yolo.read_text(encoding="utf-8")
    yolo.write_text(text.replace("if m in {\n            Conv,", "if m in {\n            SOCA,\n            Conv,", 1)
                    if "if m in {\n            Conv," in text else text.replace("if m in [Conv,", "if m in [SOCA, Conv,", 1),
                    encoding="utf-8")


@pytest.mark.parametrize("version", ["7.0", "5.0"])
def test_replace_then_revert_restores_the_hand_pasted_code(make_tree: MakeTree, version: str) -> None:
    root = make_tree(version, "checkout")
    _paste_blog_soca(root)
    before = snapshot(root)
    assert apply(root, ["soca"], replace=True) == 0
    assert "pasted from a blog post" not in (models(root) / "common.py").read_text(encoding="utf-8")
    assert codes(root) == []
    assert revert(root, ["soca"]) == 0
    assert snapshot(root) == before


def test_replace_record_survives_other_modules_applied_since(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    _paste_blog_soca(root)
    before = snapshot(root)
    assert apply(root, ["soca"], replace=True) == 0
    assert apply(root, ["gam"]) == 0
    assert revert(root, ["soca"]) == 0
    assert "pasted from a blog post" in (models(root) / "common.py").read_text(encoding="utf-8")
    assert revert(root, ["gam"]) == 0
    assert snapshot(root) == before


# 4. concurrency ---------------------------------------------------------------------------------------

def test_second_command_on_a_busy_tree_refuses(make_tree: MakeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree("7.0", "checkout")
    before = snapshot(root)
    monkeypatch.setenv("YOLOPATCH_LOCK_TIMEOUT", "0.2")
    script = f"import fcntl, os, sys, time\nfd = os.open({str(root)!r}, os.O_RDONLY)\n" \
             "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(30)\n"
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(YolopatchError, match="tree busy") as caught:
            apply(root, ["soca"])
        assert "\n" not in str(caught.value)
    finally:
        holder.kill()
        holder.wait()
    assert snapshot(root) == before
    assert apply(root, ["soca"]) == 0  # the lock dies with its process


def test_two_concurrent_applies_serialise(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    command = [sys.executable, "-m", "yolopatch", "apply", "--repo", str(root)]
    environment = {**os.environ, "YOLOPATCH_LOCK_TIMEOUT": "60", "PYTHONPATH": str(ROOT)}
    runs = [subprocess.Popen([*command, key], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for key in ("soca", "gam")]
    for run in runs:
        run.wait(timeout=120)
        assert run.returncode == 0, run.stderr.read()  # type: ignore[union-attr]
    statuses = status_collect(root)["modules"]
    assert (statuses["soca"]["status"], statuses["gam"]["status"]) == ("applied", "applied")
    assert codes(root) == []


def test_lock_leaves_no_file_in_the_tree(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    before = snapshot(root, folders=True)
    with tree_lock(root):
        pass
    assert snapshot(root, folders=True) == before


# 10. file metadata ------------------------------------------------------------------------------------

def test_modes_are_kept_and_read_only_files_refused(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    common, yolo = models(root) / "common.py", models(root) / "yolo.py"
    common.chmod(0o755)
    yolo.chmod(0o600)
    assert apply(root, ["soca"], variants=False) == 0
    assert (stat.S_IMODE(common.stat().st_mode), stat.S_IMODE(yolo.stat().st_mode)) == (0o755, 0o600)
    assert revert(root, ["soca"]) == 0
    yolo.chmod(0o444)
    before = snapshot(root)
    with pytest.raises(YolopatchError, match="read-only") as caught:
        apply(root, ["soca"], variants=False)
    assert str(caught.value).startswith(f"{yolo}: file is read-only")
    assert snapshot(root) == before


def test_symlinked_and_hard_linked_files_stay_links(make_tree: MakeTree, tmp_path: Path) -> None:
    root = make_tree("7.0", "checkout")
    common, yolo = models(root) / "common.py", models(root) / "yolo.py"
    elsewhere = tmp_path / "shared-common.py"
    common.rename(elsewhere)
    common.symlink_to(elsewhere)
    twin = tmp_path / "yolo-twin.py"
    os.link(yolo, twin)
    original_common, original_yolo = elsewhere.read_bytes(), yolo.read_bytes()
    assert apply(root, ["soca"], variants=False) == 0
    assert common.is_symlink() and "class SOCA" in elsewhere.read_text(encoding="utf-8")
    assert twin.read_bytes() == yolo.read_bytes() and os.stat(twin).st_ino == os.stat(yolo).st_ino
    assert revert(root, ["soca"]) == 0
    assert common.is_symlink() and elsewhere.read_bytes() == original_common
    assert twin.read_bytes() == original_yolo == yolo.read_bytes()


# 5. signals and kill -9 ------------------------------------------------------------------------------

def test_sigterm_between_two_renames_rolls_back(make_tree: MakeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree("7.0", "checkout")
    before = snapshot(root)
    calls = []

    def terminated_replace(source: Path, target: Path) -> None:
        os.replace(source, target)
        calls.append(target)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(changes, "_replace", terminated_replace)
    with pytest.raises(KeyboardInterrupt):
        apply(root, ["soca"])
    assert snapshot(root) == before
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back


KILL_AFTER_FIRST_RENAME = """
import os, sys
from pathlib import Path
from yolopatch import changes
real = changes._replace
def replace_then_die(source, target):
    real(source, target)
    os._exit(137)
changes._replace = replace_then_die
from yolopatch.commands.apply import apply
apply(Path(sys.argv[1]), ["soca"])
"""


def test_kill_9_between_two_renames_is_rolled_back_by_the_next_command(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    (models(root) / "common.py.yolopatch-bak").hardlink_to(models(root) / "common.py")  # an old version's leftover
    before = snapshot(root)
    run = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_RENAME, str(root)],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert run.returncode == 137, run.stderr
    assert snapshot(root) != before  # half-patched: one file swapped, journal and copies left
    found = codes(root)
    assert "interrupted-run" in found and "leftover-file" in found
    assert revert(root, [], dry_run=True) == 0  # any writing command rolls the killed run back first
    assert snapshot(root) == before
    assert apply(root, ["soca"]) == 0  # the old version's hard-linked backup does not block
    assert revert(root, []) == 0
    assert snapshot(root) == before


# 6, 14. YAML --------------------------------------------------------------------------------------

def test_yaml_anchors_and_aliases_are_refused(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    base = models(root) / "yolov5s.yaml"
    text = base.read_text(encoding="utf-8").replace("[[-1, 1, Conv, [64, 6, 2, 2]]", "[&first [-1, 1, Conv, [64, 6, 2, 2]]",
                                                    1)
    assert text != base.read_text(encoding="utf-8")
    base.write_text(text, encoding="utf-8")
    before = snapshot(root)
    with pytest.raises(YolopatchError, match="anchors and aliases") as caught:
        apply(root, ["soca"], positions=["backbone:0"])
    assert "yolov5s.yaml:" in str(caught.value)
    assert snapshot(root) == before


def test_duplicate_scales_and_bases_write_one_variant(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    assert apply(root, ["soca"], scales=["s", "s"]) == 0
    assert revert(root, []) == 0
    assert apply(root, ["soca"], bases=["models/yolov5s.yaml", str(models(root) / "yolov5s.yaml")]) == 0
    assert [p.name for p in models(root).glob("*-soca*.yaml")] == ["yolov5s-soca.yaml"]


def test_bad_positions_are_usage_errors(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    for position in ("layer:\uff11\uff12", "p9", "nowhere"):
        with pytest.raises(UsageError):
            apply(root, ["soca"], positions=[position])


# 7. variants beside a base outside models/ ------------------------------------------------------------

def test_variant_of_a_base_outside_models_is_tracked_and_reverted(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    (root / "cfg").mkdir()
    (root / "cfg" / "mymodel.yaml").write_bytes((models(root) / "yolov5s.yaml").read_bytes())
    before = snapshot(root)
    assert apply(root, ["soca"], bases=["cfg/mymodel.yaml"]) == 0
    assert (root / "cfg" / "mymodel-soca.yaml").is_file()
    assert [v["path"] for v in status_collect(root)["variants"]] == ["cfg/mymodel-soca.yaml"]
    (root / "cfg" / "mymodel-soca.yaml").write_text(
        (root / "cfg" / "mymodel-soca.yaml").read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    assert "edited-variant" in codes(root)
    with pytest.raises(YolopatchError, match="edited by hand"):
        revert(root, [])
    assert revert(root, [], force=True) == 0
    assert snapshot(root) == before


# 8. imports the user's code now uses ------------------------------------------------------------------

def test_revert_keeps_an_added_import_that_user_code_uses(make_tree: MakeTree,
                                                         capsys: pytest.CaptureFixture) -> None:
    root = make_tree("7.0", "checkout")
    common = models(root) / "common.py"
    assert apply(root, ["double-attention"], variants=False) == 0
    assert "import torch.nn.functional as F  # yolopatch: added import" in common.read_text(encoding="utf-8")
    append(common, "\n\ndef my_helper(x):\n    return F.relu(x)\n")
    assert revert(root, ["double-attention"]) == 0
    assert "import torch.nn.functional as F" in common.read_text(encoding="utf-8")
    assert "kept `import torch.nn.functional as F`" in capsys.readouterr().err


# 9. __all__ and shadowing --------------------------------------------------------------------------------

def test_all_list_in_common_is_extended_and_restored(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    common = models(root) / "common.py"
    text = common.read_text(encoding="utf-8")
    common.write_text(text.replace("\nimport json\n", "\nimport json\n__all__ = ['Conv', 'C3', 'SPPF', 'Concat', "
                                   "'Bottleneck', 'DetectMultiBackend', 'AutoShape']\n", 1), encoding="utf-8")
    before = snapshot(root)
    assert apply(root, ["soca", "gam"], variants=False) == 0
    assert "'AutoShape', 'SOCA', 'GAM']" in common.read_text(encoding="utf-8")
    assert codes(root) == []
    assert revert(root, []) == 0
    assert snapshot(root) == before


@pytest.mark.parametrize("edit", [
    ("common.py", None, "\nSOCA = nn.Identity\n"),
    ("yolo.py", "from models.common import *\n", "from models.common import *\nfrom torch.nn import Identity as SOCA\n"),
    ("yolo.py", "        elif m is Concat:", "        elif m == SOCA:\n            pass\n        elif m is Concat:"),
])
def test_shadowing_is_reported(make_tree: MakeTree, edit: tuple) -> None:
    root = make_tree("7.0", "checkout")
    assert apply(root, ["soca"]) == 0
    file, old, new = edit
    path = models(root) / file
    text = path.read_text(encoding="utf-8")
    path.write_text(text + new if old is None else text.replace(old, new, 1), encoding="utf-8")
    assert path.read_text(encoding="utf-8") != text
    assert "shadowed" in codes(root)


# 11-13, 15. errors -------------------------------------------------------------------------------------

def test_byte_order_mark_is_accepted_and_kept(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    for name in ("common.py", "yolo.py"):
        path = models(root) / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    before = snapshot(root)
    assert apply(root, ["soca"]) == 0
    assert (models(root) / "common.py").read_bytes().startswith(b"\xef\xbb\xbf")
    assert codes(root) == []
    assert revert(root, []) == 0
    assert snapshot(root) == before


def test_dangling_link_and_folder_named_yaml_do_not_crash(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    (models(root) / "gone.yaml").symlink_to(models(root) / "missing.yaml")
    (models(root) / "folder.yaml").mkdir()
    assert apply(root, ["soca"]) == 0
    assert status_collect(root)["modules"]["soca"]["status"] == "applied"
    assert codes(root) == []
    assert revert(root, []) == 0


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EACCES, errno.EPERM])
def test_os_errors_name_the_real_file_and_leave_nothing(make_tree: MakeTree, monkeypatch: pytest.MonkeyPatch,
                                                        failure: int) -> None:
    root = make_tree("7.0", "checkout")
    before = snapshot(root)
    real = changes._write_new_file
    calls = []

    def failing(path: Path, data: bytes, reference: object) -> None:
        calls.append(path)
        if len(calls) == 2:
            real(path, data[:10], None)  # a partial temporary file, then the failure
            raise OSError(failure, os.strerror(failure), str(path))
        real(path, data, reference)  # type: ignore[arg-type]

    monkeypatch.setattr(changes, "_write_new_file", failing)
    with pytest.raises(YolopatchError) as caught:
        apply(root, ["soca"])
    message = str(caught.value)
    assert message.startswith(f"{models(root) / 'yolo.py'}: cannot write: ") and "yolopatch-tmp" not in message
    assert snapshot(root) == before


def test_parse_errors_name_the_exact_line(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    common = models(root) / "common.py"
    lines = common.read_text(encoding="utf-8").count("\n")
    append(common, "\n\nx = (1,\ndef broken(:\n    pass\n")
    with pytest.raises(YolopatchError) as caught:
        apply(root, ["soca"])
    assert f"common.py:{lines + 4}:" in str(caught.value)
