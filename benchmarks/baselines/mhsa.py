"""Baseline for MHSA: BoTNet's reference MHSA (the paper's relpos_self_attention), written in PyTorch.

Three 1x1 projections without bias, q scaled by d^-0.5, logits einsum('bnhwd,bnpqd->bnhwpq') (the full
(HW) x (HW) tensor per head), relative logits per axis as einsum with a (2L - 1, d) table and rel_to_abs
(pad, flatten, reshape), tiled to the 6-D logits, softmax over (p, q), einsum with V; 4 heads. The
tables hold 2 * 32 - 1 rows like the yolopatch module; a map of size L uses the middle 2L - 1 rows
(ends repeated for L > 32), which is the paper's table at that size. Written from the published
reference code, for timing only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

NAME = "BoTNet reference relpos_self_attention (6-D logits, rel_to_abs), 4 heads, no fused attention"


def _rel_to_abs(x: torch.Tensor) -> torch.Tensor:
    b, n, length, _ = x.shape
    x = torch.cat([x, x.new_zeros(b, n, length, 1)], dim=3).reshape(b, n, length * 2 * length)
    x = torch.cat([x, x.new_zeros(b, n, length - 1)], dim=2)
    return x.reshape(b, n, length + 1, 2 * length - 1)[:, :, :length, length - 1:]


def _relative_logits_1d(q: torch.Tensor, rel_k: torch.Tensor) -> torch.Tensor:
    """q (b, n, H, W, d), rel_k (2W - 1, d) -> (b, n, H, W, 1, W) tiled to (b, n, H, W, H, W)."""
    b, n, h, w, _ = q.shape
    rel_logits = torch.einsum("bnhwd,md->bnhwm", q, rel_k).reshape(b, n * h, w, 2 * w - 1)
    rel_logits = _rel_to_abs(rel_logits).reshape(b, n, h, w, 1, w)
    return rel_logits.expand(b, n, h, w, h, w)


class _BoTMHSA(nn.Module):
    def __init__(self, c: int, heads: int = 4, size: int = 32) -> None:
        super().__init__()
        self.heads, self.size = heads, size
        dim = c // heads
        self.query = nn.Conv2d(c, c, 1, bias=False)
        self.key = nn.Conv2d(c, c, 1, bias=False)
        self.value = nn.Conv2d(c, c, 1, bias=False)
        self.rel_h = nn.Parameter(torch.randn(2 * size - 1, dim) * dim ** -0.5)
        self.rel_w = nn.Parameter(torch.randn(2 * size - 1, dim) * dim ** -0.5)

    def _table(self, table: torch.Tensor, length: int) -> torch.Tensor:
        index = torch.arange(-(length - 1), length, device=table.device).clamp(-(self.size - 1), self.size - 1)
        return table[index + self.size - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.heads
        q = self.query(x).view(b, n, c // n, h, w).permute(0, 1, 3, 4, 2)  # (b, n, H, W, d)
        k = self.key(x).view(b, n, c // n, h, w).permute(0, 1, 3, 4, 2)
        v = self.value(x).view(b, n, c // n, h, w).permute(0, 1, 3, 4, 2)
        q = q * (c // n) ** -0.5
        logits = torch.einsum("bnhwd,bnpqd->bnhwpq", q, k)
        logits = logits + _relative_logits_1d(q, self._table(self.rel_w, w))
        rel_h = _relative_logits_1d(q.transpose(2, 3), self._table(self.rel_h, h))  # (b, n, W, H, W, H)
        logits = logits + rel_h.permute(0, 1, 3, 2, 5, 4)
        weights = torch.softmax(logits.reshape(b, n, h, w, h * w), dim=-1).reshape(b, n, h, w, h, w)
        out = torch.einsum("bnhwpq,bnpqd->bnhwd", weights, v)
        return out.permute(0, 1, 4, 2, 3).reshape(b, c, h, w)


def build(c: int) -> nn.Module:
    return _BoTMHSA(c)
