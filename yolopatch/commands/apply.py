"""`yolopatch apply`: insert modules into common.py, register them in parse_model, write variants."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from yolopatch import catalog, engine, records, ui
from yolopatch.changes import FileChange
from yolopatch.commands._write import finish
from yolopatch.state import Sources
from yolopatch.transaction import locked
from yolopatch.targets import ultralytics
from yolopatch.targets.locate import is_ultralytics, locate_any
from yolopatch.variant_files import ultralytics_variant_changes, variant_changes

# Kept importable from here (check and older tests use it).
patched_sources = engine.patched_sources


def apply(repo: Path, names: Sequence[str], *, dry_run: bool = False, replace: bool = False,
          variants: bool = True, bases: Sequence[str] = (), scales: Optional[Sequence[str]] = None,
          positions: Optional[Sequence[str]] = None, installed: bool = False) -> int:
    specs = catalog.resolve(list(names))
    found = locate_any(repo, allow_installed=installed)
    if is_ultralytics(found):
        return _apply_ultralytics(found, specs, dry_run=dry_run, replace=replace,  # type: ignore[arg-type]
                                  variants=variants, bases=bases, positions=positions)
    tree = found
    with locked(tree):  # type: ignore[arg-type]
        sources = Sources.read(tree)
        plan = engine.plan_apply(sources, specs, replace)
        replacing = [spec.class_name for spec in specs] if replace else []
        changes: List[FileChange] = engine.python_changes(sources, plan, replacing)
        for key, files in plan.replaced.items():
            record = records.record_change(tree, key, files)
            if record is not None:
                changes.append(record)
        if variants:
            changes += variant_changes(tree, specs, bases=bases, scales=scales, positions=positions)
        return finish(tree, changes, dry_run, what=", ".join(spec.key for spec in specs), verb="applied")


def _apply_ultralytics(tree: ultralytics.UltralyticsTree, specs: Sequence[catalog.ModuleSpec], *, dry_run: bool,
                       replace: bool, variants: bool, bases: Sequence[str],
                       positions: Optional[Sequence[str]]) -> int:
    if tree.layout == ultralytics.INSTALLED:
        ui.info(f"warning: patching the installed ultralytics in {tree.package_dir}: upgrading or reinstalling "
                "ultralytics wipes these changes")
    with locked(tree):  # type: ignore[arg-type]
        changes = ultralytics.plan_apply(tree, specs, replace)
        if variants:
            changes += ultralytics_variant_changes(tree, specs, bases=bases, positions=positions)
        return finish(tree, changes, dry_run, what=", ".join(spec.key for spec in specs),  # type: ignore[arg-type]
                      verb="applied")
