"""Variant YAMLs on disk: which bases, which files are yolopatch's, and the changes that write them.

Variants live beside their base. Those under the tree's models/ folder are found by scanning it (their
first line is yolopatch's header); those written beside a base elsewhere (``--base cfg/my.yaml``) are
also listed in ``.yolopatch/variants.json``, so that status, check and revert see every one of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from yolopatch import catalog, variants
from yolopatch.catalog import ModuleSpec
from yolopatch.changes import FileChange, read_text
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.paths import resolve_model_yaml
from yolopatch.tree import Tree

SCALES = ("n", "s", "m", "l", "x")
REGISTRY = "variants.json"


@dataclass(frozen=True)
class GeneratedVariant:
    """A variant YAML that yolopatch wrote (recognised by its first line)."""

    path: Path
    text: str
    base: str
    keys: Tuple[str, ...]
    edited: bool


def registry_path(tree: Tree) -> Path:
    return tree.state_dir / REGISTRY


def registered_outside(tree: Tree) -> List[Path]:
    """Variants yolopatch wrote outside models/, as listed in the registry."""
    path = registry_path(tree)
    if not path.is_file():
        return []
    try:
        names = json.loads(read_text(path))["variants"]
    except (ValueError, KeyError, TypeError) as error:
        raise YolopatchError(f"unreadable list of generated variants ({error})", path=path,
                             hint="delete it; variants outside models/ are then no longer tracked") from error
    return [tree.root / name for name in names]


def _is_generated_file(path: Path) -> bool:
    if not path.is_file():  # a dangling link, a folder named *.yaml
        return False
    try:
        with path.open("rb") as handle:
            return handle.readline().startswith(variants.HEADER_PREFIX.encode("ascii"))
    except OSError:
        return False


def generated_variants(tree: Tree) -> List[GeneratedVariant]:
    """Every yolopatch-generated YAML under the tree's models/ folder, and those listed in the registry."""
    paths = sorted(tree.models_dir.rglob("*.yaml")) + registered_outside(tree)
    found = []
    seen = set()
    for path in paths:
        if path in seen or not _is_generated_file(path):
            continue
        seen.add(path)
        text = read_text(path)
        info = variants.parse_generated_header(text)
        if info is not None:
            found.append(GeneratedVariant(path, text, info.base_name, info.keys, variants.is_edited(text)))
    return found


ULTRALYTICS_DEFAULT_BASES = ("v8/yolov8.yaml", "11/yolo11.yaml")  # where the version has them


def ultralytics_base_paths(tree: "Any", bases: Sequence[str]) -> List[Path]:
    """--base paths (from here, the tree's root, its package or cfg/models), else yolov8.yaml and yolo11.yaml."""
    if bases:
        found = []
        for base in bases:
            candidates = [Path(base), tree.root / base, tree.package_dir / base, tree.models_dir / base]
            match = next((path for path in candidates if path.is_file()), None)
            if match is None:
                raise UsageError(f"--base model YAML {base!r} not found (looked here, in {tree.root}, "
                                 f"{tree.package_dir} and {tree.models_dir})",
                                 hint="e.g. --base ultralytics/cfg/models/11/yolo11.yaml")
            found.append(match.resolve())
        return _unique(found)
    return [tree.models_dir / name for name in ULTRALYTICS_DEFAULT_BASES if (tree.models_dir / name).is_file()]


def ultralytics_variant_changes(tree: "Any", specs: Sequence[ModuleSpec], *, bases: Sequence[str] = (),
                                positions: Optional[Sequence[str]] = None) -> List[FileChange]:
    """One variant per (base, module) beside the base: ``yolov8-soca.yaml``, which Ultralytics loads at any
    scale as ``yolov8n-soca.yaml``, ``yolov8s-soca.yaml``, ..."""
    changes = []
    for base in ultralytics_base_paths(tree, bases):
        base_text = read_text(base)
        for spec in specs:
            placement = _placement(spec, positions or _default_positions(spec, base_text, base.name))
            name = variants.variant_filename(base.name, spec.key, placement.positions,
                                             variants.load_spec(spec.key).placement)
            target = base.parent / name
            text = variants.render_variant(base_text, base.name, [placement], dialect=variants.ULTRALYTICS)
            changes.append(FileChange(target, owned_old_text(target), with_base_newlines(text, base_text),
                                      owned=True))
    return changes


def _default_positions(spec: ModuleSpec, base_text: str, base_name: str) -> Optional[Sequence[str]]:
    """The module's default placement on this base; ``sppf`` on a base without an SPP layer (yolo12 ends its
    backbone with A2C2f) means the backbone's last layer, where the others have their SPPF. None: the default."""
    default = tuple(variants.load_spec(spec.key).placement)
    if "sppf" not in default:
        return None
    base = variants.parse_base(base_text, base_name, variants.ULTRALYTICS)
    if base.sppf_index is not None:
        return None
    return tuple(f"backbone:{base.backbone_length - 1}" if position == "sppf" else position for position in default)


def base_paths(tree: Tree, bases: Sequence[str], scales: Optional[Sequence[str]]) -> List[Path]:
    """The base YAMLs variants are made from: --base paths, --scales of yolov5{n..x}.yaml, or yolov5s.yaml.
    Each named once, whatever the spelling."""
    if bases:
        return _unique([resolve_model_yaml(tree, base, what="base model YAML") for base in bases])
    wanted = _unique(list(scales or ["s"]))
    unknown = [scale for scale in wanted if scale not in SCALES]
    if unknown:
        raise UsageError(f"unknown scale(s) {', '.join(unknown)}", hint=f"choose from {','.join(SCALES)}")
    paths = [tree.models_dir / f"yolov5{scale}.yaml" for scale in wanted]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        offered = sorted(p.stem[len("yolov5"):] for p in tree.models_dir.glob("yolov5?.yaml"))
        raise UsageError(f"this tree has no {missing[0].name}", hint=f"it offers --scales {','.join(offered)}")
    return paths


def _unique(items: list) -> list:
    return list(dict.fromkeys(items))


def _placement(spec: ModuleSpec, positions: Optional[Sequence[str]]) -> variants.Placement:
    default = variants.load_spec(spec.key)
    return variants.Placement(spec.class_name, spec.key, tuple(positions or default.placement), default.args,
                              spec.registration)


def variant_changes(tree: Tree, specs: Sequence[ModuleSpec], *, bases: Sequence[str] = (),
                    scales: Optional[Sequence[str]] = None,
                    positions: Optional[Sequence[str]] = None) -> List[FileChange]:
    """One variant per (base, module): ``<base-stem>-<key>[-<positions>].yaml`` beside the base."""
    changes = []
    outside: List[Path] = []
    for base in base_paths(tree, bases, scales):
        base_text = read_text(base)
        if variants.parse_generated_header(base_text) is not None:
            raise UsageError(f"{base} is itself a generated variant", hint="pass the original model YAML as --base")
        for spec in specs:
            placement = _placement(spec, positions)
            name = variants.variant_filename(base.name, spec.key, placement.positions,
                                             variants.load_spec(spec.key).placement)
            target = base.parent / name
            text = with_base_newlines(variants.render_variant(base_text, base.name, [placement]), base_text)
            changes.append(FileChange(target, owned_old_text(target), text, owned=True))
            if tree.models_dir not in target.parents:
                outside.append(target)
    registry = registry_change(tree, add=outside)
    return changes + ([registry] if registry is not None else [])


def registry_change(tree: Tree, add: Sequence[Path] = (), remove: Sequence[Path] = ()) -> Optional[FileChange]:
    """The registry with ``add`` listed and ``remove`` unlisted (deleted when empty); None when unchanged."""
    path = registry_path(tree)
    old = read_text(path) if path.is_file() else None
    current = [tree.relative(p) for p in registered_outside(tree)]
    wanted = _unique([name for name in current if name not in {tree.relative(p) for p in remove}]
                     + [tree.relative(p) for p in add])
    if wanted == current:
        return None
    new = json.dumps({"variants": wanted}, indent=1) + "\n" if wanted else None
    return FileChange(path, old, new, owned=True)


def removal_changes(tree: Any, variants: Sequence[GeneratedVariant], keys: Sequence[str],
                    force: bool) -> List[FileChange]:
    """Delete the generated variants that contain any of ``keys`` (refuse a hand-edited one unless ``force``)."""
    changes: List[FileChange] = []
    for variant in variants:
        if not set(variant.keys) & set(keys):
            continue
        if variant.edited and not force:
            raise YolopatchError("generated variant was edited by hand", path=variant.path, line=1,
                                 hint="keep a copy, then run `yolopatch revert --force` (or delete it yourself)")
        changes.append(FileChange(variant.path, variant.text, None, owned=True))
    registry = registry_change(tree, remove=[change.path for change in changes])
    return changes + ([registry] if registry is not None else [])


def index_map_of(path: Path, text: str) -> Optional[Dict[int, int]]:
    """Base layer index -> layer index in the generated variant ``text`` at ``path`` (old -> new), from its
    header and its base beside it; None when the base is not there any more."""
    info = variants.parse_generated_header(text)
    base = path.parent / info.base_name if info is not None else None
    if info is None or base is None or not base.is_file():
        return None
    placements = [variants.Placement(catalog.get(key).class_name, key, positions, (), catalog.get(key).registration)
                  for key, positions in info.placements]
    return variants.index_map(read_text(base), base.name, placements)


def with_base_newlines(text: str, base_text: str) -> str:
    return text.replace("\n", "\r\n") if "\r\n" in base_text and "\r\n" not in text else text


def owned_old_text(target: Path) -> Optional[str]:
    """The current text of ``target`` if yolopatch may overwrite it; refuse for someone else's file."""
    if not target.exists() and not target.is_symlink():
        return None
    if not target.is_file():
        raise YolopatchError("something that is not a file has this name", path=target,
                             hint="rename or move it, or choose another placement with --at")
    text = read_text(target)
    if variants.parse_generated_header(text) is None:
        raise YolopatchError("a file of this name exists and was not generated by yolopatch", path=target,
                             hint="rename or move it, or choose another placement with --at")
    if variants.is_edited(text):
        raise YolopatchError("generated variant was edited by hand; rewriting it would lose the edits",
                             path=target, line=1, hint="rename your edited copy, then run again")
    return text
