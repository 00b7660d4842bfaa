"""`yolopatch demo`: the main job in one command.

1. get a YOLOv5 tree at DEST (``yolopatch clone``, auto source), or reuse the tree already there after
   reverting what yolopatch put into it, so that every run starts from the same tree;
2. apply every module of the catalogue (classes into models/common.py, branches into parse_model, one
   variant YAML per module next to yolov5s.yaml);
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
from yolopatch.commands.clone import LATEST_TAG, clone, tree_at
from yolopatch.errors import UsageError, YolopatchError

STEPS = 3
# Timed forwards per model in the demo's verify step (`yolopatch verify` takes 7): with every module of
# the catalogue that is over twenty variants, each timed alternating with its base, and the demo is the
# first thing a newcomer runs. Deltas inside the noise are marked as such all the same.
DEMO_RUNS = 3
Step = Tuple[str, Callable[[], int]]


def demo(dest: Path, ref: str = LATEST_TAG, source: str = "auto", img: int = 640,
         python: Optional[str] = None, runs: int = DEMO_RUNS) -> int:
    """Run the three steps; the exit code of the first step that fails, else verify's."""
    if img < 32 or img % 32:  # verify's rule, checked before anything is cloned or applied
        raise UsageError(f"--img {img} is not a positive multiple of 32 (YOLOv5's stride)",
                         hint="use e.g. 640 (the default) or 320")
    started = time.perf_counter()
    for number, (title, action) in enumerate(_steps(dest, ref, source, img, python, runs), start=1):
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
                    f" ({time.perf_counter() - started:.0f} s in all).")
    _revert_hint(dest)
    return 0


def _steps(dest: Path, ref: str, source: str, img: int, python: Optional[str], runs: int) -> List[Step]:
    from yolopatch.commands.apply import apply
    from yolopatch.commands.verify import verify

    def get_tree() -> int:
        if tree_at(dest) is None:
            return clone(dest, ref=ref, source=source)
        return _reuse(dest)

    return [
        ("get a YOLOv5 tree", get_tree),
        (f"apply all {_module_count()} modules and write their variants", lambda: apply(dest, ["all"])),
        (f"verify the base model and every variant (image size {img})",
         lambda: verify(dest, python=python, img=img, runs=runs)),
    ]


def _module_count() -> int:
    from yolopatch import catalog

    return len(catalog.all_modules())


def _reuse(dest: Path) -> int:
    """An existing tree: take out what yolopatch put in, so the demo starts from the same place."""
    from yolopatch.commands.revert import revert

    ui.done(f"{dest} is already a YOLOv5 tree: reusing it; reverting earlier yolopatch changes first")
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

