"""CLI speed: `list`, `check`, `apply all` / `revert` wall time on a real 7.0 tree and an Ultralytics 8.4 tree.

Targets: list under 0.3 s outside a tree and 0.4 s inside one, check under 0.4 s on a patched tree,
apply all under 1.5 s (YOLOv5 7.0 and Ultralytics) on the 2-core machine.
Each command runs as a fresh process (what a user types), several times; the table shows the median
and the best. The tree comes from the `yolov5` package on the package index (cached by the tests).

    python benchmarks/cli.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import ultralytics_trees, yolov5_trees  # noqa: E402

TARGETS = {"list": 0.3, "list (in a 7.0 tree)": 0.4, "check (7.0 tree, all applied)": 0.4, "apply all": 1.5,
           "apply all (ultralytics 8.4)": 1.5}


def wall(command: Sequence[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    yolopatch = [sys.executable, "-m", "yolopatch"]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        outside = Path(scratch)
        tree = yolov5_trees.make_tree("7.0", "checkout", outside / "yolov5")
        ultralytics = ultralytics_trees.make_tree("8.4.190", outside / "ultralytics")
        cases = {
            "list": (yolopatch + ["list"], outside, None),
            "list (in a 7.0 tree)": (yolopatch + ["list"], tree, None),
            "list --json (in a 7.0 tree)": (yolopatch + ["list", "--json"], tree, None),
            "check (7.0 tree, all applied)": (yolopatch + ["check"], tree, None),
            "apply all (ultralytics 8.4)": (yolopatch + ["apply", "all"], ultralytics, yolopatch + ["revert"]),
            "apply all": (yolopatch + ["apply", "all"], tree, yolopatch + ["revert"]),
            "apply all --no-variants": (yolopatch + ["apply", "all", "--no-variants"], tree, yolopatch + ["revert"]),
            "revert (all applied)": (yolopatch + ["revert"], tree, yolopatch + ["apply", "all"]),
        }
        for name, (command, cwd, undo) in cases.items():
            if name.startswith("check"):
                wall(yolopatch + ["apply", "all"], cwd)
            if name.startswith("revert"):
                wall(undo, cwd)  # type: ignore[arg-type]
            times = []
            for _ in range(args.repeats):
                times.append(wall(command, cwd))
                if undo is not None:
                    wall(undo, cwd)
            if name.startswith(("revert", "check")):
                wall(yolopatch + ["revert"], cwd)
            target = TARGETS.get(name)
            rows.append((name, statistics.median(times), min(times), target))
        shutil.rmtree(tree)
    print(f"| command | median s | best s | target s |")
    print("|---|---|---|---|")
    for name, median, best, target in rows:
        print(f"| yolopatch {name} | {median:.3f} | {best:.3f} | {'< %.1f' % target if target else '-'} |")


if __name__ == "__main__":
    main(sys.argv[1:])
