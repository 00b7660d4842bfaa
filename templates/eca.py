"""Efficient Channel Attention (ECA), Wang et al. 2020, for YOLOv5's models/common.py.

Each channel is squeezed to its spatial mean; a 1-D convolution of odd size k across neighbouring
channels (k chosen from the channel count) turns the descriptor into a sigmoid channel gate.
"""

import torch
import torch.nn as nn

YOLOPATCH = {
    "key": "eca",
    "class_name": "ECA",
    "version": 1,
    "aliases": ["ECALayer", "eca_layer", "ECAAttention", "EfficientChannelAttention"],
    "paper": "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
    "authors": "Wang et al.",
    "venue": "CVPR",
    "year": 2020,
    "summary": "Sigmoid channel gate from a k-tap 1-D convolution across the channels' global averages, "
    "with k adapted to the channel count.",
    "hyperparameters": {"k_size": 0, "gamma": 2, "b": 1},
    # k = k_size, or |(log2 c + b) / gamma|_odd: floor(log2 c) is the count of powers of two <= c (exact
    # up to c < 2**21), and floor((log2 c + b) / gamma) = (floor(log2 c) + b) // gamma for integer b, gamma
    "param_count": "k_size if k_size > 0 else 2 * (((c >= 2) + (c >= 4) + (c >= 8) + (c >= 16) + (c >= 32) "
    "+ (c >= 64) + (c >= 128) + (c >= 256) + (c >= 512) + (c >= 1024) + (c >= 2048) + (c >= 4096) "
    "+ (c >= 8192) + (c >= 16384) + (c >= 32768) + (c >= 65536) + (c >= 131072) + (c >= 262144) "
    "+ (c >= 524288) + (c >= 1048576) + b) // gamma // 2) + 1",
    "constraints": [
        "any c1 >= 1; k_size = 0 (the default) picks the paper's adaptive size k = |(log2 c1 + b) / gamma|_odd "
        "(t = floor((log2 c1 + b) / gamma), k = t if t is odd else t + 1: 1 below c1 = 8, 3 for c1 = 8..127, 5 for "
        "c1 = 128..2047), an odd k_size >= 1 fixes it",
        "gamma >= 1 and b >= 0 are ints (the paper's 2 and 1); k is computed with integer arithmetic, exact "
        "where math.log(c1, 2) rounds",
        "the spatial mean is taken in float32 for half and bfloat16 inputs; the gate has the input's dtype",
    ],
    "registration": "width",
    "kind": "channel",
    "official_code": "BangguWu/ECANet",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class ECA(nn.Module):
    """Efficient Channel Attention (Wang et al. 2020); input and output (b, c1, H, W).

        y_c = mean_{h,w} x_{c,h,w}                                  (global average pooling)
        w_c = sigmoid(sum_{j=0}^{k-1} W_j y_{c + j - (k-1)/2})       (1-D conv across channels, zero
                                                                     padded, no bias)
        out = w_c * x_c
    k is k_size when given (odd), else the paper's adaptive size psi(C) = |log2(C)/gamma + b/gamma|_odd
    computed as t = floor((log2 C + b) / gamma), k = t if t is odd else t + 1 (the authors' formula),
    in integers: floor(log2 C) = C.bit_length() - 1 and floor((L + b) / gamma) = (floor(L) + b) // gamma.

    Deviations from the official eca_layer: the official layer takes a fixed k_size (default 3) and
    the adaptive rule lives only in the paper; here k_size = 0 means adaptive (the paper's module). The
    mean is a float32 reduction for half/bfloat16 inputs; torch.mean replaces AdaptiveAvgPool2d(1) (same
    value; deterministic backward on CUDA) and the descriptor is moved with unsqueeze/transpose only,
    never reshaped with the batch size. Default PyTorch initialisation of the Conv1d, as the official
    models leave it (their init loops touch Conv2d and BatchNorm2d only).
    """

    def __init__(self, c1: int, c2: "int | None" = None, k_size: int = 0, gamma: int = 2, b: int = 1) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(f"ECA: c2={c2} must be None or equal to c1={c1}: the module keeps its input width")
        if not isinstance(c1, int) or isinstance(c1, bool) or c1 < 1:
            raise ValueError(f"ECA: c1={c1!r} must be a positive int")
        if not isinstance(gamma, int) or isinstance(gamma, bool) or gamma < 1:
            raise ValueError(f"ECA: gamma={gamma!r} must be an int >= 1 (the paper uses 2)")
        if not isinstance(b, int) or isinstance(b, bool) or b < 0:
            raise ValueError(f"ECA: b={b!r} must be an int >= 0 (the paper uses 1)")
        if not isinstance(k_size, int) or isinstance(k_size, bool) or k_size < 0 or (k_size > 0 and k_size % 2 == 0):
            raise ValueError(
                f"ECA: k_size={k_size!r} must be 0 (adaptive, the paper's rule) or an odd int >= 1 (the padded "
                f"1-D convolution keeps c1 outputs only for odd sizes)"
            )
        t = (c1.bit_length() - 1 + b) // gamma
        self.k = k_size if k_size > 0 else (t if t % 2 else t + 1)
        self.conv = nn.Conv1d(1, 1, self.k, padding=(self.k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x * sigmoid(conv1d_k(mean_hw(x))) along the channels; same shape and dtype as x."""
        y = x.mean((2, 3), dtype=torch.promote_types(x.dtype, torch.float32))  # (b, c)
        y = self.conv(y.unsqueeze(1).to(self.conv.weight.dtype))  # (b, 1, c)
        return x * torch.sigmoid(y).to(x.dtype).transpose(1, 2).unsqueeze(-1)
