"""Variant model YAMLs, written from a tree's own base YAML: parse, insert layers, remap, render.

Everything here is pure (text in, text out; the only file read is a shipped spec in ``load_spec``).

Three YAML dialects (``DIALECTS``), told apart by ``detect_dialect`` or named by the caller
(``parse_base(..., dialect=...)``, ``render_variant(..., dialect=...)``):

- ``"yolov5"``: YOLOv5's ``models/*.yaml`` (``depth_multiple``/``width_multiple``);
- ``"ultralytics"``: the ``ultralytics`` package's ``cfg/models/**.yaml`` (YOLOv3/5/6/8/9/10, YOLO11,
  YOLO12, YOLO26, YOLOE, YOLO-World, RT-DETR; 8.0 to 8.4). Detected by a ``scales:`` key or by a
  module only Ultralytics' parse_model knows (v3/v9 files there have no ``scales:``). The dialect
  sets which modules write their width in ``args[0]``, which are heads, and the stride rules.
  A variant is written beside its base as ``<stem>-<key>.yaml`` (``yolov8-sge.yaml``), which
  Ultralytics loads at a scale as ``yolov8n-sge.yaml``: its ``yaml_model_load`` drops the scale
  letter after the first digits (``(\\d+)([nslmx])(.+)?$``) to find the file, and
  ``guess_model_scale`` reads it from the stem (``yolov\\d+([nslmx])`` in 8.0 to 8.2,
  ``yolo[v]?\\d+([nslmx])`` from 8.3.0, ``yolo(e-)?[v]?\\d+([nslmx])`` later): the ``-`` yolopatch puts before the key
  keeps both from reading a scale out of the key or the positions.
- ``"yolov7"``: WongKinYiu/yolov7's ``cfg/training`` and ``cfg/deploy`` YAMLs (YOLOv5's keys, YOLOv7's
  parse_model: its channel list, IDetect/IAuxDetect/IBin/IKeypoint heads, MP/SP/ReOrg/DownC strides,
  SPPCSPC as ``sppf``, or yolov7-tiny's SP block). They route many absolute indices
  (``[[102, 103, 104], 1, IDetect, ...]``), remapped like any other; ``index_map`` gives old -> new.

A model YAML lists layers ``[from, number, module, args]`` in ``backbone`` then ``head``; the
layer index is the position in ``backbone + head``. ``from`` is an int or a list of ints: ``f >= 0``
names layer ``f``, ``f < 0`` names layer ``i + f`` (``-1``: the previous layer; on layer 0 the image).

Inserting module ``M`` on the output of layer ``k`` (the remap rules, see ``insert_layers``):

- ``M`` is the row ``[-1, 1, M, [width, *args]]`` placed right after ``k``; several insertions on the
  same ``k`` are chained in the order given (``k -> M1 -> M2``);
- every later consumer of ``k`` (the next row's implicit ``-1``, an absolute ``k`` in Concat/Detect,
  a relative ``-2`` that reached ``k``) consumes the last module of that chain instead;
- every other reference keeps meaning the same layer: absolute indices at or after an insertion
  point shift by the number of rows inserted before them, relative ones are recomputed so they still
  reach their layer (they stay relative);
- all insertions are applied in one pass over the base list, so they compose.

Positions (``resolve_position``), all meaning "insert after this layer":
``p3``/``p4``/``p5``/``p6``/... the layers feeding the last multi-scale head (Detect, Segment,
Pose, OBB, RTDETRDecoder, ...: ``is_head``), named by their stride (``p{log2 stride}``, found by
following strides along the graph; by position ``p3, p4, ...`` in the head's from-order when
strides cannot be worked out); a classification model (Classify head) has none. ``sppf`` the
SPP/SPPF layer (SPPELAN in Ultralytics' YOLOv9), ``backbone:K`` backbone row K, ``layer:I``
absolute layer I.

Rendering keeps the base text (header comments, parameters, blank lines, each row's text) and
edits only what changes: ``from`` fields, leading layer numbers in row comments, new rows. The
output is ASCII (YOLOv5 reads YAML with ``encoding='ascii', errors='ignore'``) and starts with a
``# yolopatch: generated from ...`` line carrying a hash of the rest of the file.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple, Union

import yaml

from yolopatch import __version__
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.resources import data_dir

From = Union[int, List[int]]
Row = List[Any]  # [from, number, module, args], as yaml.safe_load returns it

HEADER_PREFIX = "# yolopatch: generated from "
HASH_LENGTH = 12

YOLOV5 = "yolov5"
ULTRALYTICS = "ultralytics"
YOLOV7 = "yolov7"
DIALECTS = (YOLOV5, ULTRALYTICS, YOLOV7)

# Modules whose args[0] is their (unscaled) output width, as in YOLOv5 parse_model (v5.0 to master).
_WIDTH_FROM_ARGS = frozenset({
    "Conv", "GhostConv", "Bottleneck", "GhostBottleneck", "SPP", "SPPF", "DWConv", "MixConv2d", "Focus",
    "CrossConv", "BottleneckCSP", "C3", "C3TR", "C3SPP", "C3Ghost", "C3x", "nn.ConvTranspose2d",
    "DWConvTranspose2d",
})
# Ultralytics parse_model's channel set (the tuple of 8.0, the sets of 8.1 to 8.3.0, ``base_modules`` of
# late 8.3 and 8.4; the union over 8.0.239 to 8.4.190), less Classify (a head: its args[0] is nc).
_ULTRALYTICS_WIDTH_FROM_ARGS = frozenset({
    "Conv", "ConvTranspose", "GhostConv", "Bottleneck", "GhostBottleneck", "SPP", "SPPF", "C2fPSA", "C2PSA",
    "DWConv", "Focus", "BottleneckCSP", "C1", "C2", "C2f", "C3k2", "RepNCSPELAN4", "ELAN1", "ADown", "AConv",
    "SPPELAN", "C2fAttn", "C3", "C3TR", "C3Ghost", "nn.ConvTranspose2d", "torch.nn.ConvTranspose2d",
    "DWConvTranspose2d", "C3x", "RepC3", "PSA", "SCDown", "C2fCIB", "A2C2f",
    "CBLinear", "TorchVision", "Index",  # their own branches, also c2 = args[0] (CBLinear's is a list)
})
# Ultralytics heads (parse_model's head branches, 8.0 to 8.4; names ending in Detect are heads too).
_ULTRALYTICS_HEADS = frozenset({
    "Detect", "Segment", "Pose", "OBB", "WorldDetect", "v10Detect", "YOLOEDetect", "YOLOESegment",
    "Segment26", "Pose26", "OBB26", "YOLOESegment26", "RTDETRDecoder", "SemanticSegment", "Depth", "Classify",
})
_CLASSIFY = "Classify"  # a head without p-levels: one input, pooled
# YOLOv7's parse_model channel list (WongKinYiu/yolov7 main, models/yolo.py): args[0] is the width.
_YOLOV7_WIDTH_FROM_ARGS = frozenset({
    "nn.Conv2d", "Conv", "RobustConv", "RobustConv2", "DWConv", "GhostConv", "RepConv", "RepConv_OREPA", "DownC",
    "SPP", "SPPF", "SPPCSPC", "GhostSPPCSPC", "MixConv2d", "Focus", "Stem", "GhostStem", "CrossConv",
    "Bottleneck", "BottleneckCSPA", "BottleneckCSPB", "BottleneckCSPC",
    "RepBottleneck", "RepBottleneckCSPA", "RepBottleneckCSPB", "RepBottleneckCSPC",
    "Res", "ResCSPA", "ResCSPB", "ResCSPC", "RepRes", "RepResCSPA", "RepResCSPB", "RepResCSPC",
    "ResX", "ResXCSPA", "ResXCSPB", "ResXCSPC", "RepResX", "RepResXCSPA", "RepResXCSPB", "RepResXCSPC",
    "Ghost", "GhostCSPA", "GhostCSPB", "GhostCSPC", "SwinTransformerBlock", "STCSPA", "STCSPB", "STCSPC",
    "SwinTransformer2Block", "ST2CSPA", "ST2CSPB", "ST2CSPC",
})
# YOLOv7's heads (parse_model's ``m in [Detect, IDetect, IAuxDetect, IBin, IKeypoint]``).
_YOLOV7_HEADS = frozenset({"Detect", "IDetect", "IAuxDetect", "IBin", "IKeypoint"})
# Names only YOLOv7's parse_model knows (``detect_dialect``): its heads and blocks, not YOLOv5's.
_YOLOV7_ONLY = (_YOLOV7_WIDTH_FROM_ARGS | _YOLOV7_HEADS | {"MP", "SP", "ReOrg", "Chuncat", "Shortcut", "Foldcut"}
                ) - _WIDTH_FROM_ARGS - {"Detect", "nn.Conv2d"}
# Fixed strides of YOLOv7 blocks: ReOrg (space to depth) and Stem halve twice / once; RobustConv2 strides
# down then transposes back up.
_YOLOV7_FIXED_STRIDES = {"ReOrg": Fraction(2), "Stem": Fraction(4), "RobustConv2": Fraction(1)}
_YOLOV7_SPP = frozenset({"SPP", "SPPF", "SPPCSPC", "GhostSPPCSPC"})
# Ultralytics modules whose output is no feature map to put a module on: YOLO-World's text embeddings.
_ULTRALYTICS_NO_FEATURES = frozenset({"ImagePoolingAttn"})
# Modules with a stride argument at args[2]: Conv(c2, k, s, ...), DWConv, GhostConv, MixConv2d, ...
_STRIDE_AT_ARG2 = frozenset({"Conv", "GhostConv", "DWConv", "MixConv2d", "CrossConv", "GhostBottleneck",
                             "SCDown"})
_TRANSPOSED = frozenset({"nn.ConvTranspose2d", "torch.nn.ConvTranspose2d", "DWConvTranspose2d"})
_POOLS = frozenset({"nn.MaxPool2d", "nn.AvgPool2d"})
# Fixed strides of Ultralytics blocks: ADown/AConv (YOLOv9) halve, HGStem (RT-DETR) quarters.
_FIXED_STRIDES = {"ADown": Fraction(2), "AConv": Fraction(2), "HGStem": Fraction(4)}
_SPP = frozenset({"SPP", "SPPF"})
_ULTRALYTICS_SPP = frozenset({"SPP", "SPPF", "SPPELAN"})
# libyaml's loader when PyYAML has it: 10x faster, same nodes; its marks count bytes, which are
# characters here because parse_base hands it ASCII text only.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def is_detect_like(module: str) -> bool:
    """Output heads: ``Detect``, ``Segment`` and variants named ``...Detect`` (IDetect, ...)."""
    return module == "Segment" or module.endswith("Detect")


def is_head(module: str, dialect: str = YOLOV5) -> bool:
    """An output head of ``dialect``: YOLOv5's ``is_detect_like``; in Ultralytics also Pose, OBB,
    YOLOE/YOLO26 segment heads, RTDETRDecoder, SemanticSegment, Depth and Classify; in YOLOv7 also IBin
    and IKeypoint."""
    return (is_detect_like(module) or (dialect == ULTRALYTICS and module in _ULTRALYTICS_HEADS)
            or (dialect == YOLOV7 and module in _YOLOV7_HEADS))


def detect_dialect(data: Any) -> str:
    """``"ultralytics"`` for a loaded model YAML with a ``scales:`` key or a module only Ultralytics'
    parse_model knows (its v3/v9 files have no ``scales:``), ``"yolov7"`` for one naming a module only
    YOLOv7's parse_model knows (IDetect, SPPCSPC, MP, RepConv, ...), else ``"yolov5"``."""
    if not isinstance(data, dict):
        return YOLOV5
    if "scales" in data:
        return ULTRALYTICS
    rows = [row for key in ("backbone", "head") if isinstance(data.get(key), list) for row in data[key]]
    modules = {row[2] for row in rows if isinstance(row, list) and len(row) == 4 and isinstance(row[2], str)}
    if modules & _YOLOV7_ONLY:
        return YOLOV7
    ultralytics_only = (_ULTRALYTICS_WIDTH_FROM_ARGS | _ULTRALYTICS_HEADS | _ULTRALYTICS_NO_FEATURES
                        | _ULTRALYTICS_SPP | set(_FIXED_STRIDES) | {"HGBlock", "ResNetLayer", "AIFI", "CBFuse"}
                        ) - _WIDTH_FROM_ARGS - {"Detect", "Segment"}
    return ULTRALYTICS if modules & ultralytics_only else YOLOV5


def _check_dialect(dialect: str) -> str:
    if dialect not in DIALECTS:
        raise UsageError(f"unknown model YAML dialect {dialect!r}", hint=f"dialects: {', '.join(DIALECTS)}")
    return dialect


# --------------------------------------------------------------------------------------------
# Specs: yaml_variants/<key_>.yaml


@dataclass(frozen=True)
class VariantSpec:
    """A module's default placement, read from ``yaml_variants/<key with _>.yaml``."""

    key: str
    placement: Tuple[str, ...]
    args: Tuple[Any, ...]
    note: str
    path: Path


def load_spec(key: str) -> VariantSpec:
    """Read and check the shipped spec of module ``key`` (e.g. ``"double-attention"``)."""
    path = data_dir("yaml_variants") / f"{key.replace('-', '_')}.yaml"
    if not path.is_file():
        raise YolopatchError(f"no variant spec for module {key!r}", path=path,
                             hint="this is a yolopatch bug, please report it")
    text = path.read_text(encoding="utf-8")
    data = _safe_load(text, path)
    if not isinstance(data, dict) or data.get("module") != key:
        raise YolopatchError(f"variant spec does not declare 'module: {key}'", path=path,
                             hint="this is a yolopatch bug, please report it")
    placement = data.get("placement")
    args = data.get("args", [])
    if not isinstance(placement, list) or not placement or not isinstance(args, list):
        raise YolopatchError("variant spec needs a non-empty 'placement' list and an 'args' list", path=path,
                             hint="this is a yolopatch bug, please report it")
    positions = tuple(normalize_position(str(position)) for position in placement)
    for position in positions:
        _check_position_syntax(position)
    for arg in args:
        format_value(arg)  # raises on values that cannot be written back
    return VariantSpec(key=key, placement=positions, args=tuple(args), note=_leading_comment(text), path=path)


def _leading_comment(text: str) -> str:
    """The file's first comment block, without the ``#`` marks (its one-paragraph rationale)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return " ".join(part for part in lines if part)


# --------------------------------------------------------------------------------------------
# Positions


def normalize_position(position: str) -> str:
    """``" Backbone : 2 "`` -> ``"backbone:2"``; ``"P5"`` -> ``"p5"``."""
    return "".join(position.split()).lower()


def _check_position_syntax(position: str) -> None:
    if _parse_position(position) is None:
        raise UsageError(f"unknown position {position!r}",
                             hint="positions are p3, p4, p5 (p2, p6, p7 where the model has them), "
                                  "sppf, backbone:K or layer:I")


def _parse_position(position: str) -> Optional[Tuple[str, int]]:
    """``"p5"`` -> ("p", 5); ``"sppf"`` -> ("sppf", 0); ``"backbone:2"`` -> ("backbone", 2); else None."""
    if position == "sppf":
        return ("sppf", 0)
    if not position.isascii():  # "layer:１２": str.isdigit accepts other scripts' digits
        return None
    if position.startswith("p") and position[1:].isdigit():
        return ("p", int(position[1:]))
    kind, colon, number = position.partition(":")
    if colon and kind in ("backbone", "layer") and number.isdigit():
        return (kind, int(number))
    return None


def _position_sort_key(position: str) -> Tuple[int, int]:
    parsed = _parse_position(normalize_position(position))
    if parsed is None:
        return (9, 0)
    return ({"p": 0, "sppf": 1, "backbone": 2, "layer": 3}[parsed[0]], parsed[1])


# --------------------------------------------------------------------------------------------
# The base model


@dataclass(frozen=True)
class _Section:
    """Where one of ``backbone``/``head`` sits in the text: the list and each row's spans."""

    flow: bool  # ``[[...], ...]`` (upstream) rather than ``- [...]`` lines
    start: int  # the list's first character
    end: int  # one past the list's last character
    rows: Tuple[Tuple[int, int], ...]  # (start, end) of each row
    froms: Tuple[Tuple[int, int], ...]  # (start, end) of each row's ``from`` field
    first_index: int  # absolute index of the section's first row


@dataclass(frozen=True, eq=False)
class BaseModel:
    """A parsed base YAML: its layers, what sits where, and the text to render from."""

    name: str
    text: str  # ASCII, ``\\n`` line endings: the text every span refers to
    data: Dict[str, Any]
    layers: Tuple[Row, ...]  # backbone + head
    backbone_length: int
    detect_index: Optional[int]  # the last head with p-levels (not Classify)
    p_levels: Dict[str, int]  # "p3" -> index of the layer feeding Detect at stride 8
    sppf_index: Optional[int]
    widths: Tuple[Optional[int], ...]  # nominal (unscaled) output width of every layer
    sections: Tuple[_Section, _Section]
    dialect: str = YOLOV5  # "yolov5" or "ultralytics"
    head_module: Optional[str] = None  # the last head's module name (Detect, Classify, RTDETRDecoder, ...)


def parse_base(text: str, name: str, dialect: Optional[str] = None) -> BaseModel:
    """Parse base YAML ``text`` (file name ``name``, for messages) and locate its layers.

    ``dialect`` is ``"yolov5"`` or ``"ultralytics"``; None detects it from the YAML (``detect_dialect``).
    Refuses text that is not a YOLO model YAML, has out-of-range ``from`` references, or is
    itself a yolopatch-generated variant (generate from its base instead).
    """
    text = to_ascii(text)
    info = parse_generated_header(text)
    if info is not None:
        raise YolopatchError(f"{name} was generated by yolopatch from {info.base_name}",
                             hint=f"generate variants from {info.base_name} instead")
    path = Path(name)
    _refuse_anchors(text, path)
    root, data = _compose_and_load(text, path)
    if not isinstance(data, dict) or not all(isinstance(data.get(key), list) for key in ("backbone", "head")):
        raise YolopatchError("not a YOLOv5 model YAML (nor an Ultralytics one): it needs 'backbone' and 'head' "
                             "layer lists", path=path)
    backbone = _section(text, root, "backbone", 0, path)
    head = _section(text, root, "head", len(backbone.rows), path)
    layers = tuple(data["backbone"]) + tuple(data["head"])
    for index, row in enumerate(layers):
        _check_row(row, index, path, _line_of(text, _row_start(index, backbone, head)))
    dialect = detect_dialect(data) if dialect is None else _check_dialect(dialect)
    heads = [index for index, row in enumerate(layers) if is_head(row[2], dialect)]
    detect = [index for index in heads if layers[index][2] != _CLASSIFY]
    detect_index = detect[-1] if detect else None
    return BaseModel(
        name=name, text=text, data=data, layers=layers, backbone_length=len(data["backbone"]),
        detect_index=detect_index,
        p_levels=_p_levels(layers, detect_index, dialect),
        sppf_index=_sppf_index(layers, dialect),
        widths=tuple(nominal_widths(layers, dialect=dialect)),
        sections=(backbone, head),
        dialect=dialect,
        head_module=layers[heads[-1]][2] if heads else None,
    )


def _refuse_anchors(text: str, path: Path) -> None:
    """YAML anchors (&a) and aliases (*a) share one node between places: inserting rows would change what
    they stand for. No YOLO model YAML upstream uses them; refuse rather than guess."""
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise YolopatchError("YAML anchors and aliases (&name, *name) are not supported in a base model",
                                     path=path, line=event.start_mark.line + 1,
                                     hint="write the values out in full, then run again")
    except yaml.YAMLError:
        return  # reported with its line by _compose_and_load


def _safe_load(text: str, path: Path) -> Any:
    """``yaml.safe_load``; YAML errors become a YolopatchError naming the file and line."""
    return _compose_and_load(text, path)[1]


def _compose_and_load(text: str, path: Path) -> Tuple[Optional[yaml.Node], Any]:
    """The document's node tree (for text positions) and its data (safe constructor)."""
    try:
        root = yaml.compose(text, Loader=_LOADER)
        return root, (yaml.SafeLoader("").construct_document(root) if root is not None else None)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise YolopatchError(f"cannot parse YAML: {problem}", path=path,
                             line=mark.line + 1 if mark is not None else None,
                             hint="fix the file so that YOLOv5 itself can read it") from None


def _section(text: str, root: yaml.Node, key: str, first_index: int, path: Path) -> _Section:
    node = [value for name, value in root.value if name.value == key][-1]  # the last wins, as in safe_load
    if not node.value:
        raise YolopatchError(f"the {key} layer list is empty", path=path, line=node.start_mark.line + 1)
    rows = []
    froms = []
    for row in node.value:
        if not isinstance(row, yaml.SequenceNode) or len(row.value) != 4:
            raise YolopatchError(f"{key} rows must be [from, number, module, args]", path=path,
                                 line=row.start_mark.line + 1)
        rows.append((row.start_mark.index, row.end_mark.index))
        froms.append((row.value[0].start_mark.index, row.value[0].end_mark.index))
    return _Section(flow=text[node.start_mark.index] == "[", start=node.start_mark.index,
                    end=node.end_mark.index, rows=tuple(rows), froms=tuple(froms), first_index=first_index)


def _row_start(index: int, backbone: _Section, head: _Section) -> int:
    section = backbone if index < len(backbone.rows) else head
    return section.rows[index - section.first_index][0]


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _check_row(row: Row, index: int, path: Path, line: int) -> None:
    if not isinstance(row[2], str):
        raise YolopatchError(f"layer {index}: module must be a name, not {row[2]!r}", path=path, line=line)
    try:
        sources = resolve_from(row[0], index)
    except YolopatchError as error:
        raise YolopatchError(error.message, path=path, line=line) from None
    for source in sources:
        if not (0 <= source < index or (index == 0 and source == -1)):
            raise YolopatchError(f"layer {index} ({row[2]}) reads from {row[0]!r}, which is not an earlier layer",
                                 path=path, line=line, hint="fix the base YAML so that YOLOv5 itself can build it")


def resolve_from(from_: Any, index: int) -> List[int]:
    """Absolute layers read by layer ``index``: ``f >= 0`` is layer f, ``f < 0`` is ``index + f``."""
    entries = from_ if isinstance(from_, list) else [from_]
    if not entries or not all(isinstance(entry, int) and not isinstance(entry, bool) for entry in entries):
        raise YolopatchError(f"layer {index}: 'from' must be an int or a list of ints, not {from_!r}")
    return [entry if entry >= 0 else index + entry for entry in entries]


# --------------------------------------------------------------------------------------------
# Widths and strides


def nominal_widths(layers: Sequence[Row], channels: int = 3, dialect: str = YOLOV5) -> List[Optional[int]]:
    """Unscaled output width of each layer, the number the YAML writes before width scaling.

    Channel-changing modules of ``dialect`` (its parse_model's channel set): args[0]; Concat: the
    sum of its inputs; Contract/Expand: input times or divided by gain**2; heads: None. Ultralytics
    also: HGStem/HGBlock args[1], ResNetLayer args[1] (times 4 unless it is the stem), CBFuse its
    last input's, ImagePoolingAttn None (text embeddings). Anything else keeps its (first) input's.
    """
    widths: List[Optional[int]] = []
    for index, (from_, _, module, args) in enumerate(layers):
        inputs = [channels if source < 0 else widths[source] for source in resolve_from(from_, index)]
        widths.append(_width(module, args, inputs, dialect))
    return widths


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _width(module: str, args: Any, inputs: List[Optional[int]], dialect: str = YOLOV5) -> Optional[int]:
    args = args if isinstance(args, list) else []
    ultralytics = dialect == ULTRALYTICS
    if is_head(module, dialect) or (ultralytics and module in _ULTRALYTICS_NO_FEATURES):
        return None
    if dialect == YOLOV7:
        return _yolov7_width(module, args, inputs)
    if module in (_ULTRALYTICS_WIDTH_FROM_ARGS if ultralytics else _WIDTH_FROM_ARGS):
        return _int(args[0] if args else None)
    if ultralytics and module in ("HGStem", "HGBlock"):
        return _int(_arg(args, 1, None))
    if ultralytics and module == "ResNetLayer":  # parse_model: c2 = args[1] if args[3] else args[1] * 4
        width = _int(_arg(args, 1, None))
        return None if width is None else width if _arg(args, 3, False) else width * 4
    if ultralytics and module == "CBFuse":  # parse_model: c2 = ch[f[-1]]
        return inputs[-1]
    if module == "Concat":
        return None if any(width is None for width in inputs) else sum(inputs)  # type: ignore[arg-type]
    if module in ("Contract", "Expand") and inputs[0] is not None:
        gain = args[0] if args and isinstance(args[0], int) else 2
        return inputs[0] * gain ** 2 if module == "Contract" else inputs[0] // gain ** 2
    return inputs[0]


def _yolov7_width(module: str, args: List[Any], inputs: List[Optional[int]]) -> Optional[int]:
    """YOLOv7 parse_model's ``c2``: its channel list args[0]; Concat/Chuncat the sum of the inputs,
    Shortcut the first input's, Foldcut half, ReOrg four times, Contract/Expand as in YOLOv5."""
    if module in _YOLOV7_WIDTH_FROM_ARGS:
        return _int(args[0] if args else None)
    if module in ("Concat", "Chuncat"):
        return None if any(width is None for width in inputs) else sum(inputs)  # type: ignore[arg-type]
    first = inputs[0]
    if first is None:
        return None
    if module == "Foldcut":
        return first // 2
    if module == "ReOrg":
        return first * 4
    if module in ("Contract", "Expand"):
        gain = args[0] if args and isinstance(args[0], int) else 2
        return first * gain ** 2 if module == "Contract" else first // gain ** 2
    return first


def strides(layers: Sequence[Row], dialect: str = YOLOV5) -> List[Optional[Fraction]]:
    """Each layer's output stride relative to the image (None where it cannot be worked out).

    Stride factors: Conv-like ``args[2]`` (default 1; SCDown too), Focus ``2 * args[2]``,
    MaxPool/AvgPool ``args[1]`` (default ``args[0]``), Upsample ``1 / args[1]``, transposed convs
    ``1 / args[2]`` (Ultralytics' ConvTranspose defaults to 2), Contract ``gain``, Expand ``1 / gain``;
    Ultralytics: ADown/AConv 2, HGStem 4, ResNetLayer 4 as the stem else ``args[2]``, TorchVision
    unknown. Concat takes its first input's, CBFuse its last input's (it resizes to it); heads have
    none; everything else 1.
    """
    result: List[Optional[Fraction]] = []
    for index, (from_, _, module, args) in enumerate(layers):
        inputs = [Fraction(1) if source < 0 else result[source] for source in resolve_from(from_, index)]
        args = args if isinstance(args, list) else []
        factor = None if is_head(module, dialect) else (
            _ultralytics_stride_factor(module, args) if dialect == ULTRALYTICS
            else _yolov7_stride_factor(module, args) if dialect == YOLOV7 else _stride_factor(module, args))
        base = inputs[-1] if dialect == ULTRALYTICS and module == "CBFuse" else inputs[0]
        result.append(None if base is None or factor is None else base * factor)
    return result


def _ultralytics_stride_factor(module: str, args: List[Any]) -> Optional[Fraction]:
    if module in _FIXED_STRIDES:
        return _FIXED_STRIDES[module]
    if module == "ResNetLayer":  # the stem: Conv(k=7, s=2) then MaxPool2d(3, 2)
        return Fraction(4) if _arg(args, 3, False) else _number(_arg(args, 2, 1))
    if module == "ConvTranspose":  # ConvTranspose(c1, c2, k=2, s=2, ...)
        step = _number(_arg(args, 2, 2))
        return None if step is None else 1 / step
    if module in ("TorchVision", "Index") or module in _ULTRALYTICS_NO_FEATURES:
        return None
    return _stride_factor(module, args)


def _yolov7_stride_factor(module: str, args: List[Any]) -> Optional[Fraction]:
    """YOLOv7 blocks: MP(k=2) pools with stride k, SP(k=3, s=1) with stride s, DownC(c2, k=2) k,
    RepConv/RobustConv like Conv (args[2]); fixed ones in ``_YOLOV7_FIXED_STRIDES``."""
    if module in _YOLOV7_FIXED_STRIDES:
        return _YOLOV7_FIXED_STRIDES[module]
    if module in ("MP", "DownC"):
        return _number(_arg(args, 0 if module == "MP" else 1, 2))
    if module == "SP":
        return _number(_arg(args, 1, 1))
    if module in ("RepConv", "RepConv_OREPA", "RobustConv"):
        return _number(_arg(args, 2, 1))
    return _stride_factor(module, args)


def _number(value: Any) -> Optional[Fraction]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return Fraction(value)


def _arg(args: List[Any], position: int, default: Any) -> Any:
    return args[position] if len(args) > position and args[position] is not None else default


def _stride_factor(module: str, args: List[Any]) -> Optional[Fraction]:
    if module in _STRIDE_AT_ARG2:
        return _number(_arg(args, 2, 1))
    if module == "Focus":
        step = _number(_arg(args, 2, 1))
        return None if step is None else 2 * step
    if module in _POOLS:
        return _number(_arg(args, 1, _arg(args, 0, None)))
    if module == "nn.Upsample":
        scale = _number(_arg(args, 1, None))
        return None if scale is None else 1 / scale
    if module in _TRANSPOSED:
        step = _number(_arg(args, 2, 1))
        return None if step is None else 1 / step
    if module in ("Contract", "Expand"):
        gain = _number(_arg(args, 0, 2))
        return None if gain is None else (gain if module == "Contract" else 1 / gain)
    return Fraction(1)


def _level(stride: Optional[Fraction]) -> Optional[int]:
    """log2 of a power-of-two integer stride, else None."""
    if stride is None or stride.denominator != 1 or stride.numerator & (stride.numerator - 1):
        return None
    return stride.numerator.bit_length() - 1


def _p_levels(layers: Sequence[Row], detect_index: Optional[int], dialect: str = YOLOV5) -> Dict[str, int]:
    """``{"p3": 17, "p4": 20, "p5": 23}``: the head's inputs named by stride, else by position."""
    if detect_index is None:
        return {}
    inputs = resolve_from(layers[detect_index][0], detect_index)
    if dialect == YOLOV7 and layers[detect_index][2] == "IAuxDetect":
        inputs = inputs[:len(inputs) // 2]  # the lead heads; the second half feeds the auxiliary heads
    all_strides = strides(layers, dialect)
    levels = [_level(all_strides[source]) for source in inputs]
    if any(level is None for level in levels) or len(set(levels)) != len(levels):
        levels = [3 + order for order in range(len(inputs))]
    pairs = sorted(zip(levels, inputs))
    return {f"p{level}": source for level, source in pairs}


def _sppf_index(layers: Sequence[Row], dialect: str = YOLOV5) -> Optional[int]:
    spp = _ULTRALYTICS_SPP if dialect == ULTRALYTICS else _YOLOV7_SPP if dialect == YOLOV7 else _SPP
    found = [index for index, row in enumerate(layers) if row[2] in spp]
    if not found and dialect == YOLOV7:
        return _sp_block_output(layers)
    return found[0] if len(found) == 1 else None


def _sp_block_output(layers: Sequence[Row]) -> Optional[int]:
    """yolov7-tiny spells its SPPCSPC out in rows: SP pools, a Concat of them, a Conv, a Concat with the
    block's shortcut (a layer before the first SP), then the block's output Conv: that Conv's index."""
    pools = [index for index, row in enumerate(layers) if row[2] == "SP"]
    if not pools:
        return None
    for index in range(pools[-1] + 1, len(layers) - 1):
        row = layers[index]
        sources = resolve_from(row[0], index)
        if row[2] == "Concat" and not set(sources) & set(pools) and min(sources) < pools[0]:
            return index + 1 if layers[index + 1][2] in _YOLOV7_WIDTH_FROM_ARGS else None
    return None


# --------------------------------------------------------------------------------------------
# Resolving positions


def offered_positions(base: BaseModel) -> List[str]:
    """Every position ``resolve_position`` accepts on ``base``, in a stable order."""
    positions = list(base.p_levels)
    if base.sppf_index is not None:
        positions.append("sppf")
    positions += [f"backbone:{k}" for k in range(base.backbone_length) if _insertable(base, k)]
    positions += [f"layer:{i}" for i in range(len(base.layers)) if _insertable(base, i)]
    return positions


def describe_positions(base: BaseModel) -> str:
    """``"p3, p4, p5, sppf, backbone:0..9, layer:0..23"``: offered positions, for messages."""
    named = list(base.p_levels) + (["sppf"] if base.sppf_index is not None else [])
    for kind, count in (("backbone", base.backbone_length), ("layer", len(base.layers))):
        usable = [index for index in range(count) if _insertable(base, index)]
        if usable:
            named.append(f"{kind}:{usable[0]}..{usable[-1]}" if usable == list(range(usable[0], usable[-1] + 1))
                         else ", ".join(f"{kind}:{index}" for index in usable))
    return ", ".join(named)


def _insertable(base: BaseModel, index: int) -> bool:
    return not is_head(base.layers[index][2], base.dialect) and base.widths[index] is not None


def resolve_position(base: BaseModel, position: str) -> int:
    """The layer index a position means on ``base``; the module goes on that layer's output."""
    normalized = normalize_position(position)
    parsed = _parse_position(normalized)
    index: Optional[int] = None
    if parsed is not None:
        kind, number = parsed
        if kind == "p":
            index = base.p_levels.get(normalized)
        elif kind == "sppf":
            index = base.sppf_index
        elif kind == "backbone" and number < base.backbone_length:
            index = number
        elif kind == "layer" and number < len(base.layers):
            index = number
    if index is None or not _insertable(base, index):
        if parsed is not None and parsed[0] == "p" and base.head_module == _CLASSIFY:
            raise UsageError(f"position {position!r} does not exist in {base.name}: a classification model "
                             f"({_CLASSIFY} head) has no p3/p4/p5 outputs",
                             hint=f"{base.name} offers {describe_positions(base)}")
        raise UsageError(f"position {position!r} does not exist in {base.name}",
                             hint=f"{base.name} offers {describe_positions(base)}")
    return index


# --------------------------------------------------------------------------------------------
# The remap


@dataclass(frozen=True)
class Remap:
    """Index bookkeeping for a set of insertions into ``n`` base layers.

    ``new_index[j]``: where base layer j lands (j plus the rows inserted before it);
    ``output_index[j]``: the layer that now carries j's output to its consumers (the last module
    inserted after j, or j itself).
    """

    new_index: Tuple[int, ...]
    output_index: Tuple[int, ...]


def plan_remap(layer_count: int, points: Sequence[int]) -> Remap:
    """Remap for inserting one row after each of ``points`` (repeats chain on the same layer)."""
    counts = Counter(points)
    new_index: List[int] = []
    output_index: List[int] = []
    shift = 0
    for index in range(layer_count):
        new_index.append(index + shift)
        shift += counts[index]
        output_index.append(index + shift)
    return Remap(tuple(new_index), tuple(output_index))


def remap_from(from_: From, index: int, remap: Remap) -> From:
    """Base layer ``index``'s ``from`` after the insertions.

    Each entry is resolved to the base layer a it means; it now reads ``output_index[a]``
    (the inserted module where one was put on a). Absolute entries stay absolute, relative
    entries stay relative to the layer's new index; the image (``-1`` on layer 0) stays ``-1``.
    """
    def one(entry: int) -> int:
        source = entry if entry >= 0 else index + entry
        if source < 0:
            return entry
        target = remap.output_index[source]
        return target if entry >= 0 else target - remap.new_index[index]

    return [one(entry) for entry in from_] if isinstance(from_, list) else one(from_)


def insert_layers(layers: Sequence[Row], insertions: Sequence[Tuple[int, Row]]) -> List[Row]:
    """Insert each ``(after_layer_index, row)`` and remap every ``from`` (see the module docstring).

    Inserted rows must read ``-1`` (the layer they follow, or the previous module of a chain);
    insertions on the same layer are chained in the order given. Returns new row lists.
    """
    for after, row in insertions:
        if not 0 <= after < len(layers):
            raise ValueError(f"cannot insert after layer {after}: the model has layers 0..{len(layers) - 1}")
        if row[0] != -1:
            raise ValueError(f"an inserted row must read from -1, not {row[0]!r}")
    remap = plan_remap(len(layers), [after for after, _ in insertions])
    by_layer: Dict[int, List[Row]] = {}
    for after, row in insertions:
        by_layer.setdefault(after, []).append(row)
    result: List[Row] = []
    for index, (from_, number, module, args) in enumerate(layers):
        result.append([remap_from(from_, index, remap), number, module, args])
        result.extend(list(row) for row in by_layer.get(index, []))
    return result


# --------------------------------------------------------------------------------------------
# Rendering


class Placement(NamedTuple):
    """One module to insert: its class, key, positions (as typed), YAML args after the width, and
    whether its YAML args start with the width ("width") or carry none ("no-width")."""

    class_name: str
    key: str
    positions: Sequence[str]
    args: Sequence[Any] = ()
    registration: str = "width"


@dataclass(frozen=True)
class _Insertion:
    after: int  # base layer index
    class_name: str
    position: str
    row: Row


def plan_insertions(base: BaseModel, modules: Sequence[Placement]) -> List[_Insertion]:
    """Resolve every module's positions on ``base`` into rows, in chain order per layer."""
    insertions: List[_Insertion] = []
    for placement in (Placement(*module) for module in modules):
        if not placement.positions:
            raise UsageError(f"no position given for {placement.key}",
                             hint=f"{base.name} offers {describe_positions(base)}")
        seen: Dict[int, str] = {}
        for position in placement.positions:
            after = resolve_position(base, position)
            if after in seen:
                raise UsageError(f"{placement.key}: positions {seen[after]!r} and {position!r} are the same "
                                 f"layer ({after}) of {base.name}", hint="give each layer once")
            seen[after] = position
            width = [base.widths[after]] if placement.registration == "width" else []
            row: Row = [-1, 1, placement.class_name, [*width, *placement.args]]
            insertions.append(_Insertion(after, placement.class_name, normalize_position(position), row))
    return sorted(insertions, key=lambda insertion: insertion.after)  # stable: module order per layer


def render_variant(base_text: str, base_name: str, modules: Sequence[Placement],
                   dialect: Optional[str] = None) -> str:
    """The variant YAML text: ``base_text`` with ``modules`` inserted, and the yolopatch header.

    ``modules`` are ``(class_name, key, positions, args)``; a module goes on the output of the layer
    each position means, with the row ``[-1, 1, ClassName, [nominal width, *args]]``. ``dialect``:
    ``"yolov5"``, ``"ultralytics"``, or None to detect it from the YAML (``detect_dialect``).
    """
    placements = [Placement(*module) for module in modules]
    if not placements:
        raise YolopatchError("no module to insert", hint="name at least one module")
    base = parse_base(base_text, base_name, dialect)
    insertions = plan_insertions(base, placements)
    remap = plan_remap(len(base.layers), [insertion.after for insertion in insertions])
    edits: List[Tuple[int, int, str]] = []
    for section in base.sections:
        edits += _section_edits(base, section, insertions, remap)
    body = to_ascii(_apply_edits(base.text, edits))
    _check_variant(base, body, insertions)
    return header_line(base_name, [(p.key, p.positions) for p in placements], body) + body


def index_map(base_text: str, base_name: str, modules: Sequence[Placement],
              dialect: Optional[str] = None) -> Dict[int, int]:
    """Base layer index -> that layer's index in the variant ``render_variant`` writes from the same
    arguments (old -> new): what code with hard-coded layer numbers (``model.model[105]``) must use."""
    base = parse_base(base_text, base_name, dialect)
    insertions = plan_insertions(base, [Placement(*module) for module in modules])
    remap = plan_remap(len(base.layers), [insertion.after for insertion in insertions])
    return dict(enumerate(remap.new_index))


def _check_variant(base: BaseModel, body: str, insertions: Sequence[_Insertion]) -> None:
    """Re-read the rendered text with ``yaml.safe_load`` (libyaml's CSafeLoader where PyYAML has it: the
    same safe constructor, 5x faster): its layers must be exactly the base's with the rows inserted and
    every index remapped, and everything else unchanged (else nothing is written)."""
    try:
        data = yaml.load(body, Loader=_LOADER)
    except yaml.YAMLError as error:
        raise YolopatchError(f"internal check failed: the variant of {base.name} would not parse ({error})",
                             hint="nothing was written; please report this base YAML") from None
    expected_layers = insert_layers(base.layers, [(insertion.after, insertion.row) for insertion in insertions])
    layers = list(data.get("backbone", [])) + list(data.get("head", [])) if isinstance(data, dict) else None
    others_equal = isinstance(data, dict) and {k: v for k, v in data.items() if k not in ("backbone", "head")} == {
        k: v for k, v in base.data.items() if k not in ("backbone", "head")}
    if layers != expected_layers or not others_equal:
        raise YolopatchError(f"internal check failed: the variant of {base.name} would not be the base with the "
                             f"modules inserted", hint="nothing was written; please report this base YAML")


def _section_edits(base: BaseModel, section: _Section, insertions: Sequence[_Insertion],
                   remap: Remap) -> List[Tuple[int, int, str]]:
    """(start, end, new text) edits for one section: changed ``from`` fields, and each row's
    trailing text (comma and comment) with its layer number updated and inserted rows appended."""
    edits: List[Tuple[int, int, str]] = []
    prefix = _row_prefix(base.text, section)
    gap = _comment_gap(base.text, section)
    for offset, ((_, row_end), (from_start, from_end)) in enumerate(zip(section.rows, section.froms)):
        index = section.first_index + offset
        new_from = remap_from(base.layers[index][0], index, remap)
        if new_from != base.layers[index][0]:
            edits.append((from_start, from_end, format_value(new_from)))
        gap_end = section.rows[offset + 1][0] if offset + 1 < len(section.rows) else _closing(base.text, section)
        line_end = base.text.find("\n", row_end, gap_end)
        tail_end = gap_end if line_end < 0 else line_end
        chained = [insertion for insertion in insertions if insertion.after == index]
        tail = _row_tail(base.text[row_end:tail_end], section.flow, prefix, chained,
                         remap.new_index[index], index, same_line_follows=line_end < 0, gap=gap)
        if tail != base.text[row_end:tail_end]:
            edits.append((row_end, tail_end, tail))
    return edits


def _row_tail(tail: str, flow: bool, prefix: str, chained: Sequence[_Insertion], new_index: int, old_index: int,
              same_line_follows: bool, gap: str = "  ") -> str:
    """A row's trailing text up to the end of its line (``,  # 17 (P3/8-small)``), renumbered,
    followed by the rows inserted after it, one per line, each with its own ``# index`` comment
    (``gap`` before the ``#``, as the base's own row comments have it)."""
    tail = _renumber_comment(tail, old_index, new_index)
    if not chained:
        return tail
    comma = "," if flow else ""
    if flow and "," not in tail.split("#", 1)[0]:  # the last row of a list may lack its comma
        tail = "," + tail
    for number, insertion in enumerate(chained, start=new_index + 1):
        comment = f"# {number} {insertion.class_name} at {insertion.position}"
        tail += f"\n{prefix}{format_value(insertion.row)}{comma}{gap}{comment}"
    if same_line_follows:  # a next row or ``]`` on the same line must not end up inside our comment
        tail += "\n" + prefix
    return tail


def _comment_gap(text: str, section: _Section) -> str:
    """The spaces between a row (and its comma) and its comment in this section, from its first
    commented row: two in YOLOv5's files (``],  # 17``), one in Ultralytics' (``] # 9``)."""
    for row_start, row_end in section.rows:
        line_end = text.find("\n", row_end)
        tail = text[row_end:line_end if line_end >= 0 else len(text)]
        before, hash_, _ = tail.partition("#")
        if hash_ and before.strip(" ,") == "":
            spaces = len(before) - len(before.rstrip(" "))
            if spaces:
                return " " * spaces
    return "  "


def _closing(text: str, section: _Section) -> int:
    """Where the last row's trailing text ends: before ``]`` (flow) or at the list's end (block)."""
    return section.end - 1 if section.flow else section.end


def _row_prefix(text: str, section: _Section) -> str:
    """What precedes a row on its line: the indentation (flow), or indentation and ``- `` (block)."""
    start = section.rows[-1][0]
    line_start = text.rfind("\n", 0, start) + 1
    before = text[line_start:start]
    if section.flow:
        return " " * len(before)
    return before if set(before) <= {" ", "-"} and "-" in before else "- "


def _renumber_comment(head: str, old: int, new: int) -> str:
    """In a row's trailing ``,  # 17 (P3/8-small)``, replace a leading layer number ``old`` with ``new``."""
    hash_at = head.find("#")  # only a comma and spaces can precede a comment between rows
    if hash_at < 0 or old == new:
        return head
    comment = head[hash_at + 1:]
    digits_at = len(comment) - len(comment.lstrip(" "))
    digits_end = digits_at
    while digits_end < len(comment) and comment[digits_end].isdigit():
        digits_end += 1
    if digits_end == digits_at or int(comment[digits_at:digits_end]) != old:
        return head
    return head[:hash_at + 1] + comment[:digits_at] + str(new) + comment[digits_end:]


def _apply_edits(text: str, edits: Sequence[Tuple[int, int, str]]) -> str:
    parts: List[str] = []
    cursor = 0
    for start, end, new in sorted(edits):
        if start < cursor:
            raise AssertionError(f"overlapping edits at {start}")  # a bug in this module, not user input
        parts += [text[cursor:start], new]
        cursor = end
    parts.append(text[cursor:])
    return "".join(parts)


def format_value(value: Any) -> str:
    """A YAML flow value in YOLOv5's style: ``[-1, 1, SOCA, [1024, 16]]``, ``True``, ``'nearest'``."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return "None"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list) or isinstance(value, tuple):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    if isinstance(value, str):
        plain = value.replace(".", "").replace("_", "").isalnum() and value.isascii() and not value[0].isdigit()
        reserved = value.lower() in ("true", "false", "yes", "no", "on", "off", "null", "y", "n")
        return value if plain and not reserved else "'" + value.replace("'", "''") + "'"
    raise YolopatchError(f"cannot write {value!r} into a model YAML", hint="use numbers, booleans or names")


# --------------------------------------------------------------------------------------------
# Text hygiene and the generated header


def to_ascii(text: str) -> str:
    """``\\n`` line endings and ASCII only: non-ASCII characters dropped (one of the spaces around a
    dropped character too, so ``YOLOv5 <rocket> by`` becomes ``YOLOv5 by``)."""
    text = text.replace("\r\n", "\n")
    if text.isascii():
        return text
    out: List[str] = []
    drop_space = False
    for char in text:
        if not char.isascii():
            drop_space = bool(out) and out[-1] == " "
            continue
        if not (drop_space and char == " "):
            out.append(char)
        drop_space = False
    return "".join(out)


def body_hash(body: str) -> str:
    """First 12 hex digits of the sha256 of the text after the header line (``\\n`` endings)."""
    return hashlib.sha256(body.replace("\r\n", "\n").encode("utf-8")).hexdigest()[:HASH_LENGTH]


def header_line(base_name: str, placements: Sequence[Tuple[str, Sequence[str]]], body: str) -> str:
    """``# yolopatch: generated from yolov5s.yaml with soca at p5; sge at p4,p5 (yolopatch 0.1.0,
    sha256=...)`` plus the newline; ``placements`` are (key, positions)."""
    modules = "; ".join(f"{key} at {','.join(normalize_position(p) for p in positions)}"
                        for key, positions in placements)
    return f"{HEADER_PREFIX}{base_name} with {modules} (yolopatch {__version__}, sha256={body_hash(body)})\n"


@dataclass(frozen=True)
class GeneratedInfo:
    """What a generated variant's first line records."""

    base_name: str
    placements: Tuple[Tuple[str, Tuple[str, ...]], ...]  # (key, positions) per module
    yolopatch_version: str
    recorded_hash: str

    @property
    def keys(self) -> Tuple[str, ...]:
        return tuple(key for key, _ in self.placements)


def parse_generated_header(text: str) -> Optional[GeneratedInfo]:
    """The header of a yolopatch-generated variant, or None if ``text`` does not start with one."""
    first = text.split("\n", 1)[0].rstrip("\r")
    if not first.startswith(HEADER_PREFIX):
        return None
    main, marker, tail = first[len(HEADER_PREFIX):].rpartition(" (yolopatch ")
    base_name, with_, modules = main.rpartition(" with ")
    version, sha_marker, recorded = tail.rstrip(")").partition(", sha256=")
    if not (marker and with_ and sha_marker and base_name and tail.endswith(")")):
        return None
    placements = []
    for part in modules.split("; "):
        key, at, positions = part.partition(" at ")
        if not (at and key and positions):
            return None
        placements.append((key, tuple(positions.split(","))))
    return GeneratedInfo(base_name, tuple(placements), version, recorded)


def is_edited(text: str) -> bool:
    """True when a generated variant's body no longer matches the hash its header recorded."""
    info = parse_generated_header(text)
    if info is None:
        raise YolopatchError("not a yolopatch-generated variant (no '# yolopatch: generated from' first line)")
    body = text.split("\n", 1)[1] if "\n" in text else ""
    return body_hash(body) != info.recorded_hash


def variant_filename(base_name: str, key: str, positions: Sequence[str], default_positions: Sequence[str]) -> str:
    """``yolov5s.yaml`` + soca at its default -> ``yolov5s-soca.yaml``; elsewhere ->
    ``yolov5s-soca-p4-p5.yaml`` (positions in canonical order, ``backbone:2`` as ``backbone2``)."""
    name = Path(base_name).name
    stem, suffix = (name.rsplit(".", 1)[0], "." + name.rsplit(".", 1)[1]) if "." in name else (name, ".yaml")
    chosen = sorted({normalize_position(p) for p in positions}, key=_position_sort_key)
    default = sorted({normalize_position(p) for p in default_positions}, key=_position_sort_key)
    if chosen == default:
        return f"{stem}-{key}{suffix}"
    return f"{stem}-{key}-" + "-".join(position.replace(":", "") for position in chosen) + suffix
