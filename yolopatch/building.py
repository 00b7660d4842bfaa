"""Building models through a tree's own code and judging them: the engine under `verify` and `check --build`.

``run_probe`` runs ``yolopatch/probe.py`` in the chosen interpreter (see `yolopatch verify`'s docstring for
what it measures), ``judge`` turns its records into ``ModelResult``s (parameter deltas against the
catalogue's formulas, output shapes, gradients, latency pairs), ``build_cfgs`` does both for a list of YAMLs.
Nothing here prints: the commands do.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import yaml

from yolopatch import catalog, ui, variants
from yolopatch.catalog import ModuleSpec
from yolopatch.changes import read_text
from yolopatch.variant_files import generated_variants
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.targets.locate import AnyTree, is_ultralytics

BASE, VARIANT, MODEL = "base", "variant", "model"
DEFAULT_RUNS = 7  # timed eval forwards per model; the median is reported
DEFAULT_WARMUP = 2  # untimed eval forwards per model before timing
IDLE_TIMEOUT_S = 900.0  # no record from the probe for this long: it is stuck, kill it


def probe_path() -> Path:
    """``yolopatch/probe.py``, shipped inside the package (wheel or editable install)."""
    return Path(str(resources.files("yolopatch").joinpath("probe.py")))


# --------------------------------------------------------------------------------------------
# Which models


@dataclass(frozen=True)
class Target:
    """A model YAML to build: a generated variant, its base, or a YAML given on the command line."""

    path: Path
    role: str  # base | variant | model
    base: Optional[Path] = None  # variants: the base YAML beside them (None if missing)
    base_name: Optional[str] = None  # variants: the base name their header records
    keys: Tuple[str, ...] = ()  # variants: the modules they insert


def targets(tree: AnyTree, cfgs: Sequence[Path]) -> List[Target]:
    """The variants of ``tree`` (or ``cfgs``) with their bases; each base right before its variants."""
    if cfgs:
        chosen = [_target(_existing(tree, cfg)) for cfg in cfgs]
    else:
        chosen = [_target(variant.path) for variant in generated_variants(tree)]
        if not chosen:
            raise YolopatchError("no yolopatch variant YAMLs in this tree", path=tree.models_dir,
                                 hint="run `yolopatch apply <module>` first, or pass model YAMLs to verify")
    ordered: List[Target] = []
    seen = set()
    for target in chosen:
        if target.base is not None and target.base not in seen:
            ordered.append(Target(target.base, BASE))
            seen.add(target.base)
        if target.path not in seen:
            ordered.append(target)
            seen.add(target.path)
    return ordered


def _target(path: Path) -> Target:
    info = variants.parse_generated_header(read_text(path))
    if info is None:
        return Target(path, MODEL)
    base = path.parent / info.base_name
    return Target(path, VARIANT, base.resolve() if base.is_file() else None, info.base_name, info.keys)


def _existing(tree: AnyTree, cfg: Path) -> Path:
    from yolopatch.paths import model_yaml_candidates, resolve_model_yaml

    if not is_ultralytics(tree):
        return resolve_model_yaml(tree, cfg)  # type: ignore[arg-type]
    for candidate in model_yaml_candidates(tree, cfg):  # type: ignore[arg-type]
        if candidate.is_file():
            return candidate.resolve()
    named = sorted(tree.models_dir.rglob(cfg.name)) if cfg.name == str(cfg) else []
    if len(named) == 1:  # a bare file name, as Ultralytics finds it under cfg/
        return named[0].resolve()
    unscaled = _unscaled_name(cfg.name)
    if unscaled is not None and any(tree.models_dir.rglob(unscaled[0])):
        name, letter = unscaled
        hint = f"Ultralytics reads {cfg.name} as {name} at scale {letter}: pass {name} --scale {letter}"
    else:
        hint = f"pass a path from here or from {tree.root}, e.g. ultralytics/cfg/models/v8/yolov8-soca.yaml"
    raise UsageError(f"model YAML {str(cfg)!r} not found"
                     + (f" ({len(named)} files of that name under {tree.models_dir})" if named else ""), hint=hint)


def _unscaled_name(name: str) -> Optional[Tuple[str, str]]:
    """``yolov8n-soca.yaml`` -> (``yolov8-soca.yaml``, ``n``): the scale letter right after the version digits,
    as Ultralytics reads a model name; None when the name has none there."""
    path = Path(name)
    head, dash, rest = path.stem.partition("-")
    if len(head) < 2 or head[-1] not in "nslmx" or not head[-2].isdigit():
        return None
    return f"{head[:-1]}{dash}{rest}{path.suffix}", head[-1]


# --------------------------------------------------------------------------------------------
# Running the probe


@dataclass
class ProbeRun:
    """What one probe process reported: its environment and one record per model YAML."""

    command: List[str]
    env: Dict[str, Any] = field(default_factory=dict)
    results: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # keyed by the cfg path as passed
    latency: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # the probe's latency records, by cfg
    log: str = ""  # everything the probe (and YOLOv5) printed
    timed_out: Optional[float] = None  # stopped after this many seconds without a record


def resolve_python(python: Optional[str]) -> str:
    """The interpreter to run the probe with: ``python`` (a path or a name on PATH) or this one."""
    if not python:
        return sys.executable
    found = shutil.which(python) if os.sep not in python else (python if os.access(python, os.X_OK) else None)
    if not found or not Path(found).is_file():
        raise UsageError(f"no Python interpreter at {python!r}", hint="pass --python PATH to an executable python")
    return str(Path(found).absolute())


@dataclass(frozen=True)
class ProbeSetup:
    """How the probe imports a tree and builds its models."""

    codebase: str  # the tree's: "yolov5", "yolov7" (built the YOLOv5 way: models/yolo.py's Model), "ultralytics"
    title: str  # for messages: "YOLOv5", "YOLOv7", "Ultralytics"
    import_root: Path  # first on the probe's sys.path, and its working directory
    module: str  # the dotted module that builds models
    scale: Optional[str] = None  # Ultralytics: --scale, for YAMLs whose file name has no scale letter

    def arguments(self) -> List[str]:
        extra = ["--codebase", "ultralytics"] if self.codebase == "ultralytics" else []
        return ["--root", str(self.import_root), "--module", self.module, *extra,
                *(["--scale", self.scale] if self.scale else [])]


def probe_setup(tree: AnyTree, scale: Optional[str] = None) -> ProbeSetup:
    """The probe's view of ``tree``: Ultralytics' nn.tasks, else YOLOv5's models/yolo.py."""
    if is_ultralytics(tree):
        return ProbeSetup("ultralytics", "Ultralytics", tree.package_dir.parent, "ultralytics.nn.tasks",
                          scale)  # type: ignore[union-attr]
    if scale is not None:
        raise UsageError("--scale is for Ultralytics trees", hint="a YOLOv5 variant's scale is its base: "
                                                                  "yolov5s-soca.yaml is built at s")
    if not hasattr(tree, "import_root"):
        raise UsageError(f"verify does not support {type(tree).__name__} trees yet")
    codebase = str(getattr(tree, "codebase", "yolov5"))
    return ProbeSetup(codebase, {"yolov7": "YOLOv7"}.get(codebase, "YOLOv5"), tree.import_root,
                      f"{tree.models_module}.yolo")


def probe_command(python: str, tree: AnyTree, cfgs: Sequence[Path], img: int, runs: int = DEFAULT_RUNS,
                  out: Optional[Path] = None, pairs: Sequence[Tuple[Path, Path]] = (),
                  scale: Optional[str] = None) -> List[str]:
    """The command line that runs the probe on ``cfgs`` (``out``: JSON-lines file, else stdout);
    each (base, variant) of ``pairs`` is timed in alternating rounds."""
    command = [python, str(probe_path()), *probe_setup(tree, scale).arguments(), "--img", str(img),
               "--runs", str(runs), "--warmup", str(DEFAULT_WARMUP)]
    for base, variant in pairs:
        command += ["--pair", str(base), str(variant)]
    if out is not None:
        command += ["--out", str(out)]
    return command + [str(cfg) for cfg in cfgs]


def latency_pairs(chosen: Sequence[Target]) -> List[Tuple[Path, Path]]:
    """(base, variant) for every variant among ``chosen`` whose base is also built."""
    built = {target.path for target in chosen}
    return [(target.base, target.path) for target in chosen
            if target.role == VARIANT and target.base is not None and target.base in built]


def reproduce_command(python: str, tree: AnyTree, cfg: Path, img: int, scale: Optional[str] = None) -> str:
    """A shell command that builds and measures ``cfg`` alone, printing the tree's traceback."""
    return shlex.join(probe_command(python, tree, [cfg], img, runs=0, scale=scale))


def run_probe(python: str, tree: AnyTree, cfgs: Sequence[Path], img: int, runs: int = DEFAULT_RUNS,
              on_record: Optional[Callable[[Dict[str, Any]], None]] = None,
              idle_timeout: float = IDLE_TIMEOUT_S, pairs: Sequence[Tuple[Path, Path]] = (),
              scale: Optional[str] = None) -> ProbeRun:
    """Run the probe on ``cfgs`` in one subprocess; ``on_record`` sees each record as it arrives.

    Raises YolopatchError when the tree cannot be imported at all (one line; a missing module is
    named with the pip command that installs it). A probe that dies or stays silent longer than
    ``idle_timeout`` seconds leaves the models it did not reach without a record.
    """
    setup = probe_setup(tree, scale)
    with tempfile.TemporaryDirectory(prefix="yolopatch-verify-") as folder:
        out, log_path = Path(folder) / "records.jsonl", Path(folder) / "probe.log"
        command = probe_command(python, tree, cfgs, img, runs, out, pairs, scale)
        run = ProbeRun(command)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, cwd=setup.import_root, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, env=env)
            try:
                _follow(process, out, run, on_record, idle_timeout)
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()
        run.log = log_path.read_text(encoding="utf-8", errors="replace")
    by_hand = shlex.join(probe_command(python, tree, cfgs[:1], img, runs=0, scale=scale))
    fatal = run.env.get("fatal")
    if fatal:
        raise _fatal_error(python, setup, fatal, by_hand)
    if not run.env and not run.results:
        tail = f"no output in {run.timed_out:.0f} s" if run.timed_out else (_last_line(run.log) or f"exit code {process.returncode}")
        raise YolopatchError(f"the probe could not start with {python}: {tail}",
                             hint=f"run it by hand to see why: {by_hand}")
    return run


def _follow(process: "subprocess.Popen[bytes]", out: Path, run: ProbeRun,
            on_record: Optional[Callable[[Dict[str, Any]], None]], idle_timeout: float) -> None:
    """Read the probe's JSON-lines records as they are written, until it exits (or goes silent)."""
    offset, last = 0, time.monotonic()
    while True:
        exited = process.poll() is not None
        if out.exists():
            with out.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            complete = chunk[:chunk.rfind(b"\n") + 1]
            offset += len(complete)
            for line in complete.decode("utf-8").splitlines():
                record = json.loads(line)
                _store(run, record)
                last = time.monotonic()
                if on_record is not None:
                    on_record(record)
        if exited:
            return
        if time.monotonic() - last > idle_timeout:
            run.timed_out = idle_timeout
            process.kill()
            return
        time.sleep(0.1)


def _store(run: ProbeRun, record: Dict[str, Any]) -> None:
    kind = record.get("kind")
    if kind == "env":
        run.env.update(record)
    elif kind == "fatal":
        run.env["fatal"] = record
    elif kind == "result":
        run.results[record["cfg"]] = record
    elif kind == "latency":
        run.latency[record["cfg"]] = record


def _fatal_error(python: str, setup: ProbeSetup, fatal: Dict[str, Any], by_hand: str) -> YolopatchError:
    if fatal.get("missing_module"):
        return YolopatchError(f"the interpreter {python} lacks {fatal['missing_module']!r}: "
                              f"pip install {fatal['pip_name']}",
                              hint=f"or pass --python PATH to an interpreter that has {setup.title}'s requirements")
    return YolopatchError(f"importing {setup.module} from {setup.import_root} with {python} failed: "
                          f"{fatal.get('error')}", hint=f"see the traceback: {by_hand}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------------------------
# Latency statistics


@dataclass(frozen=True)
class Spread:
    """Median and quartiles of a list of milliseconds."""

    median: float
    q1: float
    q3: float

    @property
    def half_iqr(self) -> float:
        return (self.q3 - self.q1) / 2

    @classmethod
    def of(cls, values: Sequence[float]) -> Optional["Spread"]:
        if not values:
            return None
        if len(values) == 1:
            return cls(values[0], values[0], values[0])
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(median, q1, q3)


@dataclass(frozen=True)
class LatencyDelta:
    """A variant's latency against its base's, from the same alternating rounds."""

    median: float  # median of the paired differences variant - base, ms
    spread: Spread  # of the paired differences
    noise: bool  # the middle half of the paired differences includes zero


def latency_delta(mine: Sequence[float], base: Sequence[float]) -> Optional[LatencyDelta]:
    """Paired by round: round i of the variant against round i of its base."""
    differences = [a - b for a, b in zip(mine, base)]
    spread = Spread.of(differences)
    if spread is None:
        return None
    return LatencyDelta(spread.median, spread, noise=spread.q1 <= 0.0 <= spread.q3)


# --------------------------------------------------------------------------------------------
# Judging the results


@dataclass
class Inserted:
    """One inserted layer of a variant, with the parameters its module's formula predicts."""

    layer: int
    class_name: str
    key: str
    in_channels: Any
    params: int
    expected_params: Optional[int]
    checked: bool  # the module's code in the tree is yolopatch's current version

    @property
    def ok(self) -> bool:
        return self.expected_params is None or self.params == self.expected_params


@dataclass
class ModelResult:
    """A model's measurements, its comparison with its base and what is wrong with it."""

    target: Target
    record: Dict[str, Any]
    reproduce: str
    base_record: Optional[Dict[str, Any]] = None
    latency_runs: List[float] = field(default_factory=list)  # this model's timed forwards, ms
    base_latency_runs: List[float] = field(default_factory=list)  # variants: its base's, same rounds
    inserted: List[Inserted] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def cfg(self) -> Path:
        return self.target.path

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def error(self) -> Optional[str]:
        return self.problems[0] if self.problems else None

    @property
    def latency(self) -> Optional[Spread]:
        return Spread.of(self.latency_runs)

    @property
    def latency_delta(self) -> Optional[LatencyDelta]:
        return latency_delta(self.latency_runs, self.base_latency_runs)

    def value(self, name: str) -> Any:
        if name == "latency_ms":
            return None if self.latency is None else self.latency.median
        return self.record.get(name)

    def delta(self, name: str) -> Optional[float]:
        if name == "latency_ms":
            paired = self.latency_delta
            return None if paired is None else paired.median
        mine = self.value(name)
        theirs = None if self.base_record is None else self.base_record.get(name)
        return None if mine is None or theirs is None else mine - theirs


def judge(tree: AnyTree, target_list: Sequence[Target], run: ProbeRun, python: str, img: int,
          applied: Optional[Sequence[str]] = None, scale: Optional[str] = None) -> List[ModelResult]:
    """One ModelResult per target: its record, its base's, the formula checks and the problems.

    ``applied``: module keys whose code in the tree is yolopatch's current version; only for those
    does a parameter count off the formula count as a failure (edited code may differ on purpose).
    """
    applied_keys = set(applied if applied is not None else _applied_keys(tree))
    results = []
    for target in target_list:
        record = run.results.get(str(target.path))
        result = ModelResult(target, record or {}, reproduce_command(python, tree, target.path, img, scale))
        timing = run.latency.get(str(target.path)) or {}
        result.latency_runs = list(timing.get("ms") or [])
        result.base_latency_runs = list(timing.get("base_ms") or [])
        if timing.get("error"):
            result.notes.append(f"latency not measured: {timing['error']}")
        if record is None and run.timed_out:
            result.problems.append(f"no result: the probe was stopped after {run.timed_out:.0f} s without progress")
        elif record is None:
            result.problems.append("no result: the probe stopped before this model "
                                   f"({_last_line(run.log) or 'no output'})")
        elif record.get("argument_problems"):  # parse_model would have kept a misspelt name as a string
            result.problems += [f"{ui.display_path(target.path)}:{problem['line']}: {problem['message']}"
                                for problem in record["argument_problems"]]
        elif record.get("error"):
            result.problems.append(f"{record.get('stage', 'build')} failed: {record['error']}")
        elif record.get("params_without_grad"):
            names = record["params_without_grad"]
            result.problems.append(f"{len(names)} parameter(s) got no gradient in the train-mode backward: "
                                   + ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
        if record and scale and record.get("scale") not in (None, scale):
            result.notes.append(f"built at scale {record['scale']}: --scale {scale} applies to YAMLs whose file name "
                                f"has no scale letter and whose scales: offer it")
        if record and record.get("params_unchecked"):
            result.notes.append(f"backward in {record.get('backward_mode', 'eval')} mode (RT-DETR's training forward "
                                f"needs labels): {len(record['params_unchecked'])} decoder parameter(s) that only "
                                "labels reach (denoising, intermediate score heads) were not checked")
        if target.role == VARIANT:
            _compare_with_base(result, run, applied_keys)
        results.append(result)
    return results


def _compare_with_base(result: ModelResult, run: ProbeRun, applied_keys: Set[str]) -> None:
    target = result.target
    if target.base is None:
        result.notes.append(f"base {target.base_name} not found beside it: no comparison")
        return
    result.base_record = run.results.get(str(target.base))
    if not result.record or result.record.get("error") or not result.base_record \
            or result.base_record.get("error"):
        return
    mine, base = result.record.get("output_shapes"), result.base_record.get("output_shapes")
    if mine != base:
        result.problems.append(f"output shapes {mine} differ from the base's {base}")
    specs = [catalog.get(key) for key in target.keys]
    result.inserted = inserted_layers(read_text(target.path), result.record.get("layers", []), specs, applied_keys,
                                      scale=result.record.get("scale"))
    for layer in result.inserted:
        if not layer.ok and layer.checked:
            result.problems.append(f"layer {layer.layer} {layer.class_name} (c={layer.in_channels}) has "
                                   f"{layer.params} parameters; the {layer.key} formula says {layer.expected_params}")
        elif not layer.ok:
            result.notes.append(f"layer {layer.layer} {layer.class_name}: {layer.params} parameters, formula "
                                f"{layer.expected_params} (its code in the tree is not yolopatch's current version)")
    explained = sum(layer.params for layer in result.inserted)
    delta = result.delta("params")
    if delta is not None and delta != explained:
        result.problems.append(f"{delta} parameters more than the base, but the inserted layers hold {explained}")


def inserted_layers(text: str, layers: Sequence[Dict[str, Any]], specs: Sequence[ModuleSpec],
                    applied_keys: Set[str], scale: Optional[str] = None) -> List[Inserted]:
    """The probe's layers whose class is one of ``specs``, with the formula's parameter count.

    The formula is evaluated at the layer's actual input width (reported by the probe) with the
    hyper-parameters the YAML row passes (after the width, for a module that takes one; all of them
    for a "no-width" module such as SimAM); a row repeated ``n`` times (``n > 1`` scaled by YOLOv5's
    depth_multiple, or by the depth of Ultralytics' ``scales[scale]``) holds ``n`` modules.
    """
    by_class = {spec.class_name: spec for spec in specs}
    data = yaml.safe_load(text) or {}
    rows = list(data.get("backbone") or []) + list(data.get("head") or [])
    depth = _depth_multiple(data, scale)
    found = []
    for layer in layers:
        class_name = str(layer.get("type", "")).rsplit(".", 1)[-1]
        spec = by_class.get(class_name)
        if spec is None:
            continue
        index = int(layer["index"])
        channels = layer.get("in_channels")
        expected = None
        if isinstance(channels, int) and index < len(rows):
            number, args = rows[index][1], rows[index][3] if isinstance(rows[index][3], list) else []
            repeats = max(round(number * depth), 1) if number > 1 else number
            names = list(spec.hyperparameters)
            overrides = dict(zip(names, args[1:] if spec.registration == "width" else args))
            expected = repeats * spec.param_count(channels, **overrides)
        found.append(Inserted(index, class_name, spec.key, channels, int(layer["params"]), expected,
                              spec.key in applied_keys))
    return found


def _depth_multiple(data: Dict[str, Any], scale: Optional[str]) -> float:
    """YOLOv5's ``depth_multiple``, or the depth of Ultralytics' ``scales[scale]`` (1.0 when neither)."""
    scales = data.get("scales") or {}
    if scale and isinstance(scales, dict) and isinstance(scales.get(scale), list) and scales[scale]:
        return float(scales[scale][0])
    return float(data.get("depth_multiple", 1.0) or 1.0)


def _applied_keys(tree: AnyTree) -> List[str]:
    from yolopatch.statuses import APPLIED

    try:
        if is_ultralytics(tree):
            from yolopatch.targets import ultralytics

            found = ultralytics.module_states(ultralytics.Texts.read(tree))  # type: ignore[arg-type]
            return [key for key, state in found.items() if state.status == APPLIED]
        from yolopatch.state import Sources, module_states

        states = module_states(Sources.read(tree))  # type: ignore[arg-type]
    except YolopatchError:
        return []
    return [key for key, state in states.items() if state.status == APPLIED]


def build_cfgs(tree: AnyTree, cfgs: Sequence[Path], *, python: Optional[str] = None, img: int = 256,
               runs: int = 0, scale: Optional[str] = None) -> List[ModelResult]:
    """Build ``cfgs`` (and the bases of the variants among them) and judge them; no output."""
    interpreter = resolve_python(python)
    chosen = targets(tree, [Path(cfg) for cfg in cfgs])
    run = run_probe(interpreter, tree, [target.path for target in chosen], img, runs, pairs=latency_pairs(chosen),
                    scale=scale)
    return judge(tree, chosen, run, interpreter, img, scale=scale)
