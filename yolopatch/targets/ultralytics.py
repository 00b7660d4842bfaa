"""The Ultralytics target (YOLOv8, YOLO11, YOLO12, YOLO26, RT-DETR; ultralytics 8.0 to 8.4).

A module is wired in three files (see ``ultralytics_edits`` for the pure edits): its code in
``ultralytics/nn/modules/yolopatch.py`` (a file of yolopatch's own, created on the first apply and
deleted by the last revert), a marked import and an ``__all__`` entry in ``nn/modules/__init__.py``, and
its name in ``nn/tasks.py``'s import list plus a marked parse_model branch. Plans are pure: texts in,
``FileChange``s out; the commands lock the tree and write them.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

from yolopatch import catalog, ui, variant_files
from yolopatch.catalog import ModuleSpec
from yolopatch.changes import FileChange, read_text
from yolopatch.editable import check_parseable
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.statuses import APPLIED, EDITED, NOT_APPLIED, OUTDATED, PARTIAL
from yolopatch.targets import interpreter, shared
from yolopatch.targets import ultralytics_edits as edits
from yolopatch.targets.detect import installed_copy, ultralytics_package, ultralytics_root
from yolopatch.tree import init_version
from yolopatch.transforms import common_py, markers
from yolopatch.transforms.common_py import template_of

SOURCE = "source"  # a checkout or an unpacked sdist/wheel: <root>/ultralytics/nn/tasks.py
INSTALLED = "installed"  # the package in site-packages: upgrades and reinstalls wipe yolopatch's changes

SHAPES = {"width": edits.WIDTH, "no-width": edits.NO_WIDTH}


@dataclass(frozen=True)
class UltralyticsTree:
    """A located Ultralytics tree: ``root`` holds the ``ultralytics`` package (or is it, when installed)."""

    root: Path
    package_dir: Path
    layout: str

    codebase = "ultralytics"

    @property
    def module_file(self) -> Path:
        return self.package_dir / "nn" / "modules" / "yolopatch.py"

    @property
    def modules_init(self) -> Path:
        return self.package_dir / "nn" / "modules" / "__init__.py"

    @property
    def tasks(self) -> Path:
        return self.package_dir / "nn" / "tasks.py"

    @property
    def models_dir(self) -> Path:
        return self.package_dir / "cfg" / "models"

    @property
    def state_dir(self) -> Path:
        return self.root / ".yolopatch"

    def writable_folders(self) -> List[Path]:
        """The folders yolopatch writes files into (where its temporary and backup files may be left)."""
        configs = (path for path in self.models_dir.glob("*") if path.is_dir())
        return sorted({self.package_dir / "nn", self.package_dir / "nn" / "modules", *configs})

    def relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def version(self) -> Optional[str]:
        return init_version(self.package_dir / "__init__.py")


def tree_at(folder: Path, allow_installed: bool = False) -> Optional[UltralyticsTree]:
    """The Ultralytics tree at ``folder``; an installed copy only with ``allow_installed``."""
    package = ultralytics_package(folder)
    if package is None:
        return None
    installed = installed_copy(package)
    if installed and not allow_installed:
        raise UsageError(f"{package} is an installed copy of ultralytics (site-packages): upgrading or reinstalling "
                         f"ultralytics wipes yolopatch's changes",
                         hint="patch a source checkout (git clone, pip install -e .), or pass --installed to patch "
                              "this copy anyway")
    return UltralyticsTree(root=ultralytics_root(package), package_dir=package,
                           layout=INSTALLED if installed else SOURCE)


# ----------------------------------------------------------------------------------------------------------
# Reading and state


@dataclass(frozen=True)
class Texts:
    """The three files as read: the module file is None until yolopatch creates it."""

    module: Optional[str]
    init: str
    tasks: str

    @classmethod
    def read(cls, tree: UltralyticsTree) -> "Texts":
        module = read_text(tree.module_file) if tree.module_file.is_file() else None
        texts = cls(module, read_text(tree.modules_init), read_text(tree.tasks))
        for path, text in ((tree.module_file, module), (tree.modules_init, texts.init), (tree.tasks, texts.tasks)):
            if text is not None:
                _check_parseable(path, text)
        try:
            edits.channel_set(texts.tasks)
        except edits.ParseModelNotFound as error:
            raise YolopatchError(f"parse_model not recognised: {error}", path=tree.tasks,
                                 hint="yolopatch supports ultralytics 8.0 to 8.4") from error
        return texts


@lru_cache(maxsize=8)
def _check_parseable(path: Path, text: str) -> None:
    """``editable.check_parseable`` once per file and text (a command may read the tree twice: state, then plan)."""
    check_parseable(path, text, edits.parse)


@dataclass(frozen=True)
class UltralyticsModuleState:
    spec: ModuleSpec
    inserted: Optional[common_py.FoundModule]
    registered: bool
    imported: bool  # named in tasks.py's import list (parse_model resolves names with globals())
    exported: bool  # imported and in __all__ of nn/modules/__init__.py
    upstream: bool = False  # Ultralytics itself exports the name (see exported_upstream)

    @property
    def present(self) -> bool:
        # an upstream-exported name (CBAM) counts as exported without yolopatch: that alone is not "present"
        return self.inserted is not None or self.registered or self.imported or (self.exported and not self.upstream)

    @property
    def complete(self) -> bool:
        return self.inserted is not None and self.registered and self.imported and self.exported

    @property
    def edited(self) -> bool:
        """``status == EDITED``, without the template's digest (a parse of the template) that ``status`` needs."""
        return self.complete and self.inserted is not None and self.inserted.edited

    @property
    def status(self) -> str:
        if not self.present:
            return NOT_APPLIED
        if not self.complete:
            return PARTIAL
        assert self.inserted is not None
        if self.inserted.edited:
            return EDITED
        if self.inserted.recorded_digest != common_py.template_digest(template_of(self.spec)):
            return OUTDATED
        return APPLIED


def module_states(texts: Texts) -> Dict[str, UltralyticsModuleState]:
    inserted = common_py.find_modules(texts.module) if texts.module is not None else {}
    registered = edits.registered(texts.tasks)
    imported = set(edits.import_names(texts.tasks, edits.MODULES_PACKAGE))
    exported = set(edits.all_names(texts.init) or ())
    tasks_keys, init_keys = _marked_keys(texts.tasks), _marked_keys(texts.init)

    def upstream(spec: ModuleSpec) -> bool:
        return exported_upstream(texts, spec.class_name)

    return {
        spec.key: UltralyticsModuleState(
            spec=spec, inserted=inserted.get(spec.key), registered=spec.key in registered,
            imported=(spec.class_name in imported or upstream(spec)) and spec.key in tasks_keys,
            exported=upstream(spec) or (spec.class_name in exported and spec.key in init_keys),
            upstream=upstream(spec))
        for spec in catalog.all_modules()
    }


@lru_cache(maxsize=8)
def _marked_keys(text: str) -> FrozenSet[str]:
    """Keys of every yolopatch marker comment in ``text`` (found with the tokenizer, not by pattern)."""
    if markers.PREFIX not in text:  # no comment can start with it: skip tokenizing (tasks.py: ~20,000 tokens)
        return frozenset()
    keys = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            marker = markers.parse_text(token.string)
            if marker is not None:
                keys.add(marker.key)
    return frozenset(keys)


# ----------------------------------------------------------------------------------------------------------
# Plans


OWN_PACKAGE_MODULE = f"{edits.MODULES_PACKAGE}.yolopatch"  # tasks.py imports clashing names from here directly


def _refuse_clashes(tree: UltralyticsTree, texts: Texts, states: Dict[str, UltralyticsModuleState],
                    specs: Sequence[ModuleSpec]) -> None:
    """A name parse_model already resolves (a class of tasks.py's own, an imported one) cannot be ours too."""
    ours = {state.spec.class_name for state in states.values() if state.present}
    wanted = [spec.class_name for spec in specs if spec.class_name not in ours]
    taken = [name for name in wanted if name in edits.resolvable_names(texts.tasks)]
    if taken:
        raise YolopatchError(
            f"ultralytics/nn/tasks.py already resolves the name {taken[0]}; yolopatch's {taken[0]} would replace it "
            f"in every model YAML", path=tree.tasks, hint="this module cannot be applied to this tree")


def exported_upstream(texts: Texts, name: str) -> bool:
    """Ultralytics itself exports ``name`` from nn.modules (CBAM, ChannelAttention, SpatialAttention): then
    yolopatch's class is not exported there (that would change ``ultralytics.nn.modules.CBAM`` for everyone);
    tasks.py imports it straight from the module file instead, so YAMLs naming it get yolopatch's."""
    return name in edits.exported_names(texts.init)


def _refuse_edited(tree: UltralyticsTree, states: Dict[str, UltralyticsModuleState], keys: Sequence[str],
                   verb: str, option: str) -> None:
    for key in keys:
        state = states[key]
        if state.edited:
            assert state.inserted is not None
            raise YolopatchError(f"yolopatch's {state.spec.class_name} was edited by hand; {verb} would throw the "
                                 f"edits away", path=tree.module_file, line=state.inserted.line,
                                 hint=f"keep a copy of your edits, then run again with {option}")


def plan_apply(tree: UltralyticsTree, specs: Sequence[ModuleSpec], replace: bool = False) -> List[FileChange]:
    texts = Texts.read(tree)
    states = module_states(texts)
    _refuse_clashes(tree, texts, states, specs)
    if not replace:
        _refuse_edited(tree, states, [spec.key for spec in specs], "apply", "--replace")
    return _changes(tree, texts, with_modules(texts, specs, replace))


def plan_revert(tree: UltralyticsTree, keys: Sequence[str], force: bool = False) -> Tuple[List[str], List[FileChange]]:
    """(the keys reverted, the changes); no ``keys``: every module yolopatch finds."""
    texts = Texts.read(tree)
    states = module_states(texts)
    keys = list(keys) or [key for key, state in states.items() if state.present]
    if not force:
        _refuse_edited(tree, states, keys, "revert", "--force")
    return keys, _changes(tree, texts, without_modules(texts, keys, states))


def with_modules(texts: Texts, specs: Sequence[ModuleSpec], replace: bool = False) -> Texts:
    """The three texts with ``specs`` wired in (pure; no refusals). Each file is parsed and printed once:
    the batch edits of ``ultralytics_edits`` chain on the parsed modules."""
    upstream = [spec for spec in specs if exported_upstream(texts, spec.class_name)]
    ours = [spec for spec in specs if spec not in upstream]
    source = texts.module if texts.module is not None else edits.MODULE_FILE_STUB
    module = edits.insert_classes(edits.parse(source), [template_of(spec) for spec in specs], replace_foreign=replace)
    marked = _marked_keys(texts.init)
    init = edits.add_marked_imports(edits.parse(texts.init), edits.OWN_MODULE,
                                    [(spec.class_name, spec.key) for spec in ours if spec.key not in marked])
    init = edits.add_all_names(init, [(spec.class_name, spec.key) for spec in ours])
    tasks = edits.add_marked_imports(edits.parse(texts.tasks), OWN_PACKAGE_MODULE,
                                     [(spec.class_name, spec.key) for spec in upstream])
    tasks = edits.add_import_names(tasks, edits.MODULES_PACKAGE, [(spec.class_name, spec.key) for spec in ours])
    tasks = edits.register_all(tasks, [(spec.class_name, spec.key, SHAPES[spec.registration]) for spec in specs])
    return Texts(edits.text(module, source), edits.text(init, texts.init), edits.text(tasks, texts.tasks))


def without_modules(texts: Texts, keys: Sequence[str],
                    states: Optional[Dict[str, UltralyticsModuleState]] = None) -> Texts:
    """The three texts with modules ``keys`` taken out (pure; no refusals); the module file becomes None
    when only its stub is left. ``states``: ``module_states(texts)``, when the caller has it already."""
    states = module_states(texts) if states is None else states
    remaining = [key for key, state in states.items() if state.inserted is not None and key not in keys]
    still_needed = [spec for key in remaining for spec in common_py.template_imports(template_of(catalog.get(key)))]
    specs = [catalog.get(key) for key in keys]
    upstream = [spec for spec in specs if exported_upstream(texts, spec.class_name)]
    ours = [spec for spec in specs if spec not in upstream]
    module = texts.module
    if module is not None:
        removed = [(spec.key, spec.class_name, template_of(spec)) for spec in specs]
        module = edits.text(edits.remove_classes(edits.parse(module), removed, still_needed), module)
        module = None if edits.is_stub(module) else module
    init = edits.remove_marked_imports(edits.parse(texts.init), [spec.key for spec in ours])
    init = edits.remove_all_names(init, [spec.class_name for spec in ours if states[spec.key].exported])
    tasks = edits.remove_marked_imports(edits.parse(texts.tasks), [spec.key for spec in upstream])
    tasks = edits.remove_import_names(tasks, edits.MODULES_PACKAGE,
                                      [spec.class_name for spec in ours if states[spec.key].imported])
    tasks = edits.unregister_all(tasks, keys)
    return Texts(module, edits.text(init, texts.init), edits.text(tasks, texts.tasks))


def _changes(tree: UltralyticsTree, old: Texts, new: Texts) -> List[FileChange]:
    return [
        FileChange(tree.module_file, old.module, new.module, owned=True),
        FileChange(tree.modules_init, old.init, new.init, editable=_editable_statements(old.init)),
        FileChange(tree.tasks, old.tasks, new.tasks, editable=_editable_statements(old.tasks, "parse_model")),
    ]


def _editable_statements(text: str, function: str = "") -> Tuple[Tuple[int, int], ...]:
    """The statements of a registry file yolopatch edits: imports from the nn.modules package or from its
    own file, ``__all__``, and the function ``function`` (parse_model, where its branch goes)."""
    ranges = []
    for node in ast.parse(text).body:
        span = (node.lineno, node.end_lineno or node.lineno)
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith(("nn.modules", "yolopatch")):
            ranges.append(span)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            ranges.append(span)
        elif isinstance(node, ast.FunctionDef) and node.name == function:
            ranges.append(span)
    return tuple(ranges)


# ----------------------------------------------------------------------------------------------------------
# The Target (see targets/base.py)


@dataclass(frozen=True)
class UltralyticsTarget:
    tree: UltralyticsTree

    codebase = "ultralytics"
    title = "Ultralytics"

    def statuses(self) -> Dict[str, str]:
        return {key: state.status for key, state in module_states(Texts.read(self.tree)).items()}

    def plan_apply(self, specs: Sequence[ModuleSpec], *, replace: bool) -> List[FileChange]:
        if self.tree.layout == INSTALLED:
            ui.info(f"warning: patching the installed ultralytics in {self.tree.package_dir}: upgrading or "
                    "reinstalling ultralytics wipes these changes")
        return plan_apply(self.tree, specs, replace)

    def plan_variants(self, specs: Sequence[ModuleSpec], *, bases: Sequence[str],
                      scales: Optional[Sequence[str]], positions: Optional[Sequence[str]]) -> List[FileChange]:
        if scales:
            raise UsageError("--scales does not apply to Ultralytics: one variant file serves every scale "
                             "(yolov8-soca.yaml is loaded as yolov8n-soca.yaml, yolov8s-soca.yaml, ...)",
                             hint="drop --scales; pick the scale by the name you load")
        return variant_files.ultralytics_variant_changes(self.tree, specs, bases=bases, positions=positions)

    def plan_revert(self, keys: Sequence[str], *, force: bool) -> Tuple[List[str], List[FileChange]]:
        variants = variant_files.generated_variants(self.tree)  # type: ignore[arg-type]
        if not force:
            present = [key for key, state in module_states(Texts.read(self.tree)).items() if state.present]
            shared.refuse_revert_for_checkpoints(self.tree, list(keys) or present)
        reverted, changes = plan_revert(self.tree, keys, force)
        in_variants = [key for key in (keys or [spec.key for spec in catalog.all_modules()]) if any(key in v.keys for v in variants)]
        reverted += [key for key in in_variants if key not in reverted]
        return reverted, changes + variant_files.removal_changes(self.tree, variants, reverted, force)

    def status_report(self) -> Dict[str, Any]:
        tree = self.tree
        texts = Texts.read(tree)
        modules = {
            key: {"class": state.spec.class_name, "status": state.status,
                  "installed_version": state.inserted.version if state.inserted else None,
                  "available_version": state.spec.version,
                  "module_file_line": state.inserted.line if state.inserted else None,
                  "registered": state.registered, "imported_in_tasks": state.imported, "exported": state.exported}
            for key, state in module_states(texts).items()
        }
        return {"codebase": self.codebase, "root": str(tree.root), "layout": tree.layout, "version": tree.version(),
                "parse_model": {"container": edits.channel_set(texts.tasks).kind}, "modules": modules,
                "variants": shared.variants_report(tree), "unknown_modules": [],
                "checkpoints": shared.checkpoints_report(tree), "interpreter": _imported_package(tree)}

    def print_status(self, report: Dict[str, Any]) -> None:
        ui.done(f"{self.title} tree: {ui.display_path(self.tree.root)}")
        ui.done(f"layout: {report['layout']}; version: {report['version'] or 'unknown'}; "
                f"parse_model: {report['parse_model']['container']} of channel modules")
        rows = [[key, info["class"], info["status"], info["installed_version"] or "-", info["module_file_line"] or "-"]
                for key, info in report["modules"].items()]
        ui.table("modules", ["key", "class", "status", "version", "nn/modules/yolopatch.py line"], rows)
        shared.print_variants_and_checkpoints(report)
        seen = report["interpreter"]
        if seen is None:
            return
        if seen["is_this_tree"]:
            ui.done(f"{seen['python']} imports ultralytics from this tree")
        else:
            where = ui.display_path(Path(seen["ultralytics"])) if seen["ultralytics"] else "nowhere (not installed)"
            ui.info(f"warning: {seen['python']} imports ultralytics from {where}, not from this tree: models there "
                    f"do not see yolopatch's modules (`pip install -e {ui.display_path(self.tree.root)}` fixes it; "
                    "`yolopatch check` fails on this)")


def _imported_package(tree: UltralyticsTree) -> Optional[Dict[str, Any]]:
    """Where this interpreter imports ultralytics from (None when it cannot say)."""
    try:
        return interpreter.lookup("ultralytics").to_json(tree.package_dir)
    except YolopatchError:
        return None
