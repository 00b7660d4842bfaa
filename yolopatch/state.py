"""What yolopatch finds in a tree, per module: read once, derived from the markers in the files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from yolopatch import catalog
from yolopatch.catalog import ModuleSpec
from yolopatch.changes import read_text
from yolopatch.errors import YolopatchError
from yolopatch.editable import check_parseable
from yolopatch.statuses import APPLIED, EDITED, HAND_PASTED, NOT_APPLIED, OUTDATED, PARTIAL
from yolopatch.transforms import common_py, yolo_py
from yolopatch.transforms.common_py import FoundModule, ForeignClass, template_of
from yolopatch.transforms.yolo_py import Registration
from yolopatch.tree import Tree


@dataclass(frozen=True)
class Sources:
    """The two Python files yolopatch edits, as read from disk."""

    tree: Tree
    common: str
    yolo: str

    @classmethod
    def read(cls, tree: Tree) -> "Sources":
        sources = cls(tree, read_text(tree.common_py), read_text(tree.yolo_py))
        sources.check_parseable()
        return sources

    def check_parseable(self) -> None:
        for path, text in ((self.tree.common_py, self.common), (self.tree.yolo_py, self.yolo)):
            check_parseable(path, text, common_py.parse if path == self.tree.common_py else yolo_py.parse)
        try:
            yolo_py.facts(self.yolo)
        except yolo_py.ParseModelNotFound as error:
            raise YolopatchError(f"parse_model not recognised: {error}", path=self.tree.yolo_py,
                                 hint="is this a YOLOv5 models/yolo.py? yolopatch supports YOLOv5 v5.0 to master"
                                 ) from error


@dataclass(frozen=True)
class ModuleState:
    """One catalogue module in one tree."""

    spec: ModuleSpec
    inserted: Optional[FoundModule]
    registration: Optional[Registration]
    listed_in_import: Optional[bool]  # None when yolo.py star-imports models.common
    foreign_classes: List[ForeignClass] = field(default_factory=list)
    foreign_registrations: List[Registration] = field(default_factory=list)

    @property
    def current_digest(self) -> str:
        return common_py.template_digest(template_of(self.spec))

    @property
    def present(self) -> bool:
        """Anything of yolopatch's for this module is in the Python files."""
        return self.inserted is not None or self.registration is not None

    def edited_location(self, tree: Tree) -> Tuple[Path, Optional[int]]:
        """Where the hand edit is: the inserted class in common.py, else the parse_model branch."""
        if self.inserted is not None and self.inserted.edited:
            return tree.common_py, self.inserted.line
        return tree.yolo_py, self.registration.line if self.registration else None

    @property
    def status(self) -> str:
        if self.inserted is None and self.registration is None:
            return HAND_PASTED if self.foreign_classes else NOT_APPLIED
        if self.inserted is None or self.registration is None or self.listed_in_import is False:
            return PARTIAL
        if self.inserted.edited or self.registration.edited:
            return EDITED
        if self.registration.registration != self.spec.registration:
            return OUTDATED
        if self.inserted.recorded_digest != self.current_digest:
            return OUTDATED
        return APPLIED


def module_states(sources: Sources) -> Dict[str, ModuleState]:
    """The state of every catalogue module in ``sources``, by key."""
    inserted = common_py.find_modules(sources.common)
    registered = yolo_py.registered_keys(sources.yolo)
    import_names = yolo_py.common_import_names(sources.yolo)
    specs = catalog.all_modules()
    foreign = common_py.find_foreign_classes(sources.common, [spec.class_name for spec in specs])
    foreign_registrations = yolo_py.foreign_registrations(sources.yolo, [spec.class_name for spec in specs])
    return {
        spec.key: ModuleState(
            spec=spec,
            inserted=inserted.get(spec.key),
            registration=registered.get(spec.key),
            listed_in_import=None if import_names is None else spec.class_name in import_names,
            foreign_classes=[c for c in foreign if c.name == spec.class_name],
            foreign_registrations=[r for r in foreign_registrations if r.name == spec.class_name],
        )
        for spec in specs
    }


def unknown_keys(sources: Sources) -> List[str]:
    """Keys of yolopatch insertions whose module this yolopatch does not know (a newer yolopatch's)."""
    known = {spec.key for spec in catalog.all_modules()}
    found = set(common_py.find_modules(sources.common)) | set(yolo_py.registered_keys(sources.yolo))
    return sorted(found - known)


def imports_needed_by(keys: List[str]) -> List[common_py.ImportSpec]:
    needed: List[common_py.ImportSpec] = []
    for key in keys:
        needed.extend(common_py.template_imports(template_of(catalog.get(key))))
    return needed


def relative(tree: Tree, path: Path) -> str:
    return tree.relative(path)
