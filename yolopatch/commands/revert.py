"""`yolopatch revert` (alias `unpatch`): take yolopatch's modules out again, byte for byte (any target)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from yolopatch import catalog
from yolopatch.commands._write import finish
from yolopatch.targets.locate import open_target
from yolopatch.transaction import locked


def revert(repo: Path, names: Sequence[str], *, dry_run: bool = False, force: bool = False,
           installed: bool = False) -> int:
    target = open_target(repo, allow_installed=installed)
    with locked(target.tree):
        wanted = [spec.key for spec in catalog.resolve(list(names))] if names else []
        keys, changes = target.plan_revert(wanted, force=force)
        return finish(target.tree, changes, dry_run, what=", ".join(keys) if keys else "yolopatch", verb="reverted")
