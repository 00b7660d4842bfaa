"""Convolutional Block Attention Module (CBAM), Woo et al. 2018, for YOLOv5's models/common.py.

A channel gate from a shared MLP applied to each channel's spatial average and maximum, then a
spatial gate from a 7x7 convolution (+ BatchNorm) over the per-pixel channel maximum and mean.
"""

import torch
import torch.nn as nn

YOLOPATCH = {
    "key": "cbam",
    "class_name": "CBAM",
    "version": 1,
    "aliases": ["CBAMBlock", "ConvolutionalBlockAttentionModule"],
    "paper": "CBAM: Convolutional Block Attention Module",
    "authors": "Woo et al.",
    "venue": "ECCV",
    "year": 2018,
    "summary": "Sigmoid channel gate from a shared MLP over average- and max-pooled channels, then a "
    "sigmoid spatial gate from a 7x7 conv+BN over the channel max and mean maps.",
    "hyperparameters": {"reduction": 16, "kernel_size": 7},
    "param_count": "2 * c * max(c // reduction, 1) + max(c // reduction, 1) + c + 2 * kernel_size ** 2 + 2",
    "constraints": [
        "any c1 >= 1 and reduction >= 1; the MLP's hidden width is max(c1 // reduction, 1)",
        "kernel_size (the spatial gate's convolution, 7 in the paper) must be an odd int >= 1: the same-size "
        "padding (k - 1) / 2 keeps H x W only for odd sizes",
        "the spatial gate's BatchNorm keeps the official momentum 0.01 and eps 1e-5 until YOLOv5's "
        "initialize_weights sets every BatchNorm2d to eps 1e-3, momentum 0.03",
    ],
    "registration": "width",
    "kind": "channel+spatial",
    "official_code": "Jongchan/attention-module",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018); input and output (b, c1, H, W).

    With m = max(c1 // reduction, 1) and MLP(v) = W2 ReLU(W1 v + b1) + b2 (c1 -> m -> c1, shared):
        M_c  = sigmoid(MLP(mean_{h,w} x) + MLP(max_{h,w} x))              channel gate, (b, c1)
        x'   = M_c * x
        M_s  = sigmoid(BN(conv_k([max_c x'; mean_c x'])))                   spatial gate, (b, 1, H, W)
        out  = M_s * x'
    conv_k is a k x k convolution, 2 -> 1 channels, zero padding (k - 1) / 2, no bias; the channel
    maps are stacked max first, as the official ChannelPool does.

    Initialisation as the official ResNet models do it (their loop over the state_dict): the 7x7
    convolution kaiming_normal (fan_out), the spatial BatchNorm's weight and bias 0 (so the spatial
    gate starts as the constant 0.5 and learns from there), MLP biases 0, MLP weights PyTorch's default.

    Deviations from the official code: global pooling is a mean and a max over (H, W) instead of
    F.avg_pool2d / F.max_pool2d with a kernel of the input's size, which an ONNX export bakes in as a
    constant (the exported model then only runs at the traced size); the values are the same. The
    spatial max is taken over the flattened H * W with indices, so its backward is max_pool2d's: the
    gradient goes to one of tied maxima (flatten is a view for contiguous input, one input-sized copy
    for channels_last input). The MLP's hidden width is max(c1 // reduction, 1) (the official
    c1 // reduction is 0 for c1 < 16). Means are float32 reductions for half/bfloat16 inputs.
    Deterministic backward on CPU (the maxima's backward scatters to unique indices; no pooling kernels).
    """

    def __init__(self, c1: int, c2: "int | None" = None, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(f"CBAM: c2={c2} must be None or equal to c1={c1}: the module keeps its input width")
        if not isinstance(c1, int) or isinstance(c1, bool) or c1 < 1:
            raise ValueError(f"CBAM: c1={c1!r} must be a positive int")
        if not isinstance(reduction, int) or isinstance(reduction, bool) or reduction < 1:
            raise ValueError(
                f"CBAM: reduction={reduction!r} must be an int >= 1 (the paper uses 16; the MLP's hidden width "
                f"is max(c1 // reduction, 1))"
            )
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CBAM: kernel_size={kernel_size!r} must be an odd int >= 1 (the paper uses 7)")
        mid = max(c1 // reduction, 1)
        self.mlp = nn.Sequential(nn.Linear(c1, mid), nn.ReLU(), nn.Linear(mid, c1))
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out")
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.mlp[0].bias)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return spatial gate * (channel gate * x); same shape and dtype as x."""
        acc = torch.promote_types(x.dtype, torch.float32)
        weight_dtype = self.mlp[0].weight.dtype
        avg = x.mean((2, 3), dtype=acc).to(weight_dtype)
        peak = x.flatten(2).max(2).values.to(weight_dtype)  # max with indices: a small backward, as max_pool2d
        channel = torch.sigmoid(self.mlp(avg) + self.mlp(peak)).to(x.dtype)
        xc = x * channel[:, :, None, None]
        pooled = torch.cat((xc.max(1, keepdim=True).values.to(acc), xc.mean(1, keepdim=True, dtype=acc)), 1)
        spatial = self.bn(self.conv(pooled.to(self.conv.weight.dtype)))
        return xc * torch.sigmoid(spatial).to(x.dtype)
