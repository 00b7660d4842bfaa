"""Baseline for CoordAtt: the official Coordinate Attention forward (houqb/CoordAttention), transcribed.

AdaptiveAvgPool2d((None, 1)) and ((1, None)), permute, concatenate along H, 1x1 conv + BatchNorm2d +
h_swish (x * ReLU6(x + 3) / 6), split at H and W, permute back, two 1x1 convs with sigmoid, and
``identity * a_w * a_h``. Bottleneck max(8, c // 32). Written here from the published forward, for timing only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

NAME = "official CoordAtt forward (adaptive avg pools, cat, 1x1 conv+BN+h_swish, split, two 1x1 convs), r 32"


class _OfficialCoordAtt(nn.Module):
    def __init__(self, c: int, reduction: int = 32) -> None:
        super().__init__()
        mid = max(8, c // reduction)
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.conv1 = nn.Conv2d(c, mid, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu6 = nn.ReLU6(inplace=True)
        self.conv_h = nn.Conv2d(mid, c, kernel_size=1, stride=1, padding=0)
        self.conv_w = nn.Conv2d(mid, c, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.size()
        x_h = self.pool_h(x)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)
        y = self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2)))
        y = y * self.relu6(y + 3) / 6
        x_h, x_w = torch.split(y, [h, w], dim=2)
        a_h = self.conv_h(x_h).sigmoid()
        a_w = self.conv_w(x_w.permute(0, 1, 3, 2)).sigmoid()
        return x * a_w * a_h


def build(c: int) -> nn.Module:
    return _OfficialCoordAtt(c)
