"""Baseline for SE: the official Squeeze-and-Excitation forward (hujie-frank/SENet), as PyTorch writes it.

AdaptiveAvgPool2d(1), ``view`` to (b, c), Linear(c, c/16) + ReLU + Linear(c/16, c) with biases (the Caffe
models' 1x1 convolutions have bias terms), Sigmoid, ``view`` to (b, c, 1, 1) and ``x * y.expand_as(x)``.
Written here from the published models, for timing only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

NAME = "official SE forward (AdaptiveAvgPool2d, view, Linear+ReLU+Linear with bias, sigmoid, expand_as), r 16"


class _OfficialSE(nn.Module):
    def __init__(self, c: int, reduction: int = 16) -> None:
        super().__init__()
        mid = max(c // reduction, 1)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(c, mid), nn.ReLU(inplace=True), nn.Linear(mid, c), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.size()
        y = self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)
        return x * y.expand_as(x)


def build(c: int) -> nn.Module:
    return _OfficialSE(c)
