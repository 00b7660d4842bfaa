"""SeaAttention: squeeze-enhanced axial attention from SeaFormer (Wan et al., ICLR 2023).

Reimplemented from the published forward of ``Sea_Attention`` (fudan-zvg/SeaFormer) without mmcv.
The forward computes the same function of the same parameters; q, k and v come from one fused
1x1 Conv2d+BN (per-channel BN, so identical to three separate ones), the detail branch reads that
tensor directly instead of a ``torch.cat`` copy, and each axis's squeeze attention runs on
pooled tensors of length H or W in float32.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

YOLOPATCH = {
    "key": "sea-attention",
    "class_name": "SeaAttention",
    "version": 1,
    "aliases": ["Sea_Attention", "SeaFormerAttention"],
    "paper": "SeaFormer: Squeeze-enhanced Axial Transformer for Mobile Semantic Segmentation",
    "authors": "Wan et al.",
    "venue": "ICLR",
    "year": 2023,
    "registration": "width",
    "kind": "self-attention",
    "official_code": "fudan-zvg/SeaFormer",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
    "summary": (
        "Axial attention over row- and column-pooled q, k, v with learned positional embeddings, "
        "gating a depthwise-conv detail branch: h_sigmoid(proj(v + row + column)) * detail."
    ),
    "hyperparameters": {"key_dim": 16, "num_heads": 4, "attn_ratio": 2},
    "param_count": (
        "2 * c * (2 * key_dim * num_heads + (attn_ratio * key_dim // 1) * num_heads)"
        " + 13 * (2 * key_dim * num_heads + (attn_ratio * key_dim // 1) * num_heads)"
        " + c * (attn_ratio * key_dim // 1) * num_heads + 4 * c"
        " + 2 * ((attn_ratio * key_dim // 1) * num_heads) ** 2"
        " + 4 * (attn_ratio * key_dim // 1) * num_heads + 64 * key_dim * num_heads"
    ),
    "constraints": [
        "any c1 >= 1: the inner widths key_dim * num_heads (q, k) and int(attn_ratio * key_dim) * num_heads"
        " (v) do not depend on c1, as in the official code (defaults 64 and 128 at every YOLO width)",
        "key_dim and num_heads are ints >= 1; attn_ratio > 0 with int(attn_ratio * key_dim) >= 1",
        "any H, W >= 1: the length-16 positional embeddings are linearly interpolated to H and W",
    ],
}


class SeaAttentionConvBN(nn.Sequential):
    """Conv2d(bias=False) + BatchNorm2d; BN weight starts at ``bn_weight_init`` and bias at 0.

    This is the official ``Conv2d_BN``; ``bn_weight_init=0`` makes a branch output exactly zero at
    initialisation (used by SeaFormer on the three projections that follow an attention result).
    """

    def __init__(self, c_in: int, c_out: int, k: int = 1, groups: int = 1,
                 bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, 1, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.training and x.numel() == x.shape[1]:
            return self._single_value_batch_norm(x)
        return self.bn(x)

    def _single_value_batch_norm(self, x: torch.Tensor) -> torch.Tensor:
        """Train-mode BN of one value per channel: exactly ``bias``, since ``x - mean(x) = 0``.

        torch refuses this case (the unbiased running variance would divide by zero). It happens
        to the row encoder at batch 1 with H = 1 (the column encoder with W = 1), where the
        official module crashes. Gradients are those of the BN formula (zero to x and weight);
        the running statistics are left as they are.
        """
        centred = x - x.mean(dim=(0, 2, 3), keepdim=True)
        return centred * self.bn.weight.view(1, -1, 1, 1) + self.bn.bias.view(1, -1, 1, 1)


class SeaAttention(nn.Module):
    """Squeeze-enhanced axial attention (SeaFormer), shape-preserving on ``c1`` channels.

    With ``nk = key_dim * num_heads``, ``d = int(attn_ratio * key_dim)``, ``dh = d * num_heads``:

    - ``[q | k | v] = BN(W_qkv x)`` with q, k in R^{nk x H x W}, v in R^{dh x H x W};
    - detail ``= BN(W_pw relu6(BN(dwconv3x3([q | k | v]))))`` (c1 channels);
    - row squeeze: ``q_r = mean_W(q) + interp(P_rq, H)``, ``k_r = mean_W(k) + interp(P_rk, H)``,
      ``v_r = mean_W(v)``; per head ``A = softmax_j(q_r[:, i] . k_r[:, j] / sqrt(key_dim))`` and
      ``row = BN(W_r relu6(v_r A^T))`` in R^{dh x H x 1}; the column squeeze is the same over H,
      giving ``col`` in R^{dh x 1 x W};
    - ``out = h_sigmoid(BN(W_p relu6(v + row + col))) * detail`` with ``h_sigmoid(t) = relu6(t + 3) / 6``.

    ``P_*`` are learned (nk, 16) embeddings, resized with 1-d linear interpolation
    (``align_corners=False``) to any length, 1 included. Pooling, attention and softmax run in
    float32 at least (half, bfloat16 and autocast cannot overflow the sums or the softmax); the
    result goes back to the module's dtype before the 1x1 encoders.

    Widths: defaults are the official SeaFormer-T (Tiny) settings of its first attention stage
    (key_dim=16, num_heads=4, attn_ratio=2); SeaFormer-S uses num_heads=6 and SeaFormer-B 8, and
    every variant's second stage key_dim=24. As in the official code the inner widths do not depend
    on ``c1``, so every ``c1 >= 1`` is valid: at all YOLO widths (16 to 1280) the attention works in
    64 (q, k) and 128 (v) channels and the detail branch's depthwise conv in 256; its 1x1 conv maps
    256 -> c1.
    Pass ``num_heads`` (YAML ``[c, 16, 8]``) for wider q/k/v at large ``c1``.

    Activations are ``nn.ReLU6`` modules (not in place, as officially) applied only to freshly
    computed tensors, so YOLOv5 switching them to ``inplace=True`` changes nothing. At batch 1 in
    training with H = 1 (W = 1) the row (column) encoder's BN sees one value per channel, which
    torch refuses and the official module crashes on; SeaAttentionConvBN returns the exact
    train-mode value there (see its docstring). Like the official module, the output is not
    residual: SeaFormer adds it to ``x`` in its Block.
    """

    def __init__(self, c1: int, c2: "int | None" = None, key_dim: int = 16, num_heads: int = 4,
                 attn_ratio: float = 2) -> None:
        super().__init__()
        _SeaAttention_check(c1, c2, key_dim, num_heads, attn_ratio)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.nk = key_dim * num_heads
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.scale = key_dim ** -0.5
        e = 2 * self.nk + self.dh
        self.qkv = SeaAttentionConvBN(c1, e)
        # detail branch on [q | k | v] as computed: the official torch.cat copy is not needed
        self.detail = nn.Sequential(SeaAttentionConvBN(e, e, 3, groups=e), nn.ReLU6(), SeaAttentionConvBN(e, c1))
        # q and k embeddings of one axis stacked on the channel axis: [P_q; P_k], official length 16.
        self.pos_row = nn.Parameter(torch.randn(1, 2 * self.nk, 16))
        self.pos_col = nn.Parameter(torch.randn(1, 2 * self.nk, 16))
        self.encode_row = nn.Sequential(nn.ReLU6(), SeaAttentionConvBN(self.dh, self.dh, bn_weight_init=0.0))
        self.encode_col = nn.Sequential(nn.ReLU6(), SeaAttentionConvBN(self.dh, self.dh, bn_weight_init=0.0))
        self.proj = nn.Sequential(nn.ReLU6(), SeaAttentionConvBN(self.dh, c1, bn_weight_init=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        qkv = self.qkv(x)
        detail = self.detail(qkv)
        # Squeeze = sum then divide: the backward of sum is a broadcast view where mean's backward
        # materialises a full-size tensor. Summed in float32 at least.
        work = torch.promote_types(qkv.dtype, torch.float32)
        row = self._squeeze_attention(qkv.sum(-1, dtype=work) / w, self.pos_row).unsqueeze(3)  # (b, dh, h, 1)
        col = self._squeeze_attention(qkv.sum(-2, dtype=work) / h, self.pos_col).unsqueeze(2)  # (b, dh, 1, w)
        row = self.encode_row(row.to(qkv.dtype))
        col = self.encode_col(col.to(qkv.dtype))
        mix = (row + col).add_(qkv[:, 2 * self.nk:])  # the official v + (row + col), one full-size buffer
        # F.hardsigmoid(t) = relu6(t + 3) / 6 (the official h_sigmoid) in one pass instead of three
        return F.hardsigmoid(self.proj(mix)) * detail

    def _squeeze_attention(self, pooled: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Multi-head attention along one squeezed axis: (B, 2nk + dh, N) -> (B, dh, N), in pooled's dtype.

        Per head, ``attn[i, j] = softmax_j(q_i . k_j * scale)`` and ``out = v attn^T``, the official
        ``attn @ v`` transposed, so that no permute is needed on either side.

        Batch-agnostic shapes only: one bmm per head on channel slices (no reshape(b, ...), no
        broadcasting matmul, no batch broadcast of the embeddings). Each of those lets torch.export,
        the default ONNX exporter, specialise the batch to the example's 1, and YOLOv5's
        ``export.py --dynamic`` then gives a model that fails at batch 2.
        """
        n = pooled.shape[2]
        work = pooled.dtype
        pos = F.interpolate(pos.to(work), size=n, mode="linear", align_corners=False)
        qk = pooled[:, : 2 * self.nk] + pos.expand(pooled.shape[0], -1, -1)
        heads = []
        for head in range(self.num_heads):
            q = qk[:, head * self.key_dim:(head + 1) * self.key_dim]  # (B, key_dim, N)
            k = qk[:, self.nk + head * self.key_dim:self.nk + (head + 1) * self.key_dim]
            v = pooled[:, 2 * self.nk + head * self.d:2 * self.nk + (head + 1) * self.d]  # (B, d, N)
            # .to(work): under autocast bmm returns bf16/half; the softmax still runs in `work`
            logits = torch.bmm(q.transpose(1, 2), k).to(work) * self.scale  # (B, N_query, N_key)
            heads.append(torch.bmm(v, logits.softmax(dim=-1).transpose(1, 2)))
        return torch.cat(heads, dim=1)


def _SeaAttention_check(c1: int, c2: "int | None", key_dim: int, num_heads: int,
                        attn_ratio: float) -> None:
    """Raise ValueError naming the argument, its value and what is allowed."""
    if isinstance(c1, bool) or not isinstance(c1, int) or c1 < 1:
        raise ValueError(f"SeaAttention: c1={c1!r} must be an int >= 1 (the input channel count)")
    if c2 is not None and c2 != c1:
        raise ValueError(f"SeaAttention: c2={c2} must be None or equal to c1={c1}: "
                         f"the module keeps its input width")
    for name, value in (("key_dim", key_dim), ("num_heads", num_heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"SeaAttention: {name}={value!r} must be an int >= 1 (official models use "
                             f"key_dim 16-24 and num_heads 4-8)")
    if isinstance(attn_ratio, bool) or not isinstance(attn_ratio, (int, float)) or not attn_ratio > 0:
        raise ValueError(f"SeaAttention: attn_ratio={attn_ratio!r} must be a number > 0 (value width per head "
                         f"is int(attn_ratio * key_dim); the official value is 2)")
    if int(attn_ratio * key_dim) < 1:
        raise ValueError(f"SeaAttention: attn_ratio={attn_ratio!r} with key_dim={key_dim} gives a value width "
                         f"int(attn_ratio * key_dim)={int(attn_ratio * key_dim)}; it must be >= 1")
