"""Which ``ultralytics`` package an interpreter actually imports, found without importing it (no torch).

The most common "KeyError: 'SOCA'" after patching a checkout: the interpreter imports another copy (a
``pip install ultralytics`` in site-packages) and never sees the patched tree. ``lookup`` asks the chosen
interpreter, in a subprocess, what ``importlib.util.find_spec`` resolves the name to, the way a script run
from anywhere else would: the probe drops its own ``sys.path[0]`` (the working folder of ``python -c``),
keeps PYTHONPATH, site-packages and editable-install finders, and executes nothing of the package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from yolopatch.errors import YolopatchError

TIMEOUT_S = 30.0

# Runs in the user's interpreter (any Python 3): only the standard library, no import of the package.
_PROBE = r"""
import json, sys
if sys.path and not getattr(sys.flags, "safe_path", False):
    del sys.path[0]
try:
    import importlib.util as u
    spec = u.find_spec(sys.argv[1])
except Exception as error:
    print(json.dumps({"error": "%s: %s" % (type(error).__name__, error)}))
    raise SystemExit(0)
where = None
if spec is not None:
    if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
        where = spec.origin
    elif spec.submodule_search_locations:
        where = list(spec.submodule_search_locations)[0]
print(json.dumps({"found": spec is not None, "where": where, "executable": sys.executable}))
"""


@dataclass(frozen=True)
class PackageLookup:
    """What ``import <package>`` gives in ``python``: ``package_dir`` (the package folder) or None when the
    interpreter cannot import it at all."""

    python: str
    package: str
    package_dir: Optional[Path]

    def is_at(self, folder: Path) -> bool:
        """Whether the import resolves to the package folder ``folder`` (links resolved)."""
        return self.package_dir is not None and _same(self.package_dir, folder)

    def to_json(self, folder: Path) -> Dict[str, Any]:
        return {"python": self.python, self.package: str(self.package_dir) if self.package_dir else None,
                "is_this_tree": self.is_at(folder)}


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def lookup(package: str = "ultralytics", python: Optional[str] = None) -> PackageLookup:
    """Ask ``python`` (default: this interpreter) where ``import package`` comes from; raises
    ``YolopatchError`` (exit 2) when the interpreter cannot run."""
    interpreter = python or sys.executable
    env = {key: value for key, value in os.environ.items() if key != "PYTHONSTARTUP"}
    try:
        result = subprocess.run([interpreter, "-c", _PROBE, package], capture_output=True, text=True,
                                timeout=TIMEOUT_S, env=env)
    except (OSError, subprocess.SubprocessError) as error:
        raise YolopatchError(f"cannot run the interpreter {interpreter}: {error}", exit_code=2,
                             hint="pass --python PATH to the Python you run Ultralytics with") from error
    answer = _answer(result.stdout)
    if result.returncode != 0 or answer is None or "error" in answer:
        detail = (answer or {}).get("error") or (result.stderr.strip().splitlines() or ["no answer"])[-1]
        raise YolopatchError(f"cannot ask {interpreter} where it imports {package} from: {detail}", exit_code=2,
                             hint="pass --python PATH to the Python you run Ultralytics with")
    return PackageLookup(interpreter, package, _package_dir(answer.get("where")))


def _answer(stdout: str) -> Optional[Dict[str, Any]]:
    lines = stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _package_dir(where: Optional[str]) -> Optional[Path]:
    """The package folder from a spec's origin (``.../ultralytics/__init__.py``) or search location."""
    if not where:
        return None
    path = Path(where)
    return path.parent if path.name.startswith("__init__.") else path
