"""Findings and their output formats, shared by every codebase's checks. Light on purpose: the command
imports this on every run, also when the cache answers and nothing else is loaded."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

JSON_SCHEMA_VERSION = 1
FORMATS = ("text", "json", "github")

# Every finding code, with what it means (the README's table is generated from the same words). Where a
# code applies to both codebases, the file names are YOLOv5's; for Ultralytics read nn/modules/yolopatch.py
# for models/common.py and nn/tasks.py for models/yolo.py.
CODES: Dict[str, str] = {
    "unreadable": "models/common.py or models/yolo.py cannot be read or parsed",
    "edited-class": "code yolopatch inserted into models/common.py was edited by hand",
    "edited-registration": "yolopatch's parse_model branch in models/yolo.py was edited by hand",
    "missing-registration": "a yolopatch class is in models/common.py but not wired into parse_model",
    "missing-class": "parse_model (or master's import list) names a yolopatch class models/common.py lacks",
    "missing-import": "master-style `from models.common import (...)` list lacks a yolopatch class "
                      "(Ultralytics: nn/tasks.py's import list, which parse_model's globals() resolves from)",
    "missing-export": "Ultralytics: nn/modules/__init__.py lacks the import or the __all__ entry of a yolopatch class",
    "outdated": "an inserted module differs from this yolopatch's template (older or newer)",
    "unknown-yolopatch-module": "a module inserted by a newer yolopatch that this one does not know",
    "apply-would-change": "`yolopatch apply` would still change an applied module's files (e.g. a lost import)",
    "hand-pasted": "a hand-pasted (blog) copy of a catalogue class, not used by any model YAML",
    "hand-pasted-in-use": "a hand-pasted (blog) copy of a catalogue class that a model YAML uses",
    "hand-registered": "a catalogue class wired into parse_model by hand",
    "unknown-module": "a model YAML names a module that is neither YOLOv5's own nor registered",
    "edited-variant": "a yolopatch-generated variant YAML was edited by hand",
    "stale-variant": "a generated variant no longer matches what yolopatch would generate from its base",
    "build-failed": "with --build: a generated variant does not build",
    "shadowed": "code after yolopatch's (a rebinding, an import, an earlier parse_model test) hides its class",
    "interrupted-run": "a yolopatch run was killed while writing; the next yolopatch command rolls it back",
    "leftover-file": "a temporary or backup file of a killed yolopatch run",
    "checkpoint-needs-module": "a checkpoint in the tree (runs/**/weights/*.pt, *.pt) needs a module the tree lacks",
    "checkpoint-foreign-class": "Ultralytics: a checkpoint pickles a class outside ultralytics.nn.modules, which "
                                "8.4's restricted loader rejects (warning)",
    "other-ultralytics-imported": "Ultralytics: the interpreter imports another ultralytics package (a pip-installed "
                                  "copy), not the patched tree",
}


@dataclass(frozen=True)
class Finding:
    """One problem: ``path`` absolute, ``line`` 1-based or None for the whole file."""

    code: str
    path: Path
    line: Optional[int]
    message: str
    fix: str
    severity: str = "error"

    def sort_key(self) -> Tuple[str, int, str, str]:
        return (str(self.path), self.line or 0, self.code, self.message)


def display(path: Path, cwd: Path) -> str:
    """``path`` relative to ``cwd`` when it lies below it (what editors and GitHub want), else absolute."""
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Context:
    """What every finding needs: the tree (anything with ``root`` and ``relative``), and how the user must
    spell commands from where they are."""

    tree: Any
    cwd: Path

    def command(self, *words: str) -> str:
        """``yolopatch <words>``, with ``--repo`` when running from ``cwd`` would not find this tree."""
        root = self.tree.root
        inside = self.cwd == root or root in self.cwd.parents
        repo = [] if inside else ["--repo", display(root, self.cwd)]
        return " ".join(shlex.quote(word) for word in ("yolopatch", *words, *repo))

    def rel(self, path: Path) -> str:
        return str(self.tree.relative(path))


@dataclass(frozen=True)
class Report:
    """What check found, and what it looked at (for the summary line). ``extra``: fields added to the
    JSON document (Ultralytics: which ``ultralytics`` package the interpreter imports)."""

    root: Path
    findings: List[Finding]
    modules_present: int
    variants: int
    extra: Optional[Mapping[str, Any]] = None

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        if self.findings:
            return f"{len(self.findings)} problem(s) found in {self.root}"
        return (f"ok: yolopatch's changes in {self.root} are intact ({self.modules_present} module(s) "
                f"applied, {self.variants} generated variant(s))")


def to_json(findings: Sequence[Finding], root: Path, extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The ``--format json`` document (schema version 1)::

        {"version": 1, "root": "<absolute tree root>", "ok": true|false,
         "findings": [{"code": str, "severity": "error"|"warning", "file": "<path relative to root>",
                       "line": int|null, "message": str, "fix": str}, ...]}

    Ultralytics trees add ``"interpreter": {"python": str, "ultralytics": "<package folder>"|null,
    "is_this_tree": bool}``. Findings are sorted by file, line and code. New codes may appear in later
    releases; fields are only ever added (a breaking change bumps ``version``).
    """
    return {
        "version": JSON_SCHEMA_VERSION,
        "root": str(root),
        "ok": not findings,
        "findings": [
            {"code": f.code, "severity": f.severity, "file": Path(relative(f.path, root)).as_posix(), "line": f.line,
             "message": f.message, "fix": f.fix}
            for f in findings
        ],
        **(extra or {}),
    }


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def to_github(findings: Sequence[Finding], cwd: Path) -> List[str]:
    """GitHub Actions workflow commands, one per finding:
    ``::error file=<path>,line=<n>,title=yolopatch <code>::<message>. Fix: <fix>`` (path relative to
    ``cwd``, the workspace, when the tree lies below it)."""
    lines = []
    for f in findings:
        properties = [f"file={_escape_property(Path(display(f.path, cwd)).as_posix())}"]
        if f.line is not None:
            properties.append(f"line={f.line}")
        properties.append(f"title={_escape_property('yolopatch ' + f.code)}")
        lines.append(f"::{f.severity} {','.join(properties)}::{_escape_data(f'{f.message}. Fix: {f.fix}')}")
    return lines


def to_text(findings: Sequence[Finding], cwd: Path) -> List[str]:
    """``path:line: code: message (fix: ...)`` per finding (``path: code: ...`` without a line)."""
    lines = []
    for f in findings:
        where = display(f.path, cwd) + (f":{f.line}" if f.line is not None else "")
        lines.append(f"{where}: {f.code}: {f.message} (fix: {f.fix})".replace("\r", " ").replace("\n", " "))
    return lines
