"""`yolopatch check` on real YOLOv5 trees: one tree per kind of drift, the output formats, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import pytest
from typer.testing import CliRunner

from tests import yolov5_trees
from tests.yolov5_trees import snapshot
from yolopatch import catalog
from yolopatch.cli import app
from yolopatch.commands import check as check_module
from yolopatch.commands.apply import apply
from yolopatch.commands.check import Finding, collect, to_github, to_text
from yolopatch.state import imports_needed_by
from yolopatch.transforms import common_py, yolo_py
from yolopatch.tree import locate

MakeTree = Callable[..., Path]
runner = CliRunner()
PATCHED = ("soca", "double-attention")  # double-attention needs an import 7.0's common.py lacks (F)


def models(root: Path) -> Path:
    return yolov5_trees.models_dir(root)


def run_check(root: Path, *args: str) -> Tuple[int, dict]:
    """``yolopatch check --repo root --format json``: (exit code, parsed document)."""
    result = runner.invoke(app, ["check", "--repo", str(root), "--format", "json", *args])
    return result.exit_code, json.loads(result.stdout)


def codes(document: dict) -> List[Tuple[str, str, Optional[int]]]:
    return [(f["code"], f["file"], f["line"]) for f in document["findings"]]


def line_of(path: Path, text: str, start: int = 1) -> int:
    """1-based number of the first line at or after ``start`` that contains ``text``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if number >= start and text in line)


def insert_line(path: Path, after: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(after, text + "\n")
    path.write_text("".join(lines), encoding="utf-8")


def delete_lines(path: Path, first: int, count: int = 1) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    del lines[first - 1:first - 1 + count]
    path.write_text("".join(lines), encoding="utf-8")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own cache of clean results (never the user's ~/.cache/yolopatch)."""
    folder = tmp_path_factory.mktemp("check-cache")
    monkeypatch.setenv("YOLOPATCH_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def patched_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7.0 checkout with PATCHED applied (variants of yolov5s.yaml included), built once."""
    root = yolov5_trees.make_tree("7.0", "checkout", tmp_path_factory.mktemp("patched") / "tree")
    assert apply(root, list(PATCHED)) == 0
    return root


@pytest.fixture
def patched(patched_source: Path, tmp_path: Path) -> Path:
    """A fresh writable copy of ``patched_source``."""
    return Path(shutil.copytree(patched_source, tmp_path / "patched"))


# ----------------------------------------------------------------------------------------------
# Clean and patched trees pass


@pytest.mark.parametrize("version,layout", [("7.0", "checkout"), ("6.0", "package")])
def test_tree_without_yolopatch_is_clean(make_tree: MakeTree, version: str, layout: str) -> None:
    # 6.0 ships a models/hub YAML that does not parse: not yolopatch's drift, so no finding.
    root = make_tree(version, layout)
    code, document = run_check(root)
    assert (code, document["ok"], document["findings"]) == (0, True, [])


def test_patched_tree_is_clean(patched: Path) -> None:
    result = runner.invoke(app, ["check", "--repo", str(patched)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"ok: yolopatch's changes in {patched.resolve()} are intact (2 module(s) applied, 2 generated variant(s))"]


@pytest.mark.parametrize("version,layout", [("5.0", "checkout"), ("7.0", "package"), ("master", "master")])
def test_patched_tree_is_clean_in_other_layouts(make_tree: MakeTree, version: str, layout: str) -> None:
    root = make_tree(version, layout)
    assert apply(root, ["sge"]) == 0
    assert run_check(root) == (0, {"version": 1, "root": str(root.resolve()), "ok": True, "findings": []})


# ----------------------------------------------------------------------------------------------
# One tree per kind of drift


def test_edited_class(patched: Path) -> None:
    common = models(patched) / "common.py"
    class_line = line_of(common, "class SOCA(nn.Module):")
    insert_line(common, class_line, "    edited_by_hand = True")
    code, document = run_check(patched)
    assert code == 1
    assert codes(document) == [("edited-class", "models/common.py", class_line + 1)]
    assert document["findings"][0]["fix"].startswith("yolopatch apply soca --replace --repo ")


def test_edited_class_in_a_5_0_tree(make_tree: MakeTree) -> None:
    root = make_tree("5.0", "checkout")
    assert apply(root, ["gam"], variants=False) == 0
    common = models(root) / "common.py"
    body_line = line_of(common, "def forward", line_of(common, "class GAM(nn.Module):"))
    insert_line(common, body_line, "        x = x  # tweaked")
    code, document = run_check(root)
    assert (code, codes(document)) == (1, [("edited-class", "models/common.py", body_line + 1)])


def test_registration_deleted(patched: Path) -> None:
    yolo = models(patched) / "yolo.py"
    branch = line_of(yolo, "elif m is SOCA:  # yolopatch: soca")
    delete_lines(yolo, branch, 4)  # the branch: its test line and three body lines
    code, document = run_check(patched)
    assert code == 1
    assert codes(document) == [("missing-registration", "models/yolo.py", line_of(yolo, "def parse_model("))]
    assert "yolopatch apply soca " in document["findings"][0]["fix"]


def test_class_removed_but_branch_kept(patched: Path) -> None:
    common, yolo = models(patched) / "common.py", models(patched) / "yolo.py"
    kept_imports = imports_needed_by(["double-attention"])
    common.write_text(common_py.remove(common.read_text(encoding="utf-8"), "soca", kept_imports), encoding="utf-8")
    assert "class SOCA" not in common.read_text(encoding="utf-8")
    code, document = run_check(patched)
    assert code == 1
    assert codes(document) == [("missing-class", "models/yolo.py", line_of(yolo, "elif m is SOCA:"))]


def test_edited_registration(patched: Path) -> None:
    yolo = models(patched) / "yolo.py"
    branch = line_of(yolo, "elif m is SOCA:  # yolopatch: soca")
    lines = yolo.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[branch + 2] == "            args = [c1, c2, *args[1:]]\n"
    lines[branch + 2] = "            args = [c1, c2, 4]\n"
    yolo.write_text("".join(lines), encoding="utf-8")
    code, document = run_check(patched)
    assert (code, codes(document)) == (1, [("edited-registration", "models/yolo.py", branch)])
    assert "revert soca --force" in document["findings"][0]["fix"]


def test_master_import_list_missing_the_name(make_tree: MakeTree) -> None:
    root = make_tree("master", "master")
    assert apply(root, ["soca"], variants=False) == 0
    yolo = models(root) / "yolo.py"
    import_line = line_of(yolo, "from models.common import (")
    names = yolo_py.common_import_names(yolo.read_text(encoding="utf-8"))
    assert names is not None and names[-1] == "SOCA"
    delete_lines(yolo, line_of(yolo, "    SOCA,", import_line))
    assert "SOCA" not in yolo_py.common_import_names(yolo.read_text(encoding="utf-8"))
    code, document = run_check(root)
    assert (code, codes(document)) == (1, [("missing-import", "models/yolo.py", import_line)])
    assert document["findings"][0]["fix"].startswith("yolopatch apply soca")


def _yaml_with_row(base: Path, target: Path, module: str) -> int:
    """Copy ``base`` to ``target`` with a ``[-1, 1, module, []]`` row after the SPPF row; its line."""
    lines = base.read_text(encoding="utf-8").splitlines(keepends=True)
    sppf = next(index for index, line in enumerate(lines) if "SPPF" in line)
    lines.insert(sppf + 1, f"   [-1, 1, {module}, [1024]],  # added\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(lines), encoding="utf-8")
    return sppf + 2


def test_yaml_naming_an_unknown_module_in_a_subfolder(patched: Path) -> None:
    target = models(patched) / "custom" / "deep" / "yolov5s-bogus.yaml"
    row = _yaml_with_row(models(patched) / "yolov5s.yaml", target, "Bogus")
    code, document = run_check(patched)
    assert (code, codes(document)) == (1, [("unknown-module", "models/custom/deep/yolov5s-bogus.yaml", row)])
    assert "Bogus" in document["findings"][0]["message"]


def test_yaml_naming_a_catalogue_module_that_is_not_applied(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "package")
    row = _yaml_with_row(models(root) / "yolov5s.yaml", models(root) / "yolov5s-gam.yaml", "GAM")
    code, document = run_check(root)
    assert (code, codes(document)) == (1, [("unknown-module", "yolov5/models/yolov5s-gam.yaml", row)])
    assert document["findings"][0]["fix"].startswith("yolopatch apply gam")


def test_yaml_naming_torch_nn_and_the_trees_own_modules_is_fine(patched: Path) -> None:
    _yaml_with_row(models(patched) / "yolov5s.yaml", models(patched) / "a.yaml", "nn.Identity")
    _yaml_with_row(models(patched) / "yolov5s.yaml", models(patched) / "b.yaml", "torch.nn.Identity")
    _yaml_with_row(models(patched) / "yolov5s.yaml", models(patched) / "c.yaml", "GhostBottleneck")
    _yaml_with_row(models(patched) / "yolov5s.yaml", models(patched) / "d.yaml", "MixConv2d")  # experimental.py
    assert run_check(patched) == (0, {"version": 1, "root": str(patched.resolve()), "ok": True, "findings": []})


def test_generated_variant_edited(patched: Path) -> None:
    variant = models(patched) / "yolov5s-soca.yaml"
    row = line_of(variant, "SPPF")
    text = variant.read_text(encoding="utf-8").splitlines(keepends=True)
    text[row - 1] = text[row - 1].replace("SPPF, [1024, 5]", "SPPF, [1024, 3]")
    variant.write_text("".join(text), encoding="utf-8")
    code, document = run_check(patched)
    assert (code, codes(document)) == (1, [("edited-variant", "models/yolov5s-soca.yaml", row)])
    assert "yolopatch variant soca --base models/yolov5s.yaml" in document["findings"][0]["fix"]


def test_base_changed_after_the_variant_was_generated(patched: Path) -> None:
    base = models(patched) / "yolov5s.yaml"
    base.write_text(base.read_text(encoding="utf-8").replace("depth_multiple: 0.33", "depth_multiple: 0.5"),
                    encoding="utf-8")
    code, document = run_check(patched)
    line = line_of(models(patched) / "yolov5s-soca.yaml", "depth_multiple")
    assert code == 1
    assert codes(document) == [("stale-variant", "models/yolov5s-double-attention.yaml", line),
                               ("stale-variant", "models/yolov5s-soca.yaml", line)]


def test_module_from_an_older_yolopatch(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    spec = catalog.get("sge")
    common, yolo = models(root) / "common.py", models(root) / "yolo.py"
    header = f"class {spec.class_name}(nn.Module):"
    older = common_py.Template(spec.key, spec.version - 1, spec.class_name,
                               spec.source.replace(header, header + "\n    older = True\n"))
    common.write_text(common_py.insert(common.read_text(encoding="utf-8"), older), encoding="utf-8")
    yolo.write_text(yolo_py.register(yolo.read_text(encoding="utf-8"), spec.class_name, spec.key), encoding="utf-8")
    code, document = run_check(root)
    assert (code, codes(document)) == (1, [("outdated", "models/common.py", line_of(common, header))])
    assert "older yolopatch" in document["findings"][0]["message"]
    assert document["findings"][0]["fix"].startswith("yolopatch apply sge")


def test_module_from_a_newer_yolopatch(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    spec = catalog.get("soca")
    common = models(root) / "common.py"
    newer = common_py.Template(spec.key, spec.version + 1, spec.class_name,
                               spec.source + "\n\ndef SOCANew():\n    pass\n")
    common.write_text(common_py.insert(common.read_text(encoding="utf-8"), newer), encoding="utf-8")
    future = common_py.Template("future-attention", 1, "FutureAttention",
                                "class FutureAttention(nn.Module):\n    pass\n")
    common.write_text(common_py.insert(common.read_text(encoding="utf-8"), future), encoding="utf-8")
    code, document = run_check(root)
    assert code == 1
    found = {f["code"]: f for f in document["findings"]}
    assert set(found) == {"outdated", "missing-registration", "unknown-yolopatch-module"}
    assert "newer yolopatch" in found["outdated"]["message"]
    assert found["unknown-yolopatch-module"]["line"] == line_of(common, "class FutureAttention")


def test_lost_import_means_apply_would_change(patched: Path) -> None:
    common = models(patched) / "common.py"
    import_line = line_of(common, "# yolopatch: added import")
    delete_lines(common, import_line)
    code, document = run_check(patched)
    assert code == 1
    assert [(c, f) for c, f, _ in codes(document)] == [("apply-would-change", "models/common.py")]
    assert "import" in document["findings"][0]["message"]


BLOG_SOCA = """

class SOCA(nn.Module):
    # written by hand for the test, in the style of the blog posts (channel-first, no c2 check)
    def __init__(self, channel, reduction=8):
        super().__init__()
        self.fc = nn.Linear(channel, channel)

    def forward(self, x):
        return x
"""


def test_hand_pasted_class_used_by_a_yaml(make_tree: MakeTree) -> None:
    root = make_tree("7.0", "checkout")
    common, yolo = models(root) / "common.py", models(root) / "yolo.py"
    common.write_text(common.read_text(encoding="utf-8") + BLOG_SOCA, encoding="utf-8")
    row = _yaml_with_row(models(root) / "yolov5s.yaml", models(root) / "yolov5s-blog.yaml", "SOCA")
    hand_made = yolo_py.register(yolo.read_text(encoding="utf-8"), "SOCA", "soca").replace("  # yolopatch: soca", "")
    yolo.write_text(hand_made, encoding="utf-8")
    code, document = run_check(root)
    assert code == 1
    assert codes(document) == [("hand-pasted-in-use", "models/common.py", line_of(common, "class SOCA(nn.Module):")),
                               ("hand-registered", "models/yolo.py", line_of(yolo, "elif m is SOCA:"))]
    assert f"models/yolov5s-blog.yaml:{row}" in document["findings"][0]["message"]
    assert all(f["fix"].startswith("yolopatch apply soca --replace") for f in document["findings"])


def test_hand_pasted_class_not_used(make_tree: MakeTree) -> None:
    root = make_tree("6.2", "checkout")
    common = models(root) / "common.py"
    common.write_text(common.read_text(encoding="utf-8") + BLOG_SOCA, encoding="utf-8")
    code, document = run_check(root)
    assert (code, codes(document)) == (1, [("hand-pasted", "models/common.py", line_of(common, "class SOCA("))])


def test_unparseable_common_py_is_a_finding(patched: Path) -> None:
    common = models(patched) / "common.py"
    common.write_bytes(common.read_bytes() + b"\ndef broken(:\n")
    code, document = run_check(patched)
    assert code == 1
    assert [(c, f) for c, f, _ in codes(document)] == [("unreadable", "models/common.py")]


# ----------------------------------------------------------------------------------------------
# Formats, exit codes, read-only


def _drifted(patched: Path) -> Path:
    """Three findings: an edited class, an unknown module, an edited variant."""
    common = models(patched) / "common.py"
    insert_line(common, line_of(common, "class SOCA(nn.Module):"), "    edited_by_hand = True")
    _yaml_with_row(models(patched) / "yolov5s.yaml", models(patched) / "extra.yaml", "Bogus")
    variant = models(patched) / "yolov5s-soca.yaml"
    variant.write_text(variant.read_text(encoding="utf-8") + "# note\n", encoding="utf-8")
    return patched


def test_json_schema(patched: Path) -> None:
    root = _drifted(patched)
    code, document = run_check(root)
    assert code == 1
    assert list(document) == ["version", "root", "ok", "findings"]
    assert (document["version"], document["root"], document["ok"]) == (1, str(root.resolve()), False)
    variant = models(root) / "yolov5s-soca.yaml"
    assert codes(document)[1:] == [
        ("unknown-module", "models/extra.yaml", line_of(models(root) / "extra.yaml", "Bogus")),
        ("edited-variant", "models/yolov5s-soca.yaml", len(variant.read_text(encoding="utf-8").splitlines()))]
    for finding in document["findings"]:
        assert list(finding) == ["code", "severity", "file", "line", "message", "fix"]
        assert finding["severity"] == "error" and finding["code"] in check_module.CODES
        assert not Path(finding["file"]).is_absolute() and (root / finding["file"]).is_file()
        assert isinstance(finding["line"], int) and finding["message"] and finding["fix"]


def test_github_and_text_formats(patched: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _drifted(patched)
    monkeypatch.chdir(root.parent)  # the workspace: paths and --repo relative to it
    result = runner.invoke(app, ["check", "--repo", root.name, "--format", "github"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("::error file=patched/") for line in lines)
    line = line_of(root / "models" / "common.py", "edited_by_hand")
    assert lines[0].startswith(f"::error file=patched/models/common.py,line={line},title=yolopatch edited-class::")
    assert lines[0].endswith(". Fix: yolopatch apply soca --replace --repo patched (overwrites the edits; keep a "
                             "copy first)")
    text = runner.invoke(app, ["check", "--repo", root.name])
    assert text.exit_code == 1
    first, *_, summary = text.stdout.splitlines()
    assert first.startswith(f"patched/models/common.py:{line}: edited-class: ")
    assert first.endswith("(fix: yolopatch apply soca --replace --repo patched (overwrites the edits; keep a copy "
                          "first))")
    assert summary == f"3 problem(s) found in {root.resolve()}"


def test_github_escaping() -> None:
    finding = Finding("unknown-module", Path("/w/a,b:c/m.yaml"), 3, "50% done\r\nnext", "fix, it: now")
    assert to_github([finding], Path("/w")) == [
        "::error file=a%2Cb%3Ac/m.yaml,line=3,title=yolopatch unknown-module::50%25 done%0D%0Anext. "
        "Fix: fix, it: now"]
    no_line = Finding("edited-variant", Path("/elsewhere/v.yaml"), None, "m", "f")
    assert to_github([no_line], Path("/w")) == [
        "::error file=/elsewhere/v.yaml,title=yolopatch edited-variant::m. Fix: f"]
    assert to_text([no_line], Path("/w")) == ["/elsewhere/v.yaml: edited-variant: m (fix: f)"]


def test_check_never_writes(patched: Path) -> None:
    root = _drifted(patched)
    before = snapshot(root)
    for output in ("text", "json", "github"):
        assert runner.invoke(app, ["check", "--repo", str(root), "--format", output]).exit_code == 1
    assert snapshot(root) == before


def test_usage_errors_exit_2(patched: Path, tmp_path: Path) -> None:
    bad_format = runner.invoke(app, ["check", "--repo", str(patched), "--format", "xml"])
    assert bad_format.exit_code == 2
    missing = runner.invoke(app, ["check", "--repo", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such directory" in missing.output
    (tmp_path / "empty").mkdir()
    not_yolo = runner.invoke(app, ["check", "--repo", str(tmp_path / "empty")])
    assert not_yolo.exit_code == 2 and "not inside a YOLOv5" in not_yolo.output and "Ultralytics tree" in not_yolo.output


def test_internal_error_exits_2_not_1(patched: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(check_module, "collect", crash)
    result = runner.invoke(app, ["check", "--repo", str(patched)])
    assert result.exit_code == 2 and "internal error: RuntimeError: boom" in result.output


def test_collect_reports_fixes_with_repo_only_when_needed(patched: Path) -> None:
    _drifted(patched)
    tree = locate(patched)
    inside = collect(tree, cwd=patched / "models").findings
    outside = collect(tree, cwd=patched.parent).findings
    assert inside[0].fix.startswith("yolopatch apply soca --replace (")
    assert outside[0].fix.startswith("yolopatch apply soca --replace --repo patched (")


@pytest.mark.slow
def test_build_finds_a_variant_that_does_not_build(make_tree: MakeTree) -> None:
    # Static checks cannot see this: code appended after the insertion breaks the module at run time.
    root = make_tree("5.0", "checkout")
    assert apply(root, ["sge"]) == 0
    common = models(root) / "common.py"
    common.write_text(common.read_text(encoding="utf-8") + "\nSpatialGroupEnhance.forward = lambda self, x: x[:, :1]\n",
                      encoding="utf-8")
    assert run_check(root)[0] == 0
    before = snapshot(root)
    code, document = run_check(root, "--build")
    assert (code, codes(document)) == (1, [("build-failed", "models/yolov5s-sge.yaml", None)])
    assert "channels" in document["findings"][0]["message"]
    assert "yolopatch verify models/yolov5s-sge.yaml" in document["findings"][0]["fix"]
    assert snapshot(root) == before  # the probe runs with PYTHONDONTWRITEBYTECODE: no __pycache__ either


# ----------------------------------------------------------------------------------------------
# The cache of clean results (issue 14: check under 0.4 s): it may only ever replay "ok"


def write_checkpoint(path: Path, names: List[Tuple[str, str]]) -> Path:
    """A torch-format (zip) checkpoint whose pickle references ``names`` as globals (nothing else)."""
    import io
    import zipfile

    pickle = b"\x80\x02" + b"".join(b"c" + f"{module}\n{name}\n".encode() + b"0" for module, name in names) + b"N."
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("best/data.pkl", pickle)
    path.write_bytes(buffer.getvalue())
    return path


class CollectSpy:
    """Counts the full checks (``check_module.collect``); a run that does not count came from the cache."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = check_module.collect

        def counted(*args: object, **kwargs: object) -> object:
            self.calls += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(check_module, "collect", counted)


def test_cache_replays_clean_and_misses_on_every_input(patched: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = CollectSpy(monkeypatch)
    clean = run_check(patched)
    assert clean[0] == 0 and spy.calls == 1
    assert run_check(patched) == clean and spy.calls == 1  # nothing changed: the cache answers
    text_run = runner.invoke(app, ["check", "--repo", str(patched)])
    assert text_run.exit_code == 0 and "(2 module(s) applied, 2 generated variant(s))" in text_run.stdout
    assert spy.calls == 1

    def drifts(change: Callable[[], object], undo: Callable[[], object], code: str) -> None:
        calls = spy.calls
        change()
        result, document = run_check(patched)
        assert (result, sorted({c for c, _, _ in codes(document)})) == (1, [code]) and spy.calls == calls + 1
        assert run_check(patched)[0] == 1 and spy.calls == calls + 2  # findings are never cached
        undo()
        assert run_check(patched) == clean and spy.calls == calls + 2  # the same inputs again: the cache

    common, yolo = models(patched) / "common.py", models(patched) / "yolo.py"
    variant = models(patched) / "yolov5s-soca.yaml"
    for path, change, code in [
        (common, lambda: insert_line(common, line_of(common, "class SOCA("), "    edited_by_hand = True"), "edited-class"),
        (yolo, lambda: insert_line(yolo, line_of(yolo, "elif m is SOCA:"), "            pass"), "edited-registration"),
        (variant, lambda: insert_line(variant, line_of(variant, "SPPF"), "  - [-1, 1, SPPF, [1024, 3]]"),
         "edited-variant"),
        (models(patched) / "yolov5s.yaml", lambda: insert_line(models(patched) / "yolov5s.yaml", 1, "# a comment"),
         "stale-variant"),
    ]:
        before = path.read_bytes()
        drifts(change, lambda: path.write_bytes(before), code)
    state = patched / ".yolopatch"
    drifts(lambda: (state.mkdir(), (state / "journal-1.json").write_text("{}")),
           lambda: shutil.rmtree(state), "interrupted-run")
    leftover = models(patched) / ".common.py.123-abcd.yolopatch-tmp"
    drifts(lambda: leftover.write_text("x"), leftover.unlink, "leftover-file")
    checkpoint = patched / "runs" / "train" / "exp" / "weights" / "best.pt"
    gam = catalog.get("gam").class_name
    drifts(lambda: write_checkpoint(checkpoint, [("models.common", gam)]), lambda: shutil.rmtree(patched / "runs"),
           "checkpoint-needs-module")


def test_a_changed_checkpoint_misses_the_cache(patched: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # checkpoints are keyed by size and times, not contents: rewriting one in place must still miss
    checkpoint = write_checkpoint(patched / "best.pt", [("models.common", "SOCA")])
    spy = CollectSpy(monkeypatch)
    assert run_check(patched)[0] == 0 and run_check(patched)[0] == 0 and spy.calls == 1
    write_checkpoint(checkpoint, [("models.common", catalog.get("gam").class_name)])
    assert run_check(patched)[0] == 1 and spy.calls == 2


def test_cache_key_covers_the_catalogue_and_the_version(patched: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from yolopatch import resources
    from yolopatch.checks import cache

    templates = Path(shutil.copytree(resources.data_dir("templates"), tmp_path / "templates"))
    monkeypatch.setattr(resources, "data_dir", lambda name: templates if name == "templates" else tmp_path / name)
    located = cache.locate_light(patched)
    assert located is not None and located == cache.located_of(locate(patched))
    key = cache.input_key(located, installed=False, python=None)
    assert cache.input_key(located, installed=False, python=None) == key
    soca = templates / "soca.py"
    soca.write_text(soca.read_text(encoding="utf-8") + "\n# a newer template\n", encoding="utf-8")
    assert cache.input_key(located, installed=False, python=None) != key
    soca.write_text(soca.read_text(encoding="utf-8").replace("\n# a newer template\n", ""), encoding="utf-8")
    assert cache.input_key(located, installed=False, python=None) == key
    monkeypatch.setattr(cache, "__version__", "99.0")
    assert cache.input_key(located, installed=False, python=None) != key
    assert cache.input_key(located, installed=True, python=None) != cache.input_key(located, installed=False,
                                                                                    python=None)


def test_no_cache_option_and_environment(patched: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = CollectSpy(monkeypatch)
    assert run_check(patched)[0] == 0 and spy.calls == 1
    assert run_check(patched, "--no-cache")[0] == 0 and spy.calls == 2
    monkeypatch.setenv("YOLOPATCH_NO_CACHE", "1")
    assert run_check(patched)[0] == 0 and spy.calls == 3


def test_cache_writes_nothing_into_the_tree(patched: Path, private_cache: Path) -> None:
    before = snapshot(patched)
    assert run_check(patched)[0] == 0 and run_check(patched)[0] == 0
    assert snapshot(patched) == before
    assert [path.name.startswith("check-") for path in private_cache.iterdir()] == [True]
