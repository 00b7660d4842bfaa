"""Criss-Cross Attention (CCNet), Huang et al. 2019, for YOLOv5's models/common.py.

Every position attends to the positions of its own row and column (H + W - 1 of them) with query/key
projections of c/8 channels; the aggregated values are added to the input with a learnt scale gamma
that starts at 0. Applied R times with shared weights, information reaches every position (RCCA).
"""

import torch
import torch.nn as nn

YOLOPATCH = {
    "key": "criss-cross",
    "class_name": "CrissCrossAttention",
    "version": 1,
    "aliases": ["CCA", "CCNet", "RCCA"],
    "paper": "CCNet: Criss-Cross Attention for Semantic Segmentation",
    "authors": "Huang et al.",
    "venue": "ICCV",
    "year": 2019,
    "summary": "Self-attention of every position over its row and column (H + W - 1 keys), added to the "
    "input with a learnt scale that starts at 0; recurrence R repeats it with shared weights.",
    "hyperparameters": {"reduction": 8, "recurrence": 1},
    "param_count": "2 * max(c // reduction, 1) * (c + 1) + c * c + c + 1",
    "constraints": [
        "any c1 >= 1 and reduction >= 1; the query/key width is max(c1 // reduction, 1)",
        "recurrence >= 1 applies the module R times with the same weights (the paper's RCCA uses R = 2; "
        "the official CrissCrossAttention class is one pass, the default here)",
        "memory per pass is O(H * W * (H + W)) for the logits and weights (about 66 MB per image at "
        "160x160 in float32), far below full self-attention's O((H * W)^2)",
    ],
    "registration": "width",
    "kind": "self-attention",
    "official_code": "speedinghzl/CCNet",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class CrissCrossAttention(nn.Module):
    """Criss-Cross Attention (Huang et al. 2019); input and output (b, c1, H, W).

    With Q = W_q x, K = W_k x (c' = max(c1 // reduction, 1) channels each, with bias), V = W_v x (c1
    channels, with bias), for position u = (i, j) and the set Omega_u of the H + W - 1 positions of its
    column and row (u itself once):
        e_{u,o} = Q_u . K_o                                 o in Omega_u
        A_{u,o} = exp(e_{u,o}) / sum_{o' in Omega_u} exp(e_{u,o'})
        out_u   = gamma * sum_{o in Omega_u} A_{u,o} V_o + x_u
    gamma is one learnt scalar, 0 at the start as in the official code (the module starts as the
    identity); the convolutions keep PyTorch's default init, as there. ``recurrence`` R > 1 applies
    the same module R times (RCCA; the paper uses R = 2).

    Deviations from the official pure-PyTorch code, none of which changes the function: the official
    code removes the duplicate self term of the column with a -inf diagonal built by ``.cuda()`` (it
    fails on CPU) from the batch size and H; here a boolean mask is derived from the data (ones ->
    cumsum -> equality), so it runs on any device and ONNX exports keep the batch and size dynamic.
    The energies are batched matmuls over broadcast (b, w) and (b, h) batch dimensions instead of
    permute/contiguous/view into b*W and b*H batches (no reshape with the batch or the size); the
    slice of the joint softmax at H takes H from the energies' shape, which both ONNX exporters trace
    (an export at 1x16x16 runs at 2x13x7). c1 // 8 is max(c1 // reduction, 1) (the official gives 0
    channels below c1 = 8). Logits, softmax and the value aggregation run in float32 for half/bfloat16
    inputs; the output has the input's dtype. The official CUDA kernel (ca_weight/ca_map, branch
    pytorch-1.1: the full row and the column without u, H + W - 1 logits) computes the same function.
    """

    def __init__(self, c1: int, c2: "int | None" = None, reduction: int = 8, recurrence: int = 1) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(
                f"CrissCrossAttention: c2={c2} must be None or equal to c1={c1}: the module keeps its input width"
            )
        if not isinstance(c1, int) or c1 < 1:
            raise ValueError(f"CrissCrossAttention: c1={c1!r} must be a positive int")
        if not isinstance(reduction, int) or isinstance(reduction, bool) or reduction < 1:
            raise ValueError(
                f"CrissCrossAttention: reduction={reduction!r} must be an int >= 1 (query/key width "
                f"max(c1 // reduction, 1))"
            )
        if not isinstance(recurrence, int) or isinstance(recurrence, bool) or recurrence < 1:
            raise ValueError(f"CrissCrossAttention: recurrence={recurrence!r} must be an int >= 1 (the paper uses 2)")
        mid = max(c1 // reduction, 1)
        self.recurrence = recurrence
        self.query_conv = nn.Conv2d(c1, mid, 1)
        self.key_conv = nn.Conv2d(c1, mid, 1)
        self.value_conv = nn.Conv2d(c1, c1, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the criss-cross attention ``recurrence`` times with the same weights."""
        for _ in range(self.recurrence):
            x = self._attend(x)
        return x

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """One pass: gamma * (attention over row and column of V) + x."""
        work = torch.promote_types(x.dtype, torch.float32)
        q = self.query_conv(x).to(work)
        k = self.key_conv(x).to(work)
        v = self.value_conv(x).to(work)
        with torch.autocast(device_type=x.device.type, enabled=False):  # autocast would run matmul in half
            # batched over (b, w) for the columns and (b, h) for the rows, batch dims broadcast by matmul
            energy_col = torch.matmul(q.permute(0, 3, 2, 1), k.permute(0, 3, 1, 2))  # (b, w, h, g): key (g, w)
            energy_row = torch.matmul(q.permute(0, 2, 3, 1), k.permute(0, 2, 1, 3))  # (b, h, w, v): key (h, v)
            rows = torch.ones_like(q[0, 0, :, 0]).cumsum(0)  # 1..H, from the data: no Python size
            diagonal = rows[:, None] == rows[None, :]  # (H, H): u itself, counted in the row already
            energy_col = energy_col.masked_fill(diagonal, float("-inf")).transpose(1, 2)  # (b, h, w, g)
            # joint softmax over the H + W - 1 keys (the row holds u: never all -inf), split at H
            attn = torch.softmax(torch.cat([energy_col, energy_row], -1), -1)
            height = energy_col.shape[-1]  # traced as a size by both ONNX exporters, not baked in
            attn_col = attn[..., :height].transpose(1, 2)  # (b, w, h, g)
            attn_row = attn[..., height:]  # (b, h, w, v)
            out_col = torch.matmul(attn_col, v.permute(0, 3, 2, 1))  # (b, w, h, c)
            out_row = torch.matmul(attn_row, v.permute(0, 2, 3, 1))  # (b, h, w, c)
            out = out_col.permute(0, 3, 2, 1) + out_row.permute(0, 3, 1, 2)
            return (self.gamma.to(work) * out).to(x.dtype) + x
