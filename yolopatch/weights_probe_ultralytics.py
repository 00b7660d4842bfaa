"""Move an Ultralytics checkpoint's tensors into variants, through the tree's own code (run by `yolopatch weights`).

A standalone script, run in a subprocess with the user's interpreter::

    python weights_probe_ultralytics.py PLAN.json OUT.jsonl

Like ``weights_probe.py`` (whose tensor move, forward-hook check, offline guard and record writing it
reuses, loaded by file path: it imports only the standard library, torch and the tree, never yolopatch).
The plan (written by ``yolopatch.commands.weights``)::

    {"root": import root (the folder holding ultralytics/), "module": "ultralytics.nn.tasks",
     "checkpoint": path, "seed": int, "force": bool,
     "targets": [{"cfg": variant YAML, "out": path to write (``{scale}`` stands for the scale),
                  "scale": "n" or null (the source model's),
                  "candidates": [...as weights_probe.py...]}]}

What differs from YOLOv5:

- the checkpoint is read with the tree's ``torch_safe_load`` (its legacy module renames), and its model is
  ``ema`` when present, else ``model`` (``load_checkpoint`` / ``attempt_load_one_weight``'s choice);
- a variant YAML (``yolov8-soca.yaml``) holds every scale: the model is built from the tree's
  ``yaml_model_load(cfg)`` with ``scale`` set to the target's scale, else the source model's (its
  ``yaml["scale"]``), by the source model's own class (``DetectionModel``, ``SegmentationModel``, ...)
  with its class count and input channels;
- the written file is Ultralytics' checkpoint as its trainer leaves it after ``strip_optimizer``:
  ``{"date", "version", "license", "docs", "epoch": -1, "best_fitness": None, "model": <model>,
  "ema": None, "updates": None, "optimizer": None, "scaler": None, "stopper": None, "train_args": the
  source's, "yolopatch": provenance}``, the model in the source's dtype with its ``names`` and ``args``;
- it is read back with the tree's own loader (``load_checkpoint``, ``attempt_load_one_weight`` before
  8.3.x), and, where the tree has 8.4's restricted loader (``_SafeLoad``), also with
  ``torch_safe_load(out, safe_only=True)``: ``record["loader"]`` says which and whether it worked;
- ``load_transferred``: what ``YOLO(cfg).load(out)`` reports ("Transferred N/M items"): the tree's
  ``intersect_dicts`` of the written state and a freshly built variant's; ``naive_transferred``: the same
  from the source checkpoint as it is (what users get today, without yolopatch).

Ultralytics 8.0 imports ``hub_sdk`` at start-up for HUB URLs only; where it is missing, verify's probe
(``probe.py``, loaded by path) puts a stand-in into ``sys.modules``. ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
is set so that trees older than torch 2.6's default (8.0, 8.1) can read whole checkpoints; a load that
asks for ``weights_only=True`` (the restricted loader) is unaffected.
"""

from __future__ import annotations

import copy
import datetime
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import traceback
from typing import Any, Dict, Optional, Sequence, Tuple

_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == _HERE:
    del sys.path[0]  # yolopatch/'s module names must not shadow what Ultralytics imports


def _sibling(name: str) -> Any:
    """A script beside this one (``weights_probe.py``, ``probe.py``), loaded by path: nothing on sys.path."""
    spec = importlib.util.spec_from_file_location(f"_yolopatch_{name}", os.path.join(_HERE, f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wp = _sibling("weights_probe")


# --------------------------------------------------------------------------------------------
# The source checkpoint and the target model


def load_source(tasks: Any, path: str) -> Tuple[Dict[str, Any], Any, str]:
    """(the checkpoint dict, its model, "ema" or "model") as the tree's loader reads them."""
    loaded = tasks.torch_safe_load(path)
    checkpoint = loaded[0] if isinstance(loaded, tuple) else loaded
    if not isinstance(checkpoint, dict):
        raise TypeError(f"the checkpoint holds a {type(checkpoint).__name__}, not an Ultralytics checkpoint dict")
    for name in ("ema", "model"):
        if checkpoint.get(name) is not None:
            return checkpoint, checkpoint[name], name
    raise KeyError("the checkpoint has neither 'ema' nor 'model' (not an Ultralytics checkpoint)")


def source_scale(source: Any) -> Optional[str]:
    data = getattr(source, "yaml", None)
    return str(data.get("scale")) if isinstance(data, dict) and data.get("scale") else None


def build_target(tasks: Any, source: Any, cfg: str, scale: Optional[str]) -> Tuple[Any, Optional[str]]:
    """(the variant built by the source model's class at ``scale``, the scale used)."""
    data = tasks.yaml_model_load(cfg)
    scales = data.get("scales") or {}
    chosen = scale or source_scale(source)
    if scales:
        if chosen is None:
            chosen = next(iter(scales))
        if chosen not in scales:
            raise ValueError(f"scale {chosen!r}: {os.path.basename(cfg)} offers the scales {', '.join(scales)}")
        data["scale"] = chosen
    source_yaml = getattr(source, "yaml", {}) if isinstance(getattr(source, "yaml", None), dict) else {}
    channels = int(source_yaml.get("channels") or source_yaml.get("ch") or 3)
    nc = int(getattr(source, "nc", None) or source_yaml.get("nc"))
    return type(source)(data, ch=channels, nc=nc, verbose=False), chosen if scales else None


def set_attributes(target: Any, source: Any) -> None:
    """What Ultralytics keeps on a model besides its tensors: class names and training args (as a dict, like
    ``strip_optimizer``)."""
    if hasattr(source, "names"):
        target.names = copy.deepcopy(source.names)
    if getattr(source, "args", None) is not None:
        args = source.args
        target.args = dict(vars(args)) if hasattr(args, "__dict__") and not isinstance(args, dict) else dict(args)


def checkpoint_dict(model: Any, source_checkpoint: Dict[str, Any], version: str,
                    provenance: Dict[str, Any]) -> Dict[str, Any]:
    """Ultralytics' checkpoint as ``strip_optimizer`` leaves it: a start for training, not a resume."""
    train_args = source_checkpoint.get("train_args")
    return {"date": datetime.datetime.now().astimezone().isoformat(), "version": version,
            "license": "AGPL-3.0 License (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com",
            "epoch": -1, "best_fitness": None, "model": model, "ema": None, "updates": None, "optimizer": None,
            "scaler": None, "stopper": None, "train_args": dict(train_args) if isinstance(train_args, dict) else {},
            "yolopatch": provenance}


# --------------------------------------------------------------------------------------------
# Reading the written file back with the tree's own loaders


def tree_loader(tasks: Any) -> Tuple[str, Any]:
    for name in ("load_checkpoint", "attempt_load_one_weight"):
        if hasattr(tasks, name):
            return name, getattr(tasks, name)
    raise AttributeError(f"{tasks.__name__} has neither load_checkpoint nor attempt_load_one_weight")


def safe_load(tasks: Any, path: str) -> Optional[str]:
    """None when the tree's restricted loader (8.4's ``_SafeLoad``) reads ``path``, else its error;
    "n/a" for a tree without one."""
    safe = getattr(tasks, "_SafeLoad", None)
    if safe is None or not getattr(safe, "SUPPORTED", False):
        return "n/a"
    try:
        checkpoint = tasks.torch_safe_load(path, safe_only=True)[0]
        model = checkpoint.get("ema") or checkpoint.get("model")
        if model is None or not hasattr(model, "state_dict"):
            return "no model in the checkpoint"
    except Exception as error:  # noqa: BLE001 - the loader's own refusal is the answer
        return wp._last_line(error)
    return None


# --------------------------------------------------------------------------------------------
# One target


def out_path(target: Dict[str, Any], scale: Optional[str], checkpoint_path: str, force: bool) -> str:
    """The file to write (``{scale}`` filled in); raises when it is the source or exists without ``force``."""
    out = target["out"].replace("{scale}", scale or "")
    if os.path.abspath(out) == os.path.abspath(checkpoint_path):
        raise FileExistsError(f"{out} is the source checkpoint: pass another --out")
    if os.path.exists(out) and not force and "{scale}" in target["out"]:
        raise FileExistsError(f"{out} exists: pass --force to overwrite it, or --out another file")
    return out


def one_target(torch: Any, tasks: Any, checkpoint: Dict[str, Any], source: Any, which: str,
               plan: Dict[str, Any], target: Dict[str, Any]) -> Dict[str, Any]:
    record: Dict[str, Any] = {"kind": "result", "cfg": target["cfg"], "out": target["out"], "error": None}
    rows = wp.layer_rows(source)
    chosen = None if rows is None else next(
        (index for index, option in enumerate(target["candidates"]) if wp.rows_match(rows, option["rows"])), None)
    if chosen is None:
        record.update({"error": "no-match", "source_rows": rows})
        return record
    option = target["candidates"][chosen]
    layer_map = {int(j): int(t) for j, t in option["layer_map"]}
    record.update({"candidate": chosen, "candidate_description": option["description"]})
    torch.manual_seed(int(plan.get("seed", 0)))
    model, scale = build_target(tasks, source, target["cfg"], target.get("scale"))
    out = out_path(target, scale, plan["checkpoint"], bool(plan.get("force")))
    record.update({"out": out, "scale": scale})
    source_float = copy.deepcopy(source).float()
    target_state = model.state_dict()
    new_state, report = wp.transfer(source_float.state_dict(), target_state, layer_map,
                                    list(source_float.model), list(model.model))
    model.load_state_dict(new_state, strict=True)
    set_attributes(model, source)
    dtype = wp.floating_dtype(torch, source)
    complete = [entry["source"] for entry in report["layers"] if entry["source"] is not None
                and entry["target"] is not None and entry["transferred"] == entry["tensors"]]
    from ultralytics.utils.torch_utils import intersect_dicts

    record.update(report)
    record.update({
        "source_tensors": sum(entry["tensors"] for entry in report["layers"]),
        "transferred": sum(entry["transferred"] for entry in report["layers"]),
        "target_tensors": len(target_state),
        "naive_transferred": len(intersect_dicts(source_float.state_dict(), target_state)),
        "nc": getattr(model, "nc", None),
        "dtype": str(dtype).replace("torch.", ""),
    })
    import ultralytics

    provenance = {"source": os.path.abspath(plan["checkpoint"]), "source_model": which,
                  "source_description": option["description"], "cfg": os.path.abspath(target["cfg"]),
                  "scale": scale, "layer_map": [[j, t] for j, t in sorted(layer_map.items())],
                  "transferred": record["transferred"], "source_tensors": record["source_tensors"]}
    saved = copy.deepcopy(model).to(dtype)
    for parameter in saved.parameters():
        parameter.requires_grad = False  # as strip_optimizer leaves a model
    wp.save(torch, checkpoint_dict(saved, checkpoint, str(getattr(ultralytics, "__version__", "")), provenance), out)
    name, loader = tree_loader(tasks)
    written = loader(out)[0]
    fresh_state = build_target(tasks, source, target["cfg"], scale)[0].state_dict()
    record["load_transferred"] = len(intersect_dicts(written.float().state_dict(), fresh_state))
    record["train_transferred"] = record["load_transferred"]  # the command's common name for the loader's count
    record["loader"] = {"function": name, "safe_load_error": safe_load(tasks, out)}
    stride = int(max(getattr(model, "stride", [32])))
    record["check"] = wp.check_written(torch, copy.deepcopy(source), written, layer_map, complete, 2 * stride)
    if record["loader"]["safe_load_error"] not in (None, "n/a"):
        record["check"]["failures"].append(f"the tree's restricted loader (safe_only=True) refuses the written file: "
                                           f"{record['loader']['safe_load_error']}")
    return record


# --------------------------------------------------------------------------------------------
# Main


def run(plan: Dict[str, Any], records: Any) -> int:
    stage = "import torch"
    try:
        import torch

        stage = "import the tree"
        tasks = wp.import_tree(plan["root"], plan["module"])
        stage = "load the checkpoint"
        checkpoint, source, which = load_source(tasks, plan["checkpoint"])
    except (Exception, SystemExit) as error:  # noqa: BLE001 - Ultralytics' checks may sys.exit()
        records.write(wp._fatal(stage, error))
        return 1
    import ultralytics

    records.write({"kind": "source", "which": which, "python": sys.version.split()[0], "torch": torch.__version__,
                   "ultralytics": str(getattr(ultralytics, "__version__", "")),
                   "yaml_file": str((getattr(source, "yaml", None) or {}).get("yaml_file") or ""),
                   "scale": source_scale(source), "nc": getattr(source, "nc", None),
                   "dtype": str(wp.floating_dtype(torch, source)).replace("torch.", ""),
                   "rows": wp.layer_rows(source), "multiples": None})
    failed = 0
    for index, target in enumerate(plan["targets"]):
        try:
            record = one_target(torch, tasks, checkpoint, source, which, plan, target)
        except (Exception, SystemExit) as error:  # noqa: BLE001 - every failure becomes a record
            traceback.print_exc()
            record = {"kind": "result", "cfg": target["cfg"], "out": target["out"], "error": wp._last_line(error)}
        record["index"] = index  # the same variant may come twice (at two scales): the caller matches by index
        failed += record["error"] is not None or bool(record.get("check", {}).get("failures"))
        records.write(record)
    records.write({"kind": "done", "failed": failed})
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        sys.stderr.write("usage: python weights_probe_ultralytics.py PLAN.json OUT.jsonl\n")
        return 2
    with open(args[0], encoding="utf-8") as handle:
        plan = json.load(handle)
    sys.stdout.flush()
    os.dup2(2, 1)  # Ultralytics prints while building; the records go to OUT only
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    config_dir = tempfile.mkdtemp(prefix="yolopatch-weights-")
    wp.go_offline(config_dir)
    _sibling("probe").stub_hub_sdk(plan["root"])
    try:
        with open(args[1], "a", encoding="utf-8") as stream:
            return run(plan, wp.Records(stream))
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
