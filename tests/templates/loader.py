"""Import a template file (templates/<key>.py) as a standalone module, the way common.py will hold it."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from types import ModuleType

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def template_path(key: str) -> Path:
    return TEMPLATES / f"{key.replace('-', '_')}.py"


@lru_cache(maxsize=None)
def load_template(key: str) -> ModuleType:
    """Import templates/<key>.py under a private name (cached: one module object per key)."""
    path = template_path(key)
    spec = importlib.util.spec_from_file_location(f"yolopatch_template_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main_class(key: str) -> type:
    module = load_template(key)
    return getattr(module, module.YOLOPATCH["class_name"])
