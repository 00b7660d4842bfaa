"""Checks every codebase shares: an inserted class's own state, generated variants, leftovers of killed
runs, and the line where two texts first differ."""

from __future__ import annotations

import ast
import difflib
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from yolopatch import catalog, changes, variants
from yolopatch.catalog import ModuleSpec
from yolopatch.changes import read_text
from yolopatch.checks.findings import Context, Finding
from yolopatch.errors import YolopatchError
from yolopatch.transforms import common_py
from yolopatch.transforms.common_py import template_of
from yolopatch.variant_files import GeneratedVariant


def first_changed_line(old: str, new: str) -> Optional[int]:
    """1-based line of ``old`` where ``new`` first differs; None when equal."""
    if old == new:
        return None
    old_lines, new_lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
    for tag, i1, _i2, _j1, _j2 in difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False).get_opcodes():
        if tag != "equal":
            return min(i1 + 1, max(len(old_lines), 1))
    return max(len(old_lines), 1)


@lru_cache(maxsize=16)
def syntax(text: str) -> ast.Module:
    """``ast.parse(text)``, once per distinct text (callers only read the tree)."""
    return ast.parse(text)


@lru_cache(maxsize=16)
def _top_level_stores(text: str) -> Dict[str, Tuple[int, ...]]:
    """Name -> lines of the top-level statements that may bind it: class and function names, and every name
    stored anywhere in a top-level statement outside function and class bodies. A superset of what
    ``transforms.shadowing`` counts as a rebinding, computed in one pass."""
    found: Dict[str, List[int]] = {}
    for statement in syntax(text).body:
        names = set()
        pending: List[ast.AST] = [statement]
        while pending:
            node = pending.pop()
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            pending.extend(ast.iter_child_nodes(node))
        for name in names:
            found.setdefault(name, []).append(statement.lineno)
    return {name: tuple(lines) for name, lines in found.items()}


def may_be_bound_after(text: str, name: str, line: int) -> bool:
    """False when no top-level statement after ``line`` can bind ``name`` (then ``shadowing.in_common``,
    which parses the whole file per call, has nothing to find)."""
    return any(later > line for later in _top_level_stores(text).get(name, ()))


def added_lines(old: str, new: str) -> List[str]:
    """Lines ``new`` has that ``old`` lacks (a context-free unified diff's ``+`` lines)."""
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
    return [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]


# ----------------------------------------------------------------------------------------------
# The inserted class itself (models/common.py, nn/modules/yolopatch.py)


def inserted_findings(context: Context, path: Path, text: str, spec: ModuleSpec,
                      inserted: Optional[common_py.FoundModule]) -> List[Finding]:
    """edited-class / outdated for the class of ``spec`` inserted in ``text`` (the file at ``path``)."""
    if inserted is None:
        return []
    current = common_py.template_digest(template_of(spec))
    if inserted.edited:
        return [Finding(
            "edited-class", path, edited_line(text, spec, inserted, current),
            f"{spec.class_name} ({spec.key}) was edited by hand since yolopatch inserted it",
            f"{context.command('apply', spec.key, '--replace')} (overwrites the edits; keep a copy first)")]
    if inserted.recorded_digest == current:
        return []
    installed = inserted.version
    if installed is not None and installed > spec.version:
        return [Finding(
            "outdated", path, inserted.line,
            f"{spec.class_name} v{installed} was inserted by a newer yolopatch; this one has v{spec.version}",
            f"pip install -U yolopatch (or `{context.command('apply', spec.key)}` to go back to v{spec.version})")]
    if installed is not None and installed < spec.version:
        message = f"{spec.class_name} v{installed} was inserted by an older yolopatch; this one has v{spec.version}"
    else:
        message = (f"{spec.class_name} differs from this yolopatch's v{spec.version} template (inserted by another "
                   f"build of the same version)")
    return [Finding("outdated", path, inserted.line, message, context.command("apply", spec.key))]


def edited_line(text: str, spec: ModuleSpec, inserted: common_py.FoundModule, current_digest: str) -> int:
    """The first hand-edited line: where re-inserting the recorded template would change the file.

    Exact when the recorded digest is the installed template's; else the main class line.
    """
    if inserted.recorded_digest != current_digest:
        return inserted.line
    restored = common_py.insert_module(common_py.parse(text), template_of(spec), with_imports=False).code
    return first_changed_line(text, restored) or inserted.line


# ----------------------------------------------------------------------------------------------
# Killed runs


def leftover_findings(context: Context) -> List[Finding]:
    tree = context.tree
    found = [Finding("interrupted-run", journal, None, "a yolopatch run was killed while swapping files",
                     f"{context.command('revert', '--dry-run')} (every apply, revert or variant command first "
                     f"rolls an interrupted run back)")
             for journal in changes.pending_journals(tree.state_dir)]
    for path in changes.leftovers(tree.writable_folders()):
        if changes.is_stale_leftover(path):
            fix = "the next apply/revert/variant removes it (or delete it)"
        else:
            fix = "an older yolopatch's backup: compare it with the file it copies, then delete it"
        found.append(Finding("leftover-file", path, None, "left by a yolopatch run that was killed", fix,
                             severity="warning"))
    return found


# ----------------------------------------------------------------------------------------------
# Generated variants


def variant_findings(context: Context, generated: Sequence[GeneratedVariant], dialect: Optional[str] = None
                     ) -> List[Finding]:
    """edited-variant and stale-variant; ``dialect``: the YAML dialect the variants were rendered in
    (None: detected from the base, as YOLOv5's variant command does)."""
    found = []
    for variant in generated:
        info = variants.parse_generated_header(variant.text)
        assert info is not None
        expected = _regenerated(variant, info, dialect)
        regenerate = _regenerate_command(context, variant, info)
        body = _body(variant.text)
        if variant.edited:
            matches = expected is not None and variants.body_hash(expected) == info.recorded_hash
            line = 1 + (first_changed_line(body, expected) or 0) if matches and expected is not None else 1
            found.append(Finding(
                "edited-variant", variant.path, line,
                f"generated variant ({', '.join(info.keys)} on {info.base_name}) was edited by hand",
                f"delete its first line to keep the edits as your own model file, or delete the file and run "
                f"`{regenerate}` for yolopatch's version"))
        elif expected is not None and expected.replace("\r\n", "\n") != body.replace("\r\n", "\n"):
            found.append(Finding(
                "stale-variant", variant.path, 1 + (first_changed_line(body, expected) or 0),
                f"no longer what yolopatch generates from {info.base_name} (the base changed, or another "
                f"yolopatch version wrote it)", regenerate))
    return found


def _body(text: str) -> str:
    return text.split("\n", 1)[1] if "\n" in text else ""


def _regenerated(variant: GeneratedVariant, info: variants.GeneratedInfo, dialect: Optional[str]) -> Optional[str]:
    """The body (after the header line) yolopatch would write for ``variant`` now; None when it cannot
    say (the base is gone or no longer has the positions, a module this yolopatch does not know)."""
    base = variant.path.parent / info.base_name
    known = {spec.key: spec for spec in catalog.all_modules()}
    if not base.is_file() or not all(key in known for key in info.keys):
        return None
    try:
        placements = [variants.Placement(known[key].class_name, key, positions, variants.load_spec(key).args,
                                         known[key].registration)
                      for key, positions in info.placements]
        base_text = read_text(base)
        text = variants.render_variant(base_text, base.name, placements, dialect=dialect)
    except YolopatchError:
        return None
    if "\r\n" in base_text and "\r\n" not in text:
        text = text.replace("\n", "\r\n")
    return _body(text)


def _regenerate_command(context: Context, variant: GeneratedVariant, info: variants.GeneratedInfo) -> str:
    base = context.rel(variant.path.parent / info.base_name)
    words = ["variant", *info.keys, "--base", base]
    defaults = {key: variants.load_spec(key).placement for key in info.keys if key in
                {spec.key for spec in catalog.all_modules()}}
    positions = sorted({p for _, chosen in info.placements for p in chosen})
    if len(info.placements) == 1 and tuple(sorted(defaults.get(info.keys[0], ()))) != tuple(positions):
        words += ["--at", ",".join(info.placements[0][1])]
    return context.command(*words)
