"""`yolopatch show KEY`: everything the catalogue knows about one module (the long texts of `list`).

Like `list`, it never imports torch or libcst.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from yolopatch import catalog, ui
from yolopatch.catalog import describe
from yolopatch.inventory import find_tree, tree_states
from yolopatch.module_card import print_module


def show(name: str, repo: Optional[Path] = None, as_json: bool = False) -> int:
    spec = catalog.get(name)
    tree = find_tree(repo)
    state = tree_states(tree, [spec])[spec.key] if tree is not None else None
    if as_json:
        ui.print_json(describe(spec, state))
    else:
        print_module(spec, state)
    return 0
