"""Baseline for ShuffleAttention: the official sa_layer forward (wofmanaf/SA-Net), written out.

reshape to (b * G, C/G, H, W), chunk into two halves, AdaptiveAvgPool2d + per-channel affine + sigmoid on
the first, nn.GroupNorm + per-channel affine + sigmoid on the second, cat, reshape back and a channel
shuffle with two groups (reshape, permute, reshape). G = gcd(c // 2, 64), the template's default rule,
which is the official 64 at every benchmark width (128, 256, 512). Written here from the published
forward, for timing only.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

NAME = "official sa_layer forward (reshape to b*G, avg-pool / GroupNorm halves, cat, channel shuffle)"


class _OfficialShuffleAttention(nn.Module):
    def __init__(self, c: int, groups: int) -> None:
        super().__init__()
        self.groups = groups
        k = c // (2 * groups)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.cweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sigmoid = nn.Sigmoid()
        self.gn = nn.GroupNorm(k, k)

    @staticmethod
    def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
        b, _, h, w = x.shape
        return x.reshape(b, groups, -1, h, w).permute(0, 2, 1, 3, 4).reshape(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        x = x.reshape(b * self.groups, -1, h, w)
        x_0, x_1 = x.chunk(2, dim=1)
        xn = x_0 * self.sigmoid(self.cweight * self.avg_pool(x_0) + self.cbias)
        xs = x_1 * self.sigmoid(self.sweight * self.gn(x_1) + self.sbias)
        out = torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)
        return self.shuffle(out, 2)


def build(c: int) -> nn.Module:
    return _OfficialShuffleAttention(c, math.gcd(c // 2, 64))
