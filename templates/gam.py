"""Global Attention Mechanism (GAM), Liu et al. 2021, for YOLOv5's models/common.py.

A channel gate from a per-pixel MLP over the channels (no pooling, so no spatial information is
discarded), followed by a spatial gate from two 7x7 convolutions with a C/r bottleneck.
"""

import torch
import torch.nn as nn

YOLOPATCH = {
    "key": "gam",
    "class_name": "GAM",
    "version": 1,
    "aliases": ["GAM_Attention", "GlobalAttentionMechanism"],
    "paper": "Global Attention Mechanism: Retain Information to Enhance Channel-Spatial Interactions",
    "authors": "Liu et al.",
    "venue": "arXiv",
    "year": 2021,
    "registration": "width",
    "kind": "channel+spatial",
    "official_code": "",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
    "summary": "Sigmoid channel gate from a per-pixel channel MLP, then a sigmoid spatial gate from two 7x7 "
    "conv+BN layers with a C/r bottleneck.",
    "hyperparameters": {"rate": 4, "groups": 1},
    "param_count": "2 * c * max(c // rate, 1) + max(c // rate, 1) + c "
    "+ 49 * (c // groups) * max(c // rate, 1) + 2 * max(c // rate, 1) "
    "+ 49 * (max(c // rate, 1) // groups) * c + 2 * c",
    "constraints": [
        "any c1 >= 1 and rate >= 1; the bottleneck width is max(c1 // rate, 1)",
        "groups (for both 7x7 convolutions; 1 = the paper) must divide both c1 and the bottleneck width "
        "max(c1 // rate, 1); the error lists the allowed values",
    ],
}


class GAM(nn.Module):
    """Global Attention Mechanism (Liu et al. 2021); input and output (b, c1, H, W).

    With m = max(c1 // rate, 1):
        F2 = sigmoid(W2 ReLU(W1 x_p + b1) + b2) * x     channel MLP c1 -> m -> c1 at every pixel p
        F3 = sigmoid(BN(conv7_{m->c1}(ReLU(BN(conv7_{c1->m}(F2)))))) * F2
    The MLP runs as two 1x1 convolutions: the same map as nn.Linear on channels-last permuted data,
    with no permute copies, and faster on CPU (channel branch forward+backward at batch 8, one thread:
    P3 144 ms vs 312 ms, P5 36 ms vs 52 ms). The 7x7 convolutions have no bias: each is followed by
    BatchNorm, which cancels it.

    Size: the two 7x7 convolutions hold 2 * 49 * c1 * m / groups weights, 6.4 M at c1 = 512 (all of
    yolov5s has 7.2 M). groups > 1 makes both grouped and divides that by groups (the blog variant's
    saving, without its channel shuffle); the default 1 is the paper's module.
    """

    def __init__(self, c1: int, c2: "int | None" = None, rate: int = 4, groups: int = 1) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(f"GAM: c2={c2} must be None or equal to c1={c1}: the module keeps its input width")
        if not isinstance(c1, int) or c1 < 1:
            raise ValueError(f"GAM: c1={c1!r} must be a positive int")
        if not isinstance(rate, int) or isinstance(rate, bool) or rate < 1:
            raise ValueError(f"GAM: rate={rate!r} must be an int >= 1 (the bottleneck is max(c1 // rate, 1))")
        mid = max(c1 // rate, 1)
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 or c1 % groups or mid % groups:
            allowed = [g for g in range(1, mid + 1) if c1 % g == 0 and mid % g == 0]
            raise ValueError(
                f"GAM: groups={groups!r} must divide both c1={c1} and the bottleneck width max(c1 // rate, 1)={mid}; "
                f"allowed: {allowed}"
            )
        self.channel = nn.Sequential(nn.Conv2d(c1, mid, 1), nn.ReLU(), nn.Conv2d(mid, c1, 1))
        self.spatial = nn.Sequential(
            nn.Conv2d(c1, mid, 7, padding=3, groups=groups, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.Conv2d(mid, c1, 7, padding=3, groups=groups, bias=False),
            nn.BatchNorm2d(c1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return F3 = spatial gate * (channel gate * x)."""
        f2 = x * torch.sigmoid(self.channel(x))
        return f2 * torch.sigmoid(self.spatial(f2))
