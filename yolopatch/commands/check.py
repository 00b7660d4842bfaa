"""`yolopatch check`: is everything yolopatch added still present, intact and consistent? Writes nothing.

check asks the engine's own pure functions the questions a CI job cares about: would ``apply`` change
anything, would ``revert`` find what it expects (markers, digests, branches, import names), can the tree
resolve every module a model YAML names, and (Ultralytics) does the user's interpreter import this tree's
``ultralytics`` at all? The questions per codebase live in ``yolopatch.checks.yolov5`` and
``yolopatch.checks.ultralytics``; this module locates the tree, consults the cache of the last clean run
(``yolopatch.checks.cache``: a clean result replays in a fraction of the time, and any change of any input
misses), and prints.

Each problem is a ``Finding``: a stable code, the file and line, what is wrong, and the fix. Exit
codes (ruff's convention): 0 nothing drifted, 1 findings, 2 check could not run (bad options, no
tree at ``--repo``, an interpreter that cannot run, an internal error). Output formats: ``text`` (one
``path:line: code: message (fix: ...)`` line per finding and a summary), ``json`` (schema
``JSON_SCHEMA_VERSION``, see ``to_json``) and ``github`` (workflow-command annotations, see ``to_github``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterable, List, Optional

from yolopatch import ui
from yolopatch.checks.findings import (CODES, FORMATS, JSON_SCHEMA_VERSION, Context, Finding, Report, to_github,
                                       to_json, to_text)
from yolopatch.errors import UsageError, YolopatchError

__all__ = ["CODES", "FORMATS", "JSON_SCHEMA_VERSION", "Finding", "Report", "build_findings", "check", "collect",
           "to_github", "to_json", "to_text"]


def collect(tree: Any, cwd: Optional[Path] = None, python: Optional[str] = None) -> Report:
    """Every finding in ``tree`` (YOLOv5's ``Tree``, ``Yolov7Tree`` or ``UltralyticsTree``), sorted by file, line
    and code."""
    codebase = getattr(tree, "codebase", "yolov5")
    if codebase == "ultralytics":
        from yolopatch.checks import ultralytics

        return ultralytics.collect(tree, cwd, python)
    if codebase not in ("yolov5", "yolov7"):  # YOLOv7: the same two files and parse_model branch as YOLOv5
        raise UsageError(f"check supports YOLOv5, YOLOv7 and Ultralytics trees; {tree.root} is {codebase}")
    from yolopatch.checks import yolov5

    return yolov5.collect(tree, cwd)


def build_findings(tree: Any, context: Optional[Context] = None, python: Optional[str] = None) -> List[Finding]:
    """Build every generated variant (and its base) with the tree's own YOLOv5 code, through
    ``yolopatch.building.build_cfgs``: a variant that does not build, run forward and backward,
    keep its base's output shapes and match the catalogue's parameter formulas is a finding.

    A probe that cannot run at all (torch missing from the interpreter) raises: exit 2, not drift.
    """
    from yolopatch import building
    from yolopatch.variant_files import generated_variants

    if getattr(tree, "codebase", "yolov5") not in ("yolov5", "yolov7"):
        raise UsageError("check --build supports YOLOv5 and YOLOv7 trees",
                         hint=f"run `yolopatch verify --repo {tree.root}` to build Ultralytics variants")
    context = context or Context(tree, Path.cwd().resolve())
    cfgs = [variant.path for variant in generated_variants(tree)]
    if not cfgs:
        return []
    try:
        results = building.build_cfgs(tree, cfgs, python=python)
    except YolopatchError as error:
        raise YolopatchError(f"--build could not run: {error.message}", path=error.path, line=error.line,
                             hint=error.hint, exit_code=2) from error
    return [
        Finding("build-failed", result.cfg, None, f"YOLOv5 cannot use this variant: {'; '.join(result.problems)}",
                f"`{context.command('verify', context.rel(result.cfg))}` shows the measurements; "
                f"`{result.reproduce}` prints YOLOv5's traceback")
        for result in results if not result.ok and result.target.role == building.VARIANT
    ]


def _write(lines: Iterable[str]) -> None:
    stream = ui.stdout.file
    for line in lines:
        stream.write(line + "\n")
    stream.flush()


def _resolve_python(python: Optional[str]) -> Optional[str]:
    """``--python`` as a path (a name is looked up on PATH); None: this interpreter."""
    if not python:
        return None
    found = shutil.which(python) if os.sep not in python else (python if os.access(python, os.X_OK) else None)
    if found is None:
        raise UsageError(f"no Python interpreter at {python!r}", hint="pass --python PATH to an executable python")
    return found


def _locate(repo: Path, installed: bool) -> Any:
    from yolopatch.targets.locate import locate_any

    try:
        return locate_any(repo, allow_installed=installed)
    except YolopatchError as error:
        raise UsageError(error.message + (f": {error.path}" if error.path else ""), hint=error.hint) from error


def _print(report: Report, output_format: str, cwd: Path) -> int:
    findings = report.findings
    if output_format == "json":
        ui.print_json(to_json(findings, report.root, report.extra))
    elif output_format == "github":
        _write(to_github(findings, cwd))
        ui.info(report.summary())
    else:
        _write([*to_text(findings, cwd), report.summary()])
    interpreter = (report.extra or {}).get("interpreter")
    if output_format != "json" and interpreter:
        if not interpreter.get("ultralytics"):
            ui.info(f"note: {interpreter['python']} cannot import ultralytics from outside this tree; "
                    f"`pip install -e {report.root}` makes it import this one")
        elif interpreter.get("is_this_tree"):
            ui.info(f"note: `import ultralytics` in {interpreter['python']} loads this tree "
                    f"({interpreter['ultralytics']})")
    return 0 if report.ok else 1


def _cached(repo: Path, installed: bool, python: Optional[str]) -> Any:
    """(located tree, input key, remembered clean result or None); (None, None, None) without a cache."""
    from yolopatch.checks import cache

    if not cache.enabled():
        return None, None, None
    located = cache.locate_light(repo)
    if located is None:
        return None, None, None
    answer = None
    if located.codebase == "ultralytics":
        from yolopatch.targets import interpreter

        answer = str(interpreter.lookup("ultralytics", python).package_dir)
    key = cache.input_key(located, installed=installed, python=python, interpreter_answer=answer)
    return located, key, cache.load(located, key)


def _remember(located: Any, key: Optional[str], tree: Any, report: Report) -> None:
    from yolopatch.checks import cache

    if key is None or not report.ok or cache.located_of(tree) != located:
        return
    cache.store(located, key, cache.Entry(report.modules_present, report.variants, dict(report.extra or {})))


def check(repo: Path, *, build: bool = False, output_format: str = "text", installed: bool = False,
          python: Optional[str] = None, use_cache: bool = True) -> int:
    """`yolopatch check`: report drift; exit 0 (clean), 1 (findings) or 2 (check could not run).

    ``installed``: allow an installed ultralytics (site-packages); ``python``: the interpreter whose
    ``import ultralytics`` is checked (and that --build uses); ``use_cache``: replay the last clean result
    when nothing it read has changed (--build never does)."""
    if output_format not in FORMATS:
        raise UsageError(f"unknown format {output_format!r}", hint=f"choose one of: {', '.join(FORMATS)}")
    python = _resolve_python(python)
    cwd = Path.cwd().resolve()
    located = key = None
    if use_cache and not build:
        located, key, hit = _cached(repo, installed, python)
        if hit is not None:
            return _print(Report(located.root, [], hit.modules_present, hit.variants, hit.extra or None),
                          output_format, cwd)
    tree = _locate(repo, installed)
    report = collect(tree, cwd, python)
    if build and not any(f.code == "unreadable" for f in report.findings):
        findings = sorted([*report.findings, *build_findings(tree, Context(tree, cwd), python)],
                          key=Finding.sort_key)
        report = Report(report.root, findings, report.modules_present, report.variants, report.extra)
    if located is not None:
        _remember(located, key, tree, report)
    return _print(report, output_format, cwd)
