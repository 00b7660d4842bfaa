"""`yolopatch revert` (alias `unpatch`): take yolopatch's modules out again, byte for byte."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

from yolopatch import catalog, checkpoints, engine, records, ui
from yolopatch.changes import FileChange
from yolopatch.commands._write import finish
from yolopatch.errors import YolopatchError
from yolopatch.state import EDITED, ModuleState, Sources, module_states
from yolopatch.transaction import locked
from yolopatch.transforms import common_py, yolo_py
from yolopatch.targets import ultralytics
from yolopatch.targets.locate import is_ultralytics, locate_any
from yolopatch.tree import Tree
from yolopatch.variant_files import GeneratedVariant, generated_variants, registry_change


def revert(repo: Path, names: Sequence[str], *, dry_run: bool = False, force: bool = False,
           installed: bool = False) -> int:
    found = locate_any(repo, allow_installed=installed)
    if is_ultralytics(found):
        return _revert_ultralytics(found, names, dry_run=dry_run, force=force)  # type: ignore[arg-type]
    tree = found
    with locked(tree):  # type: ignore[arg-type]
        sources = Sources.read(tree)
        states = module_states(sources)
        variants = generated_variants(tree)
        if names:
            keys = [spec.key for spec in catalog.resolve(list(names))]
        else:
            keys = [key for key, state in states.items()
                    if state.present or any(key in v.keys for v in variants) or records.read_record(tree, key)]
        _refuse_edited(tree, [states[key] for key in keys], force)
        if not force:
            _refuse_for_checkpoints(tree, [key for key in keys if states[key].present])
        changes = _python_changes(tree, sources, keys)
        changes += _variant_changes(tree, variants, keys, force)
        _report_kept_imports(tree, sources, keys, states)
        what = ", ".join(keys) if keys else "yolopatch"
        return finish(tree, changes, dry_run, what=what, verb="reverted")


def _refuse_edited(tree: Tree, states: Sequence[ModuleState], force: bool) -> None:
    for state in states:
        if state.status == EDITED and not force:
            path, line = state.edited_location(tree)
            raise YolopatchError(
                f"yolopatch's {state.spec.class_name} was edited by hand; revert would throw the edits away",
                path=path, line=line, hint=f"keep a copy of your edits and run `yolopatch revert {state.spec.key} --force`")


def _python_changes(tree: Tree, sources: Sources, keys: Sequence[str]) -> List[FileChange]:
    """common.py and yolo.py without ``keys``, with whatever `apply --replace` replaced put back."""
    common, yolo = engine.reverted_sources(sources, keys)
    texts = {tree.common_py: common, tree.yolo_py: yolo}
    changes: List[FileChange] = []
    editable = {tree.common_py: common_py.editable_ranges(sources.common, (), engine.template_comments()),
                tree.yolo_py: yolo_py.editable_ranges(sources.yolo)}
    for key in keys:
        record = records.read_record(tree, key)
        if record is None:
            continue
        record_path, record_text, files = record
        name = catalog.get(key).class_name
        editable[tree.common_py] += common_py.editable_ranges(sources.common, [name])
        editable[tree.yolo_py] += yolo_py.editable_ranges(sources.yolo, [name])
        for path, versions in files.items():
            if path in texts:
                texts[path] = records.restore(record_path, path, versions, texts[path])
        changes.append(FileChange(record_path, record_text, None, owned=True))
    old = {tree.common_py: sources.common, tree.yolo_py: sources.yolo}
    return [FileChange(path, old[path], text, editable=editable[path]) for path, text in texts.items()] + changes


def _variant_changes(tree: Tree, variants: Sequence[GeneratedVariant], keys: Sequence[str],
                     force: bool) -> List[FileChange]:
    changes: List[FileChange] = []
    for variant in variants:
        if not set(variant.keys) & set(keys):
            continue
        if variant.edited and not force:
            raise YolopatchError("generated variant was edited by hand", path=variant.path, line=1,
                                 hint="keep a copy, then run `yolopatch revert --force` (or delete it yourself)")
        changes.append(FileChange(variant.path, variant.text, None, owned=True))
    registry = registry_change(tree, remove=[change.path for change in changes])
    return changes + ([registry] if registry is not None else [])


def _report_kept_imports(tree: Tree, sources: Sources, keys: Sequence[str], states: Dict[str, ModuleState]) -> None:
    """Say which imports yolopatch added stay, because the user's own code now uses them."""
    remaining = [key for key, state in states.items() if state.inserted is not None and key not in keys]
    for text, line in common_py.kept_imports(sources.common, "", engine.imports_needed_by(remaining)):
        ui.info(f"{ui.display_path(tree.common_py)}:{line}: kept `{text}` (added by yolopatch, now used by your code)")


def _refuse_for_checkpoints(tree: Tree, keys: Sequence[str]) -> None:
    """Refuse to take out a module that a checkpoint in the tree needs to load (its pickle names the class)."""
    needed = checkpoints.needing(checkpoints.checkpoint_needs(tree.root), keys)
    if not needed:
        return
    key, paths = next(iter(needed.items()))
    names = ", ".join(tree.relative(path) for path in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    classes = catalog.get(key).class_name
    modules = " ".join(needed)
    raise YolopatchError(
        f"{len(paths)} checkpoint(s) in this tree need {key} to load ({names}); without it they fail with "
        f"\"Can't get attribute '{classes}'\"", path=paths[0],
        hint=f"move them out of the tree first, or run `yolopatch revert {modules} --force` "
             "(re-applying the module makes them load again)")


def _revert_ultralytics(tree: ultralytics.UltralyticsTree, names: Sequence[str], *, dry_run: bool,
                        force: bool) -> int:
    with locked(tree):  # type: ignore[arg-type]
        wanted = [spec.key for spec in catalog.resolve(list(names))] if names else []
        if not force:
            _refuse_for_checkpoints(tree, wanted or [key for key, state in ultralytics.module_states(
                ultralytics.Texts.read(tree)).items() if state.present])  # type: ignore[arg-type]
        keys, changes = ultralytics.plan_revert(tree, wanted, force)
        changes += _variant_changes(tree, generated_variants(tree), keys, force)  # type: ignore[arg-type]
        return finish(tree, changes, dry_run, what=", ".join(keys) if keys else "yolopatch",  # type: ignore[arg-type]
                      verb="reverted")
