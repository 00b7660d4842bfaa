"""`yolopatch status`: the tree's codebase, layout and version, and what yolopatch applied to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from yolopatch import ui
from yolopatch.targets.locate import open_target


def collect(repo: Path, installed: bool = False) -> Dict[str, Any]:
    return open_target(repo, allow_installed=installed).status_report()


def status(repo: Path, as_json: bool = False, installed: bool = False) -> int:
    target = open_target(repo, allow_installed=installed)
    report = target.status_report()
    if as_json:
        ui.print_json(report)
    else:
        target.print_status(report)
    return 0
