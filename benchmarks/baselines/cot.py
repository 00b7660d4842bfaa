"""Baseline for CoT: the official CotLayer (JDAI-CV/CoTNet models/cotnet.py) with its local convolution on CPU.

The official aggregation is a CuPy CUDA kernel (aggregation_zeropad); on CPU its straightforward form is
im2col: F.unfold the values into (b, C, k*k, H*W), multiply by the per-position kernels repeated over the
channels that share them, and sum the k*k taps. Everything else as the official forward: key_embed
(3x3, groups 4, BN, ReLU), embed on [x, k] (1x1, BN, ReLU, 1x1, GroupNorm), conv1x1 + BN, BN + SiLU, the
radix-2 split attention with view(B, C, radix) and softmax over the radix. Written here from the published
forward, for timing only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NAME = "official CotLayer, k=3, local convolution as F.unfold (im2col) + multiply + sum over taps"


class _OfficialCotLayer(nn.Module):
    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.key_embed = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=4, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
        )
        share_planes, factor = 8, 2
        self.embed = nn.Sequential(
            nn.Conv2d(2 * dim, dim // factor, 1, bias=False),
            nn.BatchNorm2d(dim // factor),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim // factor, kernel_size ** 2 * dim // share_planes, kernel_size=1),
            nn.GroupNorm(dim // share_planes, kernel_size ** 2 * dim // share_planes),
        )
        self.conv1x1 = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))
        self.bn = nn.BatchNorm2d(dim)
        self.act = nn.SiLU(inplace=True)
        self.radix = 2
        attn_chs = max(dim * self.radix // 4, 32)
        self.se = nn.Sequential(
            nn.Conv2d(dim, attn_chs, 1),
            nn.BatchNorm2d(attn_chs),
            nn.ReLU(inplace=True),
            nn.Conv2d(attn_chs, self.radix * dim, 1),
        )

    def local_conv(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, c, h, wd = x.shape
        kk = self.kernel_size ** 2
        cols = F.unfold(x, self.kernel_size, padding=(self.kernel_size - 1) // 2).view(b, c, kk, h, wd)
        weight_channels = w.shape[2]
        w = w[:, 0].repeat(1, c // weight_channels, 1, 1, 1)  # channel c uses kernel row c % weight_channels
        return (cols * w).sum(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.key_embed(x)
        qk = torch.cat([x, k], dim=1)
        b, c, qk_hh, qk_ww = qk.size()
        w = self.embed(qk)
        w = w.view(b, 1, -1, self.kernel_size * self.kernel_size, qk_hh, qk_ww)
        x = self.conv1x1(x)
        x = self.local_conv(x, w)
        x = self.bn(x)
        x = self.act(x)
        B, C, H, W = x.shape
        x = x.view(B, C, 1, H, W)
        k = k.view(B, C, 1, H, W)
        x = torch.cat([x, k], dim=2)
        x_gap = x.sum(dim=2)
        x_gap = x_gap.mean((2, 3), keepdim=True)
        x_attn = self.se(x_gap)
        x_attn = x_attn.view(B, C, self.radix)
        x_attn = F.softmax(x_attn, dim=2)
        out = (x * x_attn.reshape((B, C, self.radix, 1, 1))).sum(dim=2)
        return out.contiguous()


def build(c: int) -> nn.Module:
    return _OfficialCotLayer(c)
