"""Baseline for LSKBlock: the official LSKblock forward (zcablii/LSKNet), written out the same way.

Depthwise 5x5, depthwise 7x7 dilation 3, two 1x1 projections to C/2, concatenation, channel mean and
torch.max, a 2->2 7x7 convolution with sigmoid, the per-position mix and a 1x1 back to C multiplying the
input. Written here from the published forward, for timing only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

NAME = "official LSKblock forward (cat, mean + torch.max over channels, 7x7 squeeze, sig[:, i] mix)"


class _OfficialLSKblock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, stride=1, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim // 2, 1)
        self.conv2 = nn.Conv2d(dim, dim // 2, 1)
        self.conv_squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.conv = nn.Conv2d(dim // 2, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn1 = self.conv0(x)
        attn2 = self.conv_spatial(attn1)
        attn1 = self.conv1(attn1)
        attn2 = self.conv2(attn2)
        attn = torch.cat([attn1, attn2], dim=1)
        avg_attn = torch.mean(attn, dim=1, keepdim=True)
        max_attn, _ = torch.max(attn, dim=1, keepdim=True)
        agg = torch.cat([avg_attn, max_attn], dim=1)
        sig = self.conv_squeeze(agg).sigmoid()
        attn = attn1 * sig[:, 0, :, :].unsqueeze(1) + attn2 * sig[:, 1, :, :].unsqueeze(1)
        attn = self.conv(attn)
        return x * attn


def build(c: int) -> nn.Module:
    return _OfficialLSKblock(c)
