"""Polarized Self-Attention (PSA), Liu et al. 2021, for YOLOv5's models/common.py.

Two branches that each keep full resolution in one dimension and collapse the other: a channel-only
gate (c1 values per image, from a softmax-weighted spatial pooling) and a spatial-only gate (H x W
values per image, from a softmax-weighted channel pooling); the parallel layout adds the two gated
copies of the input.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

YOLOPATCH = {
    "key": "polarized",
    "class_name": "PolarizedSelfAttention",
    "version": 1,
    "aliases": ["PolarizedSelfAttentionParallel", "PSA_p"],  # not "PSA": Ultralytics' PSA is YOLOv10's block
    "paper": "Polarized Self-Attention: Towards High-quality Pixel-wise Regression",
    "authors": "Liu et al.",
    "venue": "arXiv",
    "year": 2021,
    "summary": "Parallel channel-only and spatial-only self-attention gates (softmax pooling over space, "
    "resp. over channels, then LayerNorm/sigmoid), the two gated inputs added.",
    "hyperparameters": {},
    "param_count": "4 * c * max(c // 2, 1) + 3 * c",
    "constraints": [
        "any c1 >= 1; the internal width is max(c1 // 2, 1)",
        "the output is x * (channel gate + spatial gate) with both gates in (0, 1): up to twice the input, "
        "as in the paper's parallel layout",
    ],
    "registration": "width",
    "kind": "channel+spatial",
    "official_code": "DeLightCMU/PSA",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class PolarizedSelfAttention(nn.Module):
    """Polarized Self-Attention, parallel layout (Liu et al. 2021); input and output (b, c1, H, W).

    With m = max(c1 // 2, 1), all 1x1 convolutions without bias, p a position of the H x W map:
        channel-only:  s_p   = softmax_p(W_q^ch x)_p                       W_q^ch: c1 -> 1
                       z     = sum_p s_p (W_v^ch x)_p                      W_v^ch: c1 -> m, z in R^m
                       A^ch  = sigmoid(LayerNorm(W_z z))                   W_z: m -> c1, LN over c1
        spatial-only:  t     = softmax_k(mean_p (W_q^sp x)_p)              W_q^sp: c1 -> m, t in R^m
                       A^sp_p = sigmoid(sum_k t_k (W_v^sp x)_{k,p})        W_v^sp: c1 -> m
        out = A^ch * x + A^sp * x
    The four projections W_q, W_v start with Kaiming normal (fan_in) init as in the official code;
    W_z has PyTorch's default init, LayerNorm weight 1 and bias 0.

    Deviations from the official PSA_p (semantic-segmentation/network/PSA.py), both where it departs
    from the paper's equations and figure: (1) the spatial-only branch applies the softmax to the
    globally pooled query over its m channels (paper Eq. 3); the official code applies it to the
    1 x HW product over the positions, so its spatial gate is sigmoid(~1/HW) ~ 0.5 everywhere;
    (2) the channel-only branch has the paper's LayerNorm between W_z and the sigmoid (the official
    PSA_s has one; PSA_p does not). Global average pooling is a mean over (H, W) (no adaptive pooling:
    deterministic on CUDA, plain ReduceMean in ONNX); c1 // 2 is max(c1 // 2, 1). Softmaxes, pooled
    sums and the LayerNorm run in float32 for half/bfloat16 inputs; the output has the input's dtype.
    """

    def __init__(self, c1: int, c2: "int | None" = None) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(
                f"PolarizedSelfAttention: c2={c2} must be None or equal to c1={c1}: the module keeps its input width"
            )
        if not isinstance(c1, int) or c1 < 1:
            raise ValueError(f"PolarizedSelfAttention: c1={c1!r} must be a positive int")
        mid = max(c1 // 2, 1)
        self.conv_q_right = nn.Conv2d(c1, 1, 1, bias=False)
        self.conv_v_right = nn.Conv2d(c1, mid, 1, bias=False)
        self.conv_up = nn.Conv2d(mid, c1, 1, bias=False)
        self.norm = nn.LayerNorm(c1)
        self.conv_q_left = nn.Conv2d(c1, mid, 1, bias=False)
        self.conv_v_left = nn.Conv2d(c1, mid, 1, bias=False)
        for conv in (self.conv_q_right, self.conv_v_right, self.conv_q_left, self.conv_v_left):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return A^ch * x + A^sp * x."""
        return x * self._channel_gate(x) + x * self._spatial_gate(x)

    def _channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """A^ch, (b, c1, 1, 1) in x's dtype."""
        work = torch.promote_types(x.dtype, torch.float32)
        query = self.conv_q_right(x).flatten(1).to(work)  # (b, HW)
        values = self.conv_v_right(x).flatten(2).to(work)  # (b, m, HW)
        with torch.autocast(device_type=x.device.type, enabled=False):  # autocast would run these in half
            pooled = torch.matmul(values, torch.softmax(query, dim=-1).unsqueeze(-1)).unsqueeze(-1)  # (b, m, 1, 1)
            lifted = F.conv2d(pooled, self.conv_up.weight.to(work)).flatten(1)  # (b, c1)
            normed = F.layer_norm(lifted, self.norm.normalized_shape, self.norm.weight.to(work),
                                  self.norm.bias.to(work), self.norm.eps)
            return torch.sigmoid(normed)[:, :, None, None].to(x.dtype)

    def _spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        """A^sp, (b, 1, H, W) in x's dtype."""
        work = torch.promote_types(x.dtype, torch.float32)
        query = self.conv_q_left(x).to(work)  # (b, m, H, W)
        values = self.conv_v_left(x).to(work)
        with torch.autocast(device_type=x.device.type, enabled=False):  # autocast would run matmul in half
            weights = torch.softmax(query.mean((2, 3)), dim=-1)  # (b, m)
            context = torch.matmul(weights.unsqueeze(1), values.flatten(2))  # (b, 1, HW): one batched product
            return torch.sigmoid(context.reshape_as(values[:, :1])).to(x.dtype)  # (b, 1, H, W), no Python sizes
