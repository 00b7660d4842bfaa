"""`yolopatch list`: the catalogue, and with a tree, each module's state in it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from yolopatch import catalog, ui
from yolopatch.catalog import ModuleSpec
from yolopatch.errors import YolopatchError
from yolopatch.tree import Tree, locate

if TYPE_CHECKING:
    from yolopatch.state import ModuleState


def describe(spec: ModuleSpec, state: "Optional[ModuleState]" = None) -> Dict[str, Any]:
    entry: Dict[str, Any] = {
        "key": spec.key,
        "class": spec.class_name,
        "version": spec.version,
        "aliases": list(spec.aliases),
        "paper": spec.paper,
        "authors": spec.authors,
        "venue": spec.venue,
        "year": spec.year,
        "summary": spec.summary,
        "hyperparameters": spec.hyperparameters,
        "param_count": spec.param_count_formula,
        "placement": list(spec.placement),
        "constraints": list(spec.constraints),
    }
    if state is not None:
        entry["status"] = state.status
    return entry


def _tree(repo: Optional[Path]) -> Optional[Tree]:
    if repo is not None:
        return locate(repo)
    try:
        return locate(Path.cwd())
    except YolopatchError:
        return None  # not in a tree: the catalogue alone


def _states(repo: Optional[Path]) -> "Optional[Dict[str, ModuleState]]":
    tree = _tree(repo)
    if tree is None:
        return None
    from yolopatch.state import Sources, module_states  # libcst: only needed with a tree

    return module_states(Sources.read(tree))


def list_modules(repo: Optional[Path] = None, as_json: bool = False) -> int:
    states = _states(repo)
    entries: List[Dict[str, Any]] = [
        describe(spec, states[spec.key] if states else None) for spec in catalog.all_modules()
    ]
    if as_json:
        ui.print_json(entries)
        return 0
    columns = ["key", "class", "paper", "what it does", "default placement", "constraints"]
    if states:
        columns.append("in this tree")
    rows = []
    for entry in entries:
        row = [entry["key"], entry["class"], f"{entry['paper']} ({entry['venue']} {entry['year']})",
               entry["summary"], ", ".join(entry["placement"]) or "-", "; ".join(entry["constraints"])]
        if states:
            row.append(entry["status"])
        rows.append(row)
    ui.table("yolopatch modules", columns, rows)
    return 0
