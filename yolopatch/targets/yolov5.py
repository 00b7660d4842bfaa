"""The YOLOv5 target (v5.0 to master; a git checkout or the ``yolov5`` package layout).

A module lives in two files: its class in ``models/common.py`` (with ``__all__`` where the file has one)
and a marked branch in ``models/yolo.py``'s parse_model (plus its name in the explicit import list of
master). The pure text plans are in ``engine`` (apply, revert) and ``state`` (what is applied);
variants are YOLOv5 YAMLs with ``depth_multiple``/``width_multiple`` and anchors, one file per scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from yolopatch import catalog, engine, records, ui
from yolopatch.catalog import ModuleSpec
from yolopatch.changes import FileChange
from yolopatch.errors import YolopatchError
from yolopatch.state import ModuleState, Sources, module_states, unknown_keys
from yolopatch.statuses import EDITED
from yolopatch.transforms import common_py, yolo_py
from yolopatch.targets.shared import checkpoints_report, print_variants_and_checkpoints, refuse_revert_for_checkpoints, variants_report
from yolopatch.tree import Tree
from yolopatch.variant_files import generated_variants, removal_changes, variant_changes


@dataclass(frozen=True)
class Yolov5Target:
    tree: Tree

    codebase = "yolov5"
    title = "YOLOv5"

    def statuses(self) -> Dict[str, str]:
        return {key: state.status for key, state in module_states(Sources.read(self.tree)).items()}

    def plan_apply(self, specs: Sequence[ModuleSpec], *, replace: bool) -> List[FileChange]:
        sources = Sources.read(self.tree)
        plan = engine.plan_apply(sources, specs, replace)
        replacing = [spec.class_name for spec in specs] if replace else []
        changes: List[FileChange] = engine.python_changes(sources, plan, replacing)
        for key, files in plan.replaced.items():
            record = records.record_change(self.tree, key, files)
            if record is not None:
                changes.append(record)
        return changes

    def plan_variants(self, specs: Sequence[ModuleSpec], *, bases: Sequence[str],
                      scales: Optional[Sequence[str]], positions: Optional[Sequence[str]]) -> List[FileChange]:
        return variant_changes(self.tree, specs, bases=bases, scales=scales, positions=positions)

    def plan_revert(self, keys: Sequence[str], *, force: bool) -> Tuple[List[str], List[FileChange]]:
        tree = self.tree
        sources = Sources.read(tree)
        states = module_states(sources)
        variants = generated_variants(tree)
        if not keys:
            keys = [key for key, state in states.items()
                    if state.present or any(key in v.keys for v in variants) or records.read_record(tree, key)]
        _refuse_edited(tree, [states[key] for key in keys], force)
        if not force:
            refuse_revert_for_checkpoints(tree, [key for key in keys if states[key].present])
        changes = _python_revert_changes(tree, sources, keys)
        changes += removal_changes(tree, variants, keys, force)
        _report_kept_imports(tree, sources, keys, states)
        return list(keys), changes

    def status_report(self) -> Dict[str, Any]:
        tree = self.tree
        sources = Sources.read(tree)
        facts = yolo_py.facts(sources.yolo)
        modules = {
            key: {
                "class": state.spec.class_name,
                "status": state.status,
                "installed_version": state.inserted.version if state.inserted else None,
                "available_version": state.spec.version,
                "common_py_line": state.inserted.line if state.inserted else None,
                "yolo_py_line": state.registration.line if state.registration else None,
                "hand_pasted_lines": [c.line for c in state.foreign_classes],
            }
            for key, state in module_states(sources).items()
        }
        return {
            "codebase": self.codebase,
            "root": str(tree.root),
            "layout": tree.layout,
            "version": tree.version(),
            "parse_model": {"container": facts.container, "explicit_common_imports": facts.explicit_common_imports,
                            "uses_ch_mul": facts.uses_ch_mul, "line": facts.parse_model_line},
            "modules": modules,
            "variants": variants_report(tree),
            "unknown_modules": unknown_keys(sources),
            "checkpoints": checkpoints_report(tree),
        }

    def print_status(self, report: Dict[str, Any]) -> None:
        imports = "explicit import list (master)" if report["parse_model"]["explicit_common_imports"] else "star import"
        ui.done(f"{self.title} tree: {ui.display_path(self.tree.root)}")
        ui.done(f"layout: {report['layout']}; version: {report['version'] or 'unknown'}; "
                f"parse_model: {report['parse_model']['container']} of channel modules, {imports}")
        rows = [[key, info["class"], info["status"], info["installed_version"] or "-",
                 info["common_py_line"] or "-", info["yolo_py_line"] or "-"]
                for key, info in report["modules"].items()]
        ui.table("modules", ["key", "class", "status", "version", "common.py line", "yolo.py line"], rows)
        print_variants_and_checkpoints(report)
        for key in report["unknown_modules"]:
            ui.info(f"note: module {key!r} was applied by a newer yolopatch; upgrade yolopatch to manage it")


def _refuse_edited(tree: Tree, states: Sequence[ModuleState], force: bool) -> None:
    for state in states:
        if state.status == EDITED and not force:
            path, line = state.edited_location(tree)
            raise YolopatchError(
                f"yolopatch's {state.spec.class_name} was edited by hand; revert would throw the edits away",
                path=path, line=line, hint=f"keep a copy of your edits and run `yolopatch revert {state.spec.key} --force`")


def _python_revert_changes(tree: Tree, sources: Sources, keys: Sequence[str]) -> List[FileChange]:
    """common.py and yolo.py without ``keys``, with whatever `apply --replace` replaced put back."""
    common, yolo = engine.reverted_sources(sources, keys)
    texts = {tree.common_py: common, tree.yolo_py: yolo}
    changes: List[FileChange] = []
    editable = {tree.common_py: common_py.editable_ranges(sources.common, (), engine.template_comments()),
                tree.yolo_py: yolo_py.editable_ranges(sources.yolo)}
    for key in keys:
        record = records.read_record(tree, key)
        if record is None:
            continue
        record_path, record_text, files = record
        name = catalog.get(key).class_name
        editable[tree.common_py] += common_py.editable_ranges(sources.common, [name])
        editable[tree.yolo_py] += yolo_py.editable_ranges(sources.yolo, [name])
        for path, versions in files.items():
            if path in texts:
                texts[path] = records.restore(record_path, path, versions, texts[path])
        changes.append(FileChange(record_path, record_text, None, owned=True))
    old = {tree.common_py: sources.common, tree.yolo_py: sources.yolo}
    return [FileChange(path, old[path], text, editable=editable[path]) for path, text in texts.items()] + changes


def _report_kept_imports(tree: Tree, sources: Sources, keys: Sequence[str], states: Dict[str, ModuleState]) -> None:
    """Say which imports yolopatch added stay, because the user's own code now uses them."""
    remaining = [key for key, state in states.items() if state.inserted is not None and key not in keys]
    for text, line in common_py.kept_imports(sources.common, "", engine.imports_needed_by(remaining)):
        ui.info(f"{ui.display_path(tree.common_py)}:{line}: kept `{text}` (added by yolopatch, now used by your code)")
