"""`yolopatch apply`: insert modules into common.py, register them in parse_model, write variants."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from yolopatch import catalog, engine, records
from yolopatch.changes import FileChange
from yolopatch.commands._write import finish
from yolopatch.state import Sources
from yolopatch.transaction import locked
from yolopatch.tree import locate
from yolopatch.variant_files import variant_changes

# Kept importable from here (check and older tests use it).
patched_sources = engine.patched_sources


def apply(repo: Path, names: Sequence[str], *, dry_run: bool = False, replace: bool = False,
          variants: bool = True, bases: Sequence[str] = (), scales: Optional[Sequence[str]] = None,
          positions: Optional[Sequence[str]] = None) -> int:
    specs = catalog.resolve(list(names))
    tree = locate(repo)
    with locked(tree):
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
