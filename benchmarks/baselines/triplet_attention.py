"""Baseline for TripletAttention: the official forward (landskape-ai/triplet-attention), written out.

Three AttentionGates (Z-pool max(dim)[0] and mean over dim 1, 7x7 conv 2 -> 1 without bias, BatchNorm
eps 1e-5 momentum 0.01, in-place sigmoid, times the gate's input); two of them on permuted contiguous
copies of the input, permuted back and made contiguous; the three gated maps averaged with 1/3.
Written here from the published forward, for timing only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

NAME = "official TripletAttention forward (three permuted contiguous copies, gate each, permute back, average)"


class _OfficialGate(nn.Module):
    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid_(self.bn(self.conv(pooled)))


class _OfficialTripletAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cw = _OfficialGate()
        self.hc = _OfficialGate()
        self.hw = _OfficialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_cw = self.cw(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3).contiguous()
        out_hc = self.hc(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1).contiguous()
        out_hw = self.hw(x)
        return 1 / 3 * (out_hw + out_cw + out_hc)


def build(c: int) -> nn.Module:
    return _OfficialTripletAttention()
