"""`yolopatch check` on an Ultralytics tree: the same questions as on YOLOv5, asked of the three files a
module lives in (``nn/modules/yolopatch.py``, ``nn/modules/__init__.py``, ``nn/tasks.py``), plus one only
Ultralytics has: does the user's interpreter import this tree's ``ultralytics`` at all?

Findings by file: the class (``edited-class``, ``outdated``, ``shadowed``), its export from nn.modules
(``missing-export``), tasks.py's import list and parse_model branch (``missing-import``,
``missing-registration``, ``missing-class``, ``shadowed`` by a later rebinding or the channel set),
``apply-would-change`` for anything else apply would still write, generated variants, checkpoints, leftovers
of killed runs, and ``other-ultralytics-imported``. Reads files, writes nothing.
"""

from __future__ import annotations

import ast
import io
import tokenize
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from yolopatch import catalog, checkpoints, variants
from yolopatch.catalog import ModuleSpec
from yolopatch.checks import shared
from yolopatch.checks.findings import Context, Finding, Report
from yolopatch.errors import YolopatchError
from yolopatch.statuses import APPLIED, PARTIAL
from yolopatch.targets import interpreter
from yolopatch.targets import ultralytics as target
from yolopatch.targets import ultralytics_edits as edits
from yolopatch.targets.ultralytics import Texts, UltralyticsModuleState, UltralyticsTree
from yolopatch.transforms import markers, shadowing
from yolopatch.variant_files import generated_variants

States = Dict[str, UltralyticsModuleState]


def collect(tree: UltralyticsTree, cwd: Optional[Path] = None, python: Optional[str] = None) -> Report:
    """Every finding in ``tree``, sorted by file, line and code; ``python``: the interpreter whose
    ``import ultralytics`` is checked (default: this one)."""
    context = Context(tree, (cwd or Path.cwd()).resolve())
    package = interpreter.lookup("ultralytics", python)
    extra = {"interpreter": package.to_json(tree.package_dir)}
    found = interpreter_findings(context, package)
    try:
        texts = Texts.read(tree)
    except YolopatchError as error:
        found.append(Finding("unreadable", error.path or tree.tasks, error.line, error.message,
                             error.hint or "fix the file so that Python can import it"))
        return Report(tree.root, sorted(found, key=Finding.sort_key), 0, 0, extra)
    states = {key: state for key, state in target.module_states(texts).items() if _present(texts, state)}
    generated = generated_variants(tree)  # type: ignore[arg-type]
    wiring = {key: _wiring_findings(context, texts, state) for key, state in states.items()}
    for state in states.values():
        found += shared.inserted_findings(context, tree.module_file, texts.module or "", state.spec, state.inserted)
        found += wiring[state.spec.key]
    unexplained = [s for s in states.values() if not wiring[s.spec.key]]  # the others have their finding
    found += _idempotency_findings(context, [s for s in unexplained if s.status == APPLIED],
                                   [s for s in unexplained if s.status == PARTIAL])
    found += _unknown_key_findings(context, texts)
    found += _shadow_findings(context, texts, states)
    found += shared.variant_findings(context, generated, dialect=variants.ULTRALYTICS)
    found += _checkpoint_findings(context, texts)
    found += shared.leftover_findings(context)
    present = len(states)
    return Report(tree.root, sorted(found, key=Finding.sort_key), present, len(generated), extra)


# ----------------------------------------------------------------------------------------------
# Which ultralytics the interpreter imports


def interpreter_findings(context: Context, package: interpreter.PackageLookup) -> List[Finding]:
    """``other-ultralytics-imported`` when ``package`` (the interpreter's answer) is not this tree's package.
    An interpreter without any ultralytics is no finding (scripts run from the tree's root still import it;
    the JSON document and the summary say so)."""
    tree: UltralyticsTree = context.tree
    if package.package_dir is None or package.is_at(tree.package_dir):
        return []
    python = package.python
    if tree.layout == target.INSTALLED:
        fix = (f"patch the copy {python} imports instead (`{context.command('apply', '...', '--installed')}` with "
               f"--repo {package.package_dir.parent}), or pass --python for the interpreter that uses this one")
    else:
        fix = (f"`{python} -m pip uninstall -y ultralytics` then `{python} -m pip install -e {tree.root}` "
               f"(or pass --python PATH for the interpreter you run Ultralytics with)")
    return [Finding(
        "other-ultralytics-imported", tree.package_dir / "__init__.py", None,
        f"`import ultralytics` in {python} loads {package.package_dir}, not this tree's {tree.package_dir}: "
        f"Ultralytics never sees yolopatch's modules, and a model YAML naming one fails with KeyError", fix)]


# ----------------------------------------------------------------------------------------------
# Where each module is wired


def _present(texts: Texts, state: UltralyticsModuleState) -> bool:
    """Anything of yolopatch's for this module is in the three files. (``state.present`` also counts a name
    Ultralytics exports itself, CBAM, as present in a tree yolopatch never touched.)"""
    upstream_export = state.exported and target.exported_upstream(texts, state.spec.class_name)
    return state.inserted is not None or state.registered or state.imported or (state.exported and not upstream_export)


@lru_cache(maxsize=16)
def _marker_lines(text: Optional[str]) -> Dict[str, List[int]]:
    """Module key -> lines of the yolopatch marker comments for it (found with the tokenizer)."""
    found: Dict[str, List[int]] = {}
    if text is None:
        return found
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            marker = markers.parse_text(token.string)
            if marker is not None:
                found.setdefault(marker.key, []).append(token.start[0])
    return found


def _function_span(text: str, name: str) -> Tuple[int, int]:
    for node in shared.syntax(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node.lineno, node.end_lineno or node.lineno
    return 1, 1


def _import_line(text: str, module_suffix: str, name: Optional[str] = None) -> Optional[int]:
    """Line of the first top-level ``from ...<module_suffix> import`` (binding ``name``, when given)."""
    for node in shared.syntax(text).body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith(module_suffix) and (
                name is None or any((alias.asname or alias.name) == name for alias in node.names)):
            return node.lineno
    return None


def _all_line(text: str) -> Optional[int]:
    for node in shared.syntax(text).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return node.lineno
    return None


def _branch_line(texts: Texts, key: str) -> Optional[int]:
    first, last = _function_span(texts.tasks, "parse_model")
    return next((line for line in _marker_lines(texts.tasks).get(key, []) if first <= line <= last), None)


def _tasks_import_names(texts: Texts) -> List[str]:
    try:
        return edits.import_names(texts.tasks, edits.MODULES_PACKAGE)
    except edits.ListNotFound:
        return []


def _wiring_findings(context: Context, texts: Texts, state: UltralyticsModuleState) -> List[Finding]:
    if not state.present:
        return []
    tree: UltralyticsTree = context.tree
    spec, name = state.spec, state.spec.class_name
    apply_fix = context.command("apply", spec.key)
    module_rel, tasks_rel, init_rel = (context.rel(tree.module_file), context.rel(tree.tasks),
                                       context.rel(tree.modules_init))
    found: List[Finding] = []
    branch = _branch_line(texts, spec.key)
    if state.inserted is not None and branch is None:
        found.append(Finding(
            "missing-registration", tree.tasks, _function_span(texts.tasks, "parse_model")[0],
            f"{name} is in {module_rel} (line {state.inserted.line}) but parse_model has no branch for it, so it gets "
            f"the YAML's raw arguments instead of its input width", apply_fix))
    if state.inserted is None and branch is not None:
        found.append(Finding(
            "missing-class", tree.tasks, branch,
            f"parse_model has yolopatch's branch for {name} but {module_rel} has no class of that name "
            f"(importing ultralytics fails)", apply_fix))
    if target.exported_upstream(texts, name):  # CBAM: tasks.py imports yolopatch's straight from the module file
        marked = _import_line(texts.tasks, target.OWN_PACKAGE_MODULE, name)
        if state.inserted is not None and marked is None:
            found.append(Finding(
                "missing-import", tree.tasks, _import_line(texts.tasks, edits.MODULES_PACKAGE),
                f"{tasks_rel} lacks `from {target.OWN_PACKAGE_MODULE} import {name}`, so a YAML naming {name} gets "
                f"Ultralytics' own {name}, not yolopatch's", apply_fix))
        return found
    in_tasks = name in _tasks_import_names(texts)
    init_import = _import_line(texts.init, edits.OWN_MODULE.lstrip("."), name)
    in_all = name in (edits.all_names(texts.init) or ())
    if state.inserted is not None and not in_tasks:
        found.append(Finding(
            "missing-import", tree.tasks, _import_line(texts.tasks, edits.MODULES_PACKAGE),
            f"{name} is missing from {tasks_rel}'s `from {edits.MODULES_PACKAGE} import (...)`: parse_model resolves "
            f"YAML names with globals(), so a model YAML naming {name} fails with KeyError: '{name}'", apply_fix))
    if state.inserted is not None and (init_import is None or not in_all):
        what = "the import `from .yolopatch import " + name + "`" if init_import is None else "the __all__ entry"
        found.append(Finding(
            "missing-export", tree.modules_init, init_import or _all_line(texts.init),
            f"{init_rel} lacks {what} for {name}, so `from {edits.MODULES_PACKAGE} import {name}` "
            f"fails", apply_fix))
    if state.inserted is None and (init_import is not None or (in_tasks and branch is not None)):
        where = (tree.modules_init, init_import) if init_import is not None else (
            tree.tasks, _import_line(texts.tasks, edits.MODULES_PACKAGE))
        found.append(Finding(
            "missing-class", where[0], where[1],
            f"{context.rel(where[0])} imports {name}, which {module_rel} does not define: importing ultralytics "
            f"fails with ImportError", f"{apply_fix}, or remove {name} from the import"))
    return found


def _idempotency_findings(context: Context, applied: Sequence[UltralyticsModuleState],
                          partial: Sequence[UltralyticsModuleState]) -> List[Finding]:
    """Intact modules: ``apply`` must change nothing (one plan for all, per module only when it would);
    partial modules no other finding explains: what apply would still write."""
    tree: UltralyticsTree = context.tree
    found: List[Finding] = []
    if applied:
        try:
            unchanged = all(change.old == change.new for change in target.plan_apply(tree, [s.spec for s in applied]))
        except YolopatchError:
            unchanged = False
        if not unchanged:
            partial = [*applied, *partial]
    for state in partial:
        found += _module_idempotency(context, state.spec)
    return found


def _module_idempotency(context: Context, spec: ModuleSpec) -> List[Finding]:
    try:
        planned = target.plan_apply(context.tree, [spec])
    except YolopatchError:
        return []  # apply refuses (edited, a clash): reported as such
    found = []
    for change in planned:
        if change.old == change.new:
            continue
        line = shared.first_changed_line(change.old or "", change.new or "") if change.old is not None else None
        added = shared.added_lines(change.old or "", change.new or "")
        lost_import = bool(added) and all(markers.Marker(markers.ADDED_IMPORT).render() in text for text in added)
        what = f"an import that {spec.class_name} needs is missing" if lost_import else \
            "its text differs from what yolopatch writes"
        found.append(Finding("apply-would-change", change.path, line,
                             f"`yolopatch apply {spec.key}` would still change this file: {what}",
                             context.command("apply", spec.key)))
    return found


def _unknown_key_findings(context: Context, texts: Texts) -> List[Finding]:
    tree: UltralyticsTree = context.tree
    known = {spec.key for spec in catalog.all_modules()} | {markers.ADDED_IMPORT}
    first: Dict[str, Tuple[Path, int]] = {}
    for path, text in ((tree.module_file, texts.module), (tree.modules_init, texts.init), (tree.tasks, texts.tasks)):
        for key, lines in _marker_lines(text).items():
            if key not in known and key not in first:
                first[key] = (path, lines[0])
    return [Finding("unknown-yolopatch-module", path, line,
                    f"module {key!r} was added by a newer yolopatch that this one does not know",
                    "pip install -U yolopatch") for key, (path, line) in sorted(first.items())]


# ----------------------------------------------------------------------------------------------
# Shadowing


def _shadow_findings(context: Context, texts: Texts, states: States) -> List[Finding]:
    """What hides an applied class: a rebinding after it in the module file, after its import in
    nn/modules/__init__.py or nn/tasks.py, or its name in a parse_model container ahead of yolopatch's branch
    (the blog recipe "add it to base_modules")."""
    tree: UltralyticsTree = context.tree
    found: List[Finding] = []
    for state in states.values():
        if state.inserted is None or texts.module is None:
            continue
        name = state.spec.class_name
        places: List[Tuple[Path, int, str]] = [
            (tree.module_file, shadow.line, f"`{name}` is bound again here, after yolopatch's class")
            for shadow in _in_common(texts.module, name, state.inserted.line)]
        upstream = target.exported_upstream(texts, name)
        init_import = None if upstream else _import_line(texts.init, edits.OWN_MODULE.lstrip("."), name)
        if init_import is not None:
            places += [(tree.modules_init, shadow.line, f"`{name}` is bound again here, after the import of "
                        f"yolopatch's") for shadow in _in_common(texts.init, name, init_import)]
        tasks_import = _import_line(texts.tasks, target.OWN_PACKAGE_MODULE if upstream else edits.MODULES_PACKAGE,
                                    name)
        if tasks_import is not None:
            places += [(tree.tasks, shadow.line, f"`{name}` is bound again here, after the import of yolopatch's")
                       for shadow in _in_common(texts.tasks, name, tasks_import)]
        branch = _branch_line(texts, state.spec.key)
        if branch is not None:
            places += [(tree.tasks, line, f"parse_model lists `{name}` here, ahead of yolopatch's branch, which "
                        f"then never runs") for line in _listed_before(texts.tasks, name, branch)]
        for path, line, what in places:
            found.append(Finding("shadowed", path, line, f"{what}: Ultralytics does not use yolopatch's {name}",
                                 "remove or rename it, or rename yours with a new YAML"))
    return found


def _in_common(text: str, name: str, line: int) -> List[shadowing.Shadow]:
    return shadowing.in_common(text, name, line) if shared.may_be_bound_after(text, name, line) else []


def _listed_before(tasks: str, name: str, branch_line: int) -> List[int]:
    """Lines in parse_model, before ``branch_line``, where a tuple, list or set literal lists ``name``."""
    function = next((node for node in shared.syntax(tasks).body
                     if isinstance(node, ast.FunctionDef) and node.name == "parse_model"), None)
    if function is None:
        return []
    lines: Set[int] = set()
    for node in ast.walk(function):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            lines.update(element.lineno for element in node.elts
                         if isinstance(element, ast.Name) and element.id == name and element.lineno < branch_line)
    return sorted(lines)


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _checkpoint_findings(context: Context, texts: Texts) -> List[Finding]:
    """Checkpoints that need a yolopatch class the module file lacks, and (a warning) checkpoints that
    pickle classes outside ultralytics.nn.modules, which 8.4's restricted loader rejects."""
    tree: UltralyticsTree = context.tree
    fmt = checkpoints.format_for("ultralytics")
    defined = {node.name for node in shared.syntax(texts.module or "").body if isinstance(node, ast.ClassDef)}
    found = []
    for item in checkpoints.checkpoint_needs(tree.root, fmt):
        for key, names in item.modules.items():
            missing = [name for name in names if name not in defined]
            if missing:
                found.append(Finding(
                    "checkpoint-needs-module", item.path, None,
                    f"this checkpoint needs {key} ({', '.join(missing)}), which {context.rel(tree.module_file)} "
                    f"lacks: loading it fails with \"Can't get attribute '{missing[0]}'\"",
                    f"{context.command('apply', key)} (or move the checkpoint out of the tree)"))
    by_class = catalog.by_class_name()
    for path in checkpoints.find_checkpoints(tree.root, fmt):
        try:
            foreign = checkpoints.foreign_ultralytics_classes(path)
        except Exception:  # noqa: BLE001 - unreadable files are status's business, not a drift
            continue
        if foreign:
            found.append(_foreign_finding(context, path, foreign, by_class))
    return found


def _foreign_finding(context: Context, path: Path, foreign: Sequence[str], by_class: Dict[str, ModuleSpec]
                     ) -> Finding:
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    package = foreign[0].split(".")[0]
    keys = sorted({by_class[name.rpartition(".")[2]].key for name in foreign if name.rpartition(".")[2] in by_class})
    move = (f"`{context.command('apply', *keys)}` puts {'them' if len(keys) > 1 else 'it'} into "
            f"ultralytics/nn/modules; retrain or re-save the checkpoint with it" if keys else
            "define the class under ultralytics/nn/modules and retrain or re-save the checkpoint")
    return Finding(
        "checkpoint-foreign-class", path, None,
        f"this checkpoint pickles {shown}, outside ultralytics.nn.modules: ultralytics 8.4's restricted loader "
        f"rejects it, and where `{package}` does not import, Ultralytics tries to pip-install a package of that name",
        move, severity="warning")
