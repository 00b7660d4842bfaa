"""Move a checkpoint's tensors into variants, through a YOLOv5 or YOLOv7 tree's own code (run by `yolopatch weights`).

YOLOv7 saves and reads YOLOv5's checkpoint dict (its train.py and ``models.experimental.attempt_load``), and its
``models.yolo.Model(cfg, ch, nc)`` is YOLOv5's: the same script serves both, with the tree's models module.

A standalone script, run in a subprocess with the user's interpreter::

    python weights_probe.py PLAN.json OUT.jsonl

It imports only the standard library, torch and the tree's own code (never yolopatch, which need
not be installed in that interpreter). The plan (written by ``yolopatch.commands.weights``)::

    {"root": import root, "module": "models.yolo", "checkpoint": path, "seed": int,
     "targets": [{"cfg": variant YAML, "out": path to write,
                  "candidates": [{"description": str, "rows": [row or null, ...],
                                  "layer_map": [[source index, target index], ...]}, ...]}]}

For each target: the checkpoint's model (``ema`` when present, else ``model``, as YOLOv5's
``attempt_load``) must have layer rows (``model.yaml`` backbone + head) equal to one candidate's
(a null row or a null field matches anything); that candidate's map says where each source layer
goes. The variant is built with the tree's ``Model(cfg, ch=3, nc=<the checkpoint's nc>)`` (its
inserted layers freshly initialised, seeded), every tensor ``model.<j>.<rest>`` of the source goes
to ``model.<map[j]>.<rest>`` when the shapes agree (any other is named as a mismatch), and the
result is saved in YOLOv5's checkpoint format (``{"epoch": -1, "model": <Model>, "ema": None,
"optimizer": None, ...}``, the source's dtype) to a temporary file, then renamed into place.

Then the written file is loaded again and checked with forward hooks on one image: every layer
before the first inserted one gives exactly (bit for bit) the source's output, and every
completely transferred layer, given the input its source layer saw, gives exactly its output.

Output: JSON lines in OUT: ``{"kind": "source", ...}`` once, ``{"kind": "result", "index": i, "cfg": ...}``
per target, ``{"kind": "done"}``; or ``{"kind": "fatal", "error": ...}`` when the tree or the
checkpoint cannot be loaded. YOLOv5's prints go to stderr. Offline: the tree's config dirs point at a
temporary folder (with a font: v6.0 loads Arial.ttf on import), pip and YOLOv5's auto-install are
off, and this process's socket connections fail at once.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import shutil
import sys
import tempfile
import traceback
from typing import Any, Dict, IO, List, Optional, Sequence, Tuple

_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == _HERE:
    del sys.path[0]  # yolopatch/'s module names must not shadow what YOLOv5 imports


# --------------------------------------------------------------------------------------------
# Offline, and importing the tree


def go_offline(config_dir: str) -> None:
    """Keep YOLOv5 (and pip) off the network: config dirs, auto-install off, sockets refused."""
    import socket

    os.environ.update({"YOLOV5_CONFIG_DIR": config_dir, "YOLO_CONFIG_DIR": config_dir, "YOLO_OFFLINE": "1",
                       "YOLOv5_AUTOINSTALL": "false", "HF_HUB_OFFLINE": "1", "PIP_NO_INDEX": "1",
                       "WANDB_MODE": "disabled", "GIT_TERMINAL_PROMPT": "0"})
    _stage_font(config_dir)
    unix = getattr(socket, "AF_UNIX", None)
    original = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if unix is not None and self.family == unix:
            return original(self, address)
        raise ConnectionRefusedError(f"yolopatch weights runs offline: blocked a connection to {address!r}")

    socket.socket.connect = connect  # type: ignore[method-assign]


def _stage_font(config_dir: str) -> None:
    """An Arial.ttf (matplotlib's DejaVuSans) in the config dir: YOLOv5 v6.0 loads it on import."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("matplotlib")
    except (ImportError, ValueError):
        return
    for folder in (spec.submodule_search_locations or []) if spec else []:
        source = os.path.join(folder, "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        if os.path.isfile(source):
            shutil.copyfile(source, os.path.join(config_dir, "Arial.ttf"))
            return


def import_tree(root: str, module_name: str) -> Any:
    """The tree's yolo.py, imported with ``root`` first on sys.path (checked to come from the tree)."""
    import importlib

    sys.path.insert(0, root)
    module = importlib.import_module(module_name)
    where = os.path.realpath(getattr(module, "__file__", "") or "")
    if not where.startswith(os.path.realpath(root) + os.sep):
        raise ImportError(f"{module_name} was imported from {where}, not from the tree at {root}")
    return module


def model_class(module: Any) -> Any:
    for name in ("Model", "DetectionModel"):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"{module.__name__} defines neither Model nor DetectionModel")


def load(torch: Any, path: str) -> Any:
    """``torch.load`` of a whole pickled checkpoint (torch >= 2.6 defaults to weights only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except TypeError:  # torch < 1.13 has no weights_only
        return torch.load(path, map_location="cpu")


# --------------------------------------------------------------------------------------------
# The source checkpoint


def source_model(checkpoint: Any) -> Tuple[Any, str]:
    """The model a YOLOv5 checkpoint holds: ``ema`` when present, else ``model`` (attempt_load's choice)."""
    if isinstance(checkpoint, dict):
        for name in ("ema", "model"):
            if checkpoint.get(name) is not None:
                return checkpoint[name], name
        raise KeyError("the checkpoint is a dict without 'model' (not a YOLOv5 checkpoint)")
    if hasattr(checkpoint, "state_dict"):
        return checkpoint, "object"
    raise TypeError(f"the checkpoint holds a {type(checkpoint).__name__}, not a YOLOv5 model")


def layer_rows(model: Any) -> Optional[List[Any]]:
    """The model's ``yaml`` backbone + head rows (JSON-normalised), or None without a yaml dict."""
    data = getattr(model, "yaml", None)
    if not isinstance(data, dict):
        return None
    return json.loads(json.dumps(list(data.get("backbone") or []) + list(data.get("head") or []), default=str))


def rows_match(actual: Sequence[Any], expected: Sequence[Any]) -> bool:
    """Equal rows; an expected ``None`` (a row, or a field of one) matches anything."""
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


def layer_key(key: str) -> Optional[Tuple[int, str]]:
    """``model.12.cv1.conv.weight`` -> (12, ``cv1.conv.weight``); None outside ``model.<N>.``."""
    head, _, rest = key.partition(".")
    number, _, tail = rest.partition(".")
    if head != "model" or not number.isdigit():
        return None
    return int(number), tail


def floating_dtype(torch: Any, model: Any) -> Any:
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


# --------------------------------------------------------------------------------------------
# Moving the tensors


def transfer(source_state: Dict[str, Any], target_state: Dict[str, Any], layer_map: Dict[int, int],
             source_layers: Sequence[Any], target_layers: Sequence[Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(the target's new state dict, the per-layer report) for moving ``source_state`` by ``layer_map``."""
    new_state = dict(target_state)
    per_layer: Dict[int, Dict[str, Any]] = {}

    def entry_of(j: int) -> Dict[str, Any]:
        return per_layer.setdefault(j, {"source": j if j >= 0 else None, "target": layer_map.get(j),
                                        "class": type(source_layers[j]).__name__ if 0 <= j < len(source_layers) else None,
                                        "tensors": 0, "transferred": 0, "mismatches": [], "missing": []})

    for j in range(len(source_layers)):  # layers without tensors (Upsample, Concat) are reported too
        entry_of(j)
    for key, tensor in source_state.items():
        parsed = layer_key(key)
        entry = entry_of(parsed[0] if parsed else -1)
        j = entry["source"]
        entry["tensors"] += 1
        if parsed is None or j not in layer_map:
            continue
        new_key = f"model.{layer_map[j]}.{parsed[1]}"
        if new_key not in target_state:
            entry["missing"].append(key)
        elif tuple(target_state[new_key].shape) != tuple(tensor.shape):
            entry["mismatches"].append([key, list(tensor.shape), new_key, list(target_state[new_key].shape)])
        else:
            new_state[new_key] = tensor.detach().to(target_state[new_key].dtype).clone()
            entry["transferred"] += 1
    for entry in per_layer.values():
        target = entry["target"]
        if target is not None and 0 <= target < len(target_layers):
            entry["target_class"] = type(target_layers[target]).__name__
    fresh = []
    counts: Dict[int, int] = {}
    for key in target_state:
        parsed = layer_key(key)
        if parsed is not None:
            counts[parsed[0]] = counts.get(parsed[0], 0) + 1
    mapped = set(layer_map.values())
    for index, layer in enumerate(target_layers):
        if index not in mapped:
            fresh.append({"target": index, "class": type(layer).__name__, "tensors": counts.get(index, 0)})
    layers = [per_layer[j] for j in sorted(per_layer)]
    return new_state, {"layers": layers, "fresh": fresh}


def set_attributes(target: Any, source: Any) -> None:
    """What YOLOv5's train.py attaches to a model besides its tensors: class names, hyp, class weights."""
    for name in ("names", "hyp", "class_weights"):
        if hasattr(source, name):
            setattr(target, name, copy.deepcopy(getattr(source, name)))


def checkpoint_dict(model: Any, provenance: Dict[str, Any]) -> Dict[str, Any]:
    """YOLOv5's checkpoint dict as train.py --weights and attempt_load read it: a start, not a resume."""
    return {"epoch": -1, "best_fitness": None, "model": model, "ema": None, "updates": None,
            "optimizer": None, "opt": None, "wandb_id": None, "date": datetime.datetime.now().isoformat(),
            "yolopatch": provenance}


def save(torch: Any, value: Any, path: str) -> None:
    """torch.save to a temporary file beside ``path``, then rename: never a half-written checkpoint."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".yolopatch-", suffix=".pt", dir=folder)
    os.close(handle)
    try:
        torch.save(value, temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


# --------------------------------------------------------------------------------------------
# Checking the written model with forward hooks


def _clone(value: Any) -> Any:
    if hasattr(value, "detach") and hasattr(value, "clone"):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(item) for item in value)
    if isinstance(value, dict):  # Ultralytics' heads return dicts in some modes
        return {key: _clone(item) for key, item in value.items()}
    return value


def _equal(torch: Any, first: Any, second: Any) -> bool:
    if hasattr(first, "shape") and hasattr(second, "shape"):
        return first.shape == second.shape and bool(torch.equal(first, second))
    if isinstance(first, (list, tuple)) and isinstance(second, (list, tuple)):
        return len(first) == len(second) and all(_equal(torch, a, b) for a, b in zip(first, second))
    if isinstance(first, dict) and isinstance(second, dict):
        return first.keys() == second.keys() and all(_equal(torch, first[key], second[key]) for key in first)
    return type(first) is type(second) and first == second


def record_layers(torch: Any, model: Any, image: Any) -> Tuple[Dict[int, Any], Dict[int, Any]]:
    """(inputs, outputs) of every top-level layer in one eval forward of ``image``."""
    inputs: Dict[int, Any] = {}
    outputs: Dict[int, Any] = {}
    hooks = []
    for index, layer in enumerate(model.model):
        hooks.append(layer.register_forward_pre_hook(
            lambda module, args, index=index: inputs.__setitem__(index, _clone(args))))
        hooks.append(layer.register_forward_hook(
            lambda module, args, output, index=index: outputs.__setitem__(index, _clone(output))))
    try:
        with torch.no_grad():
            model(image)
    finally:
        for hook in hooks:
            hook.remove()
    return inputs, outputs


def check_written(torch: Any, source: Any, written: Any, layer_map: Dict[int, int],
                  complete: Sequence[int], img: int) -> Dict[str, Any]:
    """Compare the written model with the source on one image (both float32, eval).

    ``before``: the target layers ahead of the first inserted one (as far as they were transferred
    completely), whose outputs in the full forward must equal the source's; ``complete``: the source
    layers whose every tensor was transferred, each run on its source input and compared with its
    source output. All comparisons are exact.
    """
    torch.manual_seed(0)
    image = torch.rand(1, 3, img, img)
    source, written = source.float().eval(), written.float().eval()
    source_in, source_out = record_layers(torch, source, image)
    _, written_out = record_layers(torch, written, image)
    mapped = set(layer_map.values())
    first_inserted = next((index for index in range(len(written.model)) if index not in mapped), len(written.model))
    before = []  # the prefix ahead of the first inserted layer, as far as it was transferred completely
    for j in range(min(first_inserted, len(source.model))):
        if layer_map.get(j) != j or j not in complete:
            break
        before.append(j)
    failures = [f"layer {j}: output differs in the full forward" for j in before
                if not _equal(torch, written_out.get(j), source_out.get(j))]
    equal = 0
    with torch.no_grad():
        for j in complete:
            output = written.model[layer_map[j]](*_clone(source_in[j]))
            if _equal(torch, output, source_out[j]):
                equal += 1
            else:
                failures.append(f"source layer {j} -> {layer_map[j]}: different output on the same input")
    return {"img": img, "first_inserted": first_inserted, "before": before, "layers_checked": len(complete),
            "layers_equal": equal, "failures": failures}


# --------------------------------------------------------------------------------------------
# One target


def one_target(torch: Any, build: Any, source: Any, which: str, checkpoint_path: str, target: Dict[str, Any],
               seed: int) -> Dict[str, Any]:
    record: Dict[str, Any] = {"kind": "result", "cfg": target["cfg"], "out": target["out"], "error": None}
    rows = layer_rows(source)
    chosen = None if rows is None else next(
        (index for index, option in enumerate(target["candidates"]) if rows_match(rows, option["rows"])), None)
    if chosen is None:
        record["error"] = "no-match"
        record["source_rows"] = rows
        return record
    option = target["candidates"][chosen]
    layer_map = {int(j): int(t) for j, t in option["layer_map"]}
    record["candidate"] = chosen
    record["candidate_description"] = option["description"]
    nc = int(getattr(source, "nc", None) or source.yaml.get("nc"))
    torch.manual_seed(seed)
    model = build(target["cfg"], ch=3, nc=nc)
    source_float = copy.deepcopy(source).float()
    target_state = model.state_dict()
    new_state, report = transfer(source_float.state_dict(), target_state, layer_map,
                                 list(source_float.model), list(model.model))
    model.load_state_dict(new_state, strict=True)
    set_attributes(model, source)
    dtype = floating_dtype(torch, source)
    complete = [entry["source"] for entry in report["layers"] if entry["source"] is not None
                and entry["target"] is not None and entry["transferred"] == entry["tensors"]]
    anchor_keys = [key for key in target_state if "anchor" in key]
    record.update(report)
    record.update({
        "source_tensors": sum(entry["tensors"] for entry in report["layers"]),
        "transferred": sum(entry["transferred"] for entry in report["layers"]),
        "target_tensors": len(target_state),
        "anchor_keys": len(anchor_keys),
        "train_transferred": len(target_state) - len(anchor_keys),
        "nc": nc,
        "dtype": str(dtype).replace("torch.", ""),
    })
    provenance = {"source": os.path.abspath(checkpoint_path), "source_model": which,
                  "source_description": option["description"], "cfg": os.path.abspath(target["cfg"]),
                  "layer_map": [[j, t] for j, t in sorted(layer_map.items())],
                  "transferred": record["transferred"], "source_tensors": record["source_tensors"]}
    save(torch, checkpoint_dict(copy.deepcopy(model).to(dtype), provenance), target["out"])
    written, _ = source_model(load(torch, target["out"]))
    stride = int(max(getattr(model, "stride", [32])))
    record["check"] = check_written(torch, copy.deepcopy(source), written, layer_map, complete, 2 * stride)
    return record


# --------------------------------------------------------------------------------------------
# Main


class Records:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, record: Dict[str, Any]) -> None:
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


def _last_line(error: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(error), error))
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= 500 else line[:497] + "..."


def _fatal(stage: str, error: BaseException) -> Dict[str, Any]:
    traceback.print_exc()
    missing = error.name if isinstance(error, ModuleNotFoundError) else None
    return {"kind": "fatal", "stage": stage, "error": _last_line(error), "missing_module": missing,
            "python": sys.version.split()[0], "executable": sys.executable, "traceback": traceback.format_exc()}


def run(plan: Dict[str, Any], records: Records) -> int:
    stage = "import torch"
    try:
        import torch

        stage = "import the tree"
        build = model_class(import_tree(plan["root"], plan["module"]))
        stage = "load the checkpoint"
        source, which = source_model(load(torch, plan["checkpoint"]))
    except (Exception, SystemExit) as error:  # noqa: BLE001 - YOLOv5's checks may sys.exit()
        records.write(_fatal(stage, error))
        return 1
    records.write({"kind": "source", "which": which, "python": sys.version.split()[0], "torch": torch.__version__,
                   "yaml_file": str(getattr(source, "yaml_file", "") or ""), "nc": getattr(source, "nc", None),
                   "dtype": str(floating_dtype(torch, source)).replace("torch.", ""), "rows": layer_rows(source),
                   "multiples": [getattr(source, "yaml", {}).get(name) for name in ("depth_multiple", "width_multiple")]
                   if isinstance(getattr(source, "yaml", None), dict) else None})
    failed = 0
    for index, target in enumerate(plan["targets"]):
        try:
            record = one_target(torch, build, source, which, plan["checkpoint"], target, int(plan.get("seed", 0)))
        except (Exception, SystemExit) as error:  # noqa: BLE001 - every failure becomes a record
            traceback.print_exc()
            record = {"kind": "result", "cfg": target["cfg"], "out": target["out"], "error": _last_line(error)}
        record["index"] = index  # the same variant may come twice (at two scales): the caller matches by index
        failed += record["error"] is not None or bool(record.get("check", {}).get("failures"))
        records.write(record)
    records.write({"kind": "done", "failed": failed})
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        sys.stderr.write("usage: python weights_probe.py PLAN.json OUT.jsonl\n")
        return 2
    with open(args[0], encoding="utf-8") as handle:
        plan = json.load(handle)
    sys.stdout.flush()
    os.dup2(2, 1)  # YOLOv5 prints while building; the records go to OUT only
    config_dir = tempfile.mkdtemp(prefix="yolopatch-weights-")
    go_offline(config_dir)
    try:
        with open(args[1], "a", encoding="utf-8") as stream:
            return run(plan, Records(stream))
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
