"""Build model YAMLs through a YOLO tree's own code and measure them (run by `yolopatch verify`).

A standalone script, run in a subprocess with the user's interpreter::

    python probe.py --root ROOT --module models.yolo [--codebase yolov5|ultralytics] [--scale n]
                    [--img 640] [--runs 7] [--warmup 2] [--pair BASE VARIANT]... [--out FILE] CFG [CFG ...]

It imports only the standard library, torch and the tree's own code (never yolopatch, which need
not be installed in that interpreter). ``ROOT`` goes first on ``sys.path``; ``--module`` is the
dotted name of the module that builds models: for YOLOv5 the tree's ``yolo.py`` (``models.yolo`` in a
checkout, ``yolov5.models.yolo`` in the package layout), for Ultralytics ``ultralytics.nn.tasks``.
How a CFG becomes a model is the only codebase-specific step (``builder``):

- YOLOv5: ``Model(cfg)`` (``DetectionModel`` in late trees); YOLOv7 the same way. First, every string
  argument of the YAML's rows must evaluate in parse_model's scope (``check_arguments``): its eval keeps
  a misspelt name as a string without a word; such a YAML gets an ``arguments`` stage error naming the
  line (``argument_problems``) and is not built;
- Ultralytics: the tree's ``yaml_model_load(cfg)``, whose scale comes from the file name as Ultralytics
  reads it (``yolov8s-x.yaml``: s); a file name without a scale letter (yolopatch's ``yolov8-soca.yaml``)
  gets ``--scale`` (default n; a model that does not offer it, such as rtdetr-l.yaml, its first scale).
  The tree's ``guess_model_task`` picks the model class in ``nn.tasks`` (``DetectionModel``,
  ``SegmentationModel``, ``PoseModel``, ``OBBModel``, ...; the head's module name picks
  ``RTDETRDetectionModel``, ``WorldModel`` and the YOLOE models). Ultralytics 8.0 imports ``hub_sdk``
  at start-up for HUB URLs only; where it does and that package is missing, a stand-in is put in
  ``sys.modules`` (named in the ``env`` record's ``stubbed``) so that the model code can be imported.
  The rows of yolopatch's modules get the argument check too (Ultralytics' parse_model keeps a string that
  is neither one of its locals nor a Python literal: ``_UltralyticsScope``).

For every CFG, in one process (importing the tree costs seconds):

- the model in eval mode: one forward of a batch-1 ``img x img`` random image under
  ``torch.utils.flop_counter.FlopCounterMode`` gives the FLOPs (2 per multiply-add, YOLOv5's own
  GFLOPs convention; unlike thop it also sees the matrix products inside attention modules) and,
  through forward pre-hooks, each top-level layer's input channels;
- train mode: a forward of a batch-2 image of ``min(img, 4 x largest stride)`` (the gradient check
  does not depend on the size; BatchNorm needs more than one value per channel) and a backward of
  the sum of the output means; every parameter the backward did not reach is listed by name.
  RT-DETR models run this in eval mode (their decoder's training forward needs a batch of labels in
  Ultralytics 8.0 to 8.3); the parameters of the decoder that only labels reach (denoising embedding,
  intermediate score heads) are then listed in ``params_unchecked`` instead;
- latency, after every model has been built and checked (so that the first model does not pay for
  the process's warm-up): each ``--pair BASE VARIANT`` is timed together, ``--warmup`` untimed eval
  forwards of each, then ``--runs`` rounds that time both in alternating order (base, variant;
  variant, base; ...), so that drift (other processes, clock changes) hits both alike; other CFGs
  are timed alone the same way. One ``{"kind": "latency", "cfg": ..., "ms": [...]}`` record per
  timing (a variant's also holds ``base`` and its base's ``base_ms`` from the same rounds); the
  statistics (medians, spread, noise) are the caller's.

Output: JSON lines, one record per line, flushed as they come (the caller follows progress):
``{"kind": "env", ...}`` once, then ``{"kind": "result", "cfg": ...}`` per CFG, then the
``latency`` records, then ``{"kind": "done"}``; or a single ``{"kind": "fatal", ...}`` when the tree cannot be imported
(``missing_module`` names a module the interpreter lacks). With ``--out`` they go to that file;
without, to stdout. YOLOv5 prints a lot while building: file descriptor 1 is pointed at stderr
before the tree is imported, so its output (Python or C level) never mixes with the records.

Offline: before the tree is imported, its config dirs (``YOLOV5_CONFIG_DIR``, Ultralytics'
``YOLO_CONFIG_DIR``) point at a temporary folder holding an ``Arial.ttf`` (v6.0 loads it on
import; see ``stage_font``), ``YOLO_OFFLINE``/``HF_HUB_OFFLINE`` are set,
pip is told ``PIP_NO_INDEX``, child processes get every proxy at a dead local port, and in this
process socket connections, DNS look-ups of remote hosts, ``urllib`` opens and child
processes running ``pip install``/``curl``/``wget``/``git clone`` fail at once. Each attempt is
recorded in ``network_attempts`` of the record being worked on.
"""

from __future__ import annotations

import argparse
import errno
import gc
import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, IO, List, Optional, Sequence, Tuple

_HERE = os.path.dirname(os.path.abspath(__file__))
# `python .../yolopatch/probe.py` puts yolopatch/ itself first on sys.path, whose module names
# (tree, state, ui, ...) could shadow what YOLOv5 or its dependencies import.
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == _HERE:
    del sys.path[0]

DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, connections fail at once
LOCAL_HOSTS = frozenset({None, "", "localhost", "127.0.0.1", "::1", b"localhost", b"127.0.0.1"})
_DOWNLOAD_COMMAND = re.compile(r"\bpip3?\b.*\b(install|download)\b|\bcurl\b|\bwget\b|\bgit\s+(clone|fetch|pull)\b")

network_attempts: List[str] = []


class NetworkBlocked(ConnectionRefusedError):
    """Raised for every network access the tree attempts while it is being verified."""


# --------------------------------------------------------------------------------------------
# Offline guard


def _refuse(what: str) -> NetworkBlocked:
    network_attempts.append(what)
    return NetworkBlocked(errno.ECONNREFUSED, f"yolopatch verify runs offline: blocked {what}")


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def offline_environment(config_dir: str) -> Dict[str, str]:
    """Environment variables that keep YOLOv5, Ultralytics, pip and git off the network."""
    return {
        "YOLOV5_CONFIG_DIR": config_dir,  # YOLOv5 >= 6.0 utils.general.user_config_dir (fonts, settings)
        "YOLO_CONFIG_DIR": config_dir,  # ultralytics (imported by the yolov5 7.0.x wheels)
        "YOLO_OFFLINE": "true",  # ultralytics 8.1 to 8.3 skip their connectivity check only for "true" (8.4: also "1")
        "HF_HUB_OFFLINE": "1",
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "GIT_TERMINAL_PROMPT": "0",
    }


def stage_font(config_dir: str) -> Optional[str]:
    """Put a TrueType font named Arial.ttf into the temporary config dir; return its source.

    YOLOv5 v6.0 loads Arial.ttf while importing utils/plots.py (class Annotator) and downloads it
    into its config dir when missing; v6.1+ download it when plotting. Verify never plots, so any
    TrueType font will do: matplotlib's DejaVuSans.ttf (matplotlib is a YOLOv5 requirement),
    located without importing matplotlib. None when there is none; the download then fails (blocked).
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("matplotlib")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        source = os.path.join(folder, "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        if os.path.isfile(source):
            shutil.copyfile(source, os.path.join(config_dir, "Arial.ttf"))
            return source
    return None


def child_environment() -> Dict[str, str]:
    """For child processes only: every proxy at a dead local port, so any download fails at once.

    Not set in this process: here a request must reach the socket guard with its real host name
    (which the record then names), not go to a proxy.
    """
    env: Dict[str, str] = {"NO_PROXY": "", "no_proxy": ""}
    env.update((name, DEAD_PROXY) for name in PROXY_VARIABLES)
    return env


def block_network() -> None:
    """Make every network access of this process (and downloads by child processes) fail fast."""
    import socket
    import subprocess
    import urllib.request

    unix = getattr(socket, "AF_UNIX", None)
    original_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if unix is not None and self.family == unix:
            return original_connect(self, address)
        raise _refuse(f"connect to {address!r}")

    def connect_ex(self: socket.socket, address: Any) -> int:
        if unix is not None and self.family == unix:
            return original_connect_ex(self, address)
        return _refuse(f"connect to {address!r}").errno

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in LOCAL_HOSTS:
            return original_getaddrinfo(host, *args, **kwargs)
        raise _refuse(f"DNS look-up of {host!r}")

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
        raise _refuse(f"connection to {address!r}")

    def urlopen(url: Any, *args: Any, **kwargs: Any) -> Any:
        raise _refuse(f"download of {getattr(url, 'full_url', url)}")

    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo
    socket.create_connection = create_connection
    urllib.request.urlopen = urlopen

    class GuardedPopen(subprocess.Popen):  # type: ignore[type-arg]
        """subprocess.Popen that refuses download commands (pip install, curl, wget, git clone)."""

        def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
            command = args if isinstance(args, (str, bytes)) else " ".join(map(str, args))
            if isinstance(command, bytes):
                command = command.decode(errors="replace")
            if _DOWNLOAD_COMMAND.search(command):
                raise _refuse(f"command {command!r}")
            kwargs["env"] = {**(kwargs.get("env") or os.environ), **child_environment()}
            super().__init__(args, *rest, **kwargs)

    original_system = os.system

    def system(command: str) -> int:
        if _DOWNLOAD_COMMAND.search(str(command)):
            network_attempts.append(f"command {command!r}")
            return 1
        return original_system(command)

    subprocess.Popen = GuardedPopen  # type: ignore[misc]
    os.system = system


# --------------------------------------------------------------------------------------------
# Importing the tree


def pip_name(module: str) -> str:
    """The pip requirement that provides top-level ``module``."""
    names = {"cv2": "opencv-python", "PIL": "pillow", "yaml": "pyyaml", "git": "gitpython",
             "pkg_resources": "'setuptools<81'", "IPython": "ipython", "sklearn": "scikit-learn",
             "google": "protobuf", "cpuinfo": "py-cpuinfo", "hub_sdk": "hub-sdk"}
    return names.get(module, module)


def import_tree(root: str, module_name: str) -> Any:
    """Import the tree's yolo.py with ``root`` first on sys.path; check it came from the tree."""
    import importlib

    sys.path.insert(0, root)
    module = importlib.import_module(module_name)
    where = os.path.realpath(getattr(module, "__file__", "") or "")
    if not where.startswith(os.path.realpath(root) + os.sep):
        raise ImportError(f"{module_name} was imported from {where}, not from the tree at {root} "
                          f"(another copy shadows it on sys.path)")
    return module


def model_class(module: Any) -> Callable[..., Any]:
    """``Model`` (v5.0 to 7.0; an alias of DetectionModel since 6.2) or ``DetectionModel``."""
    for name in ("Model", "DetectionModel"):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"{module.__name__} defines neither Model nor DetectionModel")


YOLOV5, ULTRALYTICS = "yolov5", "ultralytics"

# Ultralytics: the model class in nn.tasks for each task its guess_model_task names (None: detect) ...
ULTRALYTICS_TASK_MODELS = {"detect": "DetectionModel", "segment": "SegmentationModel", "pose": "PoseModel",
                           "obb": "OBBModel", "classify": "ClassificationModel",
                           "semantic": "SemanticSegmentationModel", "depth": "DepthModel"}
# ... and the heads whose class the task does not tell (Ultralytics' RTDETR, YOLOWorld and YOLOE classes pick it)
ULTRALYTICS_HEAD_MODELS = {"RTDETRDecoder": "RTDETRDetectionModel", "WorldDetect": "WorldModel",
                           "YOLOEDetect": "YOLOEModel", "YOLOESegment": "YOLOESegModel",
                           "YOLOESegment26": "YOLOESegModel"}


def stub_hub_sdk(root: str) -> List[str]:
    """Ultralytics 8.0 imports ``hub_sdk`` (HUB URLs and client) at start-up; verify never talks to HUB. Where
    the tree's ``engine/model.py`` imports it and the package is missing, put a stand-in into sys.modules;
    return the names stubbed (for the env record)."""
    import ast
    import importlib.util
    import types

    try:
        with open(os.path.join(root, ULTRALYTICS, "engine", "model.py"), encoding="utf-8") as handle:
            body = ast.parse(handle.read()).body
    except (OSError, SyntaxError, ValueError):
        return []
    imports_hub = any(isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "hub_sdk"
                      for node in body)
    if not imports_hub or importlib.util.find_spec("hub_sdk") is not None:
        return []
    hub, config = types.ModuleType("hub_sdk"), types.ModuleType("hub_sdk.config")
    hub.HUB_API_ROOT = hub.HUB_WEB_ROOT = config.HUB_WEB_ROOT = "https://hub.invalid"  # type: ignore[attr-defined]
    hub.HUBClient = object  # type: ignore[attr-defined]
    hub.config = config  # type: ignore[attr-defined]
    sys.modules["hub_sdk"], sys.modules["hub_sdk.config"] = hub, config
    return ["hub_sdk"]


def ultralytics_model_class(tasks: Any, data: Dict[str, Any]) -> Callable[..., Any]:
    """The nn.tasks class that builds the model dict ``data``: by its head's module name, else by its task."""
    head = str((data.get("head") or [[None, None, ""]])[-1][2]).rsplit(".", 1)[-1]
    name = ULTRALYTICS_HEAD_MODELS.get(head) or ULTRALYTICS_TASK_MODELS.get(tasks.guess_model_task(data) or "detect")
    if name is None or not hasattr(tasks, name):
        raise ValueError(f"no model class in {tasks.__name__} for a model whose head is {head}")
    return getattr(tasks, name)


DEFAULT_SCALE = "n"


def ultralytics_builder(tasks: Any, scale: Optional[str]) -> Callable[[str], Any]:
    """``build(cfg)`` through the tree's own yaml_model_load, task guess and model class (see the docstring).

    A CFG whose file name has no scale letter gets ``scale`` (default n); a model that does not offer it (such
    as rtdetr-l.yaml, whose only scale is l) gets its first scale, which is what Ultralytics' parse_model takes
    for a name without a letter. The record's ``scale`` says which one was built.
    """

    def build(cfg: str) -> Any:
        data = tasks.yaml_model_load(cfg)
        scales = data.get("scales") or {}
        if scales and not data.get("scale"):
            wanted = scale or DEFAULT_SCALE
            data["scale"] = wanted if wanted in scales else next(iter(scales))
        return ultralytics_model_class(tasks, data)(data, ch=3, verbose=False)

    return build


def builder(codebase: str, module: Any, scale: Optional[str]) -> Callable[[str], Any]:
    """The codebase's ``build(cfg) -> model``."""
    return ultralytics_builder(module, scale) if codebase == ULTRALYTICS else model_class(module)


# --------------------------------------------------------------------------------------------
# Row arguments that parse_model would silently keep as strings

# Strings a model YAML passes on purpose, which parse_model's eval fails on and keeps: nn.Upsample's modes.
KEPT_STRINGS = frozenset({"nearest", "linear", "bilinear", "bicubic", "trilinear", "area", "nearest-exact"})
_YAML_STR = "tag:yaml.org,2002:str"


class ArgumentError(Exception):
    """Rows of a model YAML whose module or string arguments parse_model cannot evaluate: ``problems`` holds
    one ``{"line", "row", "message"}`` each; the exception's text is the first one, ``line N: message``."""

    def __init__(self, problems: List[Dict[str, Any]]) -> None:
        super().__init__(f"line {problems[0]['line']}: {problems[0]['message']}")
        self.problems = problems


def argument_problems(text: str, module: Any, codebase: str = YOLOV5) -> List[Dict[str, Any]]:
    """The YAML rows whose string arguments (or module name) the codebase's parse_model cannot evaluate
    (Ultralytics: ``_UltralyticsScope``, the rows of yolopatch's modules only).

    parse_model evaluates every string argument with ``eval(a)`` in its own frame (yolo.py's globals and its
    locals: nc, anchors, gd, gw, ...) and keeps the string when that fails: YOLOv7 (and YOLOv5 5.0) with a
    bare ``except: pass``, YOLOv5 6.0 to 7.0 and master for a NameError. A misspelt name (``redution``,
    ``anchor``) then reaches the module as a string and fails far away or builds a wrong model. Here a string
    argument must evaluate there, or be one of ``KEPT_STRINGS``; one that names a parse_model local whose
    value is only known during the build (``ch``, ``c2``) is not evaluated. Module names are left to the
    build (parse_model's ``eval(m)`` is not guarded: a misspelt one fails loudly there), and so is a YAML
    that does not parse."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        return []
    sections = {key.value: value for key, value in root.value if isinstance(key, yaml.ScalarNode)}
    scope: Any = _UltralyticsScope(module) if codebase == ULTRALYTICS else _ParseModelScope(module, data)
    problems: List[Dict[str, Any]] = []
    rows = [row for name in ("backbone", "head") if isinstance(sections.get(name), yaml.SequenceNode)
            for row in sections[name].value]
    for index, row in enumerate(rows):
        if not isinstance(row, yaml.SequenceNode) or len(row.value) < 4:
            continue
        kind = row.value[2]
        name = kind.value if isinstance(kind, yaml.ScalarNode) else "?"
        if not scope.checks_row(name):
            continue
        arguments = row.value[3]
        for node in arguments.value if isinstance(arguments, yaml.SequenceNode) else []:
            if not isinstance(node, yaml.ScalarNode) or node.tag != _YAML_STR or node.value in KEPT_STRINGS:
                continue
            why = scope.why_not(node.value)
            if why is not None:
                problems.append({"line": node.start_mark.line + 1, "row": index,
                                 "message": f"row {index} ({name}): argument {node.value!r} {why}"})
    return problems


class _ParseModelScope:
    """What ``eval`` sees inside parse_model: yolo.py's globals, builtins, and the function's locals (the ones
    read from the YAML with their values: nc, anchors, gd, gw, na, no, act, ch_mul; the others by name)."""

    def __init__(self, module: Any, data: Dict[str, Any]) -> None:
        import builtins

        self.module_name = getattr(module, "__name__", "yolo.py")
        self.globals = dict(vars(module))
        self.builtins = set(dir(builtins))
        function = getattr(module, "parse_model", None)
        code = getattr(function, "__code__", None)
        self.locals = set(code.co_varnames + code.co_cellvars) if code is not None else set()
        anchors, nc = data.get("anchors"), data.get("nc")
        na = (len(anchors[0]) // 2) if isinstance(anchors, list) and anchors and isinstance(anchors[0], list) \
            else anchors
        self.known = {"nc": nc, "anchors": anchors, "gd": data.get("depth_multiple"),
                      "gw": data.get("width_multiple"), "act": data.get("activation"),
                      "ch_mul": data.get("channel_multiple"),
                      "na": na, "no": na * (nc + 5) if isinstance(na, int) and isinstance(nc, int) else None}
        self.known = {name: value for name, value in self.known.items() if name in self.locals}

    def checks_row(self, name: str) -> bool:
        return True

    def why_not(self, text: str) -> Optional[str]:
        """Why ``eval(text)`` fails inside parse_model (a phrase), or None when it works or cannot be told."""
        import ast
        import difflib

        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError:
            return "is not a Python expression (parse_model's eval fails on it)"
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        unknown = sorted(name for name in names
                         if name not in self.globals and name not in self.locals and name not in self.builtins)
        if unknown:
            candidates = [name for name in [*self.known, *self.globals, *sorted(KEPT_STRINGS)]
                          if not name.startswith("_")]
            close = difflib.get_close_matches(unknown[0], candidates, n=1)
            subject = "is" if unknown[0] == text.strip() else f"names {unknown[0]!r}, which is"
            return (f"{subject} defined neither in {self.module_name} nor in parse_model"
                    + (f" (did you mean {close[0]!r}?)" if close else "") + ": parse_model would silently keep "
                    f"the string {text!r}")
        if names & (self.locals - set(self.known)) - set(self.globals):
            return None  # a local only the build gives a value (ch, c2, ...)
        try:
            eval(compile(tree, "<yaml>", "eval"), dict(self.globals), dict(self.known))  # noqa: S307 - as parse_model
        except Exception as error:  # noqa: BLE001 - any failure is what parse_model would swallow
            return f"fails in parse_model's eval: {_last_line(error)}"
        return None


class _UltralyticsScope:
    """What Ultralytics' parse_model (8.0 to 8.4) does with a string argument: ``locals()[a]`` when it names one
    of the function's locals, else ``ast.literal_eval(a)``, keeping the string when that raises ValueError
    (a SyntaxError escapes: the build fails loudly). Its model YAMLs pass strings on purpose (TorchVision's
    ``resnet18``, ``DEFAULT``), so only rows of yolopatch's own modules, whose hyper-parameters are all
    numbers, are checked: their classes come from ``ultralytics/nn/modules/yolopatch.py``."""

    def __init__(self, module: Any) -> None:
        self.module_name = getattr(module, "__name__", "tasks.py")
        self.globals = vars(module)
        code = getattr(getattr(module, "parse_model", None), "__code__", None)
        self.locals = set(code.co_varnames + code.co_cellvars) if code is not None else set()
        self.layer: Any = None

    def checks_row(self, name: str) -> bool:
        self.layer = self.globals.get(name)
        return str(getattr(self.layer, "__module__", "")).rsplit(".", 1)[-1] == "yolopatch"

    def why_not(self, text: str) -> Optional[str]:
        import ast
        import difflib
        import inspect

        if text in self.locals:
            return None
        try:
            ast.literal_eval(text)
        except ValueError:
            try:
                parameters = [name for name in inspect.signature(self.layer).parameters if name not in ("c1", "c2")]
            except (TypeError, ValueError):
                parameters = []
            close = difflib.get_close_matches(text.strip(), [*parameters, *sorted(self.locals)], n=1)
            return ("is neither a Python literal nor a name parse_model defines"
                    + (f" (did you mean {close[0]!r}?)" if close else "")
                    + f": parse_model would silently keep the string {text!r}")
        except SyntaxError:
            return None  # parse_model's literal_eval raises it: the build reports it
        return None


def check_arguments(cfg: str, module: Any, codebase: str = YOLOV5) -> None:
    """Raise ArgumentError when ``cfg``'s rows hold arguments parse_model would silently keep as strings."""
    with open(cfg, encoding="utf-8", errors="replace") as handle:
        problems = argument_problems(handle.read(), module, codebase)
    if problems:
        raise ArgumentError(problems)


# --------------------------------------------------------------------------------------------
# Measuring one model


def shapes(value: Any) -> Any:
    """Nested list of the tensor shapes in a (nested) model output (dicts, as Ultralytics 8.4 heads
    return, keep their keys)."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return [int(size) for size in value.shape]
    if isinstance(value, (list, tuple)):
        return [shapes(item) for item in value]
    if isinstance(value, dict):
        return {str(key): shapes(item) for key, item in value.items()}
    return None


def tensors(value: Any) -> List[Any]:
    """The tensors in a (nested) model output, flattened."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return [value]
    if isinstance(value, (list, tuple)):
        return [tensor for item in value for tensor in tensors(item)]
    if isinstance(value, dict):
        return [tensor for item in value.values() for tensor in tensors(item)]
    return []


def _channels(value: Any) -> Any:
    if hasattr(value, "shape") and len(value.shape) >= 2:
        return int(value.shape[1])
    if isinstance(value, (list, tuple)):
        return [_channels(item) for item in value]
    return None


def _last_line(error: BaseException) -> str:
    """The traceback's last line, ``Type: message``, with a multi-line message joined into one line."""
    text = "".join(traceback.format_exception_only(type(error), error))
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= 500 else line[:497] + "..."


class Stage:
    """Remembers which step of the measurement is running, for the error record."""

    def __init__(self) -> None:
        self.name = "build"


def measure(torch: Any, build: Callable[[str], Any], cfg: str, img: int, stage: Stage) -> Dict[str, Any]:
    """Build ``cfg`` and measure it (see the module docstring); raises on the first failure."""
    torch.manual_seed(0)
    stage.name = "build"
    model = build(cfg)
    record: Dict[str, Any] = {"params": sum(int(p.numel()) for p in model.parameters()),
                              "model_class": type(model).__name__}
    described = getattr(model, "yaml", None)
    record["scale"] = (described.get("scale") or None) if isinstance(described, dict) else None
    stride = int(max(model.stride)) if hasattr(model, "stride") else 32
    record["stride"] = stride
    if img % stride:
        raise ValueError(f"--img {img} is not a multiple of this model's largest stride {stride}")

    stage.name = "forward"
    model.eval()
    layers = list(getattr(model, "model", []))
    inputs: Dict[int, Any] = {}
    hooks = [layer.register_forward_pre_hook(
        lambda module, args, index=index: inputs.__setitem__(index, _channels(args[0] if args else None)))
        for index, layer in enumerate(layers)]
    image = torch.randn(1, 3, img, img)
    try:
        with torch.no_grad():
            flops, output = count_flops(torch, model, image)
    finally:
        for hook in hooks:
            hook.remove()
    record["flops"] = flops
    record["gflops"] = None if flops is None else flops / 1e9
    record["output_shapes"] = shapes(output)
    record["layers"] = [{
        "index": index,
        "from": getattr(layer, "f", None),
        "type": str(getattr(layer, "type", type(layer).__name__)),
        "class": type(layer).__name__,
        "params": sum(int(p.numel()) for p in layer.parameters()),
        "in_channels": inputs.get(index),
    } for index, layer in enumerate(layers)]

    stage.name = "backward"
    labels_only = _label_only_prefix(layers)
    model.train(labels_only is None)
    model.zero_grad(set_to_none=True)
    record["backward_img"] = size = min(img, backward_size(stride))
    record["backward_mode"] = "train" if labels_only is None else "eval"
    output = model(torch.randn(2, 3, size, size))
    loss = sum(tensor.float().mean() for tensor in tensors(output))
    loss.backward()
    record["backward_ok"] = True
    missing = [name for name, parameter in model.named_parameters()
               if parameter.requires_grad and parameter.grad is None]
    record["params_unchecked"] = [name for name in missing if labels_only and name.startswith(labels_only)]
    record["params_without_grad"] = [name for name in missing if name not in record["params_unchecked"]]
    return record


def _label_only_prefix(layers: Sequence[Any]) -> Optional[str]:
    """``model.<i>.`` for an RT-DETR decoder (the last layer): its training forward needs labels (Ultralytics
    8.0 to 8.3), so the backward runs in eval mode, which leaves the decoder's label-only parameters (the
    denoising embedding, the intermediate score heads) without gradients. None for every other model."""
    if layers and type(layers[-1]).__name__ == "RTDETRDecoder":
        return f"model.{len(layers) - 1}."
    return None


def backward_size(stride: int) -> int:
    """Image size of the backward check: 4x the largest stride (128 for P5 models, 256 for P6).

    Whether every parameter gets a gradient does not depend on the image size, and a batch-2
    backward at 640 costs many seconds per model on a CPU; the smallest map is still 4x4.
    """
    return 4 * stride


def count_flops(torch: Any, model: Any, image: Any) -> Tuple[Optional[int], Any]:
    """One forward: its FLOPs (2 per multiply-add; None when torch has no FlopCounterMode, < 2.1)
    and its output."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None, model(image)
    counter = FlopCounterMode(display=False)
    with counter:
        output = model(image)
    return int(counter.get_total_flops()), output


def alternating_times(torch: Any, models: Sequence[Any], image: Any, runs: int, warmup: int) -> List[List[float]]:
    """Milliseconds of ``runs`` eval forwards of each model, after ``warmup`` untimed ones each.

    Round r times the models in order, round r + 1 in reverse order (ABBA...): a slow stretch of
    the machine falls on all of them, and none always runs right after another.
    """
    times: List[List[float]] = [[] for _ in models]
    with torch.no_grad():
        for _ in range(warmup):
            for model in models:
                model(image)
        for round_ in range(runs):
            order = list(range(len(models)))
            for index in (order if round_ % 2 == 0 else order[::-1]):
                start = time.perf_counter()
                models[index](image)
                times[index].append((time.perf_counter() - start) * 1000.0)
    return times


def latency_groups(cfgs: Sequence[str], pairs: Sequence[Sequence[str]]) -> List[Tuple[str, List[str]]]:
    """(base, [its variants]) for every base of ``pairs``, then (cfg, []) for every other CFG."""
    groups: Dict[str, List[str]] = {}
    paired = set()
    for base, variant in pairs:
        groups.setdefault(base, []).append(variant)
        paired.update((base, variant))
    return list(groups.items()) + [(cfg, []) for cfg in cfgs if cfg not in paired]


def time_models(torch: Any, build: Callable[[str], Any], cfgs: Sequence[str], pairs: Sequence[Sequence[str]],
                img: int, runs: int, warmup: int, failed: Sequence[str], records: "Records") -> None:
    """The latency phase: one ``latency`` record per variant (with its base's times from the same
    rounds), per base (all its rounds) and per other CFG. Models that failed earlier are skipped."""
    torch.manual_seed(0)
    image = torch.randn(1, 3, img, img)
    for base_cfg, variant_cfgs in latency_groups(cfgs, pairs):
        if base_cfg in failed:
            continue
        try:
            base = _eval_model(build, base_cfg)
            base_ms: List[float] = []
            for variant_cfg in variant_cfgs:
                if variant_cfg in failed:
                    continue
                variant = _eval_model(build, variant_cfg)
                mine, theirs = alternating_times(torch, [variant, base], image, runs, warmup)
                base_ms += theirs
                records.write({"kind": "latency", "cfg": variant_cfg, "ms": mine, "base": base_cfg,
                               "base_ms": theirs})
                del variant
                gc.collect()
            if not base_ms:  # no variants, or all of them failed: the base alone
                base_ms = alternating_times(torch, [base], image, runs, warmup)[0]
            records.write({"kind": "latency", "cfg": base_cfg, "ms": base_ms})
            del base
            gc.collect()
        except (Exception, SystemExit) as error:  # noqa: BLE001 - built fine before; report, go on
            records.write({"kind": "latency", "cfg": base_cfg, "ms": [], "error": _last_line(error)})


def _eval_model(build: Callable[[str], Any], cfg: str) -> Any:
    model = build(cfg)
    model.eval()
    return model


# --------------------------------------------------------------------------------------------
# Main


class Records:
    """Writes JSON-lines records to a file or to the real stdout, one flushed line each."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, record: Dict[str, Any]) -> None:
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the folder to put first on sys.path")
    parser.add_argument("--module", required=True, help="dotted name of the module that builds models")
    parser.add_argument("--codebase", choices=(YOLOV5, ULTRALYTICS), default=YOLOV5,
                        help="how a CFG becomes a model (see the module docstring)")
    parser.add_argument("--scale", help="Ultralytics: the scale of CFGs whose file name has none (default: n, "
                                        "or the model's first scale where it has no n)")
    parser.add_argument("--img", type=int, default=640, help="image size for FLOPs, latency and backward")
    parser.add_argument("--runs", type=int, default=7, help="timed eval forwards per model (0: no timing)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed eval forwards per model before timing")
    parser.add_argument("--pair", nargs=2, action="append", default=[], metavar=("BASE", "VARIANT"),
                        help="time VARIANT against BASE in alternating rounds (both must be among the CFGs)")
    parser.add_argument("--out", help="write the JSON-lines records here instead of stdout")
    parser.add_argument("cfgs", nargs="+", help="model YAMLs")
    return parser.parse_args(argv)


def _redirect_stdout_to_stderr() -> IO[str]:
    """Point fd 1 at stderr (YOLOv5's prints go there); return a stream on the original stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(saved, "w", encoding="utf-8")


def run(args: argparse.Namespace, records: Records) -> int:
    try:
        import torch
    except Exception as error:  # noqa: BLE001 - reported as a record, like any import failure
        records.write(_fatal(error, args.root))
        return 1
    stubbed = stub_hub_sdk(args.root) if args.codebase == ULTRALYTICS else []
    try:
        module = import_tree(args.root, args.module)
        build = builder(args.codebase, module, args.scale)
    except (Exception, SystemExit) as error:  # noqa: BLE001 - YOLOv5's checks may sys.exit()
        records.write(_fatal(error, args.root))
        return 1
    flop_counter = True
    try:
        from torch.utils.flop_counter import FlopCounterMode  # noqa: F401
    except ImportError:
        flop_counter = False
    records.write({"kind": "env", "python": sys.version.split()[0], "executable": sys.executable,
                   "torch": torch.__version__, "codebase": args.codebase, "version": _version(args.codebase),
                   "stubbed": stubbed, "module_file": module.__file__, "flop_counter": flop_counter,
                   "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                   "network_attempts": _take_attempts()})
    failed = []
    def check(cfg: str) -> None:
        check_arguments(cfg, module, args.codebase)

    for cfg in args.cfgs:
        record = _one(torch, build, cfg, args.img, check)
        gc.collect()  # free the last model (and its gradients) before building the next
        records.write(record)
        if record["error"] is not None:
            failed.append(cfg)
    if args.runs > 0:
        time_models(torch, build, args.cfgs, args.pair, args.img, args.runs, args.warmup, failed, records)
    records.write({"kind": "done", "failed": len(failed)})
    return 1 if failed else 0


def _one(torch: Any, build: Callable[..., Any], cfg: str, img: int,
         check: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """``check``: run on ``cfg`` before building it (``check_arguments``)."""
    stage = Stage()
    start = time.perf_counter()
    record: Dict[str, Any] = {"kind": "result", "cfg": cfg}
    try:
        if check is not None:
            stage.name = "arguments"
            check(cfg)
        record.update(measure(torch, build, cfg, img, stage))
        record["error"] = None
    except ArgumentError as error:  # the YAML's own fault, with its lines: no traceback
        record.update(error=str(error), stage=stage.name, argument_problems=error.problems, backward_ok=False)
    except (Exception, SystemExit) as error:  # noqa: BLE001 - every failure becomes a record
        record.update(error=_last_line(error), stage=stage.name, traceback=traceback.format_exc())
        record.setdefault("backward_ok", False)
        traceback.print_exc()
    record["seconds"] = round(time.perf_counter() - start, 3)
    record["network_attempts"] = _take_attempts()
    return record


def _version(codebase: str) -> Optional[str]:
    """The imported ultralytics package's ``__version__`` (None for YOLOv5, whose trees have none)."""
    package = sys.modules.get(ULTRALYTICS) if codebase == ULTRALYTICS else None
    return getattr(package, "__version__", None)


def _take_attempts() -> List[str]:
    taken = list(network_attempts)
    network_attempts.clear()
    return taken


def _fatal(error: BaseException, root: str) -> Dict[str, Any]:
    """The record for a tree that cannot be imported; ``missing_module`` names a missing dependency
    (not one of the tree's own packages, such as a mistyped ``models.commn``)."""
    missing = None
    if isinstance(error, ModuleNotFoundError) and error.name:
        top = error.name.split(".")[0]
        missing = None if os.path.exists(os.path.join(root, top)) else top
    traceback.print_exc()
    return {"kind": "fatal", "error": _last_line(error), "missing_module": missing,
            "pip_name": pip_name(missing) if missing else None, "python": sys.version.split()[0],
            "executable": sys.executable, "traceback": traceback.format_exc(),
            "network_attempts": _take_attempts()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse(argv)
    stdout = _redirect_stdout_to_stderr()
    stream: IO[str] = open(args.out, "a", encoding="utf-8") if args.out else stdout
    config_dir = tempfile.mkdtemp(prefix="yolopatch-verify-")
    stage_font(config_dir)
    os.environ.update(offline_environment(config_dir))
    for name in PROXY_VARIABLES:  # requests would send everything to a proxy host, hiding the real one
        os.environ.pop(name, None)
    block_network()
    try:
        return run(args, Records(stream))
    finally:
        stream.flush()
        if args.out:
            stream.close()
        shutil.rmtree(config_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
