"""Baseline for GAM: the blog's GAM_Attention form (permute + nn.Linear channel MLP), fixed to be correct.

Channel MLP as nn.Linear on the (b, H*W, C) permuted tensor, spatial branch as two 7x7 Conv2d (with bias)
+ BatchNorm2d, plain (group=False) convolutions, rate 4. The blog's defects are fixed: the channel map now
goes through a sigmoid, the undefined ``channel_shuffle`` is dropped and the output width is c. Written
from the published forward, for timing only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

NAME = "blog GAM_Attention, fixed (permute + nn.Linear MLP with sigmoid, 7x7 convs with bias), rate 4"


class _GAMAttention(nn.Module):
    def __init__(self, c: int, rate: int = 4) -> None:
        super().__init__()
        mid = max(c // rate, 1)
        self.channel_attention = nn.Sequential(nn.Linear(c, mid), nn.ReLU(inplace=True), nn.Linear(mid, c))
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(c, mid, kernel_size=7, padding=3),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, c, kernel_size=7, padding=3),
            nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x_permute = x.permute(0, 2, 3, 1).reshape(b, -1, c)
        channel = self.channel_attention(x_permute).view(b, h, w, c).permute(0, 3, 1, 2)
        x = x * channel.sigmoid()
        return x * self.spatial_attention(x).sigmoid()


def build(c: int) -> nn.Module:
    return _GAMAttention(c)
