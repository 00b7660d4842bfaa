"""Run one yolopatch command in a fresh interpreter and read back which modules it imported (what keeps
`list` free of torch and `apply` on Ultralytics free of libcst's codemod package)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Set

PROBE = """
import json, runpy, sys
sys.argv = ["yolopatch", *json.loads(sys.argv[1])]
try:
    runpy.run_module("yolopatch", run_name="__main__")
except SystemExit as stop:
    code = stop.code
sys.stderr.write("IMPORTED " + json.dumps(sorted(sys.modules)) + "\\n")
"""


def run_yolopatch(args: List[str], cwd: Path, columns: int = 100) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": str(columns)}, timeout=300)


def imported(result: subprocess.CompletedProcess) -> Set[str]:
    """Every module in ``sys.modules`` when the command ended."""
    line = next(line for line in result.stderr.splitlines() if line.startswith("IMPORTED "))
    return set(json.loads(line[len("IMPORTED "):]))
