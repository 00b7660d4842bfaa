"""Coordinate Attention (CA), Hou et al. 2021, for YOLOv5's models/common.py.

Each channel is averaged along the width (one value per row) and along the height (one value per
column); both profiles share a 1x1 conv + BN + h-swish bottleneck, then two 1x1 convolutions give a
sigmoid gate per row and one per column, and their product rescales the input.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

YOLOPATCH = {
    "key": "coord-attention",
    "class_name": "CoordAtt",
    "version": 1,
    "aliases": ["CA", "CoordAttention", "CoordinateAttention"],
    "paper": "Coordinate Attention for Efficient Mobile Network Design",
    "authors": "Hou et al.",
    "venue": "CVPR",
    "year": 2021,
    "summary": "Row and column sigmoid gates per channel from the width- and height-averaged profiles "
    "through a shared 1x1 conv+BN+h-swish bottleneck.",
    "hyperparameters": {"reduction": 32},
    "param_count": "3 * c * max(8, c // reduction) + 3 * max(8, c // reduction) + 2 * c",
    "constraints": [
        "any c1 >= 1 and reduction >= 1; the bottleneck width is max(8, c1 // reduction), as in the official "
        "code (8 at every YOLOv5 width below 256 with reduction 32)",
        "works at every H x W (1x1, 1xW, Hx1 included): the row and column profiles are means, not "
        "fixed-size pools, and are split again at the input's own H",
        "the bottleneck's BatchNorm normalises the row and column profiles together, as the official code "
        "does (one concatenated (b, m, H + W, 1) map)",
    ],
    "registration": "width",
    "kind": "channel+spatial",
    "official_code": "houqb/CoordAttention",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class CoordAtt(nn.Module):
    """Coordinate Attention (Hou et al. 2021); input and output (b, c1, H, W).

    With m = max(8, c1 // reduction):
        z^h_c(i) = mean_j x_c(i, j)          (H values per channel: average along the width)
        z^w_c(j) = mean_i x_c(i, j)          (W values per channel: average along the height)
        f        = h_swish(BN(W1 [z^h; z^w] + b1))       shared 1x1 conv c1 -> m over the H + W positions
        [f^h; f^w] = split(f, [H, W])
        g^h      = sigmoid(W_h f^h + b_h),  g^w = sigmoid(W_w f^w + b_w)     1x1 convs m -> c1
        out_c(i, j) = x_c(i, j) * g^w_c(j) * g^h_c(i)
    h_swish(t) = t * ReLU6(t + 3) / 6, which is F.hardswish (called as a function, so that YOLOv5's
    initialize_weights cannot switch an nn.Hardswish to in-place on a tensor autograd still needs).
    Initialisation as the official MobileNetV2-CA does it: 1x1 conv weights normal(0, sqrt(2 / out
    channels)), conv biases 0, BatchNorm weight 1, bias 0.

    Deviations from the official code: the profiles are torch.mean over one axis instead of
    AdaptiveAvgPool2d((None, 1)) / ((1, None)) (same values; mean's backward is deterministic on CUDA,
    adaptive pooling's is not), taken in float32 for half/bfloat16 inputs; the profiles are split at
    the input's H read from the tensor (never a Python int captured as a constant), so ONNX exports run
    at other batch sizes and H x W. Nothing depends on the input size, so no generalisation was needed.
    """

    def __init__(self, c1: int, c2: "int | None" = None, reduction: int = 32) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(f"CoordAtt: c2={c2} must be None or equal to c1={c1}: the module keeps its input width")
        if not isinstance(c1, int) or isinstance(c1, bool) or c1 < 1:
            raise ValueError(f"CoordAtt: c1={c1!r} must be a positive int")
        if not isinstance(reduction, int) or isinstance(reduction, bool) or reduction < 1:
            raise ValueError(
                f"CoordAtt: reduction={reduction!r} must be an int >= 1 (the paper uses 32; the bottleneck is "
                f"max(8, c1 // reduction))"
            )
        mid = max(8, c1 // reduction)
        self.conv1 = nn.Conv2d(c1, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv_h = nn.Conv2d(mid, c1, 1)
        self.conv_w = nn.Conv2d(mid, c1, 1)
        for conv in (self.conv1, self.conv_h, self.conv_w):
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / conv.out_channels))
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x * g^w * g^h; same shape and dtype as x."""
        acc = torch.promote_types(x.dtype, torch.float32)
        z_h = x.mean(3, keepdim=True, dtype=acc)  # (b, c, H, 1)
        z_w = x.mean(2, keepdim=True, dtype=acc).transpose(2, 3)  # (b, c, W, 1)
        f = torch.cat((z_h, z_w), 2).to(self.conv1.weight.dtype)
        f = F.hardswish(self.bn1(self.conv1(f)))
        rows = z_h.shape[2]
        g_h = torch.sigmoid(self.conv_h(f[:, :, :rows])).to(x.dtype)  # (b, c, H, 1)
        g_w = torch.sigmoid(self.conv_w(f[:, :, rows:])).to(x.dtype).transpose(2, 3)  # (b, c, 1, W)
        return x * g_w * g_h
