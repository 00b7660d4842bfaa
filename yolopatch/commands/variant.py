"""`yolopatch variant`: write variants for modules already applied; Python files untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from yolopatch import catalog
from yolopatch.commands._write import finish
from yolopatch.errors import YolopatchError
from yolopatch.state import APPLIED, OUTDATED, Sources, module_states
from yolopatch.transaction import locked
from yolopatch.tree import locate
from yolopatch.variant_files import SCALES, GeneratedVariant, base_paths, generated_variants, variant_changes

__all__ = ["SCALES", "GeneratedVariant", "base_paths", "generated_variants", "variant", "variant_changes"]


def variant(repo: Path, names: Sequence[str], *, bases: Sequence[str] = (), scales: Optional[Sequence[str]] = None,
            positions: Optional[Sequence[str]] = None, dry_run: bool = False) -> int:
    tree = locate(repo)
    specs = catalog.resolve(list(names))
    with locked(tree):
        states = module_states(Sources.read(tree))
        for spec in specs:
            if states[spec.key].status not in (APPLIED, OUTDATED):
                raise YolopatchError(f"{spec.key} is {states[spec.key].status} in this tree", path=tree.common_py,
                                     hint=f"run `yolopatch apply {spec.key}` first (it writes the variants too)")
        changes = variant_changes(tree, specs, bases=bases, scales=scales, positions=positions)
        return finish(tree, changes, dry_run, what="variants of " + ", ".join(s.key for s in specs), verb="written")
