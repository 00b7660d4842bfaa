"""Baseline for SeaAttention: the official SeaFormer module structure, transcribed without mmcv.

Same layout as ``Sea_Attention`` in fudan-zvg/SeaFormer (seaformer-cls/seaformer.py): three separate
Conv2d+BN projections for q, k, v, ``torch.cat`` for the detail branch, the explicit ``(N, N)``
attention-matrix formulation with permutes on each axis, ``h_sigmoid`` as ``relu6(x + 3) / 6`` and
``nn.ReLU6(inplace=True)`` activations. Written here from the published forward, for timing only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NAME = "official SeaFormer Sea_Attention structure (3 q/k/v convs + cat, permute/matmul attention)"


class _ConvBN(nn.Sequential):
    """Conv2d(bias=False) followed by BatchNorm2d whose weight starts at ``bn_weight_init``."""

    def __init__(self, a: int, b: int, ks: int = 1, pad: int = 0, groups: int = 1,
                 bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, 1, pad, 1, groups, bias=False))
        bn = nn.BatchNorm2d(b)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0)
        self.add_module("bn", bn)


class _AxialPositionalEmbedding(nn.Module):
    """Learned (1, dim, 16) embedding, linearly interpolated to the squeezed length and added."""

    def __init__(self, dim: int, length: int = 16) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn([1, dim, length]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.interpolate(self.pos_embed, size=x.shape[-1], mode="linear", align_corners=False)


class _HSigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + 3) / 6


class SeaAttentionBaseline(nn.Module):
    """Official ``Sea_Attention`` (attn_ratio=2, ReLU6), shape-preserving on ``dim`` channels."""

    def __init__(self, dim: int, key_dim: int = 16, num_heads: int = 4, attn_ratio: float = 2) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim ** -0.5
        self.nh_kd = nh_kd = key_dim * num_heads
        self.dh = dh = int(attn_ratio * key_dim) * num_heads
        self.to_q = _ConvBN(dim, nh_kd)
        self.to_k = _ConvBN(dim, nh_kd)
        self.to_v = _ConvBN(dim, dh)
        self.proj = nn.Sequential(nn.ReLU6(inplace=True), _ConvBN(dh, dim, bn_weight_init=0))
        self.proj_encode_row = nn.Sequential(nn.ReLU6(inplace=True), _ConvBN(dh, dh, bn_weight_init=0))
        self.pos_emb_rowq = _AxialPositionalEmbedding(nh_kd)
        self.pos_emb_rowk = _AxialPositionalEmbedding(nh_kd)
        self.proj_encode_column = nn.Sequential(nn.ReLU6(inplace=True), _ConvBN(dh, dh, bn_weight_init=0))
        self.pos_emb_columnq = _AxialPositionalEmbedding(nh_kd)
        self.pos_emb_columnk = _AxialPositionalEmbedding(nh_kd)
        e = 2 * nh_kd + dh
        self.dwconv = _ConvBN(e, e, ks=3, pad=1, groups=e)
        self.act = nn.ReLU6(inplace=True)
        self.pwconv = _ConvBN(e, dim)
        self.sigmoid = _HSigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)

        qkv = torch.cat([q, k, v], dim=1)
        qkv = self.pwconv(self.act(self.dwconv(qkv)))

        qrow = self.pos_emb_rowq(q.mean(-1)).reshape(B, self.num_heads, -1, H).permute(0, 1, 3, 2)
        krow = self.pos_emb_rowk(k.mean(-1)).reshape(B, self.num_heads, -1, H)
        vrow = v.mean(-1).reshape(B, self.num_heads, -1, H).permute(0, 1, 3, 2)
        attn_row = (torch.matmul(qrow, krow) * self.scale).softmax(dim=-1)
        xx_row = torch.matmul(attn_row, vrow)
        xx_row = self.proj_encode_row(xx_row.permute(0, 1, 3, 2).reshape(B, self.dh, H, 1))

        qcol = self.pos_emb_columnq(q.mean(-2)).reshape(B, self.num_heads, -1, W).permute(0, 1, 3, 2)
        kcol = self.pos_emb_columnk(k.mean(-2)).reshape(B, self.num_heads, -1, W)
        vcol = v.mean(-2).reshape(B, self.num_heads, -1, W).permute(0, 1, 3, 2)
        attn_col = (torch.matmul(qcol, kcol) * self.scale).softmax(dim=-1)
        xx_col = torch.matmul(attn_col, vcol)
        xx_col = self.proj_encode_column(xx_col.permute(0, 1, 3, 2).reshape(B, self.dh, 1, W))

        xx = v.add(xx_row.add(xx_col))
        xx = self.proj(xx)
        return self.sigmoid(xx) * qkv


def build(c: int) -> nn.Module:
    """The official structure at the SeaFormer-Small defaults (key_dim=16, num_heads=4, attn_ratio=2)."""
    return SeaAttentionBaseline(c)
