"""`yolopatch check` on a YOLOv5 tree: would ``apply`` change anything (``engine.patched_sources`` must
return the texts unchanged for every applied module, the variant renderer must reproduce every generated
YAML), would ``revert`` find what it expects (markers, digests, branches, import names), and can YOLOv5
resolve every module a model YAML names? Reads files, writes nothing."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import yaml

from yolopatch import catalog, checkpoints
from yolopatch.catalog import ModuleSpec
from yolopatch.changes import read_text
from yolopatch.checks import shared
from yolopatch.checks.findings import Context, Finding, Report
from yolopatch.engine import patched_sources
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.state import APPLIED, ModuleState, Sources, module_states, unknown_keys
from yolopatch.transforms import common_py, markers, shadowing, yolo_py
from yolopatch.tree import Tree
from yolopatch.variant_files import generated_variants


def collect(tree: Tree, cwd: Optional[Path] = None) -> Report:
    """Every finding in ``tree``, sorted by file, line and code. Reads files, writes nothing."""
    context = Context(tree, (cwd or Path.cwd()).resolve())
    try:
        sources = Sources.read(tree)
    except YolopatchError as error:
        finding = Finding("unreadable", error.path or tree.models_dir, error.line, error.message,
                          error.hint or "fix the file so that Python can import it")
        return Report(tree.root, [finding], 0, 0)
    states = module_states(sources)
    uses = _scan_model_yamls(tree)
    generated = generated_variants(tree)
    found = _module_findings(context, sources, states, uses)
    found += _idempotency_findings(context, sources, [s for s in states.values() if s.status == APPLIED])
    found += _unknown_key_findings(context, sources)
    found += _unknown_module_findings(context, sources, states, uses)
    found += shared.variant_findings(context, generated)
    found += _checkpoint_findings(context, sources)
    found += _shadow_findings(context, sources, states)
    found += shared.leftover_findings(context)
    present = sum(1 for state in states.values() if state.present)
    return Report(tree.root, sorted(found, key=Finding.sort_key), present, len(generated))


def _shadow_findings(context: Context, sources: Sources, states: Dict[str, ModuleState]) -> List[Finding]:
    """Applied modules whose class something else hides (see transforms.shadowing)."""
    found: List[Finding] = []
    tree = context.tree
    for state in states.values():
        if state.inserted is None:
            continue
        name = state.spec.class_name
        in_common = (shadowing.in_common(sources.common, name, state.inserted.line)
                     if shared.may_be_bound_after(sources.common, name, state.inserted.line) else [])
        shadows = in_common + shadowing.in_yolo(
            sources.yolo, name, state.registration.line if state.registration else None)
        for shadow in shadows:
            path = tree.common_py if shadow.file == "common" else tree.yolo_py
            found.append(Finding("shadowed", path, shadow.line, f"{shadow.what}: YOLOv5 does not use yolopatch's "
                                 f"{name}", "remove or rename it, or rename yours with a new YAML"))
    return found


def _checkpoint_findings(context: Context, sources: Sources) -> List[Finding]:
    """Checkpoints whose pickle names a yolopatch class that models/common.py no longer defines."""
    defined = {node.name for node in shared.syntax(sources.common).body if isinstance(node, ast.ClassDef)}
    found = []
    for item in checkpoints.checkpoint_needs(context.tree.root):
        for key, names in item.modules.items():
            missing = [name for name in names if name not in defined]
            if missing:
                found.append(Finding(
                    "checkpoint-needs-module", item.path, None,
                    f"this checkpoint needs {key} ({', '.join(missing)}), which models/common.py lacks: loading it "
                    f"fails with \"Can't get attribute '{missing[0]}'\"",
                    f"{context.command('apply', key)} (or move the checkpoint out of the tree)"))
    return found


def _module_findings(context: Context, sources: Sources, states: Dict[str, ModuleState],
                     uses: Dict[str, List[Tuple[Path, int]]]) -> List[Finding]:
    found: List[Finding] = []
    for state in states.values():
        found += shared.inserted_findings(context, context.tree.common_py, sources.common, state.spec, state.inserted)
        found += _wiring_findings(context, sources, state)
        found += _hand_pasted_findings(context, state, uses)
    return found


def _wiring_findings(context: Context, sources: Sources, state: ModuleState) -> List[Finding]:
    spec, tree, name = state.spec, context.tree, state.spec.class_name
    apply_fix = context.command("apply", spec.key, *(["--replace"] if state.foreign_classes else []))
    found: List[Finding] = []
    registration = state.registration
    if registration is not None and registration.edited:
        found.append(Finding(
            "edited-registration", tree.yolo_py, registration.line,
            f"the parse_model branch for {name} was edited by hand since yolopatch added it",
            f"restore the branch `elif m is {name}:` as yolopatch wrote it, or run "
            f"`{context.command('revert', spec.key, '--force')}` then `{context.command('apply', spec.key)}`"))
    if state.inserted is not None and registration is None:
        found.append(Finding(
            "missing-registration", tree.yolo_py, yolo_py.facts(sources.yolo).parse_model_line,
            f"{name} is in {context.rel(tree.common_py)} (line {state.inserted.line}) but parse_model has no "
            f"branch for it, so it gets the YAML's raw arguments instead of its input width", apply_fix))
    if registration is not None and state.inserted is None:
        what = "a hand-pasted class" if state.foreign_classes else "no class of that name"
        found.append(Finding(
            "missing-class", tree.yolo_py, registration.line,
            f"parse_model has yolopatch's branch for {name} but {context.rel(tree.common_py)} has {what}",
            apply_fix))
    import_line = _common_import_line(sources.yolo)
    if state.present and state.listed_in_import is False:
        found.append(Finding(
            "missing-import", tree.yolo_py, import_line,
            f"{name} is missing from the `from {tree.models_module}.common import (...)` list, so "
            f"YOLOv5 cannot resolve it", apply_fix))
    if not state.present and not state.foreign_classes and state.listed_in_import:
        found.append(Finding(
            "missing-class", tree.yolo_py, import_line,
            f"{context.rel(tree.yolo_py)} imports {name} from {context.rel(tree.common_py)}, which does not define it "
            f"(ImportError)", f"{context.command('apply', spec.key)}, or remove {name} from the import list"))
    return found


def _common_import_line(yolo_text: str) -> Optional[int]:
    """Line of master's explicit ``from models.common import (...)``; None for a star import."""
    for node in shared.syntax(yolo_text).body:
        if (isinstance(node, ast.ImportFrom) and (node.module or "").endswith("models.common")
                and not any(alias.name == "*" for alias in node.names)):
            return node.lineno
    return None


def _hand_pasted_findings(context: Context, state: ModuleState,
                          uses: Dict[str, List[Tuple[Path, int]]]) -> List[Finding]:
    spec, tree, name = state.spec, context.tree, state.spec.class_name
    fix = context.command("apply", spec.key, "--replace")
    found: List[Finding] = []
    users = uses.get(name, [])
    for foreign in state.foreign_classes:
        if users:
            where = ", ".join(f"{context.rel(path)}:{line}" for path, line in users[:3])
            more = f" and {len(users) - 3} more" if len(users) > 3 else ""
            found.append(Finding(
                "hand-pasted-in-use", tree.common_py, foreign.line,
                f"class {name} was pasted by hand (the blog versions are known defective) and model YAMLs "
                f"use it: {where}{more}", fix))
        else:
            found.append(Finding(
                "hand-pasted", tree.common_py, foreign.line,
                f"class {name} was pasted by hand (the blog versions are known defective); no model YAML uses "
                f"it yet", fix))
    for registration in state.foreign_registrations:
        found.append(Finding(
            "hand-registered", tree.yolo_py, registration.line,
            f"{name} is wired into parse_model by hand, not by yolopatch", fix))
    return found


def _idempotency_findings(context: Context, sources: Sources, applied: Sequence[ModuleState]) -> List[Finding]:
    """Intact modules: ``apply`` must be a no-op. What it would still change has drifted.

    One ``patched_sources`` call for all of them (it costs a second on a big common.py); per module
    only when something would change, to say which.
    """
    if not applied:
        return []
    try:
        unchanged = patched_sources(sources, [state.spec for state in applied]) == (sources.common, sources.yolo)
    except YolopatchError:
        unchanged = False
    if unchanged:
        return []
    return [finding for state in applied for finding in _module_idempotency(context, sources, state)]


def _module_idempotency(context: Context, sources: Sources, state: ModuleState) -> List[Finding]:
    try:
        common, yolo = patched_sources(sources, [state.spec])
    except YolopatchError:
        return []  # apply refuses (a hand-pasted duplicate): reported by _hand_pasted_findings
    found: List[Finding] = []
    tree, spec = context.tree, state.spec
    for path, old, new in ((tree.common_py, sources.common, common), (tree.yolo_py, sources.yolo, yolo)):
        line = shared.first_changed_line(old, new)
        if line is None:
            continue
        added = shared.added_lines(old, new)
        lost_import = bool(added) and all(markers.Marker(markers.ADDED_IMPORT).render() in text for text in added)
        what = f"an import that {spec.class_name} needs is missing" if lost_import else \
            "its text differs from what yolopatch writes"
        found.append(Finding("apply-would-change", path, line,
                             f"`yolopatch apply {spec.key}` would still change this file: {what}",
                             context.command("apply", spec.key)))
    return found


_MARKER_KEY = re.compile(r"# yolopatch: (\S+)")


def _unknown_key_findings(context: Context, sources: Sources) -> List[Finding]:
    known = {spec.key for spec in catalog.all_modules()} | {markers.ADDED_IMPORT.split()[0]}
    if set(_MARKER_KEY.findall(sources.common + sources.yolo)) <= known:
        return []  # fast path: every marker names a known module (unknown_keys costs a second)
    unknown = unknown_keys(sources)
    if not unknown:
        return []
    inserted = common_py.find_modules(sources.common)
    registered = yolo_py.registered_keys(sources.yolo)
    found = []
    for key in unknown:
        path, line = ((context.tree.common_py, inserted[key].line) if key in inserted
                      else (context.tree.yolo_py, registered[key].line))
        found.append(Finding("unknown-yolopatch-module", path, line,
                             f"module {key!r} was added by a newer yolopatch that this one does not know",
                             "pip install -U yolopatch"))
    return found


# ----------------------------------------------------------------------------------------------
# Model YAMLs: which modules they name, and can YOLOv5 resolve them?

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _scan_model_yamls(tree: Tree) -> Dict[str, List[Tuple[Path, int]]]:
    """Module name -> [(yaml path, line)] over every model YAML under models/, read as YOLOv5 reads
    them (ASCII, undecodable bytes dropped).

    A YAML that does not parse is skipped: not yolopatch's to judge (YOLOv5 v6.0 itself ships a
    broken models/hub/yolov5-bifpn.yaml); a generated variant that stops parsing is ``edited-variant``.
    """
    uses: Dict[str, List[Tuple[Path, int]]] = {}
    for path in sorted(tree.models_dir.rglob("*.yaml")):
        if not path.is_file():  # a dangling link, a folder named *.yaml
            continue
        try:
            text = path.read_bytes().decode("ascii", errors="ignore")
        except OSError:
            continue
        try:
            root = yaml.compose(text, Loader=_LOADER)
        except yaml.YAMLError:
            continue
        for name, line in _module_rows(root):
            uses.setdefault(name, []).append((path, line))
    return uses


def _module_rows(root: Optional[yaml.Node]) -> Iterable[Tuple[str, int]]:
    """(module name, line) of every ``[from, number, module, args]`` row in backbone and head."""
    if not isinstance(root, yaml.MappingNode):
        return
    sections = {key.value: value for key, value in root.value if isinstance(key, yaml.ScalarNode)}
    for section in ("backbone", "head"):
        node = sections.get(section)
        if not isinstance(node, yaml.SequenceNode):
            continue
        for row in node.value:
            if isinstance(row, yaml.SequenceNode) and len(row.value) >= 3:
                module = row.value[2]
                if isinstance(module, yaml.ScalarNode) and module.tag == "tag:yaml.org,2002:str":
                    yield module.value, module.start_mark.line + 1


def _top_level_names(text: str) -> Set[str]:
    """Names a module binds at top level (classes, functions, assignments, imports; also inside
    top-level if/try blocks): what ``from x import *`` hands on when there is no ``__all__``."""
    names: Set[str] = set()
    pending: List[ast.stmt] = list(shared.syntax(text).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names if alias.name != "*")
        elif isinstance(node, (ast.If, ast.Try)):
            pending += [*node.body, *node.orelse, *getattr(node, "finalbody", []),
                        *(stmt for handler in getattr(node, "handlers", []) for stmt in handler.body)]
    return names


def _names_in_file(path: Path) -> Set[str]:
    try:
        return _top_level_names(read_text(path))
    except (OSError, SyntaxError, YolopatchError):
        return set()


def yolo_namespace(tree: Tree, sources: Sources) -> Set[str]:
    """Names ``eval(m)`` in parse_model can resolve: yolo.py's own top-level names plus what it imports
    from models.common and models.experimental (everything on a star import, the listed names on
    master's explicit import)."""
    names = _top_level_names(sources.yolo)
    files = {"models.common": tree.common_py, "models.experimental": tree.models_dir / "experimental.py"}
    for node in ast.walk(shared.syntax(sources.yolo)):
        if not isinstance(node, ast.ImportFrom) or not node.module:
            continue
        source = next((path for suffix, path in files.items() if node.module.endswith(suffix)), None)
        if source is None:
            continue
        if any(alias.name == "*" for alias in node.names):
            names |= {name for name in _names_in_file(source) if not name.startswith("_")}
        else:
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def _is_torch_nn(name: str) -> bool:
    parts = name.split(".")
    prefix = 1 if parts[0] == "nn" else 2 if parts[:2] == ["torch", "nn"] else 0
    return bool(prefix) and len(parts) > prefix and all(part.isidentifier() for part in parts)


def _unknown_module_findings(context: Context, sources: Sources, states: Dict[str, ModuleState],
                             uses: Dict[str, List[Tuple[Path, int]]]) -> List[Finding]:
    known = yolo_namespace(context.tree, sources)
    registered = {state.spec.class_name for state in states.values() if state.registration is not None}
    by_class = catalog.by_class_name()
    found = []
    for name, places in uses.items():
        if name in known or name in registered or _is_torch_nn(name):
            continue
        fix = _unknown_module_fix(context, name, by_class)
        for path, line in places:
            found.append(Finding("unknown-module", path, line,
                                 f"module {name!r} is neither YOLOv5's own nor registered by yolopatch; "
                                 f"YOLOv5 cannot build this model (NameError)", fix))
    return found


def _unknown_module_fix(context: Context, name: str, by_class: Dict[str, ModuleSpec]) -> str:
    if name in by_class:
        return context.command("apply", by_class[name].key)
    try:
        spec = catalog.get(name)
    except UsageError:
        return (f"correct the name, or define {name} in {context.rel(context.tree.common_py)} and wire it "
                f"into parse_model")
    return f"rename it to {spec.class_name} and run `{context.command('apply', spec.key)}`"
