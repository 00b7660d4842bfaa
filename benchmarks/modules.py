"""Forward+backward time and peak memory of each yolopatch module next to its baseline.

    python benchmarks/modules.py [--modules soca gam ...] [--repeats 5] [--batch 8]
                                 [--threads N] [--clock wall|cpu] [--shapes P3 P4 P5] [--budget S]
                                 [--cold-rss]

For every module with a baseline in benchmarks/baselines/<key_>.py (``build(c)`` and ``NAME``) the
template templates/<key_>.py is loaded by file path and its main class built with its defaults,
``Class(c)``. Shapes are yolov5s's detection levels: P3 128x80x80, P4 256x40x40, P5 512x20x20.

Every (module, shape, version) case runs in a fresh subprocess, so thread pools, allocator state and
caches of one case never help or hurt another. In it: one warm-up step, then ``--repeats`` timed
steps (fewer when the warm-up step says they would overrun ``--budget`` seconds; the table notes
it), where a step is ``y = m(x); y.backward(g)`` with x (requires_grad) and g allocated beforehand.
Peak memory: one more step under torch.profiler with profile_memory=True; the CPU allocator's
allocation and free events, summed in time order, give the largest amount of tensor memory live at
once above what existed before the step (x and g excluded; the output, x.grad and all temporaries
included). This counts exactly what torch allocates; memory a BLAS library allocates for itself is
not seen.

Peak RSS: the process's resident memory high-water mark during the warm-up (first full-size) step,
minus its resident memory just before it (Linux: VmHWM reset through /proc/self/clear_refs, read from
/proc/self/status; elsewhere ru_maxrss before/after). This is what the operating system sees: pages
the allocator touches for the first time, its freed-but-kept blocks, BLAS and OpenMP buffers. Before
it, one small step (batch 1, 8x8) has run, so that the process-wide first-use costs of the thread
pools, BLAS and the autograd engine (about 40 MB, the same for any module: a one-parameter gate
shows it) are not charged to the module; in a network a module never runs first. ``--cold-rss``
skips that step.

Timings need a quiet machine: with other processes running, each OpenMP parallel region waits for
threads the scheduler has parked, which hurts a module made of many small operations far more than
one made of a few large ones. The header prints the load average; on a busy machine
``--threads 1 --clock cpu`` measures the work itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates"
BASELINES = Path(__file__).resolve().parent / "baselines"
KNOWN_MODULES = ("soca", "sge", "double-attention", "sea-attention", "gam")  # listed first; others follow by name
SHAPES: Tuple[Tuple[str, int, int, int], ...] = (
    ("P3", 128, 80, 80),
    ("P4", 256, 40, 40),
    ("P5", 512, 20, 20),
)
VERSIONS = ("yolopatch", "baseline")


@dataclass(frozen=True)
class Measurement:
    """Median forward+backward time, runs used, peak live tensor memory and peak RSS growth of one case."""

    ms: float
    runs: int
    peak_mb: float
    rss_mb: float = float("nan")


def file_stem(key: str) -> str:
    return key.replace("-", "_")


def load_file(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_module(key: str, version: str, c: int):
    """The yolopatch module (template main class, defaults) or the baseline, at width c."""
    stem = file_stem(key)
    if version == "baseline":
        return load_file(BASELINES / f"{stem}.py", f"baseline_{stem}").build(c)
    template = load_file(TEMPLATES / f"{stem}.py", f"yolopatch_template_{stem}")
    return getattr(template, template.YOLOPATCH["class_name"])(c)


def peak_live_bytes(step: Callable[[], None]) -> int:
    """Largest sum of live CPU tensor allocations during step(), from profiler memory events."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [event for event in prof.profiler.kineto_results.events() if event.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda event: event.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def _status_kib(field: str) -> Optional[int]:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), or None where there is no such file."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_growth_bytes(step: Callable[[], None]) -> int:
    """Resident-memory high-water mark during step() minus the resident memory just before it."""
    import resource

    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")  # reset VmHWM to the current VmRSS
        before = _status_kib("VmRSS")
    except OSError:
        before = None
    if before is not None:
        step()
        after = _status_kib("VmHWM")
        if after is not None:
            return 1024 * max(after - before, 0)
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    return unit * max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, 0)


def measure(key: str, version: str, batch: int, c: int, h: int, w: int, repeats: int,
            budget_s: float, threads: int, clock_name: str, prime: bool = True) -> Measurement:
    """Run inside the worker subprocess: time and memory of one case."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    torch.manual_seed(0)
    module = build_module(key, version, c).train()
    x = torch.randn(batch, c, h, w, requires_grad=True)
    g = torch.randn(batch, c, h, w)

    def step() -> None:
        module(x).backward(g)
        x.grad = None
        module.zero_grad(set_to_none=True)

    if prime:  # process-wide first-use costs, outside the RSS measurement (see the module docstring)
        small = torch.randn(1, c, 8, 8, requires_grad=True)
        module(small).backward(torch.ones_like(small))
        module.zero_grad(set_to_none=True)
        del small
    rss: List[int] = []
    start = clock()
    rss.append(peak_rss_growth_bytes(step))  # the warm-up step
    warm_s = clock() - start
    runs = max(1, min(repeats, int(budget_s / max(warm_s, 1e-9))))
    times: List[float] = []
    for _ in range(runs):
        start = clock()
        step()
        times.append(1000.0 * (clock() - start))
    return Measurement(statistics.median(times), runs, peak_live_bytes(step) / 2 ** 20, rss[0] / 2 ** 20)


def run_case(key: str, version: str, batch: int, c: int, h: int, w: int, args: argparse.Namespace) -> Measurement:
    """One case in a fresh interpreter; raises RuntimeError with the worker's error text."""
    case = {"key": key, "version": version, "batch": batch, "c": c, "h": h, "w": w, "repeats": args.repeats,
            "budget_s": args.budget, "threads": args.threads, "clock": args.clock, "prime": not args.cold_rss}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(case)],
                          capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{key} {version} failed: {tail}")
    result = json.loads(lines[-1])
    return Measurement(result["ms"], result["runs"], result["peak_mb"], result["rss_mb"])


def missing_reason(key: str) -> Optional[str]:
    stem = file_stem(key)
    if not (BASELINES / f"{stem}.py").is_file():
        return f"benchmarks/baselines/{stem}.py not written yet"
    if not (TEMPLATES / f"{stem}.py").is_file():
        return f"templates/{stem}.py not written yet"
    return None


def discovered_modules() -> List[str]:
    """Known modules first, then any other baseline file (by its stem)."""
    stems = sorted(path.stem for path in BASELINES.glob("*.py") if not path.name.startswith("_"))
    known = {file_stem(key) for key in KNOWN_MODULES}
    return list(KNOWN_MODULES) + [stem for stem in stems if stem not in known]


def baseline_name(key: str) -> str:
    return str(getattr(load_file(BASELINES / f"{file_stem(key)}.py", "baseline_name_probe"), "NAME", "?"))


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.1f}x" if denominator > 0 else "n/a"


def table(rows: Sequence[Tuple[str, str, Dict[str, Measurement]]]) -> List[str]:
    lines = ["| module | shape | yolopatch ms | baseline ms | speed-up | yolopatch MB | baseline MB "
             "| memory ratio | yolopatch RSS MB | baseline RSS MB | RSS ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, shape, result in rows:
        ours, base = result["yolopatch"], result["baseline"]
        lines.append(f"| {key} | {shape} | {ours.ms:.1f} | {base.ms:.1f} | {ratio(base.ms, ours.ms)} "
                     f"| {ours.peak_mb:.1f} | {base.peak_mb:.1f} | {ratio(base.peak_mb, ours.peak_mb)} "
                     f"| {ours.rss_mb:.1f} | {base.rss_mb:.1f} | {ratio(base.rss_mb, ours.rss_mb)} |")
    return lines


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=None,
                        help="module keys (default: every module; soca, sge, double-attention, ...)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward+backward steps per case")
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds of timed steps per case before repeats are reduced")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads in each case (default 0: torch's default, one per core)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time; cpu: the process's CPU time, which other processes' load "
                             "disturbs less (use it with --threads 1 on a busy machine)")
    parser.add_argument("--shapes", nargs="+", default=[name for name, *_ in SHAPES],
                        choices=[name for name, *_ in SHAPES], help="levels to run")
    parser.add_argument("--cold-rss", action="store_true",
                        help="measure RSS on the process's very first step (library first-use costs included)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        case = json.loads(args.worker)
        result = measure(case["key"], case["version"], case["batch"], case["c"], case["h"], case["w"],
                         case["repeats"], case["budget_s"], case["threads"], case["clock"],
                         case.get("prime", True))
        print(json.dumps(result.__dict__))
        return 0
    import torch

    keys = [key.replace("_", "-") for key in (args.modules or discovered_modules())]
    load_before = os.getloadavg()[0]
    notes: List[str] = []
    rows: List[Tuple[str, str, Dict[str, Measurement]]] = []
    for key in keys:
        reason = missing_reason(key)
        if reason:
            notes.append(f"- {key}: skipped, {reason}")
            continue
        notes.append(f"- {key} baseline: {baseline_name(key)}")
        for name, c, h, w in SHAPES:
            if name not in args.shapes:
                continue
            shape = f"{name} {c}x{h}x{w}"
            try:
                result = {version: run_case(key, version, args.batch, c, h, w, args)
                          for version in VERSIONS}
            except RuntimeError as error:
                notes.append(f"- {key} {shape}: {error}")
                continue
            rows.append((key, shape, result))
            for version, measurement in result.items():
                if measurement.runs < args.repeats:
                    notes.append(f"- {key} {shape} {version}: median of {measurement.runs} run(s) "
                                 f"(budget {args.budget:.0f} s)")
            print(f"done: {key} {shape}", file=sys.stderr, flush=True)
    threads = args.threads if args.threads > 0 else torch.get_num_threads()
    clock = "wall-clock" if args.clock == "wall" else "process CPU"
    print(f"Forward+backward {clock} time, batch {args.batch}, median of {args.repeats} runs after one warm-up, "
          f"fresh process per case; torch {torch.__version__}, {threads} thread(s), "
          f"{os.cpu_count()} CPUs, 1-minute load average {load_before:.2f} before and "
          f"{os.getloadavg()[0]:.2f} after (other processes' load slows both columns unevenly).")
    print("Memory: peak live tensor memory (MB) during one step, from torch.profiler CPU allocator "
          "events; input and upstream gradient excluded. RSS: growth of the process's resident memory "
          f"(high-water mark) over the first full-size step, in a fresh process"
          f"{' (cold: nothing ran before it)' if args.cold_rss else ' after one small priming step'}. "
          "Speed-up and ratios = baseline / yolopatch.")
    print()
    print("\n".join(table(rows)))
    if notes:
        print()
        print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
