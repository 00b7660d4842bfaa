"""Apply and revert as pure plans: source texts in, source texts (and what to record) out.

Commands read the tree (``state.Sources``), call these, turn the texts into ``FileChange``s with the
line ranges each change may touch (``editable``), and write them all-or-nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from yolopatch import catalog
from yolopatch.catalog import ModuleSpec
from yolopatch.changes import FileChange
from yolopatch.errors import YolopatchError
from yolopatch.state import ModuleState, Sources, imports_needed_by, module_states
from yolopatch.statuses import EDITED
from yolopatch.transforms import common_py, yolo_py
from yolopatch.transforms.common_py import template_of
from yolopatch.tree import Tree

Versions = Tuple[str, str]  # (text before an apply --replace, that text without what it replaced)


@dataclass
class ApplyPlan:
    common: str
    yolo: str
    replaced: Dict[str, Dict[Path, Versions]] = field(default_factory=dict)  # by module key


def refuse_conflicts(tree: Tree, state: ModuleState, replace: bool) -> None:
    """Hand-pasted classes, hand-made registrations or hand-edited insertions: refuse unless --replace."""
    if replace:
        return
    name = state.spec.class_name
    for foreign in state.foreign_classes:
        raise YolopatchError(
            f"class {name} already defined and not inserted by yolopatch (hand-pasted?)",
            path=tree.common_py, line=foreign.line,
            hint=f"remove it, or run `yolopatch apply {state.spec.key} --replace` to swap in the yolopatch version")
    for registration in state.foreign_registrations:
        raise YolopatchError(
            f"{name} is already wired into parse_model by hand",
            path=tree.yolo_py, line=registration.line,
            hint=f"remove it, or run `yolopatch apply {state.spec.key} --replace` to use the yolopatch branch")
    if state.status == EDITED:
        path, line = state.edited_location(tree)
        raise YolopatchError(f"yolopatch's {name} was edited by hand since it was inserted", path=path, line=line,
                             hint=f"run `yolopatch apply {state.spec.key} --replace` to overwrite your edits")


def patched_sources(sources: Sources, specs: Sequence[ModuleSpec], replace: bool = False) -> Tuple[str, str]:
    """common.py and yolo.py texts with ``specs`` applied."""
    plan = plan_apply(sources, specs, replace)
    return plan.common, plan.yolo


def plan_apply(sources: Sources, specs: Sequence[ModuleSpec], replace: bool = False) -> ApplyPlan:
    states = module_states(sources)
    for spec in specs:
        refuse_conflicts(sources.tree, states[spec.key], replace)
    if not replace:
        common, yolo = _apply_all(sources, specs, replace=False)
        return ApplyPlan(common, yolo)
    # --replace: one module at a time, recording what each replaced so that revert can put it back
    plan = ApplyPlan(sources.common, sources.yolo)
    for spec in specs:
        common, yolo = _apply_all(Sources(sources.tree, plan.common, plan.yolo), [spec], replace=True)
        stripped_common, stripped_yolo = _revert_texts(common, yolo, [spec], remaining=[])
        plan.replaced[spec.key] = {
            sources.tree.common_py: (plan.common, stripped_common),
            sources.tree.yolo_py: (plan.yolo, stripped_yolo),
        }
        plan.common, plan.yolo = common, yolo
    return plan


def _apply_all(sources: Sources, specs: Sequence[ModuleSpec], replace: bool) -> Tuple[str, str]:
    common, yolo = common_py.parse(sources.common), yolo_py.parse(sources.yolo)
    needed: List[common_py.ImportSpec] = []
    for spec in specs:
        template = template_of(spec)
        common = common_py.insert_module(common, template, replace_foreign=replace, with_imports=False)
        common = _add_to_all(common, spec.class_name, sources)
        needed += common_py.template_imports(template)
        if replace:
            yolo = yolo_py.drop_foreign_module(yolo, spec.class_name)
    yolo = yolo_py.register_modules(yolo, [(spec.class_name, spec.key, spec.registration) for spec in specs])
    return common_py.add_imports(common, needed).code, yolo.code


def _add_to_all(common: "common_py.cst.Module", name: str, sources: Sources) -> "common_py.cst.Module":
    try:
        return common_py.add_to_all(common, name, sources.common)
    except common_py.UnsupportedAll as error:
        raise YolopatchError(f"cannot add {name} to this __all__ (not a literal list or tuple of names)",
                             path=sources.tree.common_py, line=error.line,
                             hint=f"add {name!r} to __all__ by hand after applying, or make it a literal list") \
            from error


def python_changes(sources: Sources, plan: ApplyPlan, replacing: Sequence[str]) -> List[FileChange]:
    """The FileChanges of an apply plan, each with the lines it may touch."""
    tree = sources.tree
    return [
        FileChange(tree.common_py, sources.common, plan.common,
                   editable=common_py.editable_ranges(sources.common, replacing, template_comments())),
        FileChange(tree.yolo_py, sources.yolo, plan.yolo, editable=yolo_py.editable_ranges(sources.yolo, replacing)),
    ]


def template_comments() -> Tuple[str, ...]:
    """Every comment line a catalogue template puts above one of its definitions."""
    found: List[str] = []
    for spec in catalog.all_modules():
        for statement in common_py.template_statements(template_of(spec)):
            found += [line.comment.value for line in statement.leading_lines if line.comment is not None]
    return tuple(found)


def reverted_sources(sources: Sources, keys: Sequence[str]) -> Tuple[str, str]:
    """common.py and yolo.py texts with modules ``keys`` taken out (imports others still need kept)."""
    states = module_states(sources)
    remaining = [key for key, state in states.items() if state.inserted is not None and key not in keys]
    return _revert_texts(sources.common, sources.yolo, [catalog.get(key) for key in keys], remaining)


def _revert_texts(common_text: str, yolo_text: str, specs: Sequence[ModuleSpec],
                  remaining: Sequence[str]) -> Tuple[str, str]:
    common, yolo = common_py.parse(common_text), yolo_py.parse(yolo_text)
    still_needed = imports_needed_by(list(remaining))
    for spec in specs:
        common = common_py.remove_module(common, spec.key, still_needed=still_needed, template=template_of(spec))
        common = common_py.remove_from_all(common, spec.class_name, common_text) if "__all__" in common_text \
            else common
    yolo = yolo_py.unregister_modules(yolo, [(spec.class_name, spec.key) for spec in specs])
    return common.code, yolo.code
