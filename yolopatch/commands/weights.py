"""`yolopatch weights`: move a checkpoint's tensors into variants, every layer to its new index.

Inserting a layer shifts every later layer's index, so YOLOv5's ``train.py --weights base.pt --cfg
variant.yaml`` (which matches tensors by key and shape) drops most of them and loads equal-shaped
shifted layers with the wrong layer's weights. yolopatch wrote the variant, so it knows the exact
``old -> new`` index map (``checkpoints.transfer_candidates``, from the variants' own remap).

The checkpoint is unpickled by ``yolopatch/weights_probe.py`` (YOLOv5 and YOLOv7) or
``yolopatch/weights_probe_ultralytics.py`` (Ultralytics) in a subprocess with the user's interpreter
(its pickle names the tree's classes); yolopatch itself never imports the tree. The probe builds
each variant with the tree's own model class, copies every tensor to its new key where the shapes
agree, saves the codebase's checkpoint format, loads the written file again with the tree's loader
and checks it with forward hooks (see the probes' docstrings). This command plans, runs the probe,
and reports per layer.

YOLOv7 checkpoints are YOLOv5's format (YOLOv7's train.py saves ``{"model": ..., "ema": ...}`` and reads
``ckpt['model'].float().state_dict()`` through ``intersect_dicts`` without the anchors; ``attempt_load`` takes
``ema`` else ``model``), so a YOLOv7 tree takes the YOLOv5 probe with its own models module. Its variants live
in ``cfg/training/`` and their ``cfg/deploy/`` twins; a deploy twin takes a checkpoint of its deploy base
(the reparameterised model, ``Detect`` head), never a training one (``IDetect``: its implicit tensors must be
folded in by YOLOv7's reparameterisation, which yolopatch does not do).

Ultralytics variants (``yolov8-soca.yaml``) hold every scale: the written model takes ``--scale``, else
the source model's scale, and is written as ``yolov8<scale>-soca.pt`` (the name Ultralytics reads the
scale from) unless ``--out`` says otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from yolopatch import catalog, checkpoints, ui, variants
from yolopatch.building import resolve_python
from yolopatch.changes import read_text
from yolopatch.checkpoints import ULTRALYTICS, YOLOV5, CheckpointFormat, Insertion
from yolopatch.errors import UsageError, YolopatchError
from yolopatch.targets.locate import is_ultralytics, locate_any
from yolopatch.targets.ultralytics import UltralyticsTree
from yolopatch.targets.yolov7 import Yolov7Tree
from yolopatch.tree import Tree

AnyTree = Union[Tree, UltralyticsTree, Yolov7Tree]
SCALE = "{scale}"  # in an Ultralytics output path: the scale, known once the probe has read the checkpoint


@dataclass(frozen=True)
class TargetPlan:
    """One variant to write a checkpoint for: where its layers come from and where it goes."""

    cfg: Path
    out: Path
    base_name: str
    candidates: List[checkpoints.SourceCandidate]
    scale: Optional[str] = None  # Ultralytics: the scale to build (None: the source model's)
    twin: Optional[Path] = None  # YOLOv7: for a cfg/deploy variant, its cfg/training twin (named when refusing)

    def to_json(self) -> Dict[str, Any]:
        return {"cfg": str(self.cfg), "out": str(self.out), "scale": self.scale,
                "candidates": [option.to_json() for option in self.candidates]}


# --------------------------------------------------------------------------------------------
# Planning (reads YAMLs, nothing else)


def find_cfg(tree: AnyTree, cfg: Path) -> Path:
    if isinstance(tree, UltralyticsTree):
        return find_ultralytics_cfg(tree, cfg)[0]
    if isinstance(tree, Yolov7Tree):  # cfg/training first: a bare name means the training variant
        folders = [Path(), tree.root, tree.training_dir, tree.deploy_dir]
    else:
        folders = [Path(), tree.root, tree.models_dir, tree.models_dir / "hub"]
    for candidate in (folder / cfg for folder in folders):
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(["."] + [str(folder) if folder == tree.root else tree.relative(folder) + "/"
                                for folder in folders[1:]])
    raise YolopatchError(f"model YAML {str(cfg)!r} not found (looked in {looked})",
                         hint="pass --to with a variant YAML that yolopatch generated")


# Ultralytics reads a model's scale from its file name: yolov8n-soca.yaml is yolov8-soca.yaml at scale n
# (nn/tasks.py yaml_model_load and guess_model_scale).
_SCALED_NAME = re.compile(r"^(yolo(?:e-)?v?\d+)([nslmx])(.*)$")


def find_ultralytics_cfg(tree: UltralyticsTree, cfg: Path) -> Tuple[Path, Optional[str]]:
    """(the variant YAML, the scale its name gives or None): ``cfg`` as given, in the tree, in
    ``ultralytics/cfg/models/*/``, and a scaled name (``yolov8n-soca.yaml``) as the file without the scale."""
    names: List[Tuple[Path, Optional[str]]] = [(cfg, None)]
    scaled = _SCALED_NAME.match(cfg.stem)
    if scaled is not None:
        names.append((cfg.with_name(scaled.group(1) + scaled.group(3) + cfg.suffix), scaled.group(2)))
    for name, scale in names:
        folders = [Path(), tree.root, tree.models_dir] + sorted(tree.models_dir.glob("*/"))
        for candidate in (name if name.is_absolute() else folder / name for folder in folders):
            if candidate.is_file():
                return candidate.resolve(), scale
    raise YolopatchError(f"model YAML {str(cfg)!r} not found (looked in ., {tree.root}, "
                         f"{tree.relative(tree.models_dir)}/*/)",
                         hint="pass --to with a variant YAML that yolopatch generated")


def _insertions(base: variants.BaseModel, info: variants.GeneratedInfo) -> List[Insertion]:
    placements = [variants.Placement(catalog.get(key).class_name, key, positions) for key, positions in info.placements]
    return checkpoints.insertions_of(base, placements)


def _rows(text: str) -> List[Any]:
    data = yaml.safe_load(variants.to_ascii(text)) or {}
    return list(data.get("backbone") or []) + list(data.get("head") or [])


def plan_target(cfg: Path, out: Path, dialect: Optional[str] = None) -> TargetPlan:
    """The candidates (what the source may be, and its layer map) for the variant ``cfg``; ``dialect``:
    the YAML dialect the variant was generated in (None: detected from the base, as for YOLOv5).

    Refuses a YAML yolopatch did not generate, one whose base is gone, and one whose rows are no
    longer its base with the recorded insertions (edited, or the base changed since): the map
    would be wrong.
    """
    text = read_text(cfg)
    info = variants.parse_generated_header(text)
    if info is None:
        raise YolopatchError("not a yolopatch-generated variant: yolopatch knows the layer map of its own "
                             "variants only", path=cfg, line=1,
                             hint="write the variant with `yolopatch apply` or `yolopatch variant`, then pass it to --to")
    base_path = cfg.parent / info.base_name
    if not base_path.is_file():
        raise YolopatchError(f"the variant's base {info.base_name} is not beside it", path=cfg, line=1,
                             hint=f"put {info.base_name} back next to the variant")
    base = variants.parse_base(read_text(base_path), info.base_name, dialect)
    target = _insertions(base, info)
    if not checkpoints.rows_match(_rows(text), checkpoints.expected_rows(base, target)):
        raise YolopatchError(f"the variant's layers are no longer {checkpoints.describe(info.base_name, target)} "
                             "(edited by hand, or its base changed since): the layer map would be wrong", path=cfg,
                             hint="regenerate it with `yolopatch variant " + " ".join(info.keys) + "`")
    others = []
    for path in sorted(cfg.parent.glob("*.yaml")):
        other = variants.parse_generated_header(read_text(path)) if path != cfg else None
        if other is not None and other.base_name == info.base_name:
            try:
                others.append(_insertions(base, other))
            except YolopatchError:
                continue  # a variant whose positions this base no longer offers: not a candidate
    return TargetPlan(cfg, out, info.base_name, checkpoints.transfer_candidates(base, target, others))


def default_name(cfg: Path, base_name: Optional[str] = None, scale: Optional[str] = None) -> str:
    """``<variant stem>.pt``; for an Ultralytics variant (``base_name`` given) the scale goes after the base
    stem, as Ultralytics names models: ``yolov8-soca.yaml`` at n -> ``yolov8n-soca.pt`` (``{scale}`` while
    the scale is not known yet)."""
    if base_name is None:
        return f"{cfg.stem}.pt"
    stem = Path(base_name).stem
    rest = cfg.stem[len(stem):] if cfg.stem.startswith(stem) else "-" + cfg.stem
    return f"{stem}{SCALE if scale is None else scale}{rest}.pt"


def out_paths(checkpoint: Path, cfgs: Sequence[Path], out: Optional[Path], force: bool,
              names: Optional[Sequence[str]] = None) -> List[Path]:
    """Where each variant's checkpoint goes: ``--out``, else ``names`` (default ``<variant stem>.pt``) beside
    the source. A name holding ``{scale}`` is checked by the probe once the scale is known."""
    if out is not None and len(cfgs) != 1:
        raise UsageError("--out names one file; it goes with exactly one --to",
                         hint="leave --out out: each variant's checkpoint is written beside the source as <variant>.pt")
    names = list(names) if names is not None else [default_name(cfg) for cfg in cfgs]
    paths = [out.resolve() if out is not None else checkpoint.parent / name for name in names]
    for path in paths:
        if path == checkpoint:
            raise UsageError(f"{path} is the source checkpoint", hint="pass another --out")
        if path.exists() and not force:
            raise YolopatchError("a file of this name exists", path=path,
                                 hint="pass --force to overwrite it, or --out another file")
    if len(set(paths)) != len(paths):
        raise UsageError("two variants would be written to the same file", hint="pass them one at a time with --out")
    return paths


# --------------------------------------------------------------------------------------------
# Running the probe


def probe_path(fmt: CheckpointFormat = YOLOV5) -> Path:
    return Path(str(resources.files("yolopatch").joinpath(fmt.probe)))


def checkpoint_format(tree: AnyTree) -> CheckpointFormat:
    """Ultralytics' own; YOLOv5's for YOLOv5 and YOLOv7 trees (the same checkpoint dict, the same probe)."""
    return ULTRALYTICS if is_ultralytics(tree) else YOLOV5


def import_root(tree: AnyTree) -> Path:
    """The folder that goes first on sys.path for the probe (the one holding ``ultralytics/`` or ``models/``)."""
    return tree.package_dir.parent if isinstance(tree, UltralyticsTree) else tree.import_root


def probe_plan(tree: AnyTree, checkpoint: Path, plans: Sequence[TargetPlan], seed: int,
               force: bool = False) -> Dict[str, Any]:
    """The probe's plan (see the probes' docstrings)."""
    plan: Dict[str, Any] = {"root": str(import_root(tree)), "checkpoint": str(checkpoint), "seed": seed,
                            "targets": [item.to_json() for item in plans]}
    if isinstance(tree, UltralyticsTree):
        plan.update({"module": "ultralytics.nn.tasks", "force": force})
    else:
        plan["module"] = f"{tree.models_module}.yolo"
    return plan


def run_probe(python: str, tree: AnyTree, checkpoint: Path, plans: Sequence[TargetPlan],
              seed: int, force: bool = False) -> List[Dict[str, Any]]:
    """Run the probe on ``plans``; its JSON-lines records (raises when it could not start or load)."""
    plan = probe_plan(tree, checkpoint, plans, seed, force)
    with tempfile.TemporaryDirectory(prefix="yolopatch-weights-") as folder:
        plan_path, out_path, log_path = (Path(folder) / name for name in ("plan.json", "records.jsonl", "probe.log"))
        plan_path.write_text(json.dumps(plan), encoding="utf-8")
        command = [python, str(probe_path(checkpoint_format(tree))), str(plan_path), str(out_path)]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}
        with log_path.open("wb") as log:
            code = subprocess.run(command, cwd=import_root(tree), stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, env=env).returncode
        records = [json.loads(line) for line in out_path.read_text(encoding="utf-8").splitlines()] \
            if out_path.exists() else []
        log_text = log_path.read_text(encoding="utf-8", errors="replace")
    fatal = next((record for record in records if record.get("kind") == "fatal"), None)
    if fatal is not None:
        raise _fatal_error(python, tree, checkpoint, fatal)
    if not any(record.get("kind") == "source" for record in records):
        tail = [line for line in log_text.strip().splitlines() if line.strip()][-1:] or [f"exit code {code}"]
        raise YolopatchError(f"the weights probe could not run with {python}: {tail[0]}",
                             hint=f"run it with --debug, or check that this interpreter has torch and "
                                  f"{_title(tree)}'s requirements")
    return records


def _title(tree: AnyTree) -> str:
    return "Ultralytics" if is_ultralytics(tree) else "YOLOv7" if isinstance(tree, Yolov7Tree) else "YOLOv5"


def _fatal_error(python: str, tree: AnyTree, checkpoint: Path, fatal: Dict[str, Any]) -> YolopatchError:
    if fatal.get("missing_module") and fatal.get("stage") != "load the checkpoint":
        return YolopatchError(f"the interpreter {python} lacks {fatal['missing_module']!r}",
                              hint=f"pass --python PATH to an interpreter that has {_title(tree)}'s requirements")
    if fatal.get("stage") == "load the checkpoint":
        return YolopatchError(f"cannot load the checkpoint with this tree's code: {fatal.get('error')}",
                              path=checkpoint, hint="a checkpoint that needs a module this tree lacks loads after "
                                                    "`yolopatch apply <module>`; see `yolopatch status`")
    module = "ultralytics.nn.tasks" if isinstance(tree, UltralyticsTree) else f"{tree.models_module}.yolo"
    return YolopatchError(f"{fatal.get('stage')} ({module} from {import_root(tree)}) failed with "
                          f"{python}: {fatal.get('error')}", hint="run `yolopatch verify` to see whether the tree builds")


# --------------------------------------------------------------------------------------------
# Judging and reporting


def problems(record: Dict[str, Any], plan: TargetPlan, source: Dict[str, Any]) -> List[str]:
    """What went wrong for one target (empty when its checkpoint was written and checked)."""
    if record.get("error") == "no-match":
        rows = source.get("rows")
        what = f"{len(rows)} layers" if isinstance(rows, list) else "no model.yaml"
        made = f", made from {source['yaml_file']}" if source.get("yaml_file") else ""
        found = [f"the checkpoint's model ({what}{made}) is neither {plan.base_name} nor a variant of it "
                 f"that yolopatch can map into {plan.cfg.name}"]
        if plan.twin is not None:
            found[0] += (f"; {plan.cfg.parent.name}/{plan.cfg.name} takes a checkpoint of the deploy model "
                         f"{plan.cfg.parent.name}/{plan.base_name}; a training checkpoint goes into "
                         f"{plan.twin.parent.name}/{plan.twin.name} (reparameterise its trained result with "
                         "YOLOv7's tools and the index map of `yolopatch variant --json`)")
        return found
    if record.get("error"):
        return [str(record["error"])]
    found = list((record.get("check") or {}).get("failures") or [])
    for entry in record.get("layers", []):
        if entry.get("target") is not None and entry.get("target_class") != entry.get("class"):
            found.append(f"source layer {entry['source']} ({entry['class']}) maps to layer {entry['target']} "
                         f"({entry.get('target_class')})")
    return found


def _summary(record: Dict[str, Any]) -> str:
    mismatched = sum(len(entry["mismatches"]) for entry in record["layers"])
    dropped = sum(entry["tensors"] for entry in record["layers"] if entry["target"] is None)
    same_shape = record["source_tensors"] - mismatched - dropped
    share = 100.0 * record["transferred"] / same_shape if same_shape else 100.0
    parts = [f"{record['transferred']}/{record['source_tensors']} tensors transferred "
             f"({share:.0f}% of the {same_shape} with a same-shaped counterpart)"]
    if mismatched:
        parts.append(f"{mismatched} with another shape")
    if dropped:
        parts.append(f"{dropped} in layers the variant does not have")
    fresh = [f"{item['target']} {item['class']}" for item in record["fresh"]]
    if fresh:
        parts.append(f"freshly initialised: layer {', '.join(fresh)} "
                     f"({sum(item['tensors'] for item in record['fresh'])} tensors)")
    return "; ".join(parts)


def _layer_rows(record: Dict[str, Any]) -> List[List[Any]]:
    rows: List[List[Any]] = []
    for entry in record["layers"]:
        note = _mismatch_note(entry["mismatches"]) if entry["mismatches"] else ""
        if entry["target"] is None:
            note = "no counterpart in the variant"
        moved = "" if entry["target"] in (None, entry["source"]) else "moved"
        rows.append([entry["source"], "-" if entry["target"] is None else entry["target"], entry["class"],
                     f"{entry['transferred']}/{entry['tensors']}", note or moved])
    for item in record["fresh"]:
        rows.append(["-", item["target"], item["class"], f"0/{item['tensors']}", "inserted: fresh"])
    return sorted(rows, key=lambda row: (row[1] if isinstance(row[1], int) else 10**6, str(row[0])))


def report_text(tree: AnyTree, checkpoint: Path, source: Dict[str, Any], plan: TargetPlan,
                record: Dict[str, Any]) -> None:
    out, cfg = ui.display_path(Path(record.get("out") or plan.out)), tree.relative(plan.cfg)
    ui.table(f"{ui.display_path(checkpoint)} -> {out} ({cfg}, from {record['candidate_description']})",
             ["from layer", "to layer", "module", "tensors", "note"], _layer_rows(record))
    check = record["check"]
    ui.done(f"wrote {out}: {_summary(record)}")
    before = f"layers 0..{len(check['before']) - 1} give the source's outputs exactly; " if check["before"] else ""
    ui.done(f"  forward check ({check['img']}x{check['img']}): {before}{check['layers_equal']}/{check['layers_checked']}"
            " completely transferred layers give their source layer's output on its input")
    if not is_ultralytics(tree):
        ui.done(f"  train.py --weights {out} --cfg {cfg} will report: Transferred "
                f"{record['train_transferred']}/{record['target_tensors']} items (it leaves out the anchors)")
        return
    scaled = Path(default_name(plan.cfg, plan.base_name, record.get("scale") or "")).with_suffix(".yaml").name
    ui.done(f"  YOLO({scaled!r}).load({out!r}) will report: Transferred {record['load_transferred']}/"
            f"{record['target_tensors']} items (from {ui.display_path(checkpoint)} as it is: "
            f"{record['naive_transferred']}/{record['target_tensors']})")
    loader = record.get("loader") or {}
    if loader.get("safe_load_error") is None:
        ui.done(f"  {loader.get('function')} and the restricted loader (safe_only=True) read it")


def warn_mismatches(record: Dict[str, Any]) -> None:
    """One warning per source tensor whose new place has another shape (another width or class count)."""
    for entry in record.get("layers", []):
        if entry["mismatches"]:
            ui.info(f"warning: layer {entry['source']} {entry['class']} -> {entry['target']}: "
                    f"{_mismatch_note(entry['mismatches'])}: left freshly initialised (another width or class count?)")


def _mismatch_note(mismatches: Sequence[Sequence[Any]]) -> str:
    """``model.0.conv.weight (32, 3, 6, 6) does not fit (48, 3, 6, 6)``, and how many more."""
    key, old, _, new = mismatches[0]
    more = f" (and {len(mismatches) - 1} more tensors)" if len(mismatches) > 1 else ""
    return f"{key} {tuple(old)} does not fit {tuple(new)}{more}"


def to_json(tree: AnyTree, checkpoint: Path, source: Dict[str, Any], results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The ``--json`` document: {"checkpoint", "source": {which, yaml_file, nc, dtype}, "ok",
    "targets": [{"cfg", "out", "ok", "problems", "source_as", "source_tensors", "transferred",
    "target_tensors", "train_transferred", "layers", "fresh", "check"}]}; for Ultralytics also "scale",
    "load_transferred" (what ``YOLO(cfg).load(out)`` reports), "naive_transferred" (the same from the source
    as it is) and "loader" ({"function", "safe_load_error"})."""
    return {
        "checkpoint": str(checkpoint),
        "source": {name: source.get(name) for name in ("which", "yaml_file", "nc", "dtype", "multiples")},
        "ok": all(not item["problems"] for item in results),
        "targets": [{
            "cfg": tree.relative(item["plan"].cfg), "out": str(item["record"].get("out") or item["plan"].out),
            "ok": not item["problems"], "problems": item["problems"],
            "source_as": item["record"].get("candidate_description"),
            **{name: item["record"].get(name) for name in ("source_tensors", "transferred", "target_tensors",
                                                           "train_transferred", "layers", "fresh", "check", "scale",
                                                           "load_transferred", "naive_transferred", "loader")},
        } for item in results],
    }


# --------------------------------------------------------------------------------------------
# The command


def plan_targets(tree: AnyTree, checkpoint: Path, to: Sequence[Path], out: Optional[Path], force: bool,
                 scale: Optional[str] = None) -> List[TargetPlan]:
    """One plan per ``--to``: the variant, its layer maps, where its checkpoint goes and (Ultralytics) its scale."""
    if not isinstance(tree, UltralyticsTree):
        if scale is not None:
            example = ("cfg/training/yolov7-tiny-soca.yaml" if isinstance(tree, Yolov7Tree)
                       else "models/yolov5n-soca.yaml")
            raise UsageError(f"--scale is for Ultralytics variants (one YAML, every scale); a {_title(tree)} variant "
                             "has its model in its file", hint=f"pass --to {example}")
        cfgs = [find_cfg(tree, cfg) for cfg in to]
        names = [yolov7_name(tree, cfg) for cfg in cfgs] if isinstance(tree, Yolov7Tree) else None
        paths = out_paths(checkpoint, cfgs, out, force, names)
        if isinstance(tree, Yolov7Tree):
            return [dataclasses.replace(plan_target(cfg, path, variants.YOLOV7), twin=training_twin(tree, cfg))
                    for cfg, path in zip(cfgs, paths)]
        return [plan_target(cfg, path) for cfg, path in zip(cfgs, paths)]
    found = [find_ultralytics_cfg(tree, cfg) for cfg in to]
    plans = [dataclasses.replace(plan_target(cfg, checkpoint), scale=scale or named) for cfg, named in found]
    names = [default_name(plan.cfg, plan.base_name, plan.scale) for plan in plans]
    paths = out_paths(checkpoint, [plan.cfg for plan in plans], out, force, names)
    return [dataclasses.replace(plan, out=path) for plan, path in zip(plans, paths)]


def yolov7_name(tree: Yolov7Tree, cfg: Path) -> str:
    """``<variant stem>.pt``; ``<variant stem>-deploy.pt`` for a cfg/deploy variant (its training twin has the
    same file name)."""
    deploy = cfg.parent.resolve() == tree.deploy_dir.resolve()
    return f"{cfg.stem}-deploy.pt" if deploy else default_name(cfg)


def training_twin(tree: Yolov7Tree, cfg: Path) -> Optional[Path]:
    """``cfg/training/<name>`` for a variant ``cfg/deploy/<name>`` when it exists, else None."""
    if cfg.parent.resolve() != tree.deploy_dir.resolve():
        return None
    twin = tree.training_dir / cfg.name
    return twin if twin.is_file() else None


def weights(repo: Path, checkpoint: Path, to: Sequence[Path], *, out: Optional[Path] = None,
            python: Optional[str] = None, force: bool = False, as_json: bool = False, seed: int = 0,
            scale: Optional[str] = None) -> int:
    """`yolopatch weights`: write a checkpoint per variant; exit 1 if any could not be written or checked."""
    if not to:
        raise UsageError("name the variant(s) to write weights for", hint="--to models/yolov5s-soca.yaml")
    tree = locate_any(repo, allow_installed=True)  # reads the tree only: an installed copy is fine
    if not isinstance(tree, (Tree, UltralyticsTree, Yolov7Tree)):
        raise YolopatchError(f"`yolopatch weights` supports YOLOv5, YOLOv7 and Ultralytics trees; this is a "
                             f"{getattr(tree, 'codebase', 'other')} tree", path=tree.root)
    if not checkpoint.is_file():
        raise YolopatchError("no such checkpoint", path=checkpoint, hint="pass the .pt file to transfer from")
    checkpoint = checkpoint.resolve()
    plans = plan_targets(tree, checkpoint, to, out, force, scale)
    interpreter = resolve_python(python)
    records = run_probe(interpreter, tree, checkpoint, plans, seed, force)
    source = next(record for record in records if record.get("kind") == "source")
    by_index = {record.get("index"): record for record in records if record.get("kind") == "result"}
    results = []
    for index, plan in enumerate(plans):
        record = by_index.get(index, {"error": "the probe stopped before this variant"})
        results.append({"plan": plan, "record": record, "problems": problems(record, plan, source)})
    if as_json:
        ui.print_json(to_json(tree, checkpoint, source, results))
    for item in results:
        if not item["problems"] and not as_json:
            report_text(tree, checkpoint, source, item["plan"], item["record"])
        warn_mismatches(item["record"])
        for problem in item["problems"]:
            ui.error(f"{tree.relative(item['plan'].cfg)}: {problem}")
    return 0 if all(not item["problems"] for item in results) else 1
