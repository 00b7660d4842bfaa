"""Baseline for EMA: the official forward (YOLOonMe/EMA-attention-module), written out the same way.

Groups of the input reshaped to (b * G, C/G, H, W); AdaptiveAvgPool2d((None, 1)) and ((1, None)) for the
directional poolings, concatenation along H, one 1x1 convolution, split at H, two sigmoid gates,
GroupNorm, a 3x3 convolution, AdaptiveAvgPool2d(1) + softmax descriptors and two matmuls for the
cross-spatial weights. G = gcd(c, 32) (the template's default rule; 32 at every benchmark width, the
official factor). Written here from the published forward, for timing only.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

NAME = "official EMA forward (reshape to b*G, adaptive pools, cat+split 1x1, GroupNorm, matmuls), factor 32"


class _OfficialEMA(nn.Module):
    def __init__(self, c: int, groups: int) -> None:
        super().__init__()
        self.groups = groups
        per = c // groups
        self.softmax = nn.Softmax(-1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.gn = nn.GroupNorm(per, per)
        self.conv1x1 = nn.Conv2d(per, per, kernel_size=1)
        self.conv3x3 = nn.Conv2d(per, per, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        g = x.reshape(b * self.groups, -1, h, w)
        x_h = self.pool_h(g)
        x_w = self.pool_w(g).permute(0, 1, 3, 2)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(g * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
        x2 = self.conv3x3(g)
        x11 = self.softmax(self.agp(x1).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x12 = x2.reshape(b * self.groups, c // self.groups, -1)
        x21 = self.softmax(self.agp(x2).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x22 = x1.reshape(b * self.groups, c // self.groups, -1)
        weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * self.groups, 1, h, w)
        return (g * weights.sigmoid()).reshape(b, c, h, w)


def build(c: int) -> nn.Module:
    return _OfficialEMA(c, math.gcd(c, 32))
