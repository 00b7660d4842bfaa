"""What ``apply --replace`` replaced, kept so that ``revert`` can put it back byte for byte.

``apply KEY --replace`` removes a hand-pasted class, its hand-made registration, or hand edits of
yolopatch's own code. For each Python file it changes, the record (``.yolopatch/replaced-KEY.json``
in the tree) keeps the text before the apply (``before``) and what revert alone would leave of the
text after it (``stripped``: ``before`` minus the replaced code). ``revert KEY`` then merges the
replaced code back: ``merge3(stripped, before, reverted)``, where ``reverted`` may also hold changes
made since (other modules applied, unrelated edits).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from yolopatch.changes import FileChange, read_text
from yolopatch.errors import YolopatchError
from yolopatch.tree import Tree

Versions = Tuple[str, str]  # (before, stripped)


def record_path(tree: Tree, key: str) -> Path:
    return tree.state_dir / f"replaced-{key}.json"


def record_change(tree: Tree, key: str, files: Dict[Path, Versions]) -> Optional[FileChange]:
    """The record file to write with an ``apply --replace``; None when nothing was replaced."""
    kept = {path: versions for path, versions in files.items() if versions[0] != versions[1]}
    if not kept:
        return None
    path = record_path(tree, key)
    old = read_text(path) if path.is_file() else None
    if old is not None:  # a second --replace of the same module: keep the oldest original
        return None
    document = {"module": key, "files": {tree.relative(p): {"before": b, "stripped": s} for p, (b, s) in kept.items()}}
    return FileChange(path, None, json.dumps(document, indent=1, ensure_ascii=False) + "\n", owned=True)


def read_record(tree: Tree, key: str) -> Optional[Tuple[Path, str, Dict[Path, Versions]]]:
    """(record path, its text, {file: (before, stripped)}) of module ``key``; None when there is none."""
    path = record_path(tree, key)
    if not path.is_file():
        return None
    text = read_text(path)
    try:
        files = json.loads(text)["files"]
        return path, text, {tree.root / name: (entry["before"], entry["stripped"]) for name, entry in files.items()}
    except (ValueError, KeyError, TypeError) as error:
        raise YolopatchError(f"unreadable record of what `apply {key} --replace` replaced ({error})", path=path,
                             hint="restore the replaced code by hand from it, then delete it") from error


def restore(record: Path, file: Path, versions: Versions, reverted: str) -> str:
    """``reverted`` with the replaced code merged back in; refuses where the two changed the same lines."""
    before, stripped = versions
    merged = merge3(stripped, before, reverted)
    if merged is None:
        raise YolopatchError(
            f"cannot put back the code `apply --replace` replaced in {file.name}: the same lines changed since",
            path=record, hint="restore it by hand from this record's 'before' text, delete the record, run again")
    return merged


def merge3(base: str, mine: str, theirs: str) -> Optional[str]:
    """Three-way line merge: the changes ``base`` -> ``mine`` and ``base`` -> ``theirs`` together; None when
    they touch the same base lines (or insert at the same place)."""
    base_lines, mine_lines, theirs_lines = (text.splitlines(keepends=True) for text in (base, mine, theirs))
    mine_edits = _edits(base_lines, mine_lines)
    theirs_edits = _edits(base_lines, theirs_lines)
    for a_start, a_end, _ in mine_edits:
        for b_start, b_end, _ in theirs_edits:
            both_insert_here = a_start == a_end == b_start == b_end  # kept both: mine, then theirs
            if not both_insert_here and (a_start < b_end and b_start < a_end or a_start == b_start
                                         or a_start < b_start < a_end or b_start < a_start < b_end):
                return None
    result: List[str] = []
    position = 0
    ordered = sorted([(e, 0) for e in mine_edits] + [(e, 1) for e in theirs_edits],
                     key=lambda item: (item[0][0], item[0][1], item[1]))
    for (start, end, replacement), _ in ordered:
        result += base_lines[position:start]
        result += replacement
        position = end
    result += base_lines[position:]
    return "".join(result)


def _edits(base: Sequence[str], other: Sequence[str]) -> List[Tuple[int, int, List[str]]]:
    """(start, end, replacement lines) of each change from ``base`` to ``other``."""
    matcher = difflib.SequenceMatcher(None, base, other, autojunk=False)
    return [(i1, i2, list(other[j1:j2])) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]
