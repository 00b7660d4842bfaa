"""Efficient Multi-Scale Attention (EMA), Ouyang et al. 2023, for YOLOv5's models/common.py.

Not an exponential moving average. The channels are split into groups; in each group a 1x1 branch
(coordinate attention: direction-wise pooling, a shared 1x1 conv, two sigmoid gates, GroupNorm) and a
3x3 branch are fused by cross-spatial learning: each branch's softmaxed global descriptor weights the
other branch's per-position features, and the sum is a sigmoid spatial gate on the group.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

YOLOPATCH = {
    "key": "ema",
    "class_name": "EMA",
    "version": 1,
    "aliases": ["EMA_attention", "EfficientMultiScaleAttention"],
    "paper": "Efficient Multi-Scale Attention Module with Cross-Spatial Learning",
    "authors": "Ouyang et al.",
    "venue": "ICASSP",
    "year": 2023,
    "summary": "Per channel group, a coordinate-attention 1x1 branch and a 3x3 branch exchange softmaxed "
    "global descriptors (cross-spatial learning) to form a sigmoid spatial gate.",
    "hyperparameters": {"factor": 32},
    "param_count": "10 * (c // gcd(c, factor)) ** 2 + 4 * (c // gcd(c, factor))",
    "constraints": [
        "any c1 >= 1 and factor >= 1; the groups actually used are gcd(c1, factor), which always divides c1 "
        "(factor=32: 32 groups at every multiple of 32, 16 groups at c1=16, 48 or 80), so a YAML written for "
        "one width_multiple works at every other; the official code asserts c1 // factor > 0 and fails "
        "unless factor divides c1",
        "the directional poolings are means (not AdaptiveAvgPool2d), so the backward is deterministic on "
        "CUDA as well as on CPU",
        "GroupNorm, the global poolings, the softmaxes and the cross-spatial sums run in float32 for "
        "float16/bfloat16 inputs; the output has the input's dtype",
    ],
    "registration": "width",
    "kind": "multi-scale",
    "official_code": "YOLOonMe/EMA-attention-module",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class EMA(nn.Module):
    """Efficient Multi-Scale Attention (Ouyang et al. 2023); input and output (b, c1, H, W).

    With G = gcd(c1, factor) groups of C' = c1 / G channels, each group g (C', H, W) of each image:
        z_h = mean_w g,  z_w = mean_h g                             (C', H, 1) and (C', 1, W)
        x1  = GN(g * sigmoid(W1 z_h + b1) * sigmoid(W1 z_w + b1))   GN: C' groups of one channel over H*W
        x2  = conv3x3(g)
        s1  = softmax_c(mean_hw x1),  s2 = softmax_c(mean_hw x2)    (C',) each, softmax over the channels
        w   = s1 . x2 + s2 . x1                                     (H, W): sum over the C' channels
        out = g * sigmoid(w)
    W1 is one 1x1 convolution shared by both directions; the official code concatenates z_h and z_w
    along H, convolves once and splits at H: a 1x1 convolution is pointwise, so convolving the two
    separately is the same map, and it needs no split at the Python int H (which an ONNX export would
    freeze). Initialisation is PyTorch's default, as in the official module.

    Deviations from the official code, all generalisations with identical values where the official
    code runs:
      - groups = gcd(c1, factor) instead of factor (the official reshape fails unless factor divides c1;
        YOLOv5 does not scale YAML arguments by width_multiple, so c1 = 16 meets factor = 32);
      - means instead of AdaptiveAvgPool2d (same values; deterministic CUDA backward);
      - no reshape with b, h, w as Python ints (unflatten/flatten), so exports are shape-dynamic;
      - statistics in float32 for half/bfloat16 inputs.
    """

    def __init__(self, c1: int, c2: "int | None" = None, factor: int = 32) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(f"EMA: c2={c2} must be None or equal to c1={c1}: the module keeps its input width")
        if not isinstance(c1, int) or isinstance(c1, bool) or c1 < 1:
            raise ValueError(f"EMA: c1={c1!r} must be a positive int")
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
            raise ValueError(
                f"EMA: factor={factor!r} must be an int >= 1 (the paper uses 32; the groups used are gcd(c1, factor))"
            )
        self.groups = math.gcd(c1, factor)
        per_group = c1 // self.groups
        self.gn = nn.GroupNorm(per_group, per_group)
        self.conv1x1 = nn.Conv2d(per_group, per_group, kernel_size=1)
        self.conv3x3 = nn.Conv2d(per_group, per_group, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x * sigmoid(cross-spatial weights), groupwise; same shape and dtype as x."""
        stats = torch.promote_types(x.dtype, torch.float32)
        g = x.unflatten(1, (self.groups, -1)).flatten(0, 1)  # (b*G, C', H, W)
        gate_h = torch.sigmoid(self.conv1x1(g.mean(3, keepdim=True)))  # (b*G, C', H, 1)
        gate_w = torch.sigmoid(self.conv1x1(g.mean(2, keepdim=True)))  # (b*G, C', 1, W)
        x1 = F.group_norm((g * gate_h * gate_w).to(stats), self.gn.num_groups, self.gn.weight.to(stats),
                          self.gn.bias.to(stats), self.gn.eps)
        x2 = self.conv3x3(g).to(stats)
        s1 = torch.softmax(x1.mean((2, 3)), dim=1)  # (b*G, C')
        s2 = torch.softmax(x2.mean((2, 3)), dim=1)
        weights = torch.einsum("nc,nchw->nhw", s1, x2) + torch.einsum("nc,nchw->nhw", s2, x1)
        out = g * torch.sigmoid(weights).unsqueeze(1).to(x.dtype)
        return out.unflatten(0, (-1, self.groups)).flatten(1, 2)
