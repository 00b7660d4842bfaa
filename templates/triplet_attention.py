"""Triplet Attention, Misra et al., WACV 2021, for YOLOv5's models/common.py.

Three branches, one per pair of the dimensions (C, H, W): each reduces the remaining dimension to its
max and mean (Z-pool), runs a 7x7 convolution + BatchNorm over the pair's plane and makes a sigmoid
gate over that plane; the output is the input times the average of the three gates.
"""

import torch
import torch.nn as nn

YOLOPATCH = {
    "key": "triplet-attention",
    "class_name": "TripletAttention",
    "version": 1,
    "aliases": ["Triplet", "TripletAttentionModule"],
    "paper": "Rotate to Attend: Convolutional Triplet Attention Module",
    "authors": "Misra et al.",
    "venue": "WACV",
    "year": 2021,
    "summary": "Average of three sigmoid gates, one per dimension pair (C,W), (H,C), (H,W), each from a 7x7 "
    "conv+BN over the max and mean of the third dimension.",
    "hyperparameters": {"no_spatial": False, "kernel_size": 7},
    "param_count": "(2 if no_spatial else 3) * (2 * kernel_size * kernel_size + 2)",
    "constraints": [
        "any c1 >= 1 and any H, W >= 1; the channel axis is a convolution axis of two branches, zero-padded "
        "like the spatial ones",
        "kernel_size is an odd int >= 1 (the paper: 7); no_spatial=True drops the (H, W) branch and "
        "averages the other two, as the official option does",
        "the gates' BatchNorms normalise over the batch in training: at batch 1 an (H, W) map of one "
        "value cannot be normalised (torch refuses, as for any BatchNorm)",
    ],
    "registration": "width",
    "kind": "channel+spatial",
    "official_code": "landskape-ai/triplet-attention",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class _TripletAttentionGate(nn.Module):
    """Sigmoid gate over a plane from its 2-channel (max, mean) Z-pool: sigmoid(BN(conv_kxk(z)))."""

    def __init__(self, kernel_size: int, bn_weight: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out")
        nn.init.constant_(self.bn.weight, bn_weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.bn(self.conv(z)))


class TripletAttention(nn.Module):
    """Triplet Attention (Misra et al. 2021); input and output (b, c1, H, W).

    With Z(x, d) = [max_d x, mean_d x] (the Z-pool over dimension d, two maps) and
    gate(z) = sigmoid(BN(conv_kxk(z))) (2 -> 1 channels, zero padding k // 2, no bias):
        a_cw[c, w] = gate_cw(Z(x, H))      over the (C, W) plane
        a_hc[h, c] = gate_hc(Z(x, W))      over the (H, C) plane
        a_hw[h, w] = gate_hw(Z(x, C))      over the (H, W) plane
        out[c, h, w] = x[c, h, w] * (a_cw[c, w] + a_hc[h, c] + a_hw[h, w]) / 3
    (with no_spatial=True the last gate is dropped and the sum divided by 2).

    The official code rotates the whole input three times (``permute(...).contiguous()``), gates each
    rotated copy and rotates back; here only the small Z-pooled maps are rotated, the three gates are
    summed by broadcasting and the input is multiplied once: the same function writing three
    input-sized tensors where the official writes ten (four rotated copies, three gated maps and three
    for the average). Max and mean are the official Z-pool (the mean
    accumulated in float32 for float16/bfloat16 inputs); amax rather than max(dim)[0], whose gradient
    goes to one of several equal maxima, so the gradient at ties (for example a constant map) is
    split evenly; values are identical.

    Initialisation is the official ResNet's: convolutions kaiming-normal (fan_out), BatchNorm biases 0,
    BatchNorm weights 1 for the two cross-dimension gates and 0 for the (H, W) gate (its key holds
    "SpatialGate"), so the fresh spatial gate is the constant 1/2. BatchNorm eps 1e-5, momentum 0.01 as
    in the official BasicConv (YOLOv5's initialize_weights later sets every BatchNorm2d to eps 1e-3,
    momentum 0.03).
    """

    def __init__(self, c1: int, c2: "int | None" = None, no_spatial: bool = False, kernel_size: int = 7) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(
                f"TripletAttention: c2={c2} must be None or equal to c1={c1}: the module keeps its input width"
            )
        if not isinstance(c1, int) or isinstance(c1, bool) or c1 < 1:
            raise ValueError(f"TripletAttention: c1={c1!r} must be a positive int")
        if not isinstance(no_spatial, bool):
            raise ValueError(f"TripletAttention: no_spatial={no_spatial!r} must be True or False")
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"TripletAttention: kernel_size={kernel_size!r} must be an odd int >= 1 (the paper uses 7)"
            )
        self.no_spatial = no_spatial
        self.cw = _TripletAttentionGate(kernel_size, 1.0)
        self.hc = _TripletAttentionGate(kernel_size, 1.0)
        self.hw = None if no_spatial else _TripletAttentionGate(kernel_size, 0.0)

    def _zpool(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """(max, mean) over ``dim`` as two channels, the mean accumulated in at least float32."""
        mean = x.mean(dim, keepdim=True, dtype=torch.promote_types(x.dtype, torch.float32)).to(x.dtype)
        return torch.cat((x.amax(dim, keepdim=True), mean), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x times the mean of the (C, W), (H, C) and (H, W) gates; same shape and dtype as x."""
        # (b, 2, C, W) from the pool over H; the gate (b, 1, C, W) becomes (b, C, 1, W)
        a_cw = self.cw(self._zpool(x, 2).transpose(1, 2)).transpose(1, 2)
        # (b, 2, H, C) from the pool over W; the gate (b, 1, H, C) becomes (b, C, H, 1)
        a_hc = self.hc(self._zpool(x, 3).permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        if self.hw is None:  # the 1/2 or 1/3 is applied to the small gates, before broadcasting
            return x * (a_cw * 0.5 + a_hc * 0.5)
        a_hw = self.hw(self._zpool(x, 1))  # (b, 1, H, W)
        third = 1.0 / 3.0
        return x * (a_cw * third + a_hc * third + a_hw * third)
