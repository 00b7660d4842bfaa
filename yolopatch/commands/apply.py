"""`yolopatch apply`: insert modules, register them, write their variants (any target)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from yolopatch import catalog
from yolopatch.commands._write import finish
from yolopatch.targets.locate import open_target
from yolopatch.transaction import locked


def apply(repo: Path, names: Sequence[str], *, dry_run: bool = False, replace: bool = False,
          variants: bool = True, bases: Sequence[str] = (), scales: Optional[Sequence[str]] = None,
          positions: Optional[Sequence[str]] = None, installed: bool = False) -> int:
    specs = catalog.resolve(list(names))
    target = open_target(repo, allow_installed=installed)
    with locked(target.tree):
        changes = target.plan_apply(specs, replace=replace)
        if variants:
            changes += target.plan_variants(specs, bases=bases, scales=scales, positions=positions)
        return finish(target.tree, changes, dry_run, what=", ".join(spec.key for spec in specs), verb="applied")
