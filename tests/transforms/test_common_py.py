"""Before/after, idempotency and round-trip tests of the pure common.py transforms."""

from __future__ import annotations

import ast

import pytest

from tests import yolov5_trees
from yolopatch.transforms import common_py, markers
from yolopatch.transforms.common_py import Template

TEMPLATE = Template(
    key="demo",
    version=3,
    class_name="Demo",
    source='''"""Demo template."""
import math
import torch
import torch.nn as nn
import torch.nn.functional as F

YOLOPATCH = {"key": "demo"}


class Demo(nn.Module):
    """Gate x by itself.

    Two lines of docstring keep the newline test honest.
    """

    def __init__(self, c1, c2=None):
        super().__init__()
        self.scale = math.sqrt(c1)

    def forward(self, x):
        return x * torch.sigmoid(F.relu(x) / self.scale)


def _DemoHelper(x):
    return x
''',
)

BEFORE = '''"""A small common.py."""
import math

import torch
import torch.nn as nn


def autopad(k):  # keep this comment
    return k // 2


class Conv(nn.Module):
    pass


if __name__ == "__main__":
    print("main")
'''

AFTER = '''"""A small common.py."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F  # yolopatch: added import


def autopad(k):  # keep this comment
    return k // 2


class Conv(nn.Module):
    pass


class Demo(nn.Module):  # yolopatch: demo v3 sha256:{digest}
    """Gate x by itself.

    Two lines of docstring keep the newline test honest.
    """

    def __init__(self, c1, c2=None):
        super().__init__()
        self.scale = math.sqrt(c1)

    def forward(self, x):
        return x * torch.sigmoid(F.relu(x) / self.scale)


def _DemoHelper(x):  # yolopatch: demo
    return x


if __name__ == "__main__":
    print("main")
'''


def test_insert_before_after() -> None:
    expected = AFTER.replace("{digest}", common_py.template_digest(TEMPLATE))
    assert common_py.insert(BEFORE, TEMPLATE) == expected


def test_insert_is_idempotent() -> None:
    once = common_py.insert(BEFORE, TEMPLATE)
    assert common_py.insert(once, TEMPLATE) == once


def test_remove_round_trips() -> None:
    assert common_py.remove(common_py.insert(BEFORE, TEMPLATE), "demo") == BEFORE


def test_remove_keeps_import_another_module_still_needs() -> None:
    other = Template("other", 1, "Other", TEMPLATE.source.replace("Demo", "Other"))
    both = common_py.insert(common_py.insert(BEFORE, TEMPLATE), other)
    left = common_py.remove(both, "demo", still_needed=common_py.template_imports(other))
    assert "import torch.nn.functional as F  # yolopatch: added import" in left
    assert common_py.remove(left, "other") == BEFORE


def test_existing_import_is_not_added_again() -> None:
    source = BEFORE.replace("import torch.nn as nn\n", "import torch.nn as nn\nimport torch.nn.functional as F\n")
    result = common_py.insert(source, TEMPLATE)
    assert result.count("torch.nn.functional") == 1
    assert common_py.remove(result, "demo") == source


def test_crlf_file_stays_crlf() -> None:
    source = BEFORE.replace("\n", "\r\n")
    result = common_py.insert(source, TEMPLATE)
    assert "\n" not in result.replace("\r\n", "")
    assert common_py.remove(result, "demo") == source
    assert not common_py.find_modules(result)["demo"].edited


def test_find_modules_reports_version_line_and_edits() -> None:
    result = common_py.insert(BEFORE, TEMPLATE)
    found = common_py.find_modules(result)["demo"]
    assert (found.version, found.class_name) == (3, "Demo")
    assert result.splitlines()[found.line - 1].startswith("class Demo(nn.Module):")
    edited = result.replace("return x\n", "return x + 1\n")
    assert common_py.find_modules(edited)["demo"].edited


def test_newer_template_updates_in_place() -> None:
    newer = Template("demo", 4, "Demo", TEMPLATE.source.replace("return x\n", "return x * 1\n"))
    old = common_py.insert(BEFORE, TEMPLATE)
    updated = common_py.insert(old, newer)
    assert updated.count("class Demo(") == 1
    assert "v4 sha256:" + common_py.template_digest(newer) in updated
    assert common_py.remove(updated, "demo") == BEFORE


def test_hand_pasted_class_is_foreign_and_replace_swaps_it() -> None:
    pasted = BEFORE.replace("class Conv(", "class Demo(nn.Module):\n    pass\n\n\nclass Conv(")
    foreign = common_py.find_foreign_classes(pasted, ["Demo"])
    assert [(f.name, f.line) for f in foreign] == [("Demo", 12)]
    swapped = common_py.insert(pasted, TEMPLATE, replace_foreign=True)
    assert swapped.count("class Demo(") == 1
    assert common_py.find_foreign_classes(swapped, ["Demo"]) == []


def test_markers_parse() -> None:
    import libcst as cst

    assert markers.parse(cst.Comment("# yolopatch: soca v2 sha256:abc")) == markers.Marker("soca", 2, "abc")
    assert markers.parse(cst.Comment("# yolopatch: soca")) == markers.Marker("soca")
    assert markers.parse(cst.Comment("# something else")) is None


@pytest.mark.parametrize("version", list(yolov5_trees.VERSIONS))
def test_real_common_py_round_trip(version: str) -> None:
    path = yolov5_trees.source_tree(version, "checkout") / "models" / "common.py"
    source = path.read_bytes().decode("utf-8")
    result = common_py.insert(source, TEMPLATE)
    names = [node.name for node in ast.parse(result).body if isinstance(node, (ast.ClassDef, ast.FunctionDef))]
    assert "Demo" in names and "_DemoHelper" in names
    assert common_py.insert(result, TEMPLATE) == result
    assert common_py.remove(result, "demo") == source
