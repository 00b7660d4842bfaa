"""`yolopatch check`: is everything yolopatch added still present, intact and consistent? Writes nothing.

check asks the engine's own pure functions the questions a CI job cares about: would ``apply`` change
anything (``apply.patched_sources`` must return the texts unchanged for every applied module, the
variant renderer must reproduce every generated YAML), would ``revert`` find what it expects (markers,
digests, branches, import names), and can YOLOv5 resolve every module a model YAML names?

Each problem is a ``Finding``: a stable code, the file and line, what is wrong, and the fix. Exit
codes (ruff's convention): 0 nothing drifted, 1 findings, 2 check could not run (bad options, no
YOLOv5 tree at ``--repo``, an internal error). Output formats: ``text`` (one ``path:line: code:
message (fix: ...)`` line per finding and a summary), ``json`` (schema ``JSON_SCHEMA_VERSION``, see
``to_json``) and ``github`` (workflow-command annotations, see ``to_github``).
"""

from __future__ import annotations

import ast
import difflib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import yaml

from yolopatch import catalog, checkpoints, ui, variants
from yolopatch.catalog import ModuleSpec
from yolopatch.changes import read_text
from yolopatch.engine import patched_sources
from yolopatch.variant_files import GeneratedVariant, generated_variants
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.state import APPLIED, ModuleState, Sources, module_states, template_of, unknown_keys
from yolopatch import changes
from yolopatch.transaction import writable_folders
from yolopatch.transforms import common_py, markers, shadowing, yolo_py
from yolopatch.tree import Tree, locate

JSON_SCHEMA_VERSION = 1
FORMATS = ("text", "json", "github")

# Every finding code, with what it means (the README's table is generated from the same words).
CODES: Dict[str, str] = {
    "unreadable": "models/common.py or models/yolo.py cannot be read or parsed",
    "edited-class": "code yolopatch inserted into models/common.py was edited by hand",
    "edited-registration": "yolopatch's parse_model branch in models/yolo.py was edited by hand",
    "missing-registration": "a yolopatch class is in models/common.py but not wired into parse_model",
    "missing-class": "parse_model (or master's import list) names a yolopatch class models/common.py lacks",
    "missing-import": "master-style `from models.common import (...)` list lacks a yolopatch class",
    "outdated": "an inserted module differs from this yolopatch's template (older or newer)",
    "unknown-yolopatch-module": "a module inserted by a newer yolopatch that this one does not know",
    "apply-would-change": "`yolopatch apply` would still change an applied module's files (e.g. a lost import)",
    "hand-pasted": "a hand-pasted (blog) copy of a catalogue class, not used by any model YAML",
    "hand-pasted-in-use": "a hand-pasted (blog) copy of a catalogue class that a model YAML uses",
    "hand-registered": "a catalogue class wired into parse_model by hand",
    "unknown-module": "a model YAML names a module that is neither YOLOv5's own nor registered",
    "edited-variant": "a yolopatch-generated variant YAML was edited by hand",
    "stale-variant": "a generated variant no longer matches what yolopatch would generate from its base",
    "build-failed": "with --build: a generated variant does not build",
    "shadowed": "code after yolopatch's (a rebinding, an import, an earlier parse_model test) hides its class",
    "interrupted-run": "a yolopatch run was killed while writing; the next yolopatch command rolls it back",
    "leftover-file": "a temporary or backup file of a killed yolopatch run",
    "checkpoint-needs-module": "a checkpoint in the tree (runs/**/weights/*.pt, *.pt) needs a module the tree lacks",
}


@dataclass(frozen=True)
class Finding:
    """One problem: ``path`` absolute, ``line`` 1-based or None for the whole file."""

    code: str
    path: Path
    line: Optional[int]
    message: str
    fix: str
    severity: str = "error"

    def sort_key(self) -> Tuple[str, int, str, str]:
        return (str(self.path), self.line or 0, self.code, self.message)


@dataclass(frozen=True)
class _Context:
    """What every finding needs: the tree, and how the user must spell commands from where they are."""

    tree: Tree
    cwd: Path

    def command(self, *words: str) -> str:
        """``yolopatch <words>``, with ``--repo`` when running from ``cwd`` would not find this tree."""
        inside = self.cwd == self.tree.root or self.tree.root in self.cwd.parents
        repo = [] if inside else ["--repo", _display(self.tree.root, self.cwd)]
        return " ".join(shlex.quote(word) for word in ("yolopatch", *words, *repo))

    def rel(self, path: Path) -> str:
        return self.tree.relative(path)


def _display(path: Path, cwd: Path) -> str:
    """``path`` relative to ``cwd`` when it lies below it (what editors and GitHub want), else absolute."""
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------------------------
# Collecting findings


@dataclass(frozen=True)
class Report:
    """What check found, and what it looked at (for the summary line)."""

    tree: Tree
    findings: List[Finding]
    modules_present: int
    variants: int

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        if self.findings:
            return f"{len(self.findings)} problem(s) found in {self.tree.root}"
        return (f"ok: yolopatch's changes in {self.tree.root} are intact ({self.modules_present} module(s) "
                f"applied, {self.variants} generated variant(s))")


def collect(tree: Tree, cwd: Optional[Path] = None) -> Report:
    """Every finding in ``tree``, sorted by file, line and code. Reads files, writes nothing."""
    context = _Context(tree, (cwd or Path.cwd()).resolve())
    try:
        sources = Sources.read(tree)
    except YolopatchError as error:
        finding = Finding("unreadable", error.path or tree.models_dir, error.line, error.message,
                          error.hint or "fix the file so that Python can import it")
        return Report(tree, [finding], 0, 0)
    states = module_states(sources)
    uses = _scan_model_yamls(tree)
    generated = generated_variants(tree)
    found = _module_findings(context, sources, states, uses)
    found += _idempotency_findings(context, sources, [s for s in states.values() if s.status == APPLIED])
    found += _unknown_key_findings(context, sources)
    found += _unknown_module_findings(context, sources, states, uses)
    found += _variant_findings(context, generated)
    found += _checkpoint_findings(context, sources)
    found += _shadow_findings(context, sources, states)
    found += _leftover_findings(context)
    present = sum(1 for state in states.values() if state.present)
    return Report(tree, sorted(found, key=Finding.sort_key), present, len(generated))


def _shadow_findings(context: _Context, sources: Sources, states: Dict[str, ModuleState]) -> List[Finding]:
    """Applied modules whose class something else hides (see transforms.shadowing)."""
    found: List[Finding] = []
    tree = context.tree
    for state in states.values():
        if state.inserted is None:
            continue
        name = state.spec.class_name
        shadows = shadowing.in_common(sources.common, name, state.inserted.line) + shadowing.in_yolo(
            sources.yolo, name, state.registration.line if state.registration else None)
        for shadow in shadows:
            path = tree.common_py if shadow.file == "common" else tree.yolo_py
            found.append(Finding("shadowed", path, shadow.line, f"{shadow.what}: YOLOv5 does not use yolopatch's "
                                 f"{name}", f"remove or rename it, or rename yours with a new YAML"))
    return found


def _leftover_findings(context: _Context) -> List[Finding]:
    tree = context.tree
    found = [Finding("interrupted-run", journal, None, "a yolopatch run was killed while swapping files",
                     f"{context.command('revert', '--dry-run')} (every apply, revert or variant command first "
                     f"rolls an interrupted run back)")
             for journal in changes.pending_journals(tree.state_dir)]
    for path in changes.leftovers(writable_folders(tree)):
        if changes.is_stale_leftover(path):
            fix = "the next apply/revert/variant removes it (or delete it)"
        else:
            fix = "an older yolopatch's backup: compare it with the file it copies, then delete it"
        found.append(Finding("leftover-file", path, None, "left by a yolopatch run that was killed", fix,
                             severity="warning"))
    return found


def _checkpoint_findings(context: _Context, sources: Sources) -> List[Finding]:
    """Checkpoints whose pickle names a yolopatch class that models/common.py no longer defines."""
    defined = {node.name for node in ast.parse(sources.common).body if isinstance(node, ast.ClassDef)}
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


def _first_changed_line(old: str, new: str) -> Optional[int]:
    """1-based line of ``old`` where ``new`` first differs; None when equal."""
    if old == new:
        return None
    old_lines, new_lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
    for tag, i1, _i2, _j1, _j2 in difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False).get_opcodes():
        if tag != "equal":
            return min(i1 + 1, max(len(old_lines), 1))
    return max(len(old_lines), 1)


def _module_findings(context: _Context, sources: Sources, states: Dict[str, ModuleState],
                     uses: Dict[str, List[Tuple[Path, int]]]) -> List[Finding]:
    found: List[Finding] = []
    for state in states.values():
        found += _inserted_findings(context, sources, state)
        found += _wiring_findings(context, sources, state)
        found += _hand_pasted_findings(context, state, uses)
    return found


def _inserted_findings(context: _Context, sources: Sources, state: ModuleState) -> List[Finding]:
    inserted, spec, tree = state.inserted, state.spec, context.tree
    if inserted is None:
        return []
    if inserted.edited:
        return [Finding(
            "edited-class", tree.common_py, _edited_line(sources, state),
            f"{spec.class_name} ({spec.key}) was edited by hand since yolopatch inserted it",
            f"{context.command('apply', spec.key, '--replace')} (overwrites the edits; keep a copy first)")]
    if inserted.recorded_digest == state.current_digest:
        return []
    installed = inserted.version
    if installed is not None and installed > spec.version:
        return [Finding(
            "outdated", tree.common_py, inserted.line,
            f"{spec.class_name} v{installed} was inserted by a newer yolopatch; this one has v{spec.version}",
            f"pip install -U yolopatch (or `{context.command('apply', spec.key)}` to go back to v{spec.version})")]
    if installed is not None and installed < spec.version:
        message = f"{spec.class_name} v{installed} was inserted by an older yolopatch; this one has v{spec.version}"
    else:
        message = (f"{spec.class_name} differs from this yolopatch's v{spec.version} template (inserted by another "
                   f"build of the same version)")
    return [Finding("outdated", tree.common_py, inserted.line, message, context.command("apply", spec.key))]


def _edited_line(sources: Sources, state: ModuleState) -> int:
    """The first hand-edited line: where re-inserting the recorded template would change the file.

    Exact when the recorded digest is the installed template's; else the main class line.
    """
    assert state.inserted is not None
    if state.inserted.recorded_digest != state.current_digest:
        return state.inserted.line
    restored = common_py.insert_module(common_py.parse(sources.common), template_of(state.spec),
                                       with_imports=False).code
    return _first_changed_line(sources.common, restored) or state.inserted.line


def _wiring_findings(context: _Context, sources: Sources, state: ModuleState) -> List[Finding]:
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
    for node in ast.parse(yolo_text).body:
        if (isinstance(node, ast.ImportFrom) and (node.module or "").endswith("models.common")
                and not any(alias.name == "*" for alias in node.names)):
            return node.lineno
    return None


def _hand_pasted_findings(context: _Context, state: ModuleState,
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


def _idempotency_findings(context: _Context, sources: Sources, applied: Sequence[ModuleState]) -> List[Finding]:
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


def _module_idempotency(context: _Context, sources: Sources, state: ModuleState) -> List[Finding]:
    try:
        common, yolo = patched_sources(sources, [state.spec])
    except YolopatchError:
        return []  # apply refuses (a hand-pasted duplicate): reported by _hand_pasted_findings
    found: List[Finding] = []
    tree, spec = context.tree, state.spec
    for path, old, new in ((tree.common_py, sources.common, common), (tree.yolo_py, sources.yolo, yolo)):
        line = _first_changed_line(old, new)
        if line is None:
            continue
        added = _added_lines(old, new)
        lost_import = bool(added) and all(markers.Marker(markers.ADDED_IMPORT).render() in text for text in added)
        what = f"an import that {spec.class_name} needs is missing" if lost_import else \
            "its text differs from what yolopatch writes"
        found.append(Finding("apply-would-change", path, line,
                             f"`yolopatch apply {spec.key}` would still change this file: {what}",
                             context.command("apply", spec.key)))
    return found


def _added_lines(old: str, new: str) -> List[str]:
    """Lines ``new`` has that ``old`` lacks (a context-free unified diff's ``+`` lines)."""
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
    return [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]


_MARKER_KEY = re.compile(r"# yolopatch: (\S+)")


def _unknown_key_findings(context: _Context, sources: Sources) -> List[Finding]:
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
    pending: List[ast.stmt] = list(ast.parse(text).body)
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
    for node in ast.walk(ast.parse(sources.yolo)):
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


def _unknown_module_findings(context: _Context, sources: Sources, states: Dict[str, ModuleState],
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


def _unknown_module_fix(context: _Context, name: str, by_class: Dict[str, ModuleSpec]) -> str:
    if name in by_class:
        return context.command("apply", by_class[name].key)
    try:
        spec = catalog.get(name)
    except UsageError:
        return (f"correct the name, or define {name} in {context.rel(context.tree.common_py)} and wire it "
                f"into parse_model")
    return f"rename it to {spec.class_name} and run `{context.command('apply', spec.key)}`"


# ----------------------------------------------------------------------------------------------
# Generated variants


def _variant_findings(context: _Context, generated: Sequence[GeneratedVariant]) -> List[Finding]:
    found = []
    for variant in generated:
        info = variants.parse_generated_header(variant.text)
        assert info is not None
        expected = _regenerated(context.tree, variant, info)
        regenerate = _regenerate_command(context, variant, info)
        body = _body(variant.text)
        if variant.edited:
            matches = expected is not None and variants.body_hash(expected) == info.recorded_hash
            line = 1 + (_first_changed_line(body, expected) or 0) if matches and expected is not None else 1
            found.append(Finding(
                "edited-variant", variant.path, line,
                f"generated variant ({', '.join(info.keys)} on {info.base_name}) was edited by hand",
                f"delete its first line to keep the edits as your own model file, or delete the file and run "
                f"`{regenerate}` for yolopatch's version"))
        elif expected is not None and expected.replace("\r\n", "\n") != body.replace("\r\n", "\n"):
            found.append(Finding(
                "stale-variant", variant.path, 1 + (_first_changed_line(body, expected) or 0),
                f"no longer what yolopatch generates from {info.base_name} (the base changed, or another "
                f"yolopatch version wrote it)", regenerate))
    return found


def _body(text: str) -> str:
    return text.split("\n", 1)[1] if "\n" in text else ""


def _regenerated(tree: Tree, variant: GeneratedVariant, info: variants.GeneratedInfo) -> Optional[str]:
    """The body (after the header line) yolopatch would write for ``variant`` now; None when it cannot
    say (the base is gone or no longer has the positions, a module this yolopatch does not know)."""
    base = variant.path.parent / info.base_name
    known = {spec.key: spec for spec in catalog.all_modules()}
    if not base.is_file() or not all(key in known for key in info.keys):
        return None
    try:
        placements = [variants.Placement(known[key].class_name, key, positions, variants.load_spec(key).args,
                                         known[key].registration)
                      for key, positions in info.placements]
        base_text = read_text(base)
        text = variants.render_variant(base_text, base.name, placements)
    except YolopatchError:
        return None
    if "\r\n" in base_text and "\r\n" not in text:
        text = text.replace("\n", "\r\n")
    return _body(text)


def _regenerate_command(context: _Context, variant: GeneratedVariant, info: variants.GeneratedInfo) -> str:
    base = context.rel(variant.path.parent / info.base_name)
    words = ["variant", *info.keys, "--base", base]
    defaults = {key: variants.load_spec(key).placement for key in info.keys if key in
                {spec.key for spec in catalog.all_modules()}}
    positions = sorted({p for _, chosen in info.placements for p in chosen})
    if len(info.placements) == 1 and tuple(sorted(defaults.get(info.keys[0], ()))) != tuple(positions):
        words += ["--at", ",".join(info.placements[0][1])]
    return context.command(*words)


# ----------------------------------------------------------------------------------------------
# --build


def build_findings(tree: Tree, context: Optional[_Context] = None) -> List[Finding]:
    """Build every generated variant (and its base) with the tree's own YOLOv5 code, through
    ``yolopatch.commands.verify.build_cfgs``: a variant that does not build, run forward and backward,
    keep its base's output shapes and match the catalogue's parameter formulas is a finding.

    A probe that cannot run at all (torch missing from the interpreter) raises: exit 2, not drift.
    """
    from yolopatch.commands import verify

    context = context or _Context(tree, Path.cwd().resolve())
    cfgs = [variant.path for variant in generated_variants(tree)]
    if not cfgs:
        return []
    try:
        results = verify.build_cfgs(tree, cfgs)
    except YolopatchError as error:
        raise YolopatchError(f"--build could not run: {error.message}", path=error.path, line=error.line,
                             hint=error.hint, exit_code=2) from error
    return [
        Finding("build-failed", result.cfg, None, f"YOLOv5 cannot use this variant: {'; '.join(result.problems)}",
                f"`{context.command('verify', context.rel(result.cfg))}` shows the measurements; "
                f"`{result.reproduce}` prints YOLOv5's traceback")
        for result in results if not result.ok and result.target.role == verify.VARIANT
    ]


# ----------------------------------------------------------------------------------------------
# Output


def to_json(findings: Sequence[Finding], tree: Tree) -> Dict[str, Any]:
    """The ``--format json`` document (schema version 1)::

        {"version": 1, "root": "<absolute tree root>", "ok": true|false,
         "findings": [{"code": str, "severity": "error", "file": "<path relative to root>",
                       "line": int|null, "message": str, "fix": str}, ...]}

    Findings are sorted by file, line and code. New codes may appear in later releases; fields
    are only ever added (a breaking change bumps ``version``).
    """
    return {
        "version": JSON_SCHEMA_VERSION,
        "root": str(tree.root),
        "ok": not findings,
        "findings": [
            {"code": f.code, "severity": f.severity, "file": Path(tree.relative(f.path)).as_posix(), "line": f.line,
             "message": f.message, "fix": f.fix}
            for f in findings
        ],
    }


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def to_github(findings: Sequence[Finding], cwd: Path) -> List[str]:
    """GitHub Actions workflow commands, one per finding:
    ``::error file=<path>,line=<n>,title=yolopatch <code>::<message>. Fix: <fix>`` (path relative to
    ``cwd``, the workspace, when the tree lies below it)."""
    lines = []
    for f in findings:
        properties = [f"file={_escape_property(Path(_display(f.path, cwd)).as_posix())}"]
        if f.line is not None:
            properties.append(f"line={f.line}")
        properties.append(f"title={_escape_property('yolopatch ' + f.code)}")
        lines.append(f"::{f.severity} {','.join(properties)}::{_escape_data(f'{f.message}. Fix: {f.fix}')}")
    return lines


def to_text(findings: Sequence[Finding], cwd: Path) -> List[str]:
    """``path:line: code: message (fix: ...)`` per finding (``path: code: ...`` without a line)."""
    lines = []
    for f in findings:
        where = _display(f.path, cwd) + (f":{f.line}" if f.line is not None else "")
        lines.append(f"{where}: {f.code}: {f.message} (fix: {f.fix})".replace("\r", " ").replace("\n", " "))
    return lines


def _write(lines: Iterable[str]) -> None:
    stream = ui.stdout.file
    for line in lines:
        stream.write(line + "\n")
    stream.flush()


def check(repo: Path, *, build: bool = False, output_format: str = "text") -> int:
    """`yolopatch check`: report drift; exit 0 (clean), 1 (findings) or 2 (check could not run)."""
    if output_format not in FORMATS:
        raise UsageError(f"unknown format {output_format!r}", hint=f"choose one of: {', '.join(FORMATS)}")
    try:
        tree = locate(repo)
    except YolopatchError as error:
        raise UsageError(error.message + (f": {error.path}" if error.path else ""), hint=error.hint) from error
    cwd = Path.cwd().resolve()
    report = collect(tree, cwd)
    findings = report.findings
    if build and not any(f.code == "unreadable" for f in findings):
        findings = sorted([*findings, *build_findings(tree, _Context(tree, cwd))], key=Finding.sort_key)
        report = Report(tree, findings, report.modules_present, report.variants)
    if output_format == "json":
        ui.print_json(to_json(findings, tree))
    elif output_format == "github":
        _write(to_github(findings, cwd))
        ui.info(report.summary())
    else:
        _write([*to_text(findings, cwd), report.summary()])
    return 0 if report.ok else 1
