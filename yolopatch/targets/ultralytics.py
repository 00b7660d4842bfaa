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
import sysconfig
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from yolopatch import catalog
from yolopatch.catalog import ModuleSpec
from yolopatch.changes import FileChange, read_text
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.state import APPLIED, EDITED, NOT_APPLIED, OUTDATED, PARTIAL, template_of
from yolopatch.targets import ultralytics_edits as edits
from yolopatch.targets.detect import refuse_unsupported, ultralytics_package
from yolopatch.transforms import common_py, markers

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

    def relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def version(self) -> Optional[str]:
        try:
            module = ast.parse(read_text(self.package_dir / "__init__.py"))
        except (YolopatchError, SyntaxError):
            return None
        for node in module.body:
            if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__version__"
                                                     for t in node.targets) and isinstance(node.value, ast.Constant)):
                return str(node.value.value)
        return None


def tree_at(folder: Path, allow_installed: bool = False) -> Optional[UltralyticsTree]:
    """The Ultralytics tree at ``folder``; an installed copy only with ``allow_installed``."""
    package = ultralytics_package(folder)
    if package is None:
        return None
    installed = _in_site_packages(package)
    if installed and not allow_installed:
        raise UsageError(f"{package} is an installed copy of ultralytics (site-packages): upgrading or reinstalling "
                         f"ultralytics wipes yolopatch's changes",
                         hint="patch a source checkout (git clone, pip install -e .), or pass --installed to patch "
                              "this copy anyway")
    root = package if package == folder else folder
    return UltralyticsTree(root=root, package_dir=package, layout=INSTALLED if installed else SOURCE)


def _in_site_packages(package: Path) -> bool:
    resolved = package.resolve()
    places = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    return "site-packages" in resolved.parts or "dist-packages" in resolved.parts or resolved.parent in places


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
        from yolopatch.state import check_parseable

        module = read_text(tree.module_file) if tree.module_file.is_file() else None
        texts = cls(module, read_text(tree.modules_init), read_text(tree.tasks))
        for path, text in ((tree.module_file, module), (tree.modules_init, texts.init), (tree.tasks, texts.tasks)):
            if text is not None:
                check_parseable(path, text, edits.parse)
        try:
            edits.channel_set(texts.tasks)
        except edits.ParseModelNotFound as error:
            raise YolopatchError(f"parse_model not recognised: {error}", path=tree.tasks,
                                 hint="yolopatch supports ultralytics 8.0 to 8.4") from error
        return texts


@dataclass(frozen=True)
class UltralyticsModuleState:
    spec: ModuleSpec
    inserted: Optional[common_py.FoundModule]
    registered: bool
    imported: bool  # named in tasks.py's import list (parse_model resolves names with globals())
    exported: bool  # imported and in __all__ of nn/modules/__init__.py

    @property
    def present(self) -> bool:
        return self.inserted is not None or self.registered or self.imported or self.exported

    @property
    def status(self) -> str:
        if not self.present:
            return NOT_APPLIED
        if not (self.inserted is not None and self.registered and self.imported and self.exported):
            return PARTIAL
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

    def upstream(spec: ModuleSpec) -> bool:
        return exported_upstream(texts, spec.class_name)

    return {
        spec.key: UltralyticsModuleState(
            spec=spec, inserted=inserted.get(spec.key), registered=spec.key in registered,
            imported=(spec.class_name in imported or upstream(spec)) and spec.key in _marked_keys(texts.tasks),
            exported=upstream(spec) or (spec.class_name in exported and spec.key in _marked_keys(texts.init)))
        for spec in catalog.all_modules()
    }


def _marked_keys(text: str) -> set:
    """Keys of every yolopatch marker comment in ``text`` (found with the tokenizer, not by pattern)."""
    keys = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            marker = markers.parse_text(token.string)
            if marker is not None:
                keys.add(marker.key)
    return keys


# ----------------------------------------------------------------------------------------------------------
# Plans


OWN_PACKAGE_MODULE = f"{edits.MODULES_PACKAGE}.yolopatch"  # tasks.py imports clashing names from here directly


def _refuse_clashes(tree: UltralyticsTree, texts: Texts, specs: Sequence[ModuleSpec]) -> None:
    """A name parse_model already resolves (a class of tasks.py's own, an imported one) cannot be ours too."""
    ours = {state.spec.class_name for state in module_states(texts).values() if state.present}
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
        if state.status == EDITED:
            assert state.inserted is not None
            raise YolopatchError(f"yolopatch's {state.spec.class_name} was edited by hand; {verb} would throw the "
                                 f"edits away", path=tree.module_file, line=state.inserted.line,
                                 hint=f"keep a copy of your edits, then run again with {option}")


def plan_apply(tree: UltralyticsTree, specs: Sequence[ModuleSpec], replace: bool = False) -> List[FileChange]:
    texts = Texts.read(tree)
    _refuse_clashes(tree, texts, specs)
    if not replace:
        _refuse_edited(tree, module_states(texts), [spec.key for spec in specs], "apply", "--replace")
    module = texts.module if texts.module is not None else edits.MODULE_FILE_STUB
    init, tasks = texts.init, texts.tasks
    for spec in specs:
        module = edits.insert_class(module, template_of(spec), replace_foreign=replace)
        if exported_upstream(texts, spec.class_name):
            tasks = edits.add_marked_import(tasks, OWN_PACKAGE_MODULE, spec.class_name, spec.key)
            tasks = edits.register(tasks, spec.class_name, spec.key, SHAPES[spec.registration])
            continue
        if spec.key not in _marked_keys(init):
            init = edits.add_marked_import(init, edits.OWN_MODULE, spec.class_name, spec.key)
        if spec.class_name not in (edits.all_names(init) or ()):
            init = edits.add_all_name(init, spec.class_name, spec.key)
        if spec.class_name not in edits.import_names(tasks, edits.MODULES_PACKAGE):
            tasks = edits.add_import_name(tasks, edits.MODULES_PACKAGE, spec.class_name, spec.key)
        tasks = edits.register(tasks, spec.class_name, spec.key, SHAPES[spec.registration])
    return _changes(tree, texts, module, init, tasks)


def plan_revert(tree: UltralyticsTree, keys: Sequence[str], force: bool = False) -> Tuple[List[str], List[FileChange]]:
    """(the keys reverted, the changes); no ``keys``: every module yolopatch finds."""
    texts = Texts.read(tree)
    states = module_states(texts)
    keys = list(keys) or [key for key, state in states.items() if state.present]
    if not force:
        _refuse_edited(tree, states, keys, "revert", "--force")
    remaining = [key for key, state in states.items() if state.inserted is not None and key not in keys]
    still_needed = [spec for key in remaining for spec in common_py.template_imports(template_of(catalog.get(key)))]
    module, init, tasks = texts.module, texts.init, texts.tasks
    for key in keys:
        spec = catalog.get(key)
        if module is not None:
            module = edits.remove_class(module, key, spec.class_name, still_needed, template_of(spec))
        if exported_upstream(texts, spec.class_name):
            tasks = edits.remove_marked_import(tasks, key)
            tasks = edits.unregister(tasks, key)
            continue
        if key in _marked_keys(init):
            init = edits.remove_marked_import(init, key)
        if spec.class_name in (edits.all_names(init) or ()) and states[key].exported:
            init = edits.remove_all_name(init, spec.class_name)
        if states[key].imported:
            tasks = edits.remove_import_name(tasks, edits.MODULES_PACKAGE, spec.class_name)
        tasks = edits.unregister(tasks, key)
    if module is not None and edits.is_stub(module):
        module = None
    return keys, _changes(tree, texts, module, init, tasks)


def _changes(tree: UltralyticsTree, texts: Texts, module: Optional[str], init: str, tasks: str) -> List[FileChange]:
    return [
        FileChange(tree.module_file, texts.module, module, owned=True),
        FileChange(tree.modules_init, texts.init, init, editable=_editable_statements(texts.init)),
        FileChange(tree.tasks, texts.tasks, tasks, editable=_editable_statements(texts.tasks, "parse_model")),
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
