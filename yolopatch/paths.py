"""Paths the user types, resolved the way the user sees the tree (``--base``, verify's CFGs).

A model YAML given on the command line is looked for relative to the current directory first (what
the shell would complete), then relative to the folder that holds the tree's ``models/`` (so that
``models/hub/yolov5s6.yaml`` works from the root of either layout: in the package layout models/
lies in ``<root>/yolov5/``), then inside ``models/`` and ``models/hub/`` (a bare file name).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Union

from yolopatch.errors import UsageError
from yolopatch.tree import Tree


def model_yaml_candidates(tree: Tree, given: Union[str, Path], cwd: Optional[Path] = None) -> List[Path]:
    """Where ``given`` may be, in the order looked at (absolute paths, no duplicates)."""
    given = Path(given).expanduser()
    if given.is_absolute():
        return [given]
    here = Path(os.path.abspath(cwd if cwd is not None else os.getcwd()))
    candidates: List[Path] = []
    for folder in (here, tree.package_dir, tree.root, tree.models_dir, tree.models_dir / "hub"):
        candidate = Path(os.path.abspath(folder / given))
        if candidate not in candidates:
            candidates.append(candidate)
    return candidates


def resolve_model_yaml(tree: Tree, given: Union[str, Path], *, what: str = "model YAML",
                       cwd: Optional[Path] = None) -> Path:
    """The existing file ``given`` names (see the module docstring); a usage error (exit 2) naming
    every place looked at when there is none."""
    candidates = model_yaml_candidates(tree, given, cwd)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    from yolopatch.ui import display_path  # rich: only needed for the message

    looked = ", ".join(display_path(candidate, cwd) for candidate in candidates)
    raise UsageError(f"{what} {str(given)!r} not found (looked at {looked})",
                     hint=f"pass a path from here or from {display_path(tree.package_dir, cwd)}, "
                          f"e.g. models/yolov5s.yaml")
