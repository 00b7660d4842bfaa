"""Baseline for SimAM: the official simam_module forward (ZjjConan/SimAM), written out.

n = H*W - 1 from the input size, (x - mean)^2 over the spatial axes, divided by 4 * (sum / n + lambda),
plus 0.5, through an nn.Sigmoid, times x; lambda 1e-4. Written here from the published forward, for
timing only (at H*W = 1 it divides 0 by 0, which the benchmark sizes never reach).
"""

from __future__ import annotations

import torch
import torch.nn as nn

NAME = "official simam_module forward ((x - mu)^2 / (4 (sum / (HW - 1) + 1e-4)) + 0.5, sigmoid, times x)"


class _OfficialSimAM(nn.Module):
    def __init__(self, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.activation = nn.Sigmoid()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.size()
        n = w * h - 1
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        y = d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5
        return x * self.activation(y)


def build(c: int) -> nn.Module:
    return _OfficialSimAM()
