"""Squeeze-and-Excitation (SE), Hu et al. 2018, for YOLOv5's models/common.py.

Each channel is squeezed to its spatial mean; a two-layer bottleneck (C -> C/r -> C, ReLU between)
turns the channel descriptor into a sigmoid gate that rescales the channels.
"""

import torch
import torch.nn as nn

YOLOPATCH = {
    "key": "se",
    "class_name": "SE",
    "version": 1,
    "aliases": ["SEBlock", "SELayer", "SqueezeExcitation", "SqueezeAndExcitation"],
    "paper": "Squeeze-and-Excitation Networks",
    "authors": "Hu et al.",
    "venue": "CVPR",
    "year": 2018,
    "summary": "Sigmoid channel gate from the global average of each channel through a C -> C/r -> C "
    "bottleneck with a ReLU.",
    "hyperparameters": {"reduction": 16},
    "param_count": "2 * c * max(c // reduction, 1) + max(c // reduction, 1) + c",
    "constraints": [
        "any c1 >= 1 and reduction >= 1; the bottleneck width is max(c1 // reduction, 1), so c1 = 16 at "
        "reduction 16 keeps one hidden unit instead of none",
        "the spatial mean is taken in float32 for half and bfloat16 inputs; the gate has the input's dtype",
    ],
    "registration": "width",
    "kind": "channel",
    "official_code": "hujie-frank/SENet",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class SE(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018); input and output (b, c1, H, W).

    With m = max(c1 // reduction, 1):
        z_c = mean_{h,w} x_{c,h,w}                      (squeeze: global average pooling)
        s   = sigmoid(W2 ReLU(W1 z + b1) + b2)          (excitation: c1 -> m -> c1, with biases)
        out = s_c * x_c
    The two fully connected layers are 1x1 convolutions on the (b, c1, 1, 1) descriptor, as in the
    official Caffe models (conv*_1x1_down / conv*_1x1_up, with bias), so the gate broadcasts over
    H x W without any reshape (nothing depends on the batch or spatial size: ONNX exports stay
    dynamic). Default PyTorch initialisation, as in the PyTorch transcriptions of the official code.

    Deviations from the official code: the bottleneck width is max(c1 // reduction, 1) rather than
    c1 // reduction, which is 0 (a layer with no units) for c1 < reduction; the mean is a float32
    reduction for half/bfloat16 inputs; torch.mean replaces AdaptiveAvgPool2d(1) (same value; its
    backward is deterministic on CUDA, where adaptive pooling's is not). moskomule/senet.pytorch
    drops the biases (bias=False); this module keeps them, as the official Caffe prototxt does.
    """

    def __init__(self, c1: int, c2: "int | None" = None, reduction: int = 16) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(f"SE: c2={c2} must be None or equal to c1={c1}: the module keeps its input width")
        if not isinstance(c1, int) or isinstance(c1, bool) or c1 < 1:
            raise ValueError(f"SE: c1={c1!r} must be a positive int")
        if not isinstance(reduction, int) or isinstance(reduction, bool) or reduction < 1:
            raise ValueError(
                f"SE: reduction={reduction!r} must be an int >= 1 (the paper uses 16; the bottleneck is "
                f"max(c1 // reduction, 1))"
            )
        mid = max(c1 // reduction, 1)
        self.down = nn.Conv2d(c1, mid, 1)
        self.act = nn.ReLU()
        self.up = nn.Conv2d(mid, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x * sigmoid(W2 ReLU(W1 mean_hw(x) + b1) + b2); same shape and dtype as x."""
        z = x.mean((2, 3), keepdim=True, dtype=torch.promote_types(x.dtype, torch.float32))
        s = self.up(self.act(self.down(z.to(self.down.weight.dtype))))
        return x * torch.sigmoid(s).to(x.dtype)
