"""`yolopatch status`: the tree's layout and version, and what yolopatch applied to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from yolopatch import checkpoints, ui
from yolopatch.variant_files import generated_variants
from yolopatch.state import Sources, module_states, unknown_keys
from yolopatch.transforms import yolo_py
from yolopatch.targets import ultralytics
from yolopatch.targets.locate import is_ultralytics, locate_any


def collect(repo: Path, installed: bool = False) -> Dict[str, Any]:
    found = locate_any(repo, allow_installed=installed)
    if is_ultralytics(found):
        return _collect_ultralytics(found)  # type: ignore[arg-type]
    tree = found
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
    needs = [{"path": tree.relative(item.path), "modules": {key: list(names) for key, names in item.modules.items()},
              "error": item.error} for item in checkpoints.checkpoint_needs(tree.root) if item.modules or item.error]
    return {
        "codebase": "yolov5",
        "root": str(tree.root),
        "layout": tree.layout,
        "version": tree.version(),
        "parse_model": {"container": facts.container, "explicit_common_imports": facts.explicit_common_imports,
                        "uses_ch_mul": facts.uses_ch_mul, "line": facts.parse_model_line},
        "modules": modules,
        "variants": variants,
        "unknown_modules": unknown_keys(sources),
        "checkpoints": needs,  # checkpoints in the tree that need yolopatch's classes to load (or are unreadable)
    }


def _collect_ultralytics(tree: ultralytics.UltralyticsTree) -> Dict[str, Any]:
    texts = ultralytics.Texts.read(tree)
    states = ultralytics.module_states(texts)
    modules = {
        key: {"class": state.spec.class_name, "status": state.status,
              "installed_version": state.inserted.version if state.inserted else None,
              "available_version": state.spec.version,
              "module_file_line": state.inserted.line if state.inserted else None,
              "registered": state.registered, "imported_in_tasks": state.imported, "exported": state.exported}
        for key, state in states.items()
    }
    channel_set = ultralytics.edits.channel_set(texts.tasks)
    return {"codebase": "ultralytics", "root": str(tree.root), "layout": tree.layout, "version": tree.version(),
            "parse_model": {"container": channel_set.kind}, "modules": modules,
            "variants": [{"path": tree.relative(v.path), "base": v.base, "modules": list(v.keys), "edited": v.edited}
                         for v in generated_variants(tree)],  # type: ignore[arg-type]
            "unknown_modules": [], "checkpoints": []}


def status(repo: Path, as_json: bool = False, installed: bool = False) -> int:
    report = collect(repo, installed)
    if as_json:
        ui.print_json(report)
        return 0
    if report["codebase"] == "ultralytics":
        return _print_ultralytics(report)
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
    needing = [item for item in report["checkpoints"] if item["modules"]]
    if needing:
        ui.table("checkpoints that need yolopatch's modules to load (revert refuses while they are here)",
                 ["checkpoint", "modules (classes)"],
                 [[item["path"], "; ".join(f"{key} ({', '.join(names)})" for key, names in item["modules"].items())]
                  for item in needing])
    for item in report["checkpoints"]:
        if item["error"]:
            ui.info(f"note: {item['path']} could not be read as a checkpoint ({item['error']})")
    for key in report["unknown_modules"]:
        ui.info(f"note: module {key!r} was applied by a newer yolopatch; upgrade yolopatch to manage it")
    return 0


def _print_ultralytics(report: Dict[str, Any]) -> int:
    ui.done(f"Ultralytics tree: {report['root']}")
    ui.done(f"layout: {report['layout']}; version: {report['version'] or 'unknown'}; "
            f"parse_model: {report['parse_model']['container']} of channel modules")
    rows = [[key, info["class"], info["status"], info["installed_version"] or "-", info["module_file_line"] or "-"]
            for key, info in report["modules"].items()]
    ui.table("modules", ["key", "class", "status", "version", "nn/modules/yolopatch.py line"], rows)
    return 0
