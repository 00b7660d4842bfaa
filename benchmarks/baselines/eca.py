"""Baseline for ECA: the official eca_layer forward (BangguWu/ECANet) with the paper's adaptive kernel size.

AdaptiveAvgPool2d(1), squeeze/transpose to (b, 1, c), Conv1d(1, 1, k, padding (k - 1) / 2, no bias),
transpose/unsqueeze back, Sigmoid, ``x * y.expand_as(x)``; k = |(log2 c + 1) / 2|_odd computed with
math.log as the paper's rule is usually written. Written here from the published forward, for timing only.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

NAME = "official eca_layer forward (AdaptiveAvgPool2d, Conv1d across channels, sigmoid, expand_as), adaptive k"


class _OfficialECA(nn.Module):
    def __init__(self, c: int, gamma: int = 2, b: int = 1) -> None:
        super().__init__()
        t = int(abs((math.log(c, 2) + b) / gamma))
        k = t if t % 2 else t + 1
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * self.sigmoid(y).expand_as(x)


def build(c: int) -> nn.Module:
    return _OfficialECA(c)
