"""Baseline for NAM: the official Channel_Att forward (Christian-lyc/NAM), written out.

BatchNorm2d of the input, weights |gamma| / sum |gamma| from the BatchNorm weight's data, applied on a
channels-last permuted contiguous copy and permuted back (contiguous), sigmoid, times the input.
Written here from the published forward, for timing only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

NAME = "official Channel_Att forward (BatchNorm, |gamma| share applied channels-last, permute back, sigmoid)"


class _OfficialNAM(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.bn2 = nn.BatchNorm2d(c, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.bn2(x)
        weight_bn = self.bn2.weight.data.abs() / torch.sum(self.bn2.weight.data.abs())
        x = x.permute(0, 2, 3, 1).contiguous()
        x = torch.mul(weight_bn, x)
        x = x.permute(0, 3, 1, 2).contiguous()
        return torch.sigmoid(x) * residual


def build(c: int) -> nn.Module:
    return _OfficialNAM(c)
