"""Checkpoints: which yolopatch classes a saved model needs, and how a base's layers map into a variant.

Two jobs, both without torch and without unpickling anything:

- **What a checkpoint needs.** A pickled model names every class it holds as a pickle *global*
  (``models.common SOCA``). ``pickle_globals`` lists them with ``pickletools`` (opcodes only; no
  object is built, no code runs), from torch's zip format (``<name>/data.pkl``) or its legacy
  format (a row of pickles). ``checkpoint_needs`` turns them into the catalogue modules whose
  classes the checkpoint cannot be loaded without.
- **Where each layer goes.** A variant is its base with rows inserted (``variants.insert_layers``);
  ``transfer_candidates`` uses the same remap (``variants.plan_insertions`` and ``plan_remap``) to
  give, for a checkpoint of the base (or of a variant of the same base with fewer modules), the
  exact ``source layer -> variant layer`` index map that ``yolopatch weights`` moves tensors by.

A target supplies its checkpoint format (``CheckpointFormat``): where trained checkpoints lie in a
tree, which modules its inserted classes are pickled under, and the probe script that reads and
writes them in the user's interpreter: ``YOLOV5`` and ``ULTRALYTICS`` (``format_for(codebase)``). YOLOv7
trees use ``YOLOV5`` (the same checkpoint dict and probe) with their own models module added to its
``class_modules`` (``models.common`` in a checkout, ``<pkg>.models.common`` in a package: targets/shared.py).

For Ultralytics, ``foreign_ultralytics_classes`` also names the globals of a checkpoint that 8.4's
restricted loader (``nn/tasks.py``, ``_SafeLoad``) refuses to rebuild: classes defined outside
``ultralytics.nn.modules`` (a module pasted into ``nn/attention.py`` or a file of the user's own).
"""

from __future__ import annotations

import _compat_pickle
import ast
import io
import itertools
import json
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

from yolopatch import catalog, variants
from yolopatch.variants import Placement, Row

Global = Tuple[str, str]  # (module, name) as the pickle names it


@dataclass(frozen=True)
class CheckpointFormat:
    """What one target's checkpoints look like."""

    target: str
    patterns: Tuple[str, ...]  # glob patterns, relative to the tree root, of trained checkpoints
    class_modules: Tuple[str, ...]  # modules yolopatch's inserted classes are pickled under
    probe: str  # the script in yolopatch/ that loads and writes this format in the user's interpreter


# YOLOv5: train.py saves runs/train/<name>/weights/{last,best}.pt; people keep downloads at the root.
# A checkpoint pickles classes under the import name of the tree it was trained in: ``models.common``
# (a checkout) or ``yolov5.models.common`` (the package layout).
YOLOV5 = CheckpointFormat(
    target="yolov5",
    patterns=("runs/**/weights/*.pt", "*.pt"),
    class_modules=("models.common", "yolov5.models.common"),
    probe="weights_probe.py",
)

# Ultralytics: the trainer saves <runs_dir>/<task>/<name>/weights/{last,best}.pt, runs_dir being the git
# root's (or the working folder's) runs/; downloads (yolov8n.pt) land in the working folder. yolopatch's
# classes live in ultralytics/nn/modules/yolopatch.py (CBAM too: tasks.py imports it from there).
ULTRALYTICS = CheckpointFormat(
    target="ultralytics",
    patterns=("runs/**/weights/*.pt", "*.pt"),
    class_modules=("ultralytics.nn.modules.yolopatch",),
    probe="weights_probe_ultralytics.py",
)

FORMATS = {fmt.target: fmt for fmt in (YOLOV5, ULTRALYTICS)}


def format_for(codebase: str) -> CheckpointFormat:
    """The checkpoint format of a codebase (``"yolov5"``, ``"ultralytics"``)."""
    return FORMATS[codebase]


# --------------------------------------------------------------------------------------------
# Pickle globals, read with pickletools


class UnreadableCheckpoint(ValueError):
    """Not a torch checkpoint (neither a zip holding data.pkl nor a pickle)."""


_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                         "SHORT_BINSTRING", "BINSTRING", "STRING"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_NO_PUSH_OPS = frozenset({"PROTO", "FRAME", "MARK", "STOP", "POP", "POP_MARK"})


def pickle_globals(stream: IO[bytes]) -> FrozenSet[Global]:
    """The (module, name) globals one pickle on ``stream`` references; reads up to its STOP.

    ``GLOBAL``/``INST`` carry both names in their argument (protocols 0-3, what torch writes);
    ``STACK_GLOBAL`` (protocol 4+) takes them from the two strings pushed right before it, which
    may come from the memo (``BINGET``), so strings are tracked through ``MEMOIZE``/``PUT``.
    """
    found = set()
    memo: Dict[Any, Optional[str]] = {}
    pushed: List[Optional[str]] = []
    try:
        for opcode, argument, _ in pickletools.genops(stream):
            name = opcode.name
            if name in ("GLOBAL", "INST"):
                module, _, attribute = str(argument).partition(" ")
                found.add((module, attribute))
                pushed.append(None)
            elif name == "STACK_GLOBAL":
                module, attribute = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
                if isinstance(module, str) and isinstance(attribute, str):
                    found.add((module, attribute))
                pushed.append(None)
            elif name in _STRING_OPS:
                pushed.append(argument.decode("latin-1") if isinstance(argument, bytes) else str(argument))
            elif name in _GET_OPS:
                pushed.append(memo.get(argument))
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in _PUT_OPS:
                memo[argument] = pushed[-1] if pushed else None
            elif name not in _NO_PUSH_OPS:
                pushed.append(None)
    except (ValueError, EOFError) as error:  # pickletools' errors for bytes that are no pickle
        raise UnreadableCheckpoint(f"not a pickle: {error}") from None
    return frozenset(found)


def checkpoint_globals(path: Path) -> FrozenSet[Global]:
    """Every pickle global a torch checkpoint file references (zip or legacy format)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = [name for name in archive.namelist() if name == "data.pkl" or name.endswith("/data.pkl")]
            if not members:
                raise UnreadableCheckpoint("a zip archive without data.pkl")
            found: FrozenSet[Global] = frozenset()
            for member in members:
                with archive.open(member) as handle:
                    found |= pickle_globals(io.BufferedReader(handle))  # type: ignore[arg-type]
            return found
    with path.open("rb") as handle:
        return _legacy_globals(handle)


def _legacy_globals(handle: IO[bytes]) -> FrozenSet[Global]:
    """torch's pre-1.6 format: magic number, protocol, system info, the object, storage keys (each
    a pickle), then raw storage bytes, which are never parsed."""
    found: FrozenSet[Global] = frozenset()
    for _ in range(5):
        found |= pickle_globals(handle)
    return found


# --------------------------------------------------------------------------------------------
# Which catalogue modules a checkpoint needs


def template_classes() -> Dict[str, str]:
    """Class name -> module key, for every top-level class each template inserts (helpers too)."""
    owners: Dict[str, str] = {}
    for spec in catalog.all_modules():
        for node in ast.parse(spec.source).body:
            if isinstance(node, ast.ClassDef):
                owners[node.name] = spec.key
    return owners


def needed_modules(found: FrozenSet[Global], fmt: CheckpointFormat,
                   owners: Dict[str, str]) -> Dict[str, Tuple[str, ...]]:
    """Module key -> the classes of it that ``found`` references (only under ``fmt.class_modules``)."""
    needed: Dict[str, List[str]] = {}
    for module, name in sorted(found):
        if module in fmt.class_modules and name in owners:
            needed.setdefault(owners[name], [])
            if name not in needed[owners[name]]:
                needed[owners[name]].append(name)
    return {key: tuple(names) for key, names in sorted(needed.items())}


@dataclass(frozen=True)
class CheckpointNeeds:
    """One checkpoint in a tree and the yolopatch modules loading it needs (or why it was unreadable)."""

    path: Path
    modules: Dict[str, Tuple[str, ...]]  # key -> class names
    error: Optional[str] = None


def find_checkpoints(root: Path, fmt: CheckpointFormat = YOLOV5) -> List[Path]:
    """The checkpoint files ``fmt.patterns`` match below ``root``, sorted, each once."""
    found = {path.resolve() for pattern in fmt.patterns for path in root.glob(pattern) if path.is_file()}
    return sorted(found)


def checkpoint_needs(root: Path, fmt: CheckpointFormat = YOLOV5) -> List[CheckpointNeeds]:
    """Every checkpoint in the tree at ``root`` with the modules it needs (unreadable ones with an error)."""
    owners = template_classes()
    result = []
    for path in find_checkpoints(root, fmt):
        try:
            result.append(CheckpointNeeds(path, needed_modules(checkpoint_globals(path), fmt, owners)))
        except (OSError, UnreadableCheckpoint, zipfile.BadZipFile) as error:
            result.append(CheckpointNeeds(path, {}, f"{type(error).__name__}: {error}"))
    return result


# --------------------------------------------------------------------------------------------
# Globals 8.4's restricted loader refuses


# What ultralytics 8.4's ``_SafeLoad`` (nn/tasks.py) rebuilds besides torch's own weights-only list: an
# nn.Module class in one of these modules or their direct submodules (``ultralytics.nn.modules.block``),
# a class of these modules, and a few data types and legacy aliases by name.
_SAFE_CLASS_PACKAGES = frozenset({"torch.nn.modules", "ultralytics.nn.modules"})
_SAFE_CLASS_MODULES = frozenset({"torch.nn.modules", "ultralytics.nn.modules", "ultralytics.nn.tasks",
                                 "ultralytics.nn.distill_model", "ultralytics.utils.loss", "ultralytics.utils.tal"})
_SAFE_NAMES = frozenset({
    "numpy.dtype", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtypes.Float64DType",
    "ultralytics.utils.IterableSimpleNamespace", "ultralytics.yolo.utils.IterableSimpleNamespace",
    "ultralytics.nn.modules.block.Silence", "ultralytics.nn.tasks.YOLOv10DetectionModel",
    "ultralytics.utils.loss.v10DetectLoss", "builtins.getattr",
    "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib._local.PosixPath", "pathlib._local.WindowsPath",
    "torchvision.transforms.transforms.Compose", "torchvision.transforms.transforms.Normalize",
    "torchvision.transforms.transforms.Resize", "torchvision.transforms.transforms.CenterCrop",
    "torchvision.transforms.transforms.ToTensor", "torchvision.transforms.functional.InterpolationMode",
    "ultralytics.nn.text_model.CLIP", "clip.model.CLIP", "clip.model.LayerNorm", "clip.model.QuickGELU",
    "clip.model.ResidualAttentionBlock", "clip.model.Transformer", "clip.model.VisionTransformer",
    "clip.clip._convert_image_to_rgb",
    # torch's own weights-only list (torch/_weights_only_unpickler.py) outside the modules below
    "collections.OrderedDict", "collections.Counter", "_codecs.encode", "builtins.bytearray", "builtins.complex",
    "builtins.set",
})
# torch's weights-only list: tensors, storages, dtypes, devices and their rebuild functions live here.
_TORCH_DATA_MODULES = frozenset({"torch", "torch._utils", "torch._tensor", "torch.storage", "torch.serialization",
                                 "torch.nn.parameter", "torch.cuda", "torch.sparse", "torch.cuda.sparse"})


def safe_for_ultralytics(module: str, name: str) -> bool:
    """Whether 8.4's restricted loader rebuilds the pickle global ``module.name`` (judged by its name only:
    a name in an accepted module is assumed to be the class it needs to be)."""
    return (f"{module}.{name}" in _SAFE_NAMES or module in _SAFE_CLASS_MODULES or module in _TORCH_DATA_MODULES
            or module.rpartition(".")[0] in _SAFE_CLASS_PACKAGES)


def foreign_ultralytics_classes(path: Path) -> List[str]:
    """The globals (``"module.Name"``, sorted) of the checkpoint at ``path`` that ultralytics 8.4's restricted
    loader rejects: classes outside ``ultralytics.nn.modules`` (``ultralytics.nn.attention.SOCA``,
    ``my_blocks.SOCA``, ``models.common.Conv``). Older versions load them with a plain ``torch.load`` only
    where that module imports, and otherwise try to pip-install a package named like it.
    Raises ``UnreadableCheckpoint``, ``zipfile.BadZipFile`` or ``OSError`` for a file that is no torch checkpoint."""
    found = {_python3_name(module, name) for module, name in checkpoint_globals(path)}
    return sorted(f"{module}.{name}" for module, name in found if not safe_for_ultralytics(module, name))


def _python3_name(module: str, name: str) -> Global:
    """A protocol-2 pickle's Python 2 name (``__builtin__ set``) as unpicklers read it (``builtins set``)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def needing(checkpoints: Sequence[CheckpointNeeds], keys: Sequence[str]) -> Dict[str, List[Path]]:
    """Module key -> the checkpoints that need it, for ``keys`` only (keys needed by none left out)."""
    result: Dict[str, List[Path]] = {}
    for key in keys:
        paths = [item.path for item in checkpoints if key in item.modules]
        if paths:
            result[key] = paths
    return result


# --------------------------------------------------------------------------------------------
# Layer maps for moving a checkpoint's tensors into a variant


@dataclass(frozen=True)
class Insertion:
    """One inserted row of a variant: after base layer ``after``, the module ``key`` (``class_name``)."""

    after: int
    class_name: str
    key: str
    position: str


def insertions_of(base: variants.BaseModel, placements: Sequence[Placement]) -> List[Insertion]:
    """The rows ``placements`` insert into ``base``, in the variant's order (variants.plan_insertions)."""
    keys = {placement.class_name: placement.key for placement in placements}
    return [Insertion(item.after, item.class_name, keys[item.class_name], item.position)
            for item in variants.plan_insertions(base, placements)]


def layer_indices(layer_count: int, insertions: Sequence[Insertion]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """(new index of every base layer, new index of every insertion), by ``variants.plan_remap``.

    Insertions after the same layer are chained in the order given: the k-th sits at the base
    layer's new index + 1 + k.
    """
    remap = variants.plan_remap(layer_count, [insertion.after for insertion in insertions])
    placed: List[int] = []
    chain: Dict[int, int] = {}
    for insertion in insertions:
        rank = chain.get(insertion.after, 0)
        chain[insertion.after] = rank + 1
        placed.append(remap.new_index[insertion.after] + 1 + rank)
    return remap.new_index, tuple(placed)


def expected_rows(base: variants.BaseModel, insertions: Sequence[Insertion]) -> List[Optional[Row]]:
    """The variant's layer rows: base rows remapped (``variants.insert_layers``), inserted rows
    ``[-1, 1, ClassName, None]`` (their args are the module's business: None matches any)."""
    rows = variants.insert_layers(list(base.layers), [(item.after, [-1, 1, item.class_name, None])
                                                      for item in insertions])
    return [list(row) for row in rows]


def rows_match(actual: Sequence[Any], expected: Sequence[Any]) -> bool:
    """Layer rows equal, JSON-normalised (tuples are lists); an expected ``None`` (a row, or a field
    of one) matches anything. weights_probe.py, which cannot import yolopatch, has the same rule."""
    actual, expected = _normal(list(actual)), _normal(list(expected))
    if len(actual) != len(expected):
        return False
    for row, wanted in zip(actual, expected):
        if wanted is None:
            continue
        if not isinstance(row, list) or len(row) != len(wanted):
            return False
        if any(want is not None and have != want for have, want in zip(row, wanted)):
            return False
    return True


def _normal(value: Any) -> Any:
    """JSON-normalised (tuples become lists), as the probe sees rows."""
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class SourceCandidate:
    """What a source checkpoint's model may be, and where each of its layers goes in the target.

    ``rows``: the layer rows the checkpoint's ``model.yaml`` must have (None entries match any);
    ``layer_map``: source layer index -> target layer index; source layers missing from it have no
    counterpart in the target (an inserted module the target does not have).
    """

    description: str
    rows: Tuple[Any, ...]
    layer_map: Dict[int, int]

    def to_json(self) -> Dict[str, Any]:
        return {"description": self.description, "rows": _normal(list(self.rows)),
                "layer_map": [[source, target] for source, target in sorted(self.layer_map.items())]}


def describe(base_name: str, insertions: Sequence[Insertion]) -> str:
    """``yolov5s.yaml`` or ``yolov5s.yaml with soca at p5; sge at p4,p5``."""
    if not insertions:
        return base_name
    by_key: Dict[str, List[str]] = {}
    for item in insertions:
        by_key.setdefault(item.key, []).append(item.position)
    return base_name + " with " + "; ".join(f"{key} at {','.join(positions)}" for key, positions in by_key.items())


def candidate(base: variants.BaseModel, source: Sequence[Insertion], target: Sequence[Insertion]) -> SourceCandidate:
    """A checkpoint of ``base`` with ``source`` inserted, moved into ``base`` with ``target`` inserted.

    Base layer j goes from its index in the source to its index in the target; an inserted layer
    goes to the target's insertion of the same class after the same base layer (the k-th such in
    the source to the k-th such in the target); one the target lacks has no counterpart.
    """
    count = len(base.layers)
    source_base, source_inserted = layer_indices(count, source)
    target_base, target_inserted = layer_indices(count, target)
    layer_map = {source_base[j]: target_base[j] for j in range(count)}
    slots: Dict[Tuple[int, str], List[int]] = {}
    for item, index in zip(target, target_inserted):
        slots.setdefault((item.after, item.class_name), []).append(index)
    for item, index in zip(source, source_inserted):
        free = slots.get((item.after, item.class_name))
        if free:
            layer_map[index] = free.pop(0)
    return SourceCandidate(describe(base.name, source), tuple(expected_rows(base, source)), layer_map)


def transfer_candidates(base: variants.BaseModel, target: Sequence[Insertion],
                        others: Sequence[Sequence[Insertion]] = (), limit: int = 256) -> List[SourceCandidate]:
    """What a checkpoint to be moved into ``base`` + ``target`` may be: the base itself first, then
    the base with any subset of ``target``'s insertions (a variant of fewer modules; up to ``limit``
    subsets), then ``others`` (other variants of the same base, for example found in the tree).
    Candidates with the same rows are given once (the first wins)."""
    chosen: List[SourceCandidate] = []
    seen = set()
    subsets = itertools.chain.from_iterable(itertools.combinations(target, size) for size in range(len(target) + 1))
    for source in itertools.chain(itertools.islice(subsets, limit), others):
        option = candidate(base, list(source), target)
        signature = json.dumps(_normal(list(option.rows)))
        if signature not in seen:
            seen.add(signature)
            chosen.append(option)
    return chosen
