"""`yolopatch variant`: write variants for modules already applied; Python files untouched (any target)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from yolopatch import catalog, ui, variants
from yolopatch.changes import FileChange
from yolopatch.commands._write import finish
from yolopatch.errors import YolopatchError
from yolopatch.statuses import APPLIED, OUTDATED
from yolopatch.targets.locate import open_target
from yolopatch.transaction import locked
from yolopatch.variant_files import index_map_of


def variant(repo: Path, names: Sequence[str], *, bases: Sequence[str] = (), scales: Optional[Sequence[str]] = None,
            positions: Optional[Sequence[str]] = None, dry_run: bool = False, installed: bool = False,
            as_json: bool = False) -> int:
    target = open_target(repo, allow_installed=installed)
    specs = catalog.resolve(list(names))
    with locked(target.tree):
        statuses = target.statuses()
        for spec in specs:
            if statuses[spec.key] not in (APPLIED, OUTDATED):
                raise YolopatchError(f"{spec.key} is {statuses[spec.key]} in this tree", path=target.tree.root,
                                     hint=f"run `yolopatch apply {spec.key}` first (it writes the variants too)")
        changes = target.plan_variants(specs, bases=bases, scales=scales, positions=positions)
        code = finish(target.tree, changes, dry_run, what="variants of " + ", ".join(s.key for s in specs),
                      verb="written", quiet=as_json)
    if as_json:
        ui.print_json([_described(target.tree, change) for change in changes
                       if change.new is not None and change.path.suffix in (".yaml", ".yml")])
    return code


def _described(tree: Any, change: FileChange) -> Dict[str, Any]:
    """A variant as `variant --json` prints it: where, from what, and every base layer's new index."""
    assert change.new is not None
    info = variants.parse_generated_header(change.new)
    mapping = index_map_of(change.path, change.new) or {}
    return {"path": tree.relative(change.path), "base": info.base_name if info else None,
            "modules": list(info.keys) if info else [],
            "index_map": {str(old): new for old, new in mapping.items()}}
