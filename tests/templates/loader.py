"""Import a template file (templates/<key>.py) as a standalone module, the way common.py will hold it."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

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


def randomise(module: "torch.nn.Module", seed: int = 0, scale: float = 1.0,
              batchnorm_stats: bool = False) -> "torch.nn.Module":
    """Random weights (normal * ``scale``) from a seeded generator, replacing the paper inits (zero gates,
    gamma = 0) that would hide bugs; ``batchnorm_stats`` also randomises BatchNorm running statistics, so
    that eval mode is not the identity affine."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * scale)
        if batchnorm_stats:
            for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
                bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=generator))
                bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=generator) + 0.5)
    return module
