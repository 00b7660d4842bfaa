"""The YOLOv7 target (WongKinYiu/yolov7: a checkout, or a packaged copy such as yolov7-package).

YOLOv7 grew out of YOLOv5: a module lives in the same two files (its class in ``models/common.py``, a
marked branch in ``models/yolo.py``'s parse_model, whose channel list starts ``nn.Conv2d``), so the
Python plans are YOLOv5's (``Yolov5Target``: ``engine``, ``state``, ``transforms.yolo_py``). What differs:

- where the tree is: a checkout (``<root>/models``, ``<root>/cfg``) or a package (``<root>/<pkg>/models``,
  imports ``from <pkg>.models...``: ``yolov7_package``, ``yolov7``, ``sas_yolov7``); cfg/ in the package
  or beside it, or none (then variants need ``--base``);
- the variants: the YOLOv7 dialect of ``variants`` (IDetect heads, SPPCSPC, MP/SP/ReOrg strides) from
  ``cfg/training/<model>.yaml``, each with its ``cfg/deploy/`` twin (same module at the same place, for
  reparameterised deployment), all of them listed in ``.yolopatch/variants.json``; ``index_maps`` gives
  each variant's old -> new layer indices (code with hard-coded layer numbers needs them);
- default placements written for yolov5s (``backbone:8``, ``backbone:2``) are translated by meaning
  (the end of that backbone stage) into ``layer:N`` of each YOLOv7 base.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from yolopatch import ui, variants
from yolopatch.catalog import ModuleSpec
from yolopatch.changes import FileChange, read_text
from yolopatch.errors import UsageError
from yolopatch.paths import resolve_model_yaml
from yolopatch.targets.detect import yolo_family
from yolopatch.targets.yolov5 import Yolov5Target
from yolopatch.tree import Tree
from yolopatch.variant_files import (index_map_of, owned_old_text, with_base_newlines, generated_variants,
                                     registry_change)

CHECKOUT = "checkout"  # <root>/models/yolo.py, imports `from models...` (a clone of WongKinYiu/yolov7)
PACKAGE = "package"  # <root>/<pkg>/models/yolo.py, imports `from <pkg>.models...` (a packaged copy)

# --scales for YOLOv7: the model names of cfg/training (tiny, x, w6, ...); default: yolov7 and yolov7-tiny.
MODELS = {"yolov7": "yolov7", "tiny": "yolov7-tiny", "x": "yolov7x", "w6": "yolov7-w6", "e6": "yolov7-e6",
          "d6": "yolov7-d6", "e6e": "yolov7-e6e"}
DEFAULT_MODELS = ("yolov7", "tiny")

# The stride of each yolov5s backbone row: the catalogue's ``backbone:K`` placements were chosen on yolov5s
# (backbone:2 ends the P2/4 stage, backbone:8 the P5/32 stage before SPPF); on YOLOv7 they mean the last
# backbone layer at that stride.
_YOLOV5S_BACKBONE_STRIDES = (2, 4, 4, 8, 8, 16, 16, 32, 32)


@dataclass(frozen=True)
class Yolov7Tree(Tree):
    """A located YOLOv7 tree: YOLOv5's layout (models/common.py, models/yolo.py, .yolopatch/ at the root) with
    any package name; ``package`` is the package folder's name in the package layout, else ""."""

    package: str = ""

    codebase = "yolov7"

    @property
    def package_dir(self) -> Path:
        """The folder that holds models/ and utils/."""
        return self.root / self.package if self.layout == PACKAGE else self.root

    @property
    def models_module(self) -> str:
        return f"{self.package}.models" if self.layout == PACKAGE else "models"

    @property
    def cfg_dir(self) -> Path:
        """``cfg/`` with training/ and deploy/: in the package, else beside it (``<root>/cfg``)."""
        for folder in (self.package_dir / "cfg", self.root / "cfg"):
            if (folder / "training").is_dir():
                return folder
        return self.package_dir / "cfg"

    def writable_folders(self) -> List[Path]:
        """YOLOv5's, and cfg/training and cfg/deploy (where the variants go)."""
        return sorted({*super().writable_folders(), *(path for path in self.cfg_dir.glob("*") if path.is_dir())})

    @property
    def training_dir(self) -> Path:
        return self.cfg_dir / "training"

    @property
    def deploy_dir(self) -> Path:
        return self.cfg_dir / "deploy"


def _imported_packages(yolo_py: Path) -> List[str]:
    """First components of the absolute ``from X.models...`` imports of yolo.py."""
    try:
        module = ast.parse(yolo_py.read_bytes().decode("utf-8", errors="replace").lstrip("\ufeff"))
    except (OSError, SyntaxError, ValueError):
        return []
    return [node.module.split(".")[0] for node in module.body
            if isinstance(node, ast.ImportFrom) and node.module and not node.level and ".models" in node.module]


def _is_yolov7(models: Path) -> bool:
    return (models / "common.py").is_file() and yolo_family(models) == "yolov7"


def tree_at(folder: Path) -> Optional[Yolov7Tree]:
    """The YOLOv7 tree rooted at ``folder``: a checkout (``folder/models``), a package folder itself
    (``folder`` is ``<root>/<pkg>``: the tree is its parent), or a folder holding a package."""
    if _is_yolov7(folder / "models"):
        if (folder / "__init__.py").is_file() and folder.name in _imported_packages(folder / "models" / "yolo.py"):
            return Yolov7Tree(folder.parent, PACKAGE, folder.name)
        return Yolov7Tree(folder, CHECKOUT)
    try:
        children = sorted(child for child in folder.iterdir() if child.is_dir())
    except OSError:
        return None
    for child in children:
        if (child / "__init__.py").is_file() and _is_yolov7(child / "models"):
            return Yolov7Tree(folder, PACKAGE, child.name)
    return None


# ----------------------------------------------------------------------------------------------------------
# Variants


def base_paths(tree: Yolov7Tree, bases: Sequence[str], scales: Optional[Sequence[str]]) -> List[Path]:
    """--base paths, else cfg/training/<model>.yaml of --scales (default yolov7 and yolov7-tiny) where present."""
    if bases:
        return list(dict.fromkeys(resolve_model_yaml(tree, base, what="base model YAML")  # type: ignore[arg-type]
                                  for base in bases))
    wanted = list(dict.fromkeys(scales or DEFAULT_MODELS))
    unknown = [name for name in wanted if name not in MODELS]
    if unknown:
        raise UsageError(f"unknown YOLOv7 model(s) {', '.join(unknown)}", hint=f"choose from {','.join(MODELS)}")
    paths = [tree.training_dir / f"{MODELS[name]}.yaml" for name in wanted]
    missing = [path for path in paths if not path.is_file()]
    if missing and scales:
        raise UsageError(f"this tree has no {tree.relative(missing[0])}",
                         hint="pass --base PATH to a YOLOv7 model YAML")
    if missing:
        ui.info(f"note: no {', '.join(tree.relative(p) for p in missing)} in this tree: no variant written for "
                f"{'it' if len(missing) == 1 else 'them'} (pass --base PATH to a YOLOv7 model YAML)")
    return [path for path in paths if path.is_file()]


def deploy_twin(tree: Yolov7Tree, base: Path) -> Optional[Path]:
    """``cfg/deploy/<name>`` for a base ``cfg/training/<name>`` when the tree has it."""
    twin = tree.deploy_dir / base.name
    return twin if base.parent.resolve() == tree.training_dir.resolve() and twin.is_file() else None


def default_positions(spec_positions: Sequence[str], base: variants.BaseModel) -> Tuple[str, ...]:
    """The catalogue's default positions on a YOLOv7 ``base``: ``backbone:K`` (chosen on yolov5s) becomes
    ``layer:N``, N the end of the backbone stage at yolov5s row K's stride (its last layer at that stride
    before the first deeper one); p3/p4/p5 and sppf mean the same."""
    return tuple(_by_meaning(position, base) for position in spec_positions)


def _by_meaning(position: str, base: variants.BaseModel) -> str:
    kind, _, number = variants.normalize_position(position).partition(":")
    if kind != "backbone" or not number.isdigit() or int(number) >= len(_YOLOV5S_BACKBONE_STRIDES):
        return position
    stride = _YOLOV5S_BACKBONE_STRIDES[int(number)]
    all_strides = variants.strides(base.layers, base.dialect)
    deeper = [index for index in range(base.backbone_length) if (all_strides[index] or 0) > stride]
    stage_end = deeper[0] if deeper else base.backbone_length  # a later branch may still read a shallower layer
    found = [index for index in range(stage_end)
             if all_strides[index] == stride and index != base.sppf_index and base.widths[index] is not None]
    if not found:
        raise UsageError(f"{base.name} has no backbone layer at stride {stride} for {position}",
                         hint=f"choose a position with --at; {base.name} offers {variants.describe_positions(base)}")
    return f"layer:{found[-1]}"


def _placement(spec: ModuleSpec, positions: Optional[Sequence[str]], base: variants.BaseModel
               ) -> Tuple[variants.Placement, Tuple[str, ...]]:
    """The placement of ``spec`` on ``base`` and its default positions there (for the file name)."""
    default = variants.load_spec(spec.key)
    translated = default_positions(default.placement, base)
    chosen = tuple(positions) if positions else translated
    return variants.Placement(spec.class_name, spec.key, chosen, default.args, spec.registration), translated


def variant_changes(tree: Yolov7Tree, specs: Sequence[ModuleSpec], *, bases: Sequence[str] = (),
                    scales: Optional[Sequence[str]] = None,
                    positions: Optional[Sequence[str]] = None) -> List[FileChange]:
    """One variant per (base, module) beside its base, ``<stem>-<key>[-<positions>].yaml``, and its
    cfg/deploy twin; every one listed in the registry (they live outside models/)."""
    changes: List[FileChange] = []
    for base in base_paths(tree, bases, scales):
        twin = deploy_twin(tree, base)
        for spec in specs:
            changes += _variant_pair(base, twin, spec, positions)
    registry = registry_change(tree, add=[change.path for change in changes])  # type: ignore[arg-type]
    return changes + ([registry] if registry is not None else [])


def _variant_pair(base: Path, twin: Optional[Path], spec: ModuleSpec,
                  positions: Optional[Sequence[str]]) -> List[FileChange]:
    base_text = read_text(base)
    if variants.parse_generated_header(base_text) is not None:
        raise UsageError(f"{base} is itself a generated variant", hint="pass the original model YAML as --base")
    parsed = variants.parse_base(base_text, base.name, variants.YOLOV7)
    placement, translated = _placement(spec, positions, parsed)
    name = variants.variant_filename(base.name, spec.key, placement.positions, translated)
    changes = [_variant_change(base.parent / name, base_text, base.name, placement)]
    if twin is not None:
        twin_text = read_text(twin)
        twin_placement, _ = _placement(spec, positions, variants.parse_base(twin_text, twin.name, variants.YOLOV7))
        changes.append(_variant_change(twin.parent / name, twin_text, twin.name, twin_placement))
    return changes


def _variant_change(target: Path, base_text: str, base_name: str, placement: variants.Placement) -> FileChange:
    text = variants.render_variant(base_text, base_name, [placement], dialect=variants.YOLOV7)
    return FileChange(target, owned_old_text(target), with_base_newlines(text, base_text), owned=True)


def index_maps(tree: Yolov7Tree) -> Dict[str, Dict[int, int]]:
    """For every generated variant whose base sits beside it: base layer index -> variant layer index,
    keyed by the variant's path relative to the tree root."""
    maps: Dict[str, Dict[int, int]] = {}
    for variant in generated_variants(tree):  # type: ignore[arg-type]
        mapping = index_map_of(variant.path, variant.text)
        if mapping is not None:
            maps[tree.relative(variant.path)] = mapping
    return maps


# ----------------------------------------------------------------------------------------------------------
# The target


@dataclass(frozen=True)
class Yolov7Target(Yolov5Target):
    """YOLOv5's Python plans (the same two files, the same parse_model branch), YOLOv7's variants."""

    tree: Yolov7Tree  # type: ignore[assignment]

    codebase = "yolov7"
    title = "YOLOv7"

    def plan_variants(self, specs: Sequence[ModuleSpec], *, bases: Sequence[str],
                      scales: Optional[Sequence[str]], positions: Optional[Sequence[str]]) -> List[FileChange]:
        return variant_changes(self.tree, specs, bases=bases, scales=scales, positions=positions)

    def index_maps(self) -> Dict[str, Dict[int, int]]:
        """Per generated variant (path from the tree root): old -> new layer index."""
        return index_maps(self.tree)

    def status_report(self) -> Dict[str, Any]:
        report = super().status_report()
        report["cfg"] = self.tree.relative(self.tree.cfg_dir) if self.tree.training_dir.is_dir() else None
        return report
