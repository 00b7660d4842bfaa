"""Baseline for SpatialGroupEnhance: the official SGE forward (implus/PytorchInsight), transcribed.

The official structure: ``view`` to (b * G, C/G, H, W), AdaptiveAvgPool2d, product, channel sum, then the
similarity map is centred and divided by ``std (unbiased) + 1e-5`` and scaled/shifted per group before the
sigmoid. Only change: ``reshape`` instead of the first ``view`` so that a channels_last input does not
crash the timing run. Groups = gcd(c, 64), the template's default rule, so both run the same G.
Written here from the published forward, for timing only.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

NAME = "official SGE forward (view to b*G, avg-pool, unbiased std + 1e-5)"


class _OfficialSGE(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))
        self.sig = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        x = x.reshape(b * self.groups, -1, h, w)
        xn = (x * self.avg_pool(x)).sum(dim=1, keepdim=True)
        t = xn.view(b * self.groups, -1)
        t = t - t.mean(dim=1, keepdim=True)
        t = t / (t.std(dim=1, keepdim=True) + 1e-5)
        t = t.view(b, self.groups, h, w) * self.weight + self.bias
        x = x * self.sig(t.view(b * self.groups, 1, h, w))
        return x.view(b, c, h, w)


def build(c: int) -> nn.Module:
    return _OfficialSGE(math.gcd(c, 64))
