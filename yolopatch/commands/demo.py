"""`yolopatch demo`: the main job in one command.

1. get a YOLOv5 tree (``--target ultralytics``: an Ultralytics one) at DEST (``yolopatch clone``, auto
   source), or reuse the tree already there after reverting what yolopatch put into it, so that every run
   starts from the same tree;
2. apply every module of the catalogue (YOLOv5: classes into models/common.py, branches into parse_model,
   one variant YAML per module next to yolov5s.yaml; Ultralytics: classes into nn/modules/yolopatch.py,
   registered in nn/modules/__init__.py and nn/tasks.py, one variant per module next to yolov8.yaml and
   yolo11.yaml);
3. verify: build the base model and every variant with the tree's own code and compare parameters,
   GFLOPs and latency;

and end on the command that takes it all out again.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from rich.markup import escape

from yolopatch import ui
from yolopatch.commands.clone import TARGETS, clone, tree_at, ultralytics_tree_at
from yolopatch.errors import UsageError, YolopatchError

STEPS = 3
# Timed forwards per model in the demo's verify step (`yolopatch verify` takes 7): with every module of
# the catalogue that is over twenty variants, each timed alternating with its base, and the demo is the
# first thing a newcomer runs. Deltas inside the noise are marked as such all the same.
DEMO_RUNS = 3
Step = Tuple[str, Callable[[], int]]
TITLES = {"yolov5": "YOLOv5", "ultralytics": "Ultralytics"}


def default_dest(target: str) -> Path:
    """Where the demo works when no --dest is given: ``yolov5-demo`` or ``ultralytics-demo``."""
    return Path(f"{target}-demo")


def demo(dest: Path, ref: Optional[str] = None, source: str = "auto", img: int = 640,
         python: Optional[str] = None, runs: int = DEMO_RUNS, target: str = "yolov5") -> int:
    """Run the three steps on a ``target`` tree (yolov5 or ultralytics; ``ref`` None: clone's default
    release); the exit code of the first step that fails, else verify's."""
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}", hint=f"choose from {', '.join(TARGETS)}")
    if img < 32 or img % 32:  # verify's rule, checked before anything is cloned or applied
        raise UsageError(f"--img {img} is not a positive multiple of 32 (the models' largest stride)",
                         hint="use e.g. 640 (the default) or 320")
    started = time.perf_counter()
    for number, (title, action) in enumerate(_steps(dest, ref, source, img, python, runs, target), start=1):
        _heading(number, title)
        step_started = time.perf_counter()
        try:
            code = action()
        except YolopatchError:
            if number > 1:
                _revert_hint(dest)
            raise
        if code:
            ui.error(f"step {number} ({title}) failed with exit code {code}; stopping here")
            if number > 1:
                _revert_hint(dest)
            return code
        ui.stdout.print(f"[dim]step {number} took {time.perf_counter() - step_started:.1f} s[/dim]")
    ui.stdout.print()
    ui.stdout.rule("[bold green]Done[/bold green]", align="left")
    ui.stdout.print(f"All {_module_count()} modules are in {escape(str(dest))}, with one variant YAML each"
                    f"{_variant_bases(dest, target)} ({time.perf_counter() - started:.0f} s in all).")
    _revert_hint(dest)
    return 0


def _steps(dest: Path, ref: Optional[str], source: str, img: int, python: Optional[str], runs: int,
           target: str) -> List[Step]:
    from yolopatch.commands.apply import apply
    from yolopatch.commands.verify import verify

    find = ultralytics_tree_at if target == "ultralytics" else tree_at

    def get_tree() -> int:
        if find(dest) is None:
            return clone(dest, ref=ref, source=source, target=target)
        return _reuse(dest, target)

    return [
        (f"get {_a(TITLES[target])} tree", get_tree),
        (f"apply all {_module_count()} modules and write their variants", lambda: apply(dest, ["all"])),
        (f"verify the base model{'s' if target == 'ultralytics' else ''} and every variant (image size {img})",
         lambda: verify(dest, python=python, img=img, runs=runs)),
    ]


def _module_count() -> int:
    from yolopatch import catalog

    return len(catalog.all_modules())


def _a(title: str) -> str:
    return f"an {title}" if title[0] in "AEIOU" else f"a {title}"


def _variant_bases(dest: Path, target: str) -> str:
    """`` of yolov8.yaml and yolo11.yaml`` on an Ultralytics tree (the bases its variants come from)."""
    if target != "ultralytics":
        return ""
    from yolopatch.variant_files import ultralytics_base_paths

    names = [path.name for path in ultralytics_base_paths(ultralytics_tree_at(dest), ())]
    return f" of {' and '.join(names)}" if names else ""


def _reuse(dest: Path, target: str = "yolov5") -> int:
    """An existing tree: take out what yolopatch put in, so the demo starts from the same place."""
    from yolopatch.commands.revert import revert

    ui.done(f"{dest} is already {_a(TITLES[target])} tree: reusing it; reverting earlier yolopatch changes first")
    return revert(dest, [])


def _heading(number: int, title: str) -> None:
    ui.stdout.print()
    ui.stdout.rule(f"[bold]Step {number}/{STEPS}[/bold]  {title}", align="left")


def _revert_hint(dest: Path) -> None:
    ui.stdout.print("To revert everything yolopatch changed in the tree:")
    ui.stdout.print(f"  [bold]{escape(revert_command(dest))}[/bold]")


def revert_command(dest: Path) -> str:
    """The shell command that undoes the demo's changes in ``dest``."""
    return f"yolopatch revert --repo {shlex.quote(str(dest))}"

