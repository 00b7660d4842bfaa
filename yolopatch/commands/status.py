"""`yolopatch status`: the tree's layout and version, and what yolopatch applied to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from yolopatch import ui
from yolopatch.commands.variant import generated_variants
from yolopatch.state import Sources, module_states, unknown_keys
from yolopatch.transforms import yolo_py
from yolopatch.tree import locate


def collect(repo: Path) -> Dict[str, Any]:
    tree = locate(repo)
    sources = Sources.read(tree)
    facts = yolo_py.facts(sources.yolo)
    states = module_states(sources)
    modules = {}
    for key, state in states.items():
        modules[key] = {
            "class": state.spec.class_name,
            "status": state.status,
            "installed_version": state.inserted.version if state.inserted else None,
            "available_version": state.spec.version,
            "common_py_line": state.inserted.line if state.inserted else None,
            "yolo_py_line": state.registration.line if state.registration else None,
            "hand_pasted_lines": [c.line for c in state.foreign_classes],
        }
    variants = [
        {"path": tree.relative(v.path), "base": v.base, "modules": list(v.keys), "edited": v.edited}
        for v in generated_variants(tree)
    ]
    return {
        "root": str(tree.root),
        "layout": tree.layout,
        "version": tree.version(),
        "parse_model": {"container": facts.container, "explicit_common_imports": facts.explicit_common_imports,
                        "uses_ch_mul": facts.uses_ch_mul, "line": facts.parse_model_line},
        "modules": modules,
        "variants": variants,
        "unknown_modules": unknown_keys(sources),
    }


def status(repo: Path, as_json: bool = False) -> int:
    report = collect(repo)
    if as_json:
        ui.print_json(report)
        return 0
    imports = "explicit import list (master)" if report["parse_model"]["explicit_common_imports"] else "star import"
    ui.done(f"YOLOv5 tree: {report['root']}")
    ui.done(f"layout: {report['layout']}; version: {report['version'] or 'unknown'}; "
            f"parse_model: {report['parse_model']['container']} of channel modules, {imports}")
    rows = [
        [key, info["class"], info["status"], info["installed_version"] or "-",
         info["common_py_line"] or "-", info["yolo_py_line"] or "-"]
        for key, info in report["modules"].items()
    ]
    ui.table("modules", ["key", "class", "status", "version", "common.py line", "yolo.py line"], rows)
    if report["variants"]:
        ui.table("generated variants", ["file", "base", "modules", "edited"],
                 [[v["path"], v["base"], ", ".join(v["modules"]), v["edited"]] for v in report["variants"]])
    for key in report["unknown_modules"]:
        ui.info(f"note: module {key!r} was applied by a newer yolopatch; upgrade yolopatch to manage it")
    return 0
