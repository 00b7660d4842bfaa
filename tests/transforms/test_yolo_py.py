"""Before/after, idempotency and round-trip tests of the pure yolo.py (parse_model) transforms."""

from __future__ import annotations

import ast

import pytest

from tests import yolov5_trees
from yolopatch import catalog
from yolopatch.transforms import yolo_py

BEFORE = '''from models.common import (
    C3,
    Conv,
)


def parse_model(d, ch):
    for i, (f, n, m, args) in enumerate(d):
        if m in {
            Conv,
            C3,
        }:
            c1, c2 = ch[f], args[0]
            if m in {C3}:
                args.insert(2, n)
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        # TODO: keep me
        elif m in {Detect}:
            args.append([ch[x] for x in f])
        else:
            c2 = ch[f]
        ch.append(c2)
'''

AFTER = '''from models.common import (
    C3,
    Conv,
    SOCA,
)


def parse_model(d, ch):
    for i, (f, n, m, args) in enumerate(d):
        if m in {
            Conv,
            C3,
        }:
            c1, c2 = ch[f], args[0]
            if m in {C3}:
                args.insert(2, n)
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        # TODO: keep me
        elif m in {Detect}:
            args.append([ch[x] for x in f])
        elif m is SOCA:  # yolopatch: soca
            c1 = ch[f]
            c2 = c1
            args = [c1, c2, *args[1:]]
        else:
            c2 = ch[f]
        ch.append(c2)
'''


def test_register_before_after() -> None:
    assert yolo_py.register(BEFORE, "SOCA", "soca") == AFTER


def test_register_is_idempotent() -> None:
    assert yolo_py.register(AFTER, "SOCA", "soca") == AFTER


def test_unregister_round_trips() -> None:
    assert yolo_py.unregister(AFTER, "SOCA", "soca") == BEFORE


def test_two_modules_compose_and_revert_in_any_order() -> None:
    both = yolo_py.register(yolo_py.register(BEFORE, "SOCA", "soca"), "GAM", "gam")
    assert both.index("elif m is SOCA") < both.index("elif m is GAM") < both.index("else:")
    assert yolo_py.unregister(yolo_py.unregister(both, "SOCA", "soca"), "GAM", "gam") == BEFORE
    assert yolo_py.unregister(yolo_py.unregister(both, "GAM", "gam"), "SOCA", "soca") == BEFORE


def test_registrations_and_edit_detection() -> None:
    registered = yolo_py.registered_keys(AFTER)["soca"]
    assert AFTER.splitlines()[registered.line - 1].strip().startswith("elif m is SOCA:")
    assert not registered.edited
    edited = AFTER.replace("c2 = c1\n", "c2 = c1 * 2\n")
    assert yolo_py.registered_keys(edited)["soca"].edited


def test_hand_registration_in_the_conv_set_is_found_and_dropped() -> None:
    pasted = BEFORE.replace("            C3,\n        }:", "            C3,\n            SOCA,\n        }:")
    assert [(r.name, r.line) for r in yolo_py.foreign_registrations(pasted, ["SOCA"])] == [("SOCA", 12)]
    assert yolo_py.drop_foreign(pasted, "SOCA") == BEFORE


def test_nested_membership_test_is_not_taken_for_the_chain() -> None:
    # The nested `if m in {C3}` must not receive the branch: only the chain that lists Conv does.
    result = yolo_py.register(BEFORE, "SOCA", "soca")
    tree = ast.parse(result)
    nested = [node for node in ast.walk(tree) if isinstance(node, ast.If) and ast.unparse(node.test) == "m in {C3}"]
    assert len(nested) == 1
    assert all(not node.orelse for node in nested)


def test_missing_parse_model_is_reported() -> None:
    with pytest.raises(yolo_py.ParseModelNotFound):
        yolo_py.register("def other():\n    pass\n", "SOCA", "soca")


def test_crlf() -> None:
    source = BEFORE.replace("\n", "\r\n")
    result = yolo_py.register(source, "SOCA", "soca")
    assert "\n" not in result.replace("\r\n", "")
    assert yolo_py.unregister(result, "SOCA", "soca") == source
    assert not yolo_py.registered_keys(result)["soca"].edited


@pytest.mark.parametrize("version,layout", yolov5_trees.all_trees())
def test_real_yolo_py_round_trip(version: str, layout: str) -> None:
    root = yolov5_trees.source_tree(version, layout)
    source = (yolov5_trees.models_dir(root) / "yolo.py").read_bytes().decode("utf-8")
    facts = yolo_py.facts(source)
    assert facts.explicit_common_imports == (layout == "master")
    result = yolo_py.register(source, "SOCA", "soca")
    tests = [ast.unparse(node.test) for node in ast.walk(ast.parse(result)) if isinstance(node, ast.If)]
    assert "m is SOCA" in tests
    if layout == "master":
        assert "SOCA" in yolo_py.common_import_names(result)
    assert yolo_py.register(result, "SOCA", "soca") == result
    assert yolo_py.unregister(result, "SOCA", "soca") == source


def test_register_restores_an_edited_branch() -> None:
    edited = AFTER.replace("c2 = c1\n", "c2 = c1 * 2\n")
    assert yolo_py.register(edited, "SOCA", "soca") == AFTER


@pytest.mark.parametrize("version,layout", yolov5_trees.all_trees())
def test_batch_registration_equals_one_module_edits(version: str, layout: str) -> None:
    """Every catalogue module registered by one ``register_modules`` and by one ``register`` each (with a
    hand-edited branch among them restored); a third taken out by ``unregister_modules`` and one by one."""
    root = yolov5_trees.source_tree(version, layout)
    source = (yolov5_trees.models_dir(root) / "yolo.py").read_bytes().decode("utf-8")
    wanted = [(spec.class_name, spec.key, spec.registration) for spec in catalog.all_modules()]
    half = yolo_py.register_modules(yolo_py.parse(source), wanted[:10]).code
    assert "c2 = c1\n" not in source
    edited = half.replace("c2 = c1\n", "c2 = c1 * 2\n", 1)  # one of yolopatch's branches edited by hand
    assert edited != half
    reference = edited
    for class_name, key, registration in wanted:
        reference = yolo_py.register(reference, class_name, key, registration)
    batch = yolo_py.register_modules(yolo_py.parse(edited), wanted).code
    assert batch == reference and set(yolo_py.registered_keys(batch)) == {key for _c, key, _r in wanted}
    dropped = [(class_name, key) for class_name, key, _registration in wanted[::-3]]
    for class_name, key in dropped:
        reference = yolo_py.unregister(reference, class_name, key)
    assert yolo_py.unregister_modules(yolo_py.parse(batch), dropped).code == reference
    everything = [(class_name, key) for class_name, key, _registration in wanted]
    assert yolo_py.unregister_modules(yolo_py.parse(batch), everything).code == source
