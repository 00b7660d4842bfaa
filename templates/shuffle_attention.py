"""Shuffle Attention (SA), Zhang & Yang, ICASSP 2021, for YOLOv5's models/common.py.

The channels are split into G groups and each group into two halves: one half gets a channel gate from
its global average, the other a spatial gate from its instance-normalised map; a channel shuffle then
interleaves the two halves so that information flows between the groups.
"""

import math

import torch
import torch.nn as nn

YOLOPATCH = {
    "key": "shuffle-attention",
    "class_name": "ShuffleAttention",
    "version": 1,
    "aliases": ["SA", "SANet", "sa_layer", "ShuffleAttentionModule"],
    "paper": "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks",
    "authors": "Zhang & Yang",
    "venue": "ICASSP",
    "year": 2021,
    "summary": "Per channel group, a sigmoid channel gate on one half and a sigmoid spatial gate from "
    "GroupNorm on the other, then a two-way channel shuffle.",
    "hyperparameters": {"groups": 64},
    "param_count": "6 * ((c // 2) // gcd(c // 2, groups))",
    "constraints": [
        "c1 must be even (every YOLO width is a multiple of 8): each group is split into a channel half and "
        "a spatial half, and the shuffle interleaves the two halves of the whole map",
        "groups >= 1; the groups actually used are gcd(c1 // 2, groups), which always gives every group two "
        "equal halves (groups=64: the paper's 64 groups at every multiple of 128, 32 at c1=64, 8 at c1=16 "
        "or 48), so a YAML written for one width_multiple works at every other",
        "any H, W >= 1: the spatial half's normalisation is (x - mean) / sqrt(population variance + 1e-5), "
        "finite for constant maps and for H*W = 1",
    ],
    "registration": "width",
    "kind": "channel+spatial",
    "official_code": "wofmanaf/SA-Net",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
    "requires": "c % 2 == 0",
}


class ShuffleAttention(nn.Module):
    """Shuffle Attention (Zhang & Yang 2021); input and output (b, c1, H, W).

    With G = gcd(c1 // 2, groups) groups of 2k channels (k = c1 / (2G)), group g's channels split into
    x1 (the first k, channel half) and x2 (the last k, spatial half); per image and channel j of a half:
        s_j   = mean_{h,w} x1_j                                     (global average)
        x1'_j = x1_j * sigmoid(cweight_j * s_j + cbias_j)
        n_j   = gn.weight_j * (x2_j - mean x2_j) / sqrt(var x2_j + eps) + gn.bias_j   (GroupNorm(k, k))
        x2'_j = x2_j * sigmoid(sweight_j * n_j + sbias_j)
    The map [x1'_0, x2'_0, x1'_1, x2'_1, ...] (c1 channels, group by group) is then channel-shuffled with
    two groups: output channel 2i + s is input channel s * c1/2 + i.

    Parameters and initialisation are the official sa_layer's (cweight = sweight = 0, cbias = sbias = 1,
    GroupNorm weight 1 and bias 0; the state_dict has the same names and shapes at the same G), so the
    fresh module is x * sigmoid(1), shuffled.

    Deviations from the official code:
    - Groups rule: the official layer needs c1 % (2 * groups) == 0 (multiples of 128 for the default 64
      groups; below 128 its GroupNorm(0, 0) raises ZeroDivisionError, at 192 it runs with unequal halves
      of 2 and 1 channels, at 320 it fails). Here G = gcd(c1 // 2, groups), the same G wherever the
      official one works; YOLOv5 does not scale YAML arguments by width_multiple.
    - GroupNorm's affine is folded with (sweight, sbias) into one per-channel affine of a single
      torch.group_norm call over the spatial halves (sweight * (gn.weight * n + gn.bias) + sbias is
      (sweight * gn.weight) * n + (sweight * gn.bias + sbias)); the ``gn`` submodule holds the
      parameters and is not called. torch.group_norm rather than F.group_norm, whose size check refuses
      one value per channel (batch 1 at H*W = 1) although the norm is defined there (0, finite gradients).
    - The channel half's average is accumulated in float32 for float16/bfloat16 inputs; GroupNorm's
      kernel accumulates its statistics in float32 itself.
    - For an even G the concatenation and the shuffle are one copy (group g = s * G/2 + g' goes straight
      to its shuffled place); for an odd G they are two, as in the official code.
    - No batch size or spatial size enters a reshape (the official ``reshape(b * groups, -1, h, w)``):
      a module exported at batch 1 runs at any batch and size.
    """

    def __init__(self, c1: int, c2: "int | None" = None, groups: int = 64) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(
                f"ShuffleAttention: c2={c2} must be None or equal to c1={c1}: the module keeps its input width"
            )
        if not isinstance(c1, int) or isinstance(c1, bool) or c1 < 2 or c1 % 2:
            raise ValueError(
                f"ShuffleAttention: c1={c1!r} must be a positive even int (each group is split into a channel "
                f"half and a spatial half)"
            )
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ValueError(
                f"ShuffleAttention: groups={groups!r} must be an int >= 1 (the paper uses 64; the groups used are "
                f"gcd(c1 // 2, groups))"
            )
        self.c1 = c1
        self.groups = math.gcd(c1 // 2, groups)
        k = c1 // (2 * self.groups)
        self.cweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.gn = nn.GroupNorm(k, k)  # weight 1, bias 0; not called: the forward folds it into torch.group_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the channel-shuffled [channel-gated half, spatially gated half] of every group."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        halves = x.unflatten(1, (self.groups, 2, -1))  # (b, G, 2, k, H, W): a view
        x1, x2 = halves[:, :, 0], halves[:, :, 1]
        cweight, cbias = (p.to(dtype).flatten()[:, None, None] for p in (self.cweight, self.cbias))
        gate1 = torch.sigmoid(cweight * x1.mean((3, 4), keepdim=True, dtype=dtype) + cbias).to(x.dtype)
        # GroupNorm(k, k) per group = instance norm of every spatial-half channel, with the affine
        # sweight * (gn.weight * n + gn.bias) + sbias folded into one per-channel affine
        sweight, sbias = self.sweight.flatten(), self.sbias.flatten()
        weight = (sweight * self.gn.weight).repeat(self.groups)
        bias = (sweight * self.gn.bias + sbias).repeat(self.groups)
        normed = torch.group_norm(x2.flatten(1, 2), self.c1 // 2, weight, bias, self.gn.eps)
        gate2 = torch.sigmoid(normed).unflatten(1, (self.groups, -1))
        y1, y2 = x1 * gate1, x2 * gate2  # (b, G, k, H, W)
        # channel shuffle with two groups: output channel 2i + s <- channel s * c1/2 + i of [y1_0, y2_0, y1_1, ...]
        if self.groups % 2 == 0:  # group g = s * G/2 + g' lands at (g', half, j, s): one copy for both steps
            y1, y2 = (y.unflatten(1, (2, -1)).permute(0, 2, 3, 1, 4, 5) for y in (y1, y2))  # (b, G/2, k, 2, H, W)
            return torch.stack((y1, y2), 2).flatten(1, 4)
        gated = torch.stack((y1, y2), 2).flatten(1, 3)  # (b, c1, H, W), group by group
        return gated.unflatten(1, (2, -1)).transpose(1, 2).flatten(1, 2)
