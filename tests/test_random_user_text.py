"""Property-based (hypothesis): random user text anywhere in real YOLOv5 files never gets lost.

Comment lines at any indentation, whitespace-only lines (spaces, tabs), blank lines, inserted at random
line positions of models/common.py and models/yolo.py (7.0 checkout and master), with CRLF and a
byte-order mark at random: apply succeeds and revert gives the files back byte for byte. And random comments added between apply and revert survive revert (or revert refuses
and writes nothing). Examples are derandomised, so CI runs the same cases every time.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import yolov5_trees
from yolopatch.commands.apply import apply
from yolopatch.commands.revert import revert
from yolopatch.errors import YolopatchError

FILES = ("common.py", "yolo.py")
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_sources: Dict[str, Dict[str, bytes]] = {}


def source_files(layout: str) -> Dict[str, bytes]:
    """The real models/common.py and yolo.py of a 7.0 checkout or of master (read once)."""
    if layout not in _sources:
        models = yolov5_trees.models_dir(yolov5_trees.source_tree("7.0", layout))
        _sources[layout] = {name: (models / name).read_bytes() for name in FILES}
    return _sources[layout]


def write_tree(files: Dict[str, bytes]) -> Path:
    root = Path(tempfile.mkdtemp(prefix="yolopatch-prop-"))
    (root / "models").mkdir()
    for name, data in files.items():
        (root / "models" / name).write_bytes(data)
    return root


def read_tree(root: Path) -> Dict[str, bytes]:
    return {name: (root / "models" / name).read_bytes() for name in FILES}


comment_text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30)
indent = st.text(st.sampled_from(" \t"), max_size=12)
user_line = st.one_of(
    st.builds(lambda ws, text: f"{ws}# {text}", indent, comment_text),
    indent,  # whitespace-only (or empty) line
)
position = st.one_of(st.just(1.0), st.floats(min_value=0, max_value=1))  # the end of a file is where libcst fails
insertion = st.tuples(position, st.lists(user_line, min_size=1, max_size=4))


def insert_lines(text: str, insertions: List[Tuple[float, List[str]]], newline: str) -> str:
    """``text`` with each group of lines inserted before the line at that fraction of the file (never
    right after a backslash continuation, where a comment is not allowed)."""
    lines = text.splitlines(keepends=True)
    for fraction, group in insertions:
        position = min(int(fraction * (len(lines) + 1)), len(lines))
        while position > 0 and lines[position - 1].rstrip("\r\n").endswith("\\"):
            position -= 1
        lines[position:position] = [line + newline for line in group]
    return "".join(lines)


def hostile(files: Dict[str, bytes], data: st.DataObject) -> Dict[str, bytes]:
    result = {}
    for name, raw in files.items():
        newline = "\r\n" if data.draw(st.booleans(), label=f"{name} crlf") else "\n"
        text = raw.decode("utf-8").replace("\r\n", "\n")
        text = text.replace("\n", newline)
        text = insert_lines(text, data.draw(st.lists(insertion, max_size=3), label=f"{name} lines"), newline)
        bom = b"\xef\xbb\xbf" if data.draw(st.booleans(), label=f"{name} bom") else b""
        result[name] = bom + text.encode("utf-8")
    return result


@SETTINGS
@given(layout=st.sampled_from(["checkout", "master"]), data=st.data())
def test_apply_then_revert_is_byte_identical_or_refused(layout: str, data: st.DataObject) -> None:
    files = hostile(source_files(layout), data)
    root = write_tree(files)
    try:
        apply(root, ["soca", "double-attention"], variants=False)  # comments and blank lines never block it
        assert read_tree(root) != files
        revert(root, [])
        assert read_tree(root) == files
    finally:
        shutil.rmtree(root)


@SETTINGS
@given(layout=st.sampled_from(["checkout", "master"]), data=st.data())
def test_comments_added_between_apply_and_revert_survive(layout: str, data: st.DataObject) -> None:
    originals = source_files(layout)
    root = write_tree(originals)
    try:
        apply(root, ["soca"], variants=False)
        edited = {}
        for name in FILES:
            count = data.draw(st.integers(min_value=0, max_value=3), label=f"{name} comments")
            groups = [(data.draw(st.floats(min_value=0, max_value=1)),
                       [f"{data.draw(indent)}# user comment {name} {number}"]) for number in range(count)]
            path = root / "models" / name
            path.write_text(insert_lines(path.read_text(encoding="utf-8"), groups, "\n"), encoding="utf-8")
            edited[name] = path.read_bytes()
        try:
            revert(root, [])
        except YolopatchError:
            assert read_tree(root) == edited  # refused (e.g. a comment inside inserted code): nothing written
            return
        for name in FILES:
            text = (root / "models" / name).read_text(encoding="utf-8")
            added = [line for line in edited[name].decode("utf-8").splitlines() if "# user comment" in line]
            kept = [line for line in text.splitlines() if "# user comment" in line]
            assert kept == added
            assert "\n".join(line for line in text.splitlines() if "# user comment" not in line) == \
                "\n".join(originals[name].decode("utf-8").splitlines())
    finally:
        shutil.rmtree(root)
