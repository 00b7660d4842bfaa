"""Baseline for LSKA: the official ``LSKA`` unit (models/van.py of the LSKA repository), k_size 23.

Four depth-wise convolutions 1x5, 5x1, 1x7 (dilation 3), 7x1 (dilation 3) and a 1x1 convolution, all with
bias, applied to the input after ``u = x.clone()``; output ``u * attn``. Written from the published
forward (same ops, same order), for timing only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

NAME = "official LSKA unit (clone, 4 depth-wise convs 1x5/5x1/1x7 d3/7x1 d3, 1x1 conv), k_size 23"


class _LSKA(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0h = nn.Conv2d(dim, dim, kernel_size=(1, 5), stride=(1, 1), padding=(0, 2), groups=dim)
        self.conv0v = nn.Conv2d(dim, dim, kernel_size=(5, 1), stride=(1, 1), padding=(2, 0), groups=dim)
        self.conv_spatial_h = nn.Conv2d(dim, dim, kernel_size=(1, 7), stride=(1, 1), padding=(0, 9), groups=dim,
                                        dilation=3)
        self.conv_spatial_v = nn.Conv2d(dim, dim, kernel_size=(7, 1), stride=(1, 1), padding=(9, 0), groups=dim,
                                        dilation=3)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.clone()
        attn = self.conv0h(x)
        attn = self.conv0v(attn)
        attn = self.conv_spatial_h(attn)
        attn = self.conv_spatial_v(attn)
        attn = self.conv1(attn)
        return u * attn


def build(c: int) -> nn.Module:
    return _LSKA(c)
