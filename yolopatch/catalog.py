"""The module catalogue: templates/<key>.py plus their YOLOPATCH metadata, read without torch.

Metadata is a literal dict in each template, read with ``ast.literal_eval`` so that ``yolopatch
list`` never imports torch. The parameter-count formula is evaluated by a small arithmetic
interpreter over the parsed expression (no ``eval``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import operator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import yaml

from yolopatch.errors import UsageError, YolopatchError
from yolopatch.resources import data_dir

META_NAME = "YOLOPATCH"
REGISTRATIONS = ("width", "no-width")
KINDS = ("channel", "spatial", "channel+spatial", "self-attention", "multi-scale", "parameter-free")
REQUIRED_KEYS = (
    "key", "class_name", "version", "aliases", "paper", "authors", "venue", "year", "summary",
    "hyperparameters", "param_count", "constraints",
)


@dataclass(frozen=True)
class ModuleSpec:
    """One attention module of the catalogue."""

    key: str
    class_name: str
    version: int
    aliases: Tuple[str, ...]
    paper: str
    authors: str
    venue: str
    year: int
    summary: str
    hyperparameters: Dict[str, Any]
    param_count_formula: str
    constraints: Tuple[str, ...]
    template_path: Path
    source: str = field(repr=False)
    placement: Tuple[str, ...] = ()
    registration: str = "width"  # YAML args [width, hp...]; "no-width": [hp...] (parameter-free modules)
    kind: str = "channel"
    official_code: str = ""
    guarantees: Dict[str, Any] = field(default_factory=dict)
    requires: str = ""  # a formula over c and the hyper-parameters that must hold; "" when any width works
    template_digest: str = ""  # templates/digests.json's digest of exactly ``source``; "" when it has none

    @property
    def citation(self) -> str:
        return f"{self.paper} ({self.authors}, {self.venue} {self.year})"

    @property
    def fingerprint(self) -> str:
        """Short hash of the template source: changes whenever the inserted code changes."""
        return hashlib.sha256(self.source.replace("\r\n", "\n").encode("utf-8")).hexdigest()[:12]

    def names(self) -> Tuple[str, ...]:
        """Every spelling a user may type for this module."""
        return (self.key, self.class_name, *self.aliases)

    def param_count(self, c: int, **hyperparameters: Any) -> int:
        values = {**self.hyperparameters, **hyperparameters, "c": c}
        return int(evaluate_formula(self.param_count_formula, values))

    def accepts_width(self, c: int, **hyperparameters: Any) -> bool:
        """Whether the module can be built at input width ``c`` (its declared ``requires``)."""
        if not self.requires:
            return True
        return bool(evaluate_formula(self.requires, {**self.hyperparameters, **hyperparameters, "c": c}))


def _read_metadata(path: Path, source: str) -> Dict[str, Any]:
    tree = ast.parse(source, filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == META_NAME for target in node.targets
        ):
            meta = ast.literal_eval(node.value)
            missing = [key for key in REQUIRED_KEYS if key not in meta]
            if missing:
                raise YolopatchError(f"template metadata lacks {', '.join(missing)}", path=path,
                                     line=node.lineno, hint="this is a yolopatch bug, please report it")
            return meta
    raise YolopatchError(f"template has no {META_NAME} metadata dict", path=path,
                         hint="this is a yolopatch bug, please report it")


def _read_placement(key: str) -> Tuple[str, ...]:
    try:
        spec_path = data_dir("yaml_variants") / f"{key.replace('-', '_')}.yaml"
    except FileNotFoundError:
        return ()
    if not spec_path.is_file():
        return ()
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8")) or {}
    return tuple(str(position) for position in spec.get("placement", ()))


def _load(path: Path) -> ModuleSpec:
    source = path.read_text(encoding="utf-8")
    meta = _read_metadata(path, source)
    return ModuleSpec(
        key=meta["key"],
        class_name=meta["class_name"],
        version=int(meta["version"]),
        aliases=tuple(meta["aliases"]),
        paper=meta["paper"],
        authors=meta["authors"],
        venue=meta["venue"],
        year=int(meta["year"]),
        summary=meta["summary"],
        hyperparameters=dict(meta["hyperparameters"]),
        param_count_formula=meta["param_count"],
        constraints=tuple(meta["constraints"]),
        template_path=path,
        source=source,
        placement=_read_placement(meta["key"]),
        registration=_one_of(meta.get("registration", "width"), REGISTRATIONS, "registration", path),
        kind=_one_of(meta.get("kind", "channel"), KINDS, "kind", path),
        official_code=str(meta.get("official_code", "")),
        guarantees=dict(meta.get("guarantees", {})),
        requires=str(meta.get("requires", "")),
        template_digest=recorded_digest(meta["key"], source),
    )


DIGESTS_FILE = "digests.json"  # beside the templates; written by `python -m yolopatch.template_digests`


def source_sha256(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def recorded_digest(key: str, source: str) -> str:
    """The digest ``templates/digests.json`` records for template ``key``, if recorded for this very text."""
    entry = _recorded_digests().get(key, {})
    return str(entry.get("digest", "")) if entry.get("source_sha256") == source_sha256(source) else ""


@lru_cache(maxsize=1)
def _recorded_digests() -> Dict[str, Dict[str, str]]:
    try:
        return dict(json.loads((data_dir("templates") / DIGESTS_FILE).read_text(encoding="utf-8"))["digests"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # no table: every digest is computed (a quarter of a second more for 21 modules)


def _one_of(value: str, allowed: Tuple[str, ...], name: str, path: Path) -> str:
    if value not in allowed:
        raise YolopatchError(f"template metadata {name}={value!r} is not one of {', '.join(allowed)}", path=path,
                             hint="this is a yolopatch bug, please report it")
    return value


@lru_cache(maxsize=1)
def all_modules() -> Tuple[ModuleSpec, ...]:
    """Every module in the catalogue, in a stable order (by key)."""
    paths = sorted(data_dir("templates").glob("*.py"))
    specs = [_load(path) for path in paths if not path.name.startswith("_")]
    return tuple(sorted(specs, key=lambda spec: spec.key))


def get(name: str) -> ModuleSpec:
    """Resolve a key, class name or alias (case-insensitive) to its module."""
    wanted = name.strip().lower()
    for spec in all_modules():
        if wanted in (spelling.lower() for spelling in spec.names()):
            return spec
    known = ", ".join(spec.key for spec in all_modules())
    raise UsageError(f"unknown module {name!r}", hint=f"choose one of: {known}, or all")


def resolve(names: List[str]) -> List[ModuleSpec]:
    """Resolve command-line module names; ``all`` means every module. Order kept, duplicates dropped."""
    specs: List[ModuleSpec] = []
    for name in names:
        chosen = list(all_modules()) if name.strip().lower() == "all" else [get(name)]
        specs.extend(spec for spec in chosen if spec not in specs)
    return specs


def by_class_name() -> Dict[str, ModuleSpec]:
    return {spec.class_name: spec for spec in all_modules()}


def param_count(key: str, c: int, **hyperparameters: Any) -> int:
    """Parameters of module ``key`` at input width ``c``, from its declared formula."""
    return get(key).param_count(c, **hyperparameters)


_BINARY: Mapping[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_COMPARE: Mapping[type, Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_FUNCTIONS: Mapping[str, Callable[..., int]] = {"min": min, "max": max, "gcd": math.gcd}


def evaluate_formula(formula: str, values: Mapping[str, Any]) -> Any:
    """Evaluate an integer arithmetic formula over ``values`` (names to numbers)."""
    return _evaluate(ast.parse(formula, mode="eval").body, values, formula)


def _evaluate(node: ast.AST, values: Mapping[str, Any], formula: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, bool)):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in values:
            raise ValueError(f"formula {formula!r} uses unknown name {node.id!r}")
        return values[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = (_evaluate(side, values, formula) for side in (node.left, node.right))
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand, values, formula)
    if isinstance(node, ast.IfExp):
        branch = node.body if _evaluate(node.test, values, formula) else node.orelse
        return _evaluate(branch, values, formula)
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
        left = _evaluate(node.left, values, formula)
        right = _evaluate(node.comparators[0], values, formula)
        return _COMPARE[type(node.ops[0])](left, right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        arguments = [_evaluate(argument, values, formula) for argument in node.args]
        return _FUNCTIONS[node.func.id](*arguments)
    raise ValueError(f"formula {formula!r}: {ast.dump(node)} is not allowed")


# The input width at which `list` shows parameter counts: yolov5s's P4 (the middle of the
# 128/256/512 widths the default placements meet; `show KEY` gives more widths).
TYPICAL_WIDTH = 256
SHOW_WIDTHS = (64, 128, 256, 512, 1024)


def describe(spec: ModuleSpec, state: Optional[str] = None) -> Dict[str, Any]:
    """One module as the JSON of `list --json` and `show --json`."""
    entry: Dict[str, Any] = {
        "key": spec.key,
        "class": spec.class_name,
        "version": spec.version,
        "aliases": list(spec.aliases),
        "paper": spec.paper,
        "authors": spec.authors,
        "venue": spec.venue,
        "year": spec.year,
        "kind": spec.kind,
        "registration": spec.registration,
        "official_code": spec.official_code,
        "summary": spec.summary,
        "hyperparameters": spec.hyperparameters,
        "param_count": spec.param_count_formula,
        "params_at": {str(width): params_at(spec, width) for width in SHOW_WIDTHS},
        "placement": list(spec.placement),
        "constraints": list(spec.constraints),
    }
    if state is not None:
        entry["status"] = state
    return entry


def params_at(spec: ModuleSpec, width: int) -> Optional[int]:
    """Parameters at input width ``width`` with the default hyper-parameters (None: not buildable there)."""
    try:
        if not spec.accepts_width(width):
            return None
        return spec.param_count(width)
    except (ValueError, ZeroDivisionError, TypeError):
        return None
