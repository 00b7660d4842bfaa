"""Large Selective Kernel (LSK) block, Li et al. 2023, for YOLOv5's models/common.py.

A depthwise 5x5 and a following depthwise 7x7 convolution with dilation 3 give a small and a large
receptive field (5 and 23 pixels); each is projected to half the channels, and a spatial selection map
from their channel-wise mean and max (a 7x7 convolution, two sigmoid maps) mixes them per position. A
1x1 convolution back to the full width gives the attention that multiplies the input.
"""

import torch
import torch.nn as nn

YOLOPATCH = {
    "key": "lsk",
    "class_name": "LSKBlock",
    "version": 1,
    "aliases": ["LSK", "LargeSelectiveKernel"],
    "paper": "Large Selective Kernel Network for Remote Sensing Object Detection",
    "authors": "Li et al.",
    "venue": "ICCV",
    "year": 2023,
    "summary": "Decomposed large-kernel depthwise convolutions (5x5, then 7x7 dilation 3) mixed per position by "
    "a spatial selection from their channel mean and max, multiplying the input.",
    "hyperparameters": {},
    "param_count": "77 * c + 3 * c * max(c // 2, 1) + 2 * max(c // 2, 1) + 198",
    "constraints": [
        "any c1 >= 1; the two projections have max(c1 // 2, 1) channels (c1 // 2 as official, 1 at c1 = 1)",
        "the attention is not squashed (out = x * conv(...), as in the paper and the official LSKblock), so "
        "the output grows as x squared: in float16 it overflows (inf) once |x * attention| exceeds 65504; "
        "with the official initialisation that happens at feature maps whose largest |x| is about 200 "
        "(measured at c1 = 128 and 512), with trained-scale weights (normal / sqrt(fan-in)) at about 330, "
        "so amp_safe is False: float16 is safe below max |x| of about 150 (the channel mean is taken in "
        "float32; nothing inside the module can keep x * attention in range)",
    ],
    "registration": "width",
    "kind": "spatial",
    "official_code": "zcablii/LSKNet",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": False, "onnx_opset": 17},
}


class LSKBlock(nn.Module):
    """LSKblock, the spatial selection unit of LSKNet (Li et al. 2023); input and output (b, c1, H, W).

    With m = max(c1 // 2, 1):
        U1 = DW5x5(x) + b                                  depthwise, padding 2
        U2 = DW7x7_{dilation 3}(U1) + b                    depthwise, padding 9
        A1 = W1 U1 + b1,  A2 = W2 U2 + b2                  1x1, c1 -> m each
        S  = [mean_c [A1, A2], max_c [A1, A2]]             (2, H, W), over the 2m channels
        s  = sigmoid(conv7x7_{2->2}(S))                    (2, H, W)
        out = x * (W3 (s_0 * A1 + s_1 * A2) + b3)          1x1, m -> c1
    This is the official LSKblock (zcablii/LSKNet mmrotate/models/backbones/lsknet.py), the block the
    LSKNet Attention wraps with 1x1 projections, GELU and a residual; yolopatch inserts the block itself,
    like the YOLO ports. Initialisation as LSKNet.init_weights: every convolution normal with std
    sqrt(2 / fan_out), fan_out = k * k * out_channels / groups, bias 0.

    Deviations from the official code: the projections have max(c1 // 2, 1) channels (the official
    c1 // 2 is 0 at c1 = 1); the channel mean is accumulated in float32 for half/bfloat16 inputs. The
    block has no size-dependent part: it runs at any H x W (zero padding).
    """

    def __init__(self, c1: int, c2: "int | None" = None) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(
                f"LSKBlock: c2={c2} must be None or equal to c1={c1}: the module keeps its input width"
            )
        if not isinstance(c1, int) or isinstance(c1, bool) or c1 < 1:
            raise ValueError(f"LSKBlock: c1={c1!r} must be a positive int")
        mid = max(c1 // 2, 1)
        self.conv0 = nn.Conv2d(c1, c1, 5, padding=2, groups=c1)
        self.conv_spatial = nn.Conv2d(c1, c1, 7, stride=1, padding=9, groups=c1, dilation=3)
        self.conv1 = nn.Conv2d(c1, mid, 1)
        self.conv2 = nn.Conv2d(c1, mid, 1)
        self.conv_squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.conv = nn.Conv2d(mid, c1, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x * conv(s_0 * A1 + s_1 * A2); same shape and dtype as x."""
        stats = torch.promote_types(x.dtype, torch.float32)
        u1 = self.conv0(x)
        u2 = self.conv_spatial(u1)
        a1 = self.conv1(u1)
        a2 = self.conv2(u2)
        both = torch.cat([a1, a2], dim=1)
        mean = torch.mean(both, dim=1, keepdim=True, dtype=stats).to(both.dtype)
        peak = torch.max(both, dim=1, keepdim=True).values  # not amax: its backward keeps input-sized masks
        select = torch.sigmoid(self.conv_squeeze(torch.cat([mean, peak], dim=1)))
        return x * self.conv(a1 * select[:, 0:1] + a2 * select[:, 1:2])
