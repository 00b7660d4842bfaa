"""`yolopatch verify`: build variants through the tree's own code (YOLOv5 or Ultralytics) and measure them.

yolopatch never imports YOLOv5 or Ultralytics itself: ``yolopatch/probe.py`` runs in a subprocess with
the chosen interpreter (default: this one), the tree's import root first on its path, and builds every
model YAML in one process (importing the tree costs seconds). YOLOv5 builds with ``models/yolo.py``'s
``Model``; Ultralytics with ``ultralytics.nn.tasks`` (the tree's ``yaml_model_load`` and
``guess_model_task`` pick the model class: DetectionModel, SegmentationModel, ..., RTDETRDetectionModel),
at ``--scale`` for YAMLs whose file name has no scale letter (yolopatch's ``yolov8-soca.yaml``; default
n; a model that does not offer it, such as rtdetr-l.yaml, at its first scale, with a note when --scale
asked for another), a variant at the same scale as its base. One probe script serves both codebases, so
that FLOPs, latency and the backward check follow one convention.

It reports, per model, parameters, FLOPs of an eval forward at ``img x img``
(``torch.utils.flop_counter``: 2 FLOPs per multiply-add, YOLOv5's and Ultralytics' GFLOPs convention,
matrix products inside attention included; element-wise work is not counted), the output shapes,
whether a train-mode backward (batch 2, ``min(img, 4 x largest stride)``; RT-DETR: eval mode, see
probe.py) reached every parameter, and the latency of eval forwards on the CPU. The probe runs
offline: the tree's download attempts fail at once and are reported as warnings.

Latency is measured after every model has been built, each variant together with its base:
``warmup`` untimed forwards each, then ``runs`` rounds timing both in alternating order. A model's
latency is the median of its runs, shown with half its interquartile range; a variant's delta is
the median of its paired differences with the base (same round), and is marked as noise when the
middle half of those differences includes zero (``latency_delta``).

A variant is compared with its base (named in its header, beside it): the parameter delta must be
exactly what the catalogue's formulas give for the inserted layers at the input widths the probe
saw, and the output shapes must not change. A model fails when it does not build, run forward or
backward, leaves parameters without a gradient, changes the output shapes, or (for a module whose
code in the tree is yolopatch's current version) has a parameter count other than the formula's.

YOLOv5 and YOLOv7 trees: before a YAML is built, the probe checks that every string argument of its rows
evaluates in parse_model's scope (parse_model keeps a misspelt name such as ``redution`` or ``anchor`` as a
string without a word: YOLOv7's bare ``except: pass``); each one that does not is a failure of its own,
``FILE:LINE: row N (Module): argument 'x' ...``, and that YAML is not built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from yolopatch import ui
from yolopatch.errors import UsageError
from yolopatch.building import (DEFAULT_RUNS, DEFAULT_WARMUP, ModelResult, ProbeRun, Target, judge, latency_pairs,
                                probe_setup, resolve_python, run_probe, targets)
from yolopatch.targets.locate import AnyTree, is_ultralytics, locate_any

SCALES = ("n", "s", "m", "l", "x")  # Ultralytics' scale letters (a model YAML's scales: offers some of them)


def verify(repo: Path, cfgs: Sequence[Path] = (), *, python: Optional[str] = None, img: int = 640,
           as_json: bool = False, runs: int = DEFAULT_RUNS, scale: Optional[str] = None) -> int:
    """`yolopatch verify`: build, measure and compare; exit 1 if any model fails.

    ``scale``: Ultralytics trees only, the scale of YAMLs whose file name has no scale letter (default n)."""
    if img < 32 or img % 32:
        raise UsageError(f"--img {img} is not a positive multiple of 32 (the models' largest stride)",
                         hint="use e.g. 640, 320 or 1280 (P6 models need a multiple of 64)")
    if scale is not None and scale not in SCALES:
        raise UsageError(f"unknown scale {scale!r}", hint=f"choose from {', '.join(SCALES)}")
    tree = locate_any(repo)
    interpreter = resolve_python(python)
    probe_setup(tree, scale)  # refuses --scale on a YOLOv5 tree before anything runs
    chosen = targets(tree, [Path(cfg) for cfg in cfgs])
    run = _run_with_progress(interpreter, tree, chosen, img, runs, scale)
    results = judge(tree, chosen, run, interpreter, img, scale=scale)
    attempts = _network_attempts(run)
    if as_json:
        ui.print_json(to_json(tree, interpreter, run, img, results, attempts, scale))
    else:
        _print_table(tree, run, img, results, runs, scale)
    for result in results:
        if not result.ok:
            where = f"{ui.display_path(result.cfg)}:"
            ui.error(result.error if (result.error or "").startswith(where) else f"{where} {result.error}")
            for problem in result.problems[1:]:
                ui.info(f"  also: {problem}")
            ui.info(f"  reproduce: {result.reproduce}")
        for note in result.notes:
            ui.info(f"note: {ui.display_path(result.cfg)}: {note}")
    for attempt in attempts:
        ui.info(f"warning: the tree attempted network access, blocked: {attempt}")
    for name in run.env.get("stubbed") or []:
        ui.info(f"note: {name} is not installed; the probe gave the tree a stand-in (it is only used for "
                f"Ultralytics HUB, which verify never reaches)")
    return 0 if all(result.ok for result in results) else 1


def _run_with_progress(python: str, tree: AnyTree, chosen: Sequence[Target], img: int, runs: int,
                       scale: Optional[str] = None) -> ProbeRun:
    """run_probe with a Rich progress bar on stderr, one step per model."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    names = [ui.display_path(target.path) for target in chosen]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=ui.stderr, transient=True, disable=not ui.stderr.is_terminal) as progress:
        task = progress.add_task(f"importing {probe_setup(tree, scale).module}", total=len(chosen))

        def on_record(record: Dict[str, Any]) -> None:
            done = int(progress.tasks[0].completed) + (record.get("kind") == "result")
            upcoming = f"building {names[done]}" if done < len(names) else \
                (f"timing (base and variant alternating, {runs} runs each)" if runs else "finishing")
            progress.update(task, completed=done, description=upcoming)

        return run_probe(python, tree, [target.path for target in chosen], img, runs, on_record,
                         pairs=latency_pairs(chosen), scale=scale)


def _network_attempts(run: ProbeRun) -> List[str]:
    attempts = list(run.env.get("network_attempts") or [])
    for record in run.results.values():
        attempts += record.get("network_attempts") or []
    return attempts


def _number(value: Optional[float], digits: int = 0, signed: bool = False) -> str:
    if value is None:
        return "-"
    sign = "+" if signed else ""
    return f"{value:{sign},.{digits}f}"


def _short(tree: AnyTree, path: Path) -> str:
    """``path`` relative to the tree's models/ folder (where variants live), else to its root."""
    try:
        return str(path.relative_to(tree.models_dir))
    except ValueError:
        return tree.relative(path)


def _latency_cell(result: ModelResult) -> str:
    """``212.3 ±4.1``: the median and half the interquartile range of the model's runs."""
    spread = result.latency
    return "-" if spread is None else f"{spread.median:,.1f} ±{spread.half_iqr:,.1f}"


def _latency_delta_cell(result: ModelResult) -> str:
    """``+3.2``, or ``+0.4 (noise)`` when the paired differences straddle zero."""
    paired = result.latency_delta
    if paired is None:
        return "-"
    return f"{paired.median:+,.1f}" + (" (noise)" if paired.noise else "")


BUSY_SPREAD = 0.10  # half the interquartile range above this share of the median: a busy machine


def busy_models(results: Sequence[ModelResult]) -> List[ModelResult]:
    """Models whose timed runs spread too much for their latency deltas to mean much."""
    return [result for result in results
            if result.latency is not None and result.latency.half_iqr > BUSY_SPREAD * result.latency.median]


def default_scale(tree: AnyTree, scale: Optional[str]) -> Optional[str]:
    """The scale YAMLs without a scale letter are built at: ``scale``, n on an Ultralytics tree, else None."""
    return scale or ("n" if is_ultralytics(tree) else None)


def _scale_title(tree: AnyTree, run: ProbeRun, scale: Optional[str]) -> str:
    if not is_ultralytics(tree):
        return ""
    chosen = default_scale(tree, scale)
    how = "--scale" if scale else "the default; --scale s|m|l|x for another"
    return f"ultralytics {run.env.get('version') or '?'}, scale {chosen} ({how}), "


def _model_cell(tree: AnyTree, result: ModelResult, scale: Optional[str]) -> str:
    """The model's path; ``(scale l)`` after it when it was built at another scale than the run's."""
    built = result.record.get("scale")
    other = built and is_ultralytics(tree) and built != default_scale(tree, scale)
    return _short(tree, result.cfg) + (f" (scale {built})" if other else "")


def _print_table(tree: AnyTree, run: ProbeRun, img: int, results: Sequence[ModelResult], runs: int,
                 scale: Optional[str] = None) -> None:
    """One row per model (measurements and deltas), then one row per inserted layer."""
    threads = run.env.get("threads")
    title = (f"verify {tree.root}: {_scale_title(tree, run, scale)}python {run.env.get('python', '?')}, "
             f"torch {run.env.get('torch', '?')}, CPU{f' ({threads} threads)' if threads else ''}, image {img}x{img}")
    rows = [[
        _model_cell(tree, result, scale), _number(result.value("params")), _number(result.delta("params"), signed=True),
        _number(result.value("gflops"), 2), _number(result.delta("gflops"), 2, signed=True),
        _latency_cell(result), _latency_delta_cell(result),
        "ok" if result.ok else "FAILED",
    ] for result in results]
    ui.table(title, ["model", "params", "Δ params", "GFLOPs", "Δ GFLOPs", "latency ms", "Δ ms", "status"], rows)
    if any(result.latency_runs for result in results):
        ui.stdout.print(f"latency: median of {runs} timed forwards (batch 1) after {DEFAULT_WARMUP} untimed ones, "
                        "each variant alternating with its base; ±: half the interquartile range; Δ ms: median "
                        "of the paired differences, (noise) when their middle half includes 0.",
                        markup=False, soft_wrap=False, style="dim")
        busy = busy_models(results)
        if busy:
            ui.stdout.print(f"note: the latency of {len(busy)} model(s) spread over more than "
                            f"{BUSY_SPREAD:.0%} of their median: the machine was busy; run `yolopatch verify` "
                            "on an idle machine (or with more --runs) before reading the latency deltas.",
                            markup=False, soft_wrap=False)
    layers = [[_short(tree, result.cfg), layer.layer, layer.class_name, layer.in_channels, _number(layer.params),
               "-" if layer.expected_params is None else _number(layer.expected_params),
               "ok" if layer.ok else "MISMATCH"]
              for result in results for layer in result.inserted]
    if layers:
        ui.table("inserted layers: parameters against the catalogue's formula at the input width c",
                 ["variant", "layer", "class", "c", "params", "formula", "check"], layers)


def to_json(tree: AnyTree, python: str, run: ProbeRun, img: int, results: Sequence[ModelResult],
            attempts: Sequence[str], scale: Optional[str] = None) -> Dict[str, Any]:
    """The ``--json`` document::

        {"root": str, "codebase": "yolov5"|"ultralytics", "version": str|null (ultralytics' __version__),
         "layout": "checkout"|"package"|"source"|"installed", "python": str, "python_version": str,
         "torch": str, "img": int, "scale": str|null (Ultralytics: the scale of YAMLs without a scale
         letter), "ok": bool, "network_attempts": [str], "stubbed": [str] (modules given a stand-in),
         "models": [{"cfg": str (relative to root), "role": "base"|"variant"|"model",
                     "scale": str|null (the scale it was built at, Ultralytics), "model_class": str|null,
                     "base": str|null, "modules": [key], "ok": bool, "params": int|null,
                     "gflops": float|null, "latency_ms": float|null (median),
                     "latency_spread_ms": float|null (half the interquartile range),
                     "latency_runs_ms": [float], "output_shapes": nested list,
                     "backward_ok": bool, "backward_img": int|null, "params_without_grad": [str],
                     "params_unchecked": [str] (RT-DETR: decoder parameters only labels reach),
                     "delta": {"params": int, "gflops": float, "latency_ms": float (median of the
                               paired differences), "latency_noise": bool}|null,
                     "inserted": [{"layer": int, "class": str, "module": str, "in_channels": int,
                                   "params": int, "expected_params": int|null, "ok": bool}],
                     "problems": [str], "notes": [str], "error": str|null, "stage": str|null,
                     "reproduce": str}]}
    """
    models = []
    for result in results:
        target, record = result.target, result.record
        delta = None
        if result.base_record is not None:
            delta = {name: result.delta(name) for name in ("params", "gflops", "latency_ms")}
            paired = result.latency_delta
            delta["latency_noise"] = None if paired is None else paired.noise
        models.append({
            "cfg": tree.relative(target.path),
            "role": target.role,
            "scale": record.get("scale"),
            "model_class": record.get("model_class"),
            "base": tree.relative(target.base) if target.base else target.base_name,
            "modules": list(target.keys),
            "ok": result.ok,
            "params": record.get("params"),
            "gflops": record.get("gflops"),
            "latency_ms": result.value("latency_ms"),
            "latency_spread_ms": None if result.latency is None else result.latency.half_iqr,
            "latency_runs_ms": result.latency_runs,
            "output_shapes": record.get("output_shapes"),
            "backward_ok": bool(record.get("backward_ok")),
            "backward_img": record.get("backward_img"),
            "params_without_grad": record.get("params_without_grad") or [],
            "params_unchecked": record.get("params_unchecked") or [],
            "delta": delta,
            "inserted": [{"layer": layer.layer, "class": layer.class_name, "module": layer.key,
                          "in_channels": layer.in_channels, "params": layer.params,
                          "expected_params": layer.expected_params, "ok": layer.ok}
                         for layer in result.inserted],
            "problems": result.problems,
            "notes": result.notes,
            "error": record.get("error"),
            "stage": record.get("stage"),
            "reproduce": result.reproduce,
        })
    return {
        "root": str(tree.root), "codebase": probe_setup(tree, scale).codebase, "version": run.env.get("version"),
        "layout": tree.layout, "python": python, "python_version": run.env.get("python"),
        "torch": run.env.get("torch"), "img": img, "scale": default_scale(tree, scale),
        "ok": all(result.ok for result in results), "network_attempts": list(attempts),
        "stubbed": list(run.env.get("stubbed") or []), "models": models,
    }
