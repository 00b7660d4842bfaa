"""Baseline for CBAM: the official CBAM forward (Jongchan/attention-module), transcribed.

Channel gate: F.avg_pool2d and F.max_pool2d with a kernel of the whole map, flatten, one shared
Linear(c, c/16) + ReLU + Linear(c/16, c) MLP applied to each, summed, sigmoid, unsqueeze + expand_as,
multiply. Spatial gate: channel max and channel mean stacked, 7x7 Conv2d (2 -> 1, no bias) + BatchNorm2d
(eps 1e-5, momentum 0.01), sigmoid, multiply. Written here from the published forward, for timing only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NAME = "official CBAM forward (full-size avg/max pool2d, shared MLP, channel max+mean, 7x7 conv+BN), r 16"


class _OfficialCBAM(nn.Module):
    def __init__(self, c: int, reduction: int = 16) -> None:
        super().__init__()
        mid = max(c // reduction, 1)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(c, mid), nn.ReLU(), nn.Linear(mid, c))
        self.conv = nn.Conv2d(2, 1, kernel_size=7, stride=1, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.size(2), x.size(3))
        avg = self.mlp(F.avg_pool2d(x, size, stride=size))
        peak = self.mlp(F.max_pool2d(x, size, stride=size))
        x = x * torch.sigmoid(avg + peak).unsqueeze(2).unsqueeze(3).expand_as(x)
        compressed = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.bn(self.conv(compressed)))


def build(c: int) -> nn.Module:
    return _OfficialCBAM(c)
