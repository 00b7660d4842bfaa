"""Before/after, idempotency and round-trip tests of the pure Ultralytics registration edits, on small
texts and on the real tasks.py and nn/modules/__init__.py of every pinned Ultralytics release."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import List, Sequence

import pytest

from tests import ultralytics_trees
from yolopatch import catalog
from yolopatch.catalog import ModuleSpec
from yolopatch.targets import ultralytics as U
from yolopatch.targets import ultralytics_edits as ue
from yolopatch.transforms import common_py
from yolopatch.transforms.common_py import Template, template_of

REPO = Path(__file__).resolve().parents[2]
SGE = Template(key="sge", version=1, class_name="SpatialGroupEnhance",
               source=(REPO / "templates" / "sge.py").read_text(encoding="utf-8"))

# What parse_model's channel set looks like in each pinned release.
CHANNEL_SETS = {"8.0": "tuple", "8.1": "set", "8.2": "set", "8.3.0": "set", "8.3": "named", "8.4": "named"}

TASKS_BEFORE = '''import torch

from ultralytics.nn.modules import (
    C2f,
    Conv,  # the basic block
)


def parse_model(d, ch):
    base_modules = frozenset(
        {
            Conv,
            C2f,
        }
    )
    repeat_modules = frozenset({C2f})
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        if m in base_modules:
            c1, c2 = ch[f], args[0]
            if m in repeat_modules:
                args.insert(2, n)
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        # heads
        elif m in {Detect}:
            args.append([ch[x] for x in f])
        else:
            c2 = ch[f]
        ch.append(c2)
'''

TASKS_AFTER = '''import torch

from ultralytics.nn.modules import (
    C2f,
    Conv,  # the basic block
    SpatialGroupEnhance,  # yolopatch: sge
)


def parse_model(d, ch):
    base_modules = frozenset(
        {
            Conv,
            C2f,
        }
    )
    repeat_modules = frozenset({C2f})
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        if m in base_modules:
            c1, c2 = ch[f], args[0]
            if m in repeat_modules:
                args.insert(2, n)
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        # heads
        elif m in {Detect}:
            args.append([ch[x] for x in f])
        elif m is SpatialGroupEnhance:  # yolopatch: sge
            c1 = ch[f]
            c2 = c1
            args = [c1, c2, *args[1:]]
        else:
            c2 = ch[f]
        ch.append(c2)
'''

INIT_BEFORE = '''"""Modules."""

from .conv import CBAM, Conv
from .head import (
    Detect,
    Segment,
)

__all__ = (
    "CBAM",
    "Conv",
    "Detect",
    "Segment",
)
'''

INIT_AFTER = '''"""Modules."""

from .conv import CBAM, Conv
from .head import (
    Detect,
    Segment,
)
from .yolopatch import SpatialGroupEnhance  # yolopatch: sge

__all__ = (
    "CBAM",
    "Conv",
    "Detect",
    "Segment",
    "SpatialGroupEnhance",  # yolopatch: sge
)
'''


def apply_tasks(source: str, name: str, key: str, shape: str = ue.WIDTH) -> str:
    return ue.register(ue.add_import_name(source, ue.MODULES_PACKAGE, name, key), name, key, shape)


def revert_tasks(source: str, name: str, key: str) -> str:
    return ue.remove_import_name(ue.unregister(source, key), ue.MODULES_PACKAGE, name)


def apply_init(source: str, name: str, key: str) -> str:
    return ue.add_all_name(ue.add_marked_import(source, ue.OWN_MODULE, name, key), name, key)


def revert_init(source: str, name: str, key: str) -> str:
    return ue.remove_all_name(ue.remove_marked_import(source, key), name)


def added_lines(before: str, after: str) -> List[str]:
    """The lines of ``after`` that ``before`` lacks, asserting that no line of ``before`` went missing."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    remaining = list(new)
    for line in old:
        assert line in remaining, f"line lost: {line!r}"
        remaining.remove(line)
    return remaining


# --- small texts: exact before/after ---------------------------------------------------------------------


def test_tasks_before_after() -> None:
    assert apply_tasks(TASKS_BEFORE, "SpatialGroupEnhance", "sge") == TASKS_AFTER


def test_tasks_idempotent_and_round_trip() -> None:
    assert apply_tasks(TASKS_AFTER, "SpatialGroupEnhance", "sge") == TASKS_AFTER
    assert revert_tasks(TASKS_AFTER, "SpatialGroupEnhance", "sge") == TASKS_BEFORE
    assert revert_tasks(TASKS_BEFORE, "SpatialGroupEnhance", "sge") == TASKS_BEFORE


def test_no_width_branch_passes_every_yaml_arg() -> None:
    after = ue.register(TASKS_BEFORE, "SimAM", "simam", ue.NO_WIDTH)
    assert "        elif m is SimAM:  # yolopatch: simam\n" in after
    assert "            args = [c1, c2, *args]\n" in after
    assert "*args[1:]" not in after.split("SimAM")[1]
    assert ue.unregister(after, "simam") == TASKS_BEFORE


def test_unknown_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        ue.register(TASKS_BEFORE, "X", "x", "wide")


def test_register_restores_an_edited_branch() -> None:
    edited = TASKS_AFTER.replace("            c2 = c1\n", "            c2 = 2 * c1\n")
    assert ue.register(edited, "SpatialGroupEnhance", "sge") == ue.register(TASKS_AFTER, "SpatialGroupEnhance", "sge")
    assert ue.register(edited, "SpatialGroupEnhance", "sge") == TASKS_AFTER


def test_init_before_after_and_round_trip() -> None:
    after = apply_init(INIT_BEFORE, "SpatialGroupEnhance", "sge")
    assert after == INIT_AFTER
    assert apply_init(after, "SpatialGroupEnhance", "sge") == after
    assert revert_init(after, "SpatialGroupEnhance", "sge") == INIT_BEFORE


@pytest.mark.parametrize("before, after", [
    ('__all__ = ("A", "B")\n', '__all__ = ("A", "B", "X")\n'),
    ('__all__ = ("A",)\n', '__all__ = ("A", "X",)\n'),
    ("__all__ = ['A']\n", "__all__ = ['A', 'X']\n"),
    ("__all__ = []\n", '__all__ = ["X"]\n'),
    ("__all__ = ()\n", '__all__ = ("X",)\n'),
    ('__all__ = [\n    "A",\n    "B"  # last\n]\n',
     '__all__ = [\n    "A",\n    "B",  # last\n    "X"  # yolopatch: x\n]\n'),
    ('__all__ = [\n    "A",\n    "B",  # last\n\n]\n',
     '__all__ = [\n    "A",\n    "B",  # last\n    "X",  # yolopatch: x\n\n]\n'),
])
def test_all_layouts(before: str, after: str) -> None:
    assert ue.add_all_name(before, "X", "x") == after
    assert ue.add_all_name(after, "X", "x") == after
    assert ue.remove_all_name(after, "X") == before
    assert "X" in ue.all_names(after)  # type: ignore[operator]
    assert ast.literal_eval(after.split("=", 1)[1].strip()) is not None


@pytest.mark.parametrize("before, after", [
    ("from a import B, C\n", "from a import B, C, X\n"),
    ("from a import (B, C)\n", "from a import (B, C, X)\n"),
    ("from a import (\n    B,\n    C\n)\n", "from a import (\n    B,\n    C,\n    X  # yolopatch: x\n)\n"),
    ("from a import (\n    B,\n    C,  # c\n)\n", "from a import (\n    B,\n    C,  # c\n    X,  # yolopatch: x\n)\n"),
    ("from a import (\n    C,\n)\n", "from a import (\n    C,\n    X,  # yolopatch: x\n)\n"),
])
def test_import_layouts(before: str, after: str) -> None:
    assert ue.add_import_name(before, "a", "X", "x") == after
    assert ue.add_import_name(after, "a", "X", "x") == after
    assert ue.remove_import_name(after, "a", "X") == before
    assert ue.import_names(after, "a")[-1] == "X"


def test_two_names_come_out_in_either_order() -> None:
    for first, second in (("X", "Y"), ("Y", "X")):
        both = ue.add_all_name(ue.add_all_name(INIT_BEFORE, "X", "x"), "Y", "y")
        assert ue.remove_all_name(ue.remove_all_name(both, first), second) == INIT_BEFORE
        both = apply_tasks(apply_tasks(TASKS_BEFORE, "X", "x"), "Y", "y")
        keys = {"X": "x", "Y": "y"}
        once = revert_tasks(both, first, keys[first])
        assert revert_tasks(once, second, keys[second]) == TASKS_BEFORE


def test_missing_lists_are_reported() -> None:
    with pytest.raises(ue.ListNotFound):
        ue.add_import_name("import torch\n", ue.MODULES_PACKAGE, "X", "x")
    with pytest.raises(ue.ListNotFound):
        ue.add_all_name("x = 1\n", "X", "x")
    with pytest.raises(ue.ParseModelNotFound):
        ue.register("def parse_model(d, ch):\n    if m in {Foo}:\n        pass\n", "X", "x")


def test_removing_the_only_imported_name_is_refused() -> None:
    with pytest.raises(ValueError, match="refusing"):
        ue.remove_import_name("from a import X\n", "a", "X")


@pytest.mark.parametrize("stub", [ue.MODULE_FILE_STUB, ue.FIRST_MODULE_FILE_STUB], ids=["stub", "first-stub"])
def test_module_file_from_stub_and_back(stub: str) -> None:
    """From today's stub (which imports math) and from the first one (module files created by earlier
    builds: SGE's ``import math`` is added, marked, and taken out again)."""
    one = ue.insert_class(stub, SGE)
    assert "class SpatialGroupEnhance(nn.Module):  # yolopatch: sge v1 sha256:" in one
    assert ("import math  # yolopatch: added import\n" in one) == (stub == ue.FIRST_MODULE_FILE_STUB)
    assert ue.all_names(one) == ["SpatialGroupEnhance"]
    assert ue.insert_class(one, SGE) == one
    assert not ue.is_stub(one)
    body = ast.parse(one).body  # valid Python (without importing torch here); the class is defined
    assert [n.name for n in body if isinstance(n, ast.ClassDef)] == ["SpatialGroupEnhance"]
    back = ue.remove_class(one, "sge", "SpatialGroupEnhance")
    assert back == stub and ue.is_stub(back)


def test_the_stub_imports_what_every_template_imports() -> None:
    """So that inserting the zoo adds no import statement (adding one imports libcst's codemod package)."""
    needed = {spec for module in catalog.all_modules() for spec in common_py.template_imports(template_of(module))}
    stub = ue.parse(ue.MODULE_FILE_STUB)
    assert common_py.add_imports(stub, sorted(needed, key=str)) is stub


def test_names_yolopatch_added_are_not_taken() -> None:
    assert ue.clashes(["CBAM", "SpatialGroupEnhance"], INIT_BEFORE, TASKS_BEFORE) == ["CBAM"]
    init = apply_init(INIT_BEFORE, "SpatialGroupEnhance", "sge")
    tasks = apply_tasks(TASKS_BEFORE, "SpatialGroupEnhance", "sge")
    assert ue.clashes(["CBAM", "SpatialGroupEnhance"], init, tasks) == ["CBAM"]
    assert "C2f" in ue.resolvable_names(tasks) and "parse_model" in ue.resolvable_names(tasks)


# --- the real files of every pinned release --------------------------------------------------------------


@pytest.fixture(scope="module", params=list(ultralytics_trees.VERSIONS))
def version(request: pytest.FixtureRequest) -> str:
    return request.param


def test_channel_set_of_each_release(version: str) -> None:
    found = ue.channel_set(ultralytics_trees.read(version, ue.TASKS))
    assert found.kind == CHANNEL_SETS[version]
    assert found.name == ("base_modules" if found.kind == "named" else None)
    assert {"Conv", "C2f", "SPPF"} <= set(found.members)


def test_real_tasks_register_idempotent_round_trip(version: str) -> None:
    before = ultralytics_trees.read(version, ue.TASKS)
    after = apply_tasks(before, "SpatialGroupEnhance", "sge")
    assert apply_tasks(after, "SpatialGroupEnhance", "sge") == after
    assert revert_tasks(after, "SpatialGroupEnhance", "sge") == before
    assert added_lines(before, after) == [
        "    SpatialGroupEnhance,  # yolopatch: sge\n",
        "        elif m is SpatialGroupEnhance:  # yolopatch: sge\n",
        "            c1 = ch[f]\n",
        "            c2 = c1\n",
        "            args = [c1, c2, *args[1:]]\n",
    ]
    assert ue.import_names(after, ue.MODULES_PACKAGE)[-1] == "SpatialGroupEnhance"
    assert ue.registered(after) == {"sge": "SpatialGroupEnhance"} and ue.registered(before) == {}
    _assert_branch_before_fallback(after, "SpatialGroupEnhance")


def _assert_branch_before_fallback(source: str, name: str) -> None:
    """In Python's own reading of the file: parse_model's chain reaches `m is name` and then the
    `else: c2 = ch[f]` fallback."""
    function = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "parse_model")
    chains = [n for n in ast.walk(function) if isinstance(n, ast.If) and isinstance(n.test, ast.Compare)
              and isinstance(n.test.left, ast.Name) and n.test.left.id == "m"
              and isinstance(n.test.ops[0], ast.Is) and ast.unparse(n.test.comparators[0]) == name]
    assert len(chains) == 1
    assert ast.unparse(chains[0].orelse[0]) == "c2 = ch[f]"


def test_real_tasks_two_modules_either_order(version: str) -> None:
    before = ultralytics_trees.read(version, ue.TASKS)
    both = apply_tasks(apply_tasks(before, "SpatialGroupEnhance", "sge"), "SimAM", "simam", ue.NO_WIDTH)
    assert ue.registered(both) == {"sge": "SpatialGroupEnhance", "simam": "SimAM"}
    assert revert_tasks(revert_tasks(both, "SpatialGroupEnhance", "sge"), "SimAM", "simam") == before
    assert revert_tasks(revert_tasks(both, "SimAM", "simam"), "SpatialGroupEnhance", "sge") == before


def test_real_tasks_with_windows_newlines(version: str) -> None:
    before = ultralytics_trees.read(version, ue.TASKS).replace("\n", "\r\n")
    after = apply_tasks(before, "SpatialGroupEnhance", "sge")
    assert "        elif m is SpatialGroupEnhance:  # yolopatch: sge\r\n            c1 = ch[f]\r\n" in after
    assert after.count("\n") == after.count("\r\n")
    assert revert_tasks(after, "SpatialGroupEnhance", "sge") == before


def test_real_init_idempotent_round_trip(version: str) -> None:
    before = ultralytics_trees.read(version, ue.MODULES_INIT)
    after = apply_init(before, "SpatialGroupEnhance", "sge")
    assert apply_init(after, "SpatialGroupEnhance", "sge") == after
    assert revert_init(after, "SpatialGroupEnhance", "sge") == before
    assert added_lines(before, after) == [
        "from .yolopatch import SpatialGroupEnhance  # yolopatch: sge\n",
        '    "SpatialGroupEnhance",  # yolopatch: sge\n',
    ]
    assert ue.all_names(after)[-1] == "SpatialGroupEnhance"  # type: ignore[index]
    imports = [n for n in ast.parse(after).body if isinstance(n, ast.ImportFrom)]
    assert (imports[-1].module, imports[-1].level, imports[-1].names[0].name) == ("yolopatch", 1, "SpatialGroupEnhance")


def test_real_init_with_windows_newlines(version: str) -> None:
    before = ultralytics_trees.read(version, ue.MODULES_INIT).replace("\n", "\r\n")
    after = apply_init(before, "SpatialGroupEnhance", "sge")
    assert "from .yolopatch import SpatialGroupEnhance  # yolopatch: sge\r\n" in after
    assert '    "SpatialGroupEnhance",  # yolopatch: sge\r\n' in after
    assert after.count("\n") == after.count("\r\n")
    assert revert_init(after, "SpatialGroupEnhance", "sge") == before


def test_real_clashes(version: str) -> None:
    init = ultralytics_trees.read(version, ue.MODULES_INIT)
    tasks = ultralytics_trees.read(version, ue.TASKS)
    names = ["CBAM", "ChannelAttention", "SpatialAttention", "SpatialGroupEnhance", "SOCA", "DetectionModel"]
    assert ue.clashes(names, init, tasks) == ["CBAM", "ChannelAttention", "SpatialAttention", "DetectionModel"]
    assert {"CBAM", "ChannelAttention", "SpatialAttention"} <= ue.exported_names(init)
    assert "CBAM" not in ue.resolvable_names(tasks)  # exported, not imported: `[-1, 1, CBAM, [...]]` fails today
    assert {"Conv", "C2f", "Detect", "DetectionModel", "torch", "nn"} <= ue.resolvable_names(tasks)
    applied = apply_init(init, "SpatialGroupEnhance", "sge"), apply_tasks(tasks, "SpatialGroupEnhance", "sge")
    assert ue.clashes(["SpatialGroupEnhance"], *applied) == []


# --- batch edits (one parse per file) against the one-module edits, all 21 modules ------------------------
# The one-module reference parses and prints tasks.py twice per module (~0.2 s each): it is nearly all of
# these tests' time, 15 to 30 s a release on the shared 2-core machine (the batch side takes ~1 s).


def one_at_a_time_apply(texts: U.Texts, specs: Sequence[ModuleSpec]) -> U.Texts:
    """What `apply` did before the batch edits: each module wired by the one-module text functions, each
    parsing the text the previous one printed. The module file is left alone (see the test below)."""
    init, tasks = texts.init, texts.tasks
    for spec in specs:
        if U.exported_upstream(texts, spec.class_name):
            tasks = ue.add_marked_import(tasks, U.OWN_PACKAGE_MODULE, spec.class_name, spec.key)
        else:
            init = ue.add_all_name(ue.add_marked_import(init, ue.OWN_MODULE, spec.class_name, spec.key),
                                   spec.class_name, spec.key)
            tasks = ue.add_import_name(tasks, ue.MODULES_PACKAGE, spec.class_name, spec.key)
        tasks = ue.register(tasks, spec.class_name, spec.key, U.SHAPES[spec.registration])
    return U.Texts(texts.module, init, tasks)


def one_at_a_time_revert(texts: U.Texts, keys: Sequence[str]) -> U.Texts:
    """What `revert` did before the batch edits, one module after the other (module file left alone)."""
    init, tasks = texts.init, texts.tasks
    for key in keys:
        spec = catalog.get(key)
        if U.exported_upstream(texts, spec.class_name):
            tasks = ue.remove_marked_import(tasks, key)
        else:
            init = ue.remove_all_name(ue.remove_marked_import(init, key), spec.class_name)
            tasks = ue.remove_import_name(tasks, ue.MODULES_PACKAGE, spec.class_name)
        tasks = ue.unregister(tasks, key)
    return U.Texts(texts.module, init, tasks)


def test_batch_edits_equal_one_module_edits_for_all_modules(version: str) -> None:
    """Byte for byte: the plan's batch edits (each file parsed once) and the one-module functions (a parse
    per edit) give the same __init__.py and tasks.py, applying all 21 modules, then reverting seven of them
    in another order (CBAM, exported upstream, among them); reverting the rest gives the release back."""
    clean = U.Texts(None, ultralytics_trees.read(version, ue.MODULES_INIT), ultralytics_trees.read(version, ue.TASKS))
    specs = list(catalog.all_modules())
    applied = U.with_modules(clean, specs)
    reference = one_at_a_time_apply(clean, specs)
    assert (applied.init, applied.tasks) == (reference.init, reference.tasks)
    assert set(ue.registered(applied.tasks)) == {spec.key for spec in specs}
    some = ["cbam", *[spec.key for spec in specs[::-3] if spec.key != "cbam"]][:7]
    reverted = U.without_modules(applied, some)
    reference = one_at_a_time_revert(applied, some)
    assert (reverted.init, reverted.tasks) == (reference.init, reference.tasks)
    assert set(ue.registered(reverted.tasks)) == {spec.key for spec in specs} - set(some)
    rest = U.without_modules(reverted, [spec.key for spec in specs if spec.key not in some])
    assert (rest.module, rest.init, rest.tasks) == (None, clean.init, clean.tasks)


def test_batch_module_file_equals_one_module_edits() -> None:
    """The module file (the same in every release): 21 classes inserted by one ``insert_classes`` and by 21
    ``insert_class`` calls; a third of them taken out by ``remove_classes`` and ``remove_class``."""
    specs = list(catalog.all_modules())
    reference = ue.MODULE_FILE_STUB
    for spec in specs:
        reference = ue.insert_class(reference, template_of(spec))
    applied = ue.insert_classes(ue.parse(ue.MODULE_FILE_STUB), [template_of(spec) for spec in specs]).code
    assert applied == reference and ue.all_names(applied) == [spec.class_name for spec in specs]
    removed = [(spec.key, spec.class_name, template_of(spec)) for spec in specs[::-3]]
    kept = [spec for spec in specs if spec not in specs[::-3]]
    still_needed = [need for spec in kept for need in common_py.template_imports(template_of(spec))]
    for key, class_name, template in removed:
        reference = ue.remove_class(reference, key, class_name, still_needed, template)
    assert ue.remove_classes(ue.parse(applied), removed, still_needed).code == reference
    assert ue.all_names(reference) == [spec.class_name for spec in kept]
