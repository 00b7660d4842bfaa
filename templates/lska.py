"""Large Separable Kernel Attention (LSKA), Lau et al. 2024, for YOLOv5's models/common.py.

VAN's large-kernel attention with each 2-D depth-wise kernel split into a 1xk and a kx1 kernel: a local
depth-wise pair, a dilated depth-wise pair and a 1x1 convolution give an attention map the size of the
input, which multiplies the input element-wise.
"""

import math

import torch
import torch.nn as nn

YOLOPATCH = {
    "key": "lska",
    "class_name": "LSKA",
    "version": 1,
    "aliases": ["LargeSeparableKernelAttention"],
    "paper": "Large Separable Kernel Attention: Rethinking the Large Kernel Attention Design in CNN",
    "authors": "Lau et al.",
    "venue": "Expert Systems with Applications",
    "year": 2024,
    "summary": "An element-wise attention map from cascaded 1-D depth-wise convolutions (local 1xk/kx1, then "
    "dilated 1xk/kx1) and a 1x1 convolution, multiplied into the input.",
    "hyperparameters": {"k_size": 23},
    "param_count": "c * c + 5 * c + 2 * c * (3 if k_size < 23 else 5) "
    "+ 2 * c * (k_size // 2 if k_size < 23 else k_size // 3)",
    "constraints": [
        "any c1 >= 1; k_size (the effective kernel size) is one of the official 7, 11, 23, 35, 41, 53",
        "the attention map is not squashed (no sigmoid), as in the paper: the output can be larger than "
        "the input",
    ],
    "registration": "width",
    "kind": "spatial",
    "official_code": "StevenLauHKHK/Large-Separable-Kernel-Attention",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class LSKA(nn.Module):
    """Large Separable Kernel Attention (Lau et al. 2024); input and output (b, c1, H, W).

    For effective kernel size k with dilation d (d = 2 for k < 23, else 3), local kernel l = 2d - 1 and
    dilated kernel m = k // d (k = 7: 3, 3, d 2; 11: 3, 5, d 2; 23: 5, 7, d 3; 35: 5, 11; 41: 5, 13;
    53: 5, 17), every convolution zero-padded to keep the size:
        a    = DW_{l x 1}(DW_{1 x l}(x))                          local depth-wise pair
        a    = DW_{m x 1, dilation d}(DW_{1 x m, dilation d}(a))  dilated depth-wise pair
        attn = Conv_{1x1}(a)                                      channel mixing c1 -> c1
        out  = x * attn
    All five convolutions have a bias. This is the official ``LSKA`` unit (the spatial gating unit of
    VAN-LSKA's Attention block, without the block's proj_1/GELU/proj_2/shortcut, as LSKA is used in
    YOLO necks). Weights start as VAN's ``_init_weights`` sets them: normal(0, sqrt(2 / fan_out)) with
    fan_out = kh * kw * out_channels / groups, biases 0.

    Sizes: plain zero-padded convolutions, so every H x W works (at 1x1 each kernel sees its centre
    tap only). Deviations from the official code: the kernel table is a rule (the same six sizes; other
    k_size raise instead of leaving the module without layers), no ``x.clone()`` (nothing is written in
    place), and the default k_size is 23, the size of the released ImageNet weights (the training
    script's default is 7; pass it as the YAML argument).
    """

    _KERNELS = (7, 11, 23, 35, 41, 53)

    def __init__(self, c1: int, c2: "int | None" = None, k_size: int = 23) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(f"LSKA: c2={c2} must be None or equal to c1={c1}: the module keeps its input width")
        if not isinstance(c1, int) or c1 < 1:
            raise ValueError(f"LSKA: c1={c1!r} must be a positive int")
        if not isinstance(k_size, int) or isinstance(k_size, bool) or k_size not in self._KERNELS:
            raise ValueError(f"LSKA: k_size={k_size!r} must be one of {list(self._KERNELS)}")
        dilation = 2 if k_size < 23 else 3
        local = 2 * dilation - 1
        dilated = k_size // dilation
        far = (dilated - 1) * dilation // 2
        self.k_size = k_size
        self.conv0h = nn.Conv2d(c1, c1, (1, local), padding=(0, local // 2), groups=c1)
        self.conv0v = nn.Conv2d(c1, c1, (local, 1), padding=(local // 2, 0), groups=c1)
        self.conv_spatial_h = nn.Conv2d(c1, c1, (1, dilated), padding=(0, far), groups=c1, dilation=dilation)
        self.conv_spatial_v = nn.Conv2d(c1, c1, (dilated, 1), padding=(far, 0), groups=c1, dilation=dilation)
        self.conv1 = nn.Conv2d(c1, c1, 1)
        for conv in (self.conv0h, self.conv0v, self.conv_spatial_h, self.conv_spatial_v, self.conv1):
            fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x * Conv1x1(DW dilated pair(DW local pair(x)))."""
        attn = self.conv_spatial_v(self.conv_spatial_h(self.conv0v(self.conv0h(x))))
        return x * self.conv1(attn)
