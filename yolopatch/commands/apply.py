"""`yolopatch apply`: insert modules into common.py, register them in parse_model, write variants."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from yolopatch import catalog, ui
from yolopatch.catalog import ModuleSpec
from yolopatch.changes import FileChange, write_all
from yolopatch.errors import YolopatchError
from yolopatch.state import EDITED, ModuleState, Sources, module_states, template_of
from yolopatch.transforms import common_py, yolo_py
from yolopatch.tree import Tree, locate


def _refuse_conflicts(tree: Tree, state: ModuleState, replace: bool) -> None:
    """Hand-pasted classes, hand-made registrations or hand-edited insertions: refuse unless --replace."""
    if replace:
        return
    name = state.spec.class_name
    for foreign in state.foreign_classes:
        raise YolopatchError(
            f"class {name} already defined and not inserted by yolopatch (hand-pasted?)",
            path=tree.common_py, line=foreign.line,
            hint=f"remove it, or run `yolopatch apply {state.spec.key} --replace` to swap in the yolopatch version")
    for registration in state.foreign_registrations:
        raise YolopatchError(
            f"{name} is already wired into parse_model by hand",
            path=tree.yolo_py, line=registration.line,
            hint=f"remove it, or run `yolopatch apply {state.spec.key} --replace` to use the yolopatch branch")
    if state.status == EDITED:
        path, line = state.edited_location(tree)
        raise YolopatchError(f"yolopatch's {name} was edited by hand since it was inserted", path=path, line=line,
                             hint=f"run `yolopatch apply {state.spec.key} --replace` to overwrite your edits")


def patched_sources(sources: Sources, specs: Sequence[ModuleSpec], replace: bool = False) -> Tuple[str, str]:
    """common.py and yolo.py texts with ``specs`` applied (pure apart from reading the catalogue)."""
    states = module_states(sources)
    common, yolo = common_py.parse(sources.common), yolo_py.parse(sources.yolo)
    needed: List[common_py.ImportSpec] = []
    for spec in specs:
        _refuse_conflicts(sources.tree, states[spec.key], replace)
        template = template_of(spec)
        common = common_py.insert_module(common, template, replace_foreign=replace, with_imports=False)
        needed += common_py.template_imports(template)
        if replace:
            yolo = yolo_py.drop_foreign_module(yolo, spec.class_name)
        yolo = yolo_py.register_module(yolo, spec.class_name, spec.key)
    return common_py.add_imports(common, needed).code, yolo.code


def python_changes(sources: Sources, specs: Sequence[ModuleSpec], replace: bool) -> List[FileChange]:
    common, yolo = patched_sources(sources, specs, replace)
    return [
        FileChange(sources.tree.common_py, sources.common, common),
        FileChange(sources.tree.yolo_py, sources.yolo, yolo),
    ]


def apply(repo: Path, names: Sequence[str], *, dry_run: bool = False, replace: bool = False,
          variants: bool = True, bases: Sequence[str] = (), scales: Optional[Sequence[str]] = None,
          positions: Optional[Sequence[str]] = None) -> int:
    specs = catalog.resolve(list(names))
    tree = locate(repo)
    sources = Sources.read(tree)
    changes = python_changes(sources, specs, replace)
    if variants:
        from yolopatch.commands.variant import variant_changes

        changes += variant_changes(tree, specs, bases=bases, scales=scales, positions=positions)
    return finish(tree, changes, dry_run, what=", ".join(spec.key for spec in specs), verb="applied")


def finish(tree: Tree, changes: Sequence[FileChange], dry_run: bool, *, what: str, verb: str) -> int:
    """Show or write ``changes``; the common tail of apply, revert and variant."""
    real = [change for change in changes if change.changed]
    if not real:
        ui.done(f"nothing to do: {what} already {verb} in {tree.root}")
        return 0
    if dry_run:
        for change in real:
            ui.diff(change.diff(tree.root))
        ui.info(f"dry run: {len(real)} file(s) would change; nothing written")
        return 0
    written = write_all(real)
    for path in written:
        ui.done(f"{_verb_for(real, path)} {tree.relative(path)}")
    ui.done(f"{what}: {verb} ({len(written)} file(s))")
    return 0


def _verb_for(changes: Sequence[FileChange], path: Path) -> str:
    change = next(change for change in changes if change.path == path)
    if change.old is None:
        return "created"
    return "deleted" if change.new is None else "updated"
