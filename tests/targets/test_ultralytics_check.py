"""`yolopatch check` on real Ultralytics trees (8.0 to 8.4): clean after apply, each kind of drift in the
three files a module lives in, variants, checkpoints (issue 12: classes 8.4's safe loader rejects), leftovers
of killed runs, and which `ultralytics` the interpreter imports (issue 10). Also the cache of clean results."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import pytest
from typer.testing import CliRunner

from tests import ultralytics_trees
from tests.ultralytics_trees import ultralytics_tree  # noqa: F401 - the fixture
from tests.yolov5_trees import snapshot
from yolopatch import catalog, checkpoints
from yolopatch.checks import cache
from yolopatch.cli import app
from yolopatch.commands import check as check_module
from yolopatch.commands.apply import apply
from yolopatch.transforms.common_py import template_of
from yolopatch.targets import ultralytics_edits as edits

runner = CliRunner()
MakeTree = Callable[[str], Path]
TASKS = "ultralytics/nn/tasks.py"
INIT = "ultralytics/nn/modules/__init__.py"
MODULE = "ultralytics/nn/modules/yolopatch.py"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.mktemp("check-cache")
    monkeypatch.setenv("YOLOPATCH_CACHE_DIR", str(folder))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    return folder


@pytest.fixture(scope="module")
def patched_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8.4 tree with soca (exported from nn.modules) and cbam (a name Ultralytics exports itself) applied."""
    root = ultralytics_trees.make_tree("8.4", tmp_path_factory.mktemp("patched") / "tree")
    assert apply(root, ["soca", "cbam"]) == 0
    return root


@pytest.fixture
def patched(patched_source: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(patched_source, tmp_path / "patched"))


def run_check(root: Path, *args: str) -> Tuple[int, dict]:
    result = runner.invoke(app, ["check", "--repo", str(root), "--format", "json", *args])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def codes(document: dict) -> List[Tuple[str, str, Optional[int]]]:
    return [(f["code"], f["file"], f["line"]) for f in document["findings"]]


def line_of(path: Path, text: str, start: int = 1) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if number >= start and text in line)


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= count, old
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def write_checkpoint(path: Path, names: Sequence[Tuple[str, str]]) -> Path:
    """A torch-format (zip) checkpoint whose pickle references ``names`` as globals (nothing else)."""
    pickle = b"\x80\x02" + b"".join(b"c" + f"{module}\n{name}\n".encode() + b"0" for module, name in names) + b"N."
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("best/data.pkl", pickle)
        archive.writestr("best/version", "3\n")
    path.write_bytes(buffer.getvalue())
    return path


# ----------------------------------------------------------------------------------------------
# Clean trees


@pytest.mark.parametrize("version", list(ultralytics_trees.VERSIONS))
def test_every_version_is_clean_before_and_after_apply_all(ultralytics_tree: MakeTree, version: str) -> None:
    root = ultralytics_tree(version)
    code, document = run_check(root, "--no-cache")
    assert (code, document["findings"]) == (0, [])  # a tree yolopatch never touched
    assert apply(root, ["all"]) == 0
    before = snapshot(root)
    code, document = run_check(root, "--no-cache")
    assert (code, codes(document)) == (0, [])
    assert document["interpreter"]["ultralytics"] is None  # the test interpreter has no ultralytics
    assert snapshot(root) == before


def test_text_summary_and_note(patched: Path) -> None:
    result = runner.invoke(app, ["check", "--repo", str(patched)])
    assert result.exit_code == 0
    assert "ok: yolopatch's changes in" in result.stdout and "(2 module(s) applied, 4 generated variant(s))" in \
        result.stdout
    assert "cannot import ultralytics" in result.output and f"pip install -e {patched}" in result.output


# ----------------------------------------------------------------------------------------------
# Drift in the three files


def test_name_missing_from_tasks_import_list(patched: Path) -> None:
    tasks = patched / TASKS
    edit(tasks, "    SOCA,  # yolopatch: soca\n", "")
    code, document = run_check(patched)
    assert (code, codes(document)) == (1, [("missing-import", TASKS, line_of(tasks, "from ultralytics.nn.modules import"))])
    assert "KeyError: 'SOCA'" in document["findings"][0]["message"]
    assert document["findings"][0]["fix"].startswith("yolopatch apply soca --repo ")


def test_export_missing_from_init(patched: Path) -> None:
    init = patched / INIT
    edit(init, '    "SOCA",  # yolopatch: soca\n', "")
    code, document = run_check(patched)
    assert (code, codes(document)) == (1, [("missing-export", INIT, line_of(init, "from .yolopatch import SOCA"))])


def test_branch_deleted(patched: Path) -> None:
    tasks = patched / TASKS
    text = tasks.read_text(encoding="utf-8")
    start = text.index("        elif m is SOCA:  # yolopatch: soca\n")
    end = text.index("\n", text.index("args = [c1, c2", start)) + 1
    tasks.write_text(text[:start] + text[end:], encoding="utf-8")
    code, document = run_check(patched)
    assert (code, codes(document)) == (1, [("missing-registration", TASKS, line_of(tasks, "def parse_model("))])


def test_cbams_own_import_deleted(patched: Path) -> None:
    # CBAM is Ultralytics' own name: tasks.py imports yolopatch's straight from the module file
    tasks = patched / TASKS
    edit(tasks, "from ultralytics.nn.modules.yolopatch import CBAM  # yolopatch: cbam\n", "")
    code, document = run_check(patched)
    assert code == 1 and [c for c, _, _ in codes(document)] == ["missing-import"]
    assert "Ultralytics' own CBAM" in document["findings"][0]["message"]


def test_class_edited(patched: Path) -> None:
    module = patched / MODULE
    line = line_of(module, "self.", line_of(module, "class SOCA("))
    lines = module.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[line - 1] = lines[line - 1].rstrip("\n") + "  # tuned\n"
    module.write_text("".join(lines), encoding="utf-8")
    code, document = run_check(patched)
    assert (code, codes(document)) == (1, [("edited-class", MODULE, line)])
    assert "--replace" in document["findings"][0]["fix"]


def test_class_deleted_but_wiring_kept(patched: Path) -> None:
    module = patched / MODULE
    spec = catalog.get("soca")
    module.write_text(edits.remove_class(module.read_text(encoding="utf-8"), "soca", "SOCA", (), template_of(spec)),
                      encoding="utf-8")
    code, document = run_check(patched)
    tasks, init = patched / TASKS, patched / INIT
    assert (code, codes(document)) == (1, [
        ("missing-class", INIT, line_of(init, "from .yolopatch import SOCA")),
        ("missing-class", TASKS, line_of(tasks, "elif m is SOCA:")),
    ])


def test_rebinding_and_channel_set_shadow(patched: Path) -> None:
    tasks = patched / TASKS
    tasks.write_text(tasks.read_text(encoding="utf-8") + "\nSOCA = torch.nn.Identity\n", encoding="utf-8")
    code, document = run_check(patched)
    assert (code, codes(document)) == (1, [("shadowed", TASKS, len(tasks.read_text(encoding="utf-8").splitlines()))])
    assert "bound again" in document["findings"][0]["message"]


def test_module_listed_in_base_modules_is_shadowed(patched: Path) -> None:
    # the blog recipe: add the class to base_modules; parse_model then never reaches yolopatch's branch
    tasks = patched / TASKS
    edit(tasks, "            Conv,\n", "            Conv,\n            SOCA,\n")
    code, document = run_check(patched)
    assert code == 1
    assert ("shadowed", TASKS, line_of(tasks, "            SOCA,", line_of(tasks, "def parse_model("))) in codes(document)


def test_unknown_marker_and_unparseable_tasks(patched: Path) -> None:
    tasks = patched / TASKS
    edit(tasks, "import torch\n", "import torch  # yolopatch: from-the-future\n")
    assert codes(run_check(patched)[1]) == [("unknown-yolopatch-module", TASKS, line_of(tasks, "from-the-future"))]
    tasks.write_text(tasks.read_text(encoding="utf-8") + "\ndef broken(:\n", encoding="utf-8")
    code, document = run_check(patched)
    assert code == 1 and [c for c, _, _ in codes(document)] == ["unreadable"]


# ----------------------------------------------------------------------------------------------
# Variants, leftovers


def test_variant_edited_and_base_changed(patched: Path) -> None:
    variant = patched / "ultralytics/cfg/models/v8/yolov8-soca.yaml"
    edit(variant, "nc: 80", "nc: 3")
    code, document = run_check(patched)
    assert code == 1 and [(c, f) for c, f, _ in codes(document)] == [("edited-variant", variant.relative_to(patched).as_posix())]
    base = patched / "ultralytics/cfg/models/11/yolo11.yaml"
    edit(base, "nc: 80", "nc: 5")
    found = [(c, f) for c, f, _ in codes(run_check(patched)[1])]
    assert ("stale-variant", "ultralytics/cfg/models/11/yolo11-soca.yaml") in found


def test_journal_and_leftover(patched: Path) -> None:
    (patched / ".yolopatch").mkdir(exist_ok=True)
    (patched / ".yolopatch" / "journal-123.json").write_text("{}", encoding="utf-8")
    (patched / "ultralytics/nn/.tasks.py.123-abcd.yolopatch-tmp").write_text("x", encoding="utf-8")
    code, document = run_check(patched)
    assert code == 1 and sorted(c for c, _, _ in codes(document)) == ["interrupted-run", "leftover-file"]


# ----------------------------------------------------------------------------------------------
# Checkpoints (issue 12)


def test_checkpoint_with_a_class_outside_nn_modules_warns(patched: Path) -> None:
    safe = [("ultralytics.nn.tasks", "DetectionModel"), ("ultralytics.nn.modules.conv", "Conv"),
            ("ultralytics.nn.modules.yolopatch", "SOCA"), ("collections", "OrderedDict"),
            ("torch._utils", "_rebuild_tensor_v2")]
    write_checkpoint(patched / "runs/detect/train/weights/best.pt", safe)
    assert run_check(patched)[0] == 0
    bad = write_checkpoint(patched / "runs/detect/train2/weights/last.pt",
                           [*safe, ("ultralytics.nn.attention", "SOCA"), ("my_blocks", "Gate")])
    code, document = run_check(patched)
    assert (code, codes(document)) == (1, [("checkpoint-foreign-class", bad.relative_to(patched).as_posix(), None)])
    finding = document["findings"][0]
    assert finding["severity"] == "warning"
    assert "my_blocks.Gate" in finding["message"] and "ultralytics.nn.attention.SOCA" in finding["message"]
    assert "yolopatch apply soca" in finding["fix"]


def test_checkpoint_needing_a_module_the_tree_lacks(patched: Path) -> None:
    name = catalog.get("gam").class_name
    write_checkpoint(patched / "best.pt", [("ultralytics.nn.modules.yolopatch", name)])
    code, document = run_check(patched)
    assert (code, codes(document)) == (1, [("checkpoint-needs-module", "best.pt", None)])
    assert "yolopatch apply gam" in document["findings"][0]["fix"]


# ----------------------------------------------------------------------------------------------
# Which ultralytics the interpreter imports (issue 10)


def _other_copy(folder: Path) -> Path:
    package = folder / "ultralytics"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise SystemExit('imported: check must only look it up')\n", encoding="utf-8")
    return package


def test_another_ultralytics_on_the_path_fails(patched: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = _other_copy(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    code, document = run_check(patched)
    assert (code, codes(document)) == (1, [("other-ultralytics-imported", "ultralytics/__init__.py", None)])
    finding = document["findings"][0]
    assert str(other) in finding["message"] and "KeyError" in finding["message"]
    assert f"pip install -e {patched}" in finding["fix"] and "pip uninstall -y ultralytics" in finding["fix"]
    assert document["interpreter"] == {"python": document["interpreter"]["python"], "ultralytics": str(other),
                                       "is_this_tree": False}


def test_this_tree_on_the_path_is_fine(patched: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(patched))
    code, document = run_check(patched)
    assert (code, document["findings"]) == (0, [])
    assert document["interpreter"]["is_this_tree"] is True
    assert document["interpreter"]["ultralytics"] == str(patched / "ultralytics")
    text = runner.invoke(app, ["check", "--repo", str(patched)])
    assert text.exit_code == 0 and f"loads this tree ({patched / 'ultralytics'})" in text.output


def test_python_option(patched: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = runner.invoke(app, ["check", "--repo", str(patched), "--python", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no Python interpreter" in missing.output
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\nexit 3\n", encoding="utf-8")
    broken.chmod(0o755)
    result = runner.invoke(app, ["check", "--repo", str(patched), "--python", str(broken)])
    assert result.exit_code == 2 and "cannot ask" in result.output


def test_installed_copy_needs_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    site = tmp_path / "lib" / "site-packages"
    package = Path(shutil.copytree(ultralytics_trees.source_tree("8.4") / "ultralytics", site / "ultralytics"))
    refused = runner.invoke(app, ["check", "--repo", str(package)])
    assert refused.exit_code == 2 and "--installed" in refused.output
    monkeypatch.setenv("PYTHONPATH", str(site))  # the interpreter imports this very copy
    code, document = run_check(package, "--installed")
    assert (code, document["findings"], document["interpreter"]["is_this_tree"]) == (0, [], True)
    assert runner.invoke(app, ["check", "--repo", str(package)]).exit_code == 2  # a cached "ok" does not lift it


# ----------------------------------------------------------------------------------------------
# The cache of clean results


class Spy:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = check_module.collect

        def counted(*args: object, **kwargs: object) -> object:
            self.calls += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(check_module, "collect", counted)


def test_cache_replays_clean_and_misses_on_every_input(patched: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    assert run_check(patched) == (0, run_check(patched)[1]) and spy.calls == 1  # the second run is the cache's
    clean = run_check(patched)[1]
    assert spy.calls == 1 and clean["interpreter"]["ultralytics"] is None

    def drifts(change: Callable[[], None], undo: Callable[[], None], code: str) -> None:
        calls = spy.calls
        change()
        result, document = run_check(patched)
        assert (result, [c for c, _, _ in codes(document)][:1]) == (1, [code]) and spy.calls == calls + 1
        undo()
        assert run_check(patched) == (0, clean) and spy.calls == calls + 1  # same inputs: the cache again

    tasks, module = patched / TASKS, patched / MODULE
    for path, old, new, code in [
        (tasks, "    SOCA,  # yolopatch: soca\n", "", "missing-import"),
        (module, "class SOCA(", "class SOCA(  # edited\n", "edited-class"),
        (patched / "ultralytics/cfg/models/v8/yolov8-soca.yaml", "nc: 80", "nc: 3", "edited-variant"),
    ]:
        text = path.read_bytes()
        drifts(lambda: edit(path, old, new), lambda: path.write_bytes(text), code)
    journal = patched / ".yolopatch" / "journal-1.json"
    drifts(lambda: (journal.parent.mkdir(exist_ok=True), journal.write_text("{}")),
           lambda: (journal.unlink(), journal.parent.rmdir()), "interrupted-run")
    checkpoint = patched / "runs/detect/train/weights/best.pt"
    drifts(lambda: write_checkpoint(checkpoint, [("my_blocks", "Gate")]), checkpoint.unlink, "checkpoint-foreign-class")
    _other_copy(tmp_path / "site")
    drifts(lambda: monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site")),
           lambda: monkeypatch.delenv("PYTHONPATH"), "other-ultralytics-imported")


def test_cache_patterns_follow_checkpoints() -> None:
    for fmt in (checkpoints.YOLOV5, checkpoints.format_for("ultralytics")):
        assert tuple(fmt.patterns) == cache.CHECKPOINT_PATTERNS
