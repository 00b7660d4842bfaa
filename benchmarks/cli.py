"""CLI speed: `list`, `check`, `apply all` / `revert` wall time on a real 7.0 tree and an Ultralytics 8.4 tree.

Targets: list under 0.3 s outside a tree and 0.4 s inside one, check under 0.4 s on a patched tree,
apply all and revert under 1.5 s (YOLOv5 7.0 and Ultralytics 8.4), one Ultralytics module under 1.0 s, on the
2-core machine.
Each command runs as a fresh process (what a user types), several times; the table shows the median
and the best wall time, and the median CPU time (user + system: a steadier figure on a shared machine). The tree comes from the `yolov5` package on the package index (cached by the tests).

    python benchmarks/cli.py [--repeats 7] [--only ultralytics]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import ultralytics_trees, yolov5_trees  # noqa: E402

TARGETS = {"list": 0.3, "list (in a 7.0 tree)": 0.4, "check (7.0 tree, all applied)": 0.4, "apply all": 1.5,
           "apply all (ultralytics 8.4)": 1.5, "apply soca (ultralytics 8.4)": 1.0,
           "revert (ultralytics 8.4, all applied)": 1.5, "revert soca (ultralytics 8.4)": 1.0}


def wall(command: Sequence[str], cwd: Path) -> float:
    return timed(command, cwd)[0]


def timed(command: Sequence[str], cwd: Path) -> Tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one run; CPU time moves less than wall time when other
    processes share the cores."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", default="", help="run only the commands whose name contains this text")
    args = parser.parse_args(argv)
    yolopatch = [sys.executable, "-m", "yolopatch"]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        outside = Path(scratch)
        os.environ["YOLOPATCH_CACHE_DIR"] = str(outside / "check-cache")  # check's cache of clean results: a fresh one
        tree = yolov5_trees.make_tree("7.0", "checkout", outside / "yolov5")
        ultralytics = ultralytics_trees.make_tree("8.4.190", outside / "ultralytics")
        cases = {
            "list": (yolopatch + ["list"], outside, None),
            "list (in a 7.0 tree)": (yolopatch + ["list"], tree, None),
            "list --json (in a 7.0 tree)": (yolopatch + ["list", "--json"], tree, None),
            "check (7.0 tree, all applied)": (yolopatch + ["check"], tree, None),
            "check --no-cache (7.0 tree, all applied)": (yolopatch + ["check", "--no-cache"], tree, None),
            "check (ultralytics 8.4, all applied)": (yolopatch + ["check"], ultralytics, None),
            "apply all (ultralytics 8.4)": (yolopatch + ["apply", "all"], ultralytics, yolopatch + ["revert"]),
            "apply soca (ultralytics 8.4)": (yolopatch + ["apply", "soca"], ultralytics, yolopatch + ["revert"]),
            "revert (ultralytics 8.4, all applied)": (yolopatch + ["revert"], ultralytics, yolopatch + ["apply", "all"]),
            "revert soca (ultralytics 8.4)": (yolopatch + ["revert", "soca"], ultralytics, yolopatch + ["apply", "soca"]),
            "apply all": (yolopatch + ["apply", "all"], tree, yolopatch + ["revert"]),
            "apply all --no-variants": (yolopatch + ["apply", "all", "--no-variants"], tree, yolopatch + ["revert"]),
            "revert (all applied)": (yolopatch + ["revert"], tree, yolopatch + ["apply", "all"]),
        }
        for name, (command, cwd, undo) in cases.items():
            if args.only not in name:
                continue
            if name.startswith("check"):
                wall(yolopatch + ["apply", "all"], cwd)
            if name.startswith("revert"):
                wall(undo, cwd)  # type: ignore[arg-type]
            times, cpu = [], []
            for _ in range(args.repeats):
                seconds, cpu_seconds = timed(command, cwd)
                times.append(seconds)
                cpu.append(cpu_seconds)
                if undo is not None:
                    wall(undo, cwd)
            if name.startswith(("revert", "check")):
                wall(yolopatch + ["revert"], cwd)
            target = TARGETS.get(name)
            rows.append((name, statistics.median(times), min(times), statistics.median(cpu), target))
        shutil.rmtree(tree)
    print("| command | median s | best s | median CPU s | target s |")
    print("|---|---|---|---|---|")
    for name, median, best, cpu_median, target in rows:
        print(f"| yolopatch {name} | {median:.3f} | {best:.3f} | {cpu_median:.3f} | "
              f"{'< %.1f' % target if target else '-'} |")


if __name__ == "__main__":
    main(sys.argv[1:])
