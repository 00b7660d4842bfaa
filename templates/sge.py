"""Spatial Group-wise Enhance (SGE), Li et al. 2019, for YOLOv5's models/common.py.

Per group of channels, every spatial position is scored by how well its local feature matches the group's
global (mean) feature; the scores are normalised over the positions, scaled and shifted by a learnt
(gamma, beta) per group and squashed into a sigmoid gate that multiplies the group's channels.
"""

import math

import torch
import torch.nn as nn

YOLOPATCH = {
    "key": "sge",
    "class_name": "SpatialGroupEnhance",
    "version": 1,
    "aliases": ["SGE"],
    "paper": "Spatial Group-wise Enhance: Improving Semantic Feature Learning in Convolutional Networks",
    "authors": "Li et al.",
    "venue": "arXiv",
    "year": 2019,
    "registration": "width",
    "kind": "spatial",
    "official_code": "implus/PytorchInsight",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
    "summary": "Per channel group, a sigmoid spatial gate from the normalised similarity of each position's "
    "feature to the group's mean feature.",
    "hyperparameters": {"groups": 64},
    "param_count": "2 * gcd(c, groups)",
    "constraints": [
        "any c1 >= 1 and groups >= 1; the groups actually used are gcd(c1, groups), which always divides "
        "c1 (groups=64: 64 groups at every multiple of 64, 16 at c1=48 or 80, one channel per group at "
        "c1=16 or 32), so a YAML written for one width_multiple works at every other",
        "the normalisation over positions is (c - mean) / sqrt(population variance + 1e-5): finite "
        "values and gradients for constant inputs and for H*W = 1",
    ],
}


class SpatialGroupEnhance(nn.Module):
    """Spatial Group-wise Enhance (Li et al. 2019).

    With the channels split into G groups, for each image, group and position i (x_i in R^(C/G)):
        g     = mean_i x_i                                  (the group's global feature)
        c_i   = g . x_i                                     (similarity of position i to the group)
        c^_i  = (c_i - mean_j c_j) / sqrt(var_j c_j + 1e-5) (population variance over positions)
        a_i   = gamma * c^_i + beta                         (gamma, beta learnt per group)
        out_i = x_i * sigmoid(a_i)

    gamma starts at 0 and beta at 1 as in the official code, so the freshly inserted module is the
    constant gate x * sigmoid(1) and learns the spatial part from there. The normalisation is exactly
    GroupNorm over the (batch, G, H, W) similarity map with (gamma, beta) as its affine parameters
    (written out because F.group_norm refuses a single value per group, i.e. batch 1 at H*W = 1).

    Deviation from the official code (implus/PytorchInsight, ``sge_resnet.py``), which divides by the
    unbiased standard deviation plus 1e-5, ``(c_i - mean) / (std_unbiased + 1e-5)``: here the population
    variance is used with the epsilon inside the square root, as GroupNorm does. For N = H*W positions
    the two differ by the factor sqrt((N - 1) / N) on c^ when the variance is well above 1e-5 (0.13% on
    a 20x20 map, 0.6% on 9x9), so weights trained with one move gamma * c^ by that fraction in the
    other; at N = 1 the official form is NaN (the unbiased std of one value), this one gives c^ = 0.

    Groups rule: G = gcd(c1, groups), the largest number dividing both (groups=64: 64 groups for the
    multiples of 64, 16 at c1 = 48 or 80, one channel per group at c1 = 16 or 32). YOLOv5 does not scale
    YAML arguments by width_multiple, so `[1024, 64]` meets c1 = 256 on yolov5n; gcd keeps every width
    valid instead of raising. The similarity product and the statistics are computed in float32 (float64
    for float64 input) with autocast off, so half/bfloat16 inputs cost one float32 copy of the input
    (kept for the backward); the result has the input's dtype. Any memory format works (no view across
    batch and channels).
    """

    def __init__(self, c1: int, c2: "int | None" = None, groups: int = 64) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(
                f"SpatialGroupEnhance: c2={c2} must be None or equal to c1={c1}: the module keeps its input width"
            )
        if not isinstance(c1, int) or c1 < 1:
            raise ValueError(f"SpatialGroupEnhance: c1={c1!r} must be a positive int")
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ValueError(
                f"SpatialGroupEnhance: groups={groups!r} must be an int >= 1 (the paper uses 64; the groups "
                f"used are gcd(c1, groups))"
            )
        self.c1 = c1
        self.groups = math.gcd(c1, groups)
        self.eps = 1e-5
        self.weight = nn.Parameter(torch.zeros(self.groups))  # gamma
        self.bias = nn.Parameter(torch.ones(self.groups))  # beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x * sigmoid(gamma * normalised(g . x_i) + beta), groupwise; same shape and dtype as x."""
        b, _, h, w = x.shape
        # (b*G, C/G, H*W): a view for contiguous input, one copy for channels_last
        xg = x.reshape(b * self.groups, self.c1 // self.groups, h * w)
        work = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            # c_i = g . x_i as one batched matrix product (no input-sized product tensor, forward or
            # backward), in float32 for half/bfloat16 input and under autocast: |x| of a few hundred,
            # common in YOLO feature maps, overflows a float16 product (65504) to inf, then NaN
            xw = xg.to(work)
            sim = torch.bmm(xw.mean(2, keepdim=True).transpose(1, 2), xw).view(b, self.groups, h, w)
        centred = sim - sim.mean((2, 3), keepdim=True)
        normed = centred * torch.rsqrt(centred.square().mean((2, 3), keepdim=True) + self.eps)
        gamma = self.weight.to(sim.dtype)[:, None, None]
        beta = self.bias.to(sim.dtype)[:, None, None]
        gate = torch.sigmoid(gamma * normed + beta)
        return (xg * gate.to(x.dtype).view(b * self.groups, 1, h * w)).view(b, self.c1, h, w)
