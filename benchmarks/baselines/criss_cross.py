"""Baseline for CrissCrossAttention: the official pure-PyTorch CCNet module (cc_attention/functions.py).

Permute + contiguous + view into (b*W, ., H) and (b*H, ., W) batches, two bmm for the column and row
energies, a -inf diagonal on the column energies, softmax over the concatenation, two slices, two bmm
for the aggregation, gamma * (out_H + out_W) + x; c // 8 query/key channels. The diagonal is built on
the input's device (the official ``.cuda()`` fails on CPU). Written from the published forward, for
timing only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

NAME = "official CCNet pure-PyTorch CrissCrossAttention (permute/view/bmm, -inf diagonal, cat softmax)"


class _CrissCrossAttention(nn.Module):
    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim // 8, kernel_size=1)
        self.key_conv = nn.Conv2d(in_dim, in_dim // 8, kernel_size=1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.softmax = nn.Softmax(dim=3)
        self.gamma = nn.Parameter(torch.zeros(1))

    @staticmethod
    def _inf(b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        return -torch.diag(torch.tensor(float("inf"), device=device).repeat(h), 0).unsqueeze(0).repeat(b * w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.size()
        proj_query = self.query_conv(x)
        query_h = proj_query.permute(0, 3, 1, 2).contiguous().view(b * w, -1, h).permute(0, 2, 1)
        query_w = proj_query.permute(0, 2, 1, 3).contiguous().view(b * h, -1, w).permute(0, 2, 1)
        proj_key = self.key_conv(x)
        key_h = proj_key.permute(0, 3, 1, 2).contiguous().view(b * w, -1, h)
        key_w = proj_key.permute(0, 2, 1, 3).contiguous().view(b * h, -1, w)
        proj_value = self.value_conv(x)
        value_h = proj_value.permute(0, 3, 1, 2).contiguous().view(b * w, -1, h)
        value_w = proj_value.permute(0, 2, 1, 3).contiguous().view(b * h, -1, w)
        energy_h = (torch.bmm(query_h, key_h) + self._inf(b, h, w, x.device)).view(b, w, h, h).permute(0, 2, 1, 3)
        energy_w = torch.bmm(query_w, key_w).view(b, h, w, w)
        concate = self.softmax(torch.cat([energy_h, energy_w], 3))
        att_h = concate[:, :, :, 0:h].permute(0, 2, 1, 3).contiguous().view(b * w, h, h)
        att_w = concate[:, :, :, h:h + w].contiguous().view(b * h, w, w)
        out_h = torch.bmm(value_h, att_h.permute(0, 2, 1)).view(b, w, -1, h).permute(0, 2, 3, 1)
        out_w = torch.bmm(value_w, att_w.permute(0, 2, 1)).view(b, h, -1, w).permute(0, 2, 1, 3)
        return self.gamma * (out_h + out_w) + x


def build(c: int) -> nn.Module:
    return _CrissCrossAttention(c)
