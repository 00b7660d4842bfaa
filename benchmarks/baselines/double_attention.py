"""Baseline for DoubleAttention: the widely copied DoubleAttentionLayer forward with its output conv.

Three separate 1x1 convolutions for A, B and V, ``view`` to (b, c, H*W), softmax over positions for B and
over the c_n maps for V (the copies that softmax over the batch are wrong and not timed here), ``bmm`` for
G = A Bb^T and ``matmul`` for Z = G Vb, then the 1x1 reconstruction conv back to c channels, all in the input
dtype. c_m = c_n = c // 4 as in the template's defaults. Written from the published forward, for timing only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NAME = "blog DoubleAttentionLayer (3 separate 1x1 convs, bmm, reconstruct conv), c_m = c_n = c/4"


class _DoubleAttentionLayer(nn.Module):
    def __init__(self, in_channels: int, c_m: int, c_n: int) -> None:
        super().__init__()
        self.c_m = c_m
        self.c_n = c_n
        self.convA = nn.Conv2d(in_channels, c_m, kernel_size=1)
        self.convB = nn.Conv2d(in_channels, c_n, kernel_size=1)
        self.convV = nn.Conv2d(in_channels, c_n, kernel_size=1)
        self.conv_reconstruct = nn.Conv2d(c_m, in_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.size()
        a = self.convA(x).reshape(b, self.c_m, h * w)
        attention_maps = F.softmax(self.convB(x).reshape(b, self.c_n, h * w), dim=-1)
        attention_vectors = F.softmax(self.convV(x).reshape(b, self.c_n, h * w), dim=1)
        global_descriptors = torch.bmm(a, attention_maps.permute(0, 2, 1))
        z = global_descriptors.matmul(attention_vectors).view(b, self.c_m, h, w)
        return self.conv_reconstruct(z)


def build(c: int) -> nn.Module:
    return _DoubleAttentionLayer(c, max(c // 4, 1), max(c // 4, 1))
