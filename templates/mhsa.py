"""Multi-head self-attention with 2-D relative position logits (BoTNet's MHSA), Srinivas et al. 2021,
for YOLOv5's models/common.py.

Global self-attention over all H x W positions, per head, with logits q . k + q . r^H_{p-x} + q . r^W_{q-y}
from learnt relative-position embeddings for the row and column offsets; the heads' outputs are
concatenated. BoTNet puts it in place of the 3x3 convolutions of the last (1/32) stage.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

YOLOPATCH = {
    "key": "mhsa",
    "class_name": "MHSA",
    "version": 1,
    "aliases": ["BoTNetMHSA", "BottleneckTransformerMHSA"],
    "paper": "Bottleneck Transformers for Visual Recognition",
    "authors": "Srinivas et al.",
    "venue": "CVPR",
    "year": 2021,
    "summary": "Global multi-head self-attention with 2-D relative position logits (row and column offset "
    "embeddings), as in BoTNet's bottleneck blocks.",
    "hyperparameters": {"heads": 4, "rel_size": 32},
    "param_count": "3 * c * c + 2 * (2 * rel_size - 1) * (c // gcd(c, heads))",
    "constraints": [
        "any c1 >= 1 and heads >= 1; the heads used are gcd(c1, heads), so the head width is an integer at "
        "every width (heads=4: 4 heads at every multiple of 4)",
        "any feature size: the relative embeddings hold 2 * rel_size - 1 offsets per axis, exactly BoTNet's "
        "tables for maps up to rel_size x rel_size (rel_size=32: BoTNet's 1024-pixel COCO input at 1/32); "
        "offsets beyond +-(rel_size - 1) share the last embedding (clipped relative distance)",
        "no residual: the paper's MHSA replaces the 3x3 convolution inside a bottleneck block whose "
        "shortcut adds the input back",
        "global attention costs O((H * W)^2) time per head; memory stays O(H * W * (H + W + c / heads)) "
        "through scaled_dot_product_attention's fused kernel on CPU; meant for the 1/32 map",
        "deterministic backward is tested on CPU; on CUDA it depends on the fused attention kernel PyTorch "
        "picks (not tested here: no GPU)",
    ],
    "registration": "width",
    "kind": "self-attention",
    "official_code": "",  # BoTNet's reference TensorFlow code was published as a gist, not a repository
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class MHSA(nn.Module):
    """BoTNet's multi-head self-attention layer (Srinivas et al. 2021); input and output (b, c1, H, W).

    With n = gcd(c1, heads) heads of width d = c1 / n, projections without bias, for head h, query
    position (x, y) and key position (p, q):
        Q, K, V = W_q x, W_k x, W_v x  split into n heads;   Q <- Q / sqrt(d)
        l_{(x,y),(p,q)} = Q_{xy} . K_{pq} + Q_{xy} . r^H[p - x] + Q_{xy} . r^W[q - y]
        A = softmax over (p, q) of l;   out_{xy} = sum_{pq} A_{(x,y),(p,q)} V_{pq};  heads concatenated
    r^H, r^W hold 2 * rel_size - 1 embeddings of width d, offsets clipped to +-(rel_size - 1). This is
    the paper's reference code (relpos_self_attention with relative_logits / rel_to_abs): projections
    initialised normal(0, 0.01), relative embeddings normal(0, d^-0.5), no output projection.

    Every feature size: the paper's tables are 2H - 1 and 2W - 1 rows for one fixed H x W; here they
    have 2 * rel_size - 1 rows and are indexed by the clipped offset, so for H, W <= rel_size the logits
    are exactly the paper's at that size (same formula, the middle rows of a larger table), and larger
    maps share the end embeddings for the far offsets (Shaw et al.'s clipping) instead of failing.

    Computation: the relative terms are folded into one attention product so that the fused kernel
    (CPU float32/bfloat16, CUDA; float64 falls back to the plain one) builds no (HW) x (HW) tensor: the query gets H + W extra features a^H_{xy}[p] = Q_{xy} . r^H[p - x] and
    a^W_{xy}[q] = Q_{xy} . r^W[q - y], the key at (p, q) the one-hot vectors of p and q, so that
    [Q, a^H, a^W] . [K, onehot(p), onehot(q)] = l exactly; F.scaled_dot_product_attention (scale 1)
    then runs its fused kernel (V zero-padded to the same width, the pad sliced off). Index tensors
    come from the data (a slice of Q times 0 plus 1, cumsum), never from Python sizes, so ONNX exports
    stay dynamic. The
    projections and the attention run in float32 (autocast off) for half/bfloat16 inputs: at YOLO
    magnitudes (|x| ~ 300) the logits reach 1e4 and half-rounded Q, K flip the softmax at near-ties;
    the output has the input's dtype.

    BoTNet has no official repository (its reference TensorFlow code is a gist). Deviation from
    leaderj1001/BottleneckTransformers (the usual unofficial PyTorch port): that code learns
    absolute per-position embeddings for one fixed size and adds pos_i . q_j (the query position's
    embedding times the key position's q), does not scale the logits and gives the projections
    biases; this layer follows the paper instead (its content path matches that code to 1e-15 in
    float64 with the embeddings zeroed and the scale folded into W_q).
    """

    def __init__(self, c1: int, c2: "int | None" = None, heads: int = 4, rel_size: int = 32) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(f"MHSA: c2={c2} must be None or equal to c1={c1}: the module keeps its input width")
        if not isinstance(c1, int) or c1 < 1:
            raise ValueError(f"MHSA: c1={c1!r} must be a positive int")
        if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
            raise ValueError(f"MHSA: heads={heads!r} must be an int >= 1 (the heads used are gcd(c1, heads))")
        if not isinstance(rel_size, int) or isinstance(rel_size, bool) or rel_size < 1:
            raise ValueError(
                f"MHSA: rel_size={rel_size!r} must be an int >= 1 (relative offsets up to +-(rel_size - 1))"
            )
        self.heads = math.gcd(c1, heads)
        self.rel_size = rel_size
        dim = c1 // self.heads
        self.query = nn.Conv2d(c1, c1, 1, bias=False)
        self.key = nn.Conv2d(c1, c1, 1, bias=False)
        self.value = nn.Conv2d(c1, c1, 1, bias=False)
        self.rel_h = nn.Parameter(torch.randn(2 * rel_size - 1, dim) * dim ** -0.5)
        self.rel_w = nn.Parameter(torch.randn(2 * rel_size - 1, dim) * dim ** -0.5)
        for conv in (self.query, self.key, self.value):
            nn.init.normal_(conv.weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the concatenated heads of softmax(Q K^T + relative logits) V."""
        work = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):  # autocast would run these in half
            # projections in float32 too: half-rounded Q and K move the (large) logits by more than the rest
            x_work = x.to(work)
            q = F.conv2d(x_work, self.query.weight.to(work)).unflatten(1, (self.heads, -1))  # (b, n, d, H, W)
            q = q * self.rel_h.shape[1] ** -0.5
            k = F.conv2d(x_work, self.key.weight.to(work)).unflatten(1, (self.heads, -1)).flatten(3).transpose(2, 3)
            v = F.conv2d(x_work, self.value.weight.to(work)).unflatten(1, (self.heads, -1)).flatten(3).transpose(2, 3)
            # 1..H and 1..W from the data ("* 0 + 1": the legacy exporter folds ones_like here to a constant)
            rows = (q[0, 0, 0, :, 0] * 0 + 1).cumsum(0)
            cols = (q[0, 0, 0, 0, :] * 0 + 1).cumsum(0)
            rel_h = self._table(self.rel_h.to(work), rows)  # (H, H, d): r^H[p - x] at [x, p]
            rel_w = self._table(self.rel_w.to(work), cols)  # (W, W, d): r^W[q - y] at [y, q]
            logits_h = torch.einsum("bndxy,xpd->bnxyp", q, rel_h).flatten(2, 3)  # (b, n, HW, H)
            logits_w = torch.einsum("bndxy,yqd->bnxyq", q, rel_w).flatten(2, 3)  # (b, n, HW, W)
            row_of = (rows[:, None] + cols * 0).reshape(-1)  # (HW,): p of key position (p, q)
            col_of = (rows[:, None] * 0 + cols).reshape(-1)  # (HW,): q
            key_h = (row_of[:, None] == rows[None, :]).to(work)  # (HW, H): onehot(p)
            key_w = (col_of[:, None] == cols[None, :]).to(work)  # (HW, W): onehot(q)
            # (b, n, HW, H + W); "k * 0" rather than zeros_like: the legacy exporter folds zeros_like to a constant
            position = k[..., :1] * 0 + torch.cat([key_h, key_w], 1)
            query = torch.cat([q.flatten(3).transpose(2, 3), logits_h, logits_w], -1)
            key = torch.cat([k, position], -1)
            value = torch.cat([v, position * 0], -1)
            out = F.scaled_dot_product_attention(query, key, value, scale=1.0)[..., : v.shape[-1]]
        return out.transpose(2, 3).reshape_as(x).to(x.dtype)

    def _table(self, embeddings: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(n, n, d): embeddings[clip(j - i) + rel_size - 1] at [i, j], for positions index = 1..n."""
        far = self.rel_size - 1
        offset = (index[None, :] - index[:, None]).clamp(-far, far) + far
        return embeddings[offset.long()]
