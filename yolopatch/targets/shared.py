"""What every target shares: the report of generated variants and checkpoints, and revert's checkpoint guard."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Sequence

from yolopatch import catalog, checkpoints, ui
from yolopatch.errors import YolopatchError
from yolopatch.variant_files import generated_variants


def variants_report(tree: Any) -> List[Dict[str, Any]]:
    return [{"path": tree.relative(v.path), "base": v.base, "modules": list(v.keys), "edited": v.edited}
            for v in generated_variants(tree)]


def checkpoints_report(tree: Any) -> List[Dict[str, Any]]:
    """Checkpoints in the tree that need yolopatch's classes to load (or cannot be read)."""
    return [{"path": tree.relative(item.path), "modules": {key: list(names) for key, names in item.modules.items()},
             "error": item.error} for item in checkpoints.checkpoint_needs(tree.root, _format(tree)) if item.modules or item.error]


def print_variants_and_checkpoints(report: Dict[str, Any]) -> None:
    """The part of `status` every target shares: generated variants and checkpoints that need modules."""
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


def refuse_revert_for_checkpoints(tree: Any, keys: Sequence[str]) -> None:
    """Refuse to take out a module that a checkpoint in the tree needs to load (its pickle names the class)."""
    needed = checkpoints.needing(checkpoints.checkpoint_needs(tree.root, _format(tree)), keys)
    if not needed:
        return
    key, paths = next(iter(needed.items()))
    names = ", ".join(tree.relative(path) for path in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    classes = catalog.get(key).class_name
    modules = " ".join(needed)
    raise YolopatchError(
        f"{len(paths)} checkpoint(s) in this tree need {key} to load ({names}); without it they fail with "
        f"\"Can't get attribute '{classes}'\"", path=paths[0],
        hint=f"move them out of the tree first, or run `yolopatch revert {modules} --force` "
             "(re-applying the module makes them load again)")


def _format(tree: Any) -> "checkpoints.CheckpointFormat":
    """Where the tree's classes live in a pickle: Ultralytics' own package; for YOLOv5 and YOLOv7, the tree's
    models package as its code imports it (``models.common``, ``yolov5.models.common``, ``yolov7_package...``)."""
    if getattr(tree, "codebase", "yolov5") == "ultralytics":
        return checkpoints.ULTRALYTICS
    own = f"{tree.models_module}.common"
    modules = tuple(dict.fromkeys(checkpoints.YOLOV5.class_modules + (own,)))
    return dataclasses.replace(checkpoints.YOLOV5, class_modules=modules)
