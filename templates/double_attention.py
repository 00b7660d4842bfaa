"""Double attention block (A^2-Nets), Chen et al. 2018, for YOLOv5's models/common.py.

Step 1 gathers c_n global descriptors, each an attention-weighted average of c_m feature maps over all
positions (second-order attention pooling); step 2 gives every position its own attention-weighted mix
of those descriptors; a 1x1 convolution takes the c_m-channel result back to the input width.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

YOLOPATCH = {
    "key": "double-attention",
    "class_name": "DoubleAttention",
    "version": 1,
    "aliases": ["DoubleAttentionLayer", "A2Nets"],
    "paper": "A^2-Nets: Double Attention Networks",
    "authors": "Chen et al.",
    "venue": "NeurIPS",
    "year": 2018,
    "registration": "width",
    "kind": "self-attention",
    "official_code": "",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
    "summary": "Gather global descriptors by attention pooling over positions, then distribute them to each "
    "position by a per-position attention over the descriptors.",
    "hyperparameters": {"reduction_m": 4, "reduction_n": 4},
    "param_count": "2 * c * max(c // reduction_m, 1) + max(c // reduction_m, 1) "
    "+ 2 * (c * max(c // reduction_n, 1) + max(c // reduction_n, 1)) + c",
    "constraints": [
        "any c1 >= 1; reduction_m and reduction_n are ints >= 1",
        "c_m = max(c1 // reduction_m, 1) feature maps and c_n = max(c1 // reduction_n, 1) descriptors: "
        "relative to the input width (the paper's ResNet blocks use c_m = c_n = c/4), so one YAML works "
        "at every width_multiple",
    ],
}


class DoubleAttention(nn.Module):
    """Double attention block (A^2-Nets, Chen et al. 2018); input and output (b, c1, H, W).

    With N = H*W positions and 1x1 convolutions conv_A (c1 -> c_m), conv_B, conv_V (c1 -> c_n):
        A   = conv_A(x)                      (c_m, N)    features to gather
        Bb  = softmax_positions(conv_B(x))   (c_n, N)    each row sums to 1 over the N positions
        G   = A Bb^T                         (c_m, c_n)  step 1: the c_n global descriptors
        Vb  = softmax_maps(conv_V(x))        (c_n, N)    each column sums to 1 over the c_n maps
        Z   = G Vb                           (c_m, N)    step 2: distribution to every position
        out = conv_out(Z)                    (c1, N)
    per image (images never mix). c_m = max(c1 // reduction_m, 1), c_n = max(c1 // reduction_n, 1);
    the defaults give the paper's c/4.

    conv_A, conv_B and conv_V run as one 1x1 convolution (`self.proj`, output channels ordered A, B, V)
    to read x once. Z is formed as (A Bb^T) Vb: 2 N c_m c_n multiply-adds and no N x N matrix. The other
    order A (Bb^T Vb) costs N^2 (c_m + c_n) and wins only for N < 2 c_m c_n / (c_m + c_n) (= c1/4 at the
    defaults: P5 maps under about 11x11 at c1 = 512), where both are negligible; a shape-dependent
    branch would also make torch.jit.trace/ONNX export warn and freeze one order. For half/bfloat16
    inputs the softmaxes and products run in float32 and the output conv gets the input dtype back.
    """

    def __init__(self, c1: int, c2: "int | None" = None, reduction_m: int = 4, reduction_n: int = 4) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(
                f"DoubleAttention: c2={c2} must be None or equal to c1={c1}: the module keeps its input width"
            )
        if not isinstance(c1, int) or c1 < 1:
            raise ValueError(f"DoubleAttention: c1={c1!r} must be a positive int")
        for name, value in (("reduction_m", reduction_m), ("reduction_n", reduction_n)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"DoubleAttention: {name}={value!r} must be an int >= 1 (the width is max(c1 // {name}, 1); "
                    f"the paper uses 4)"
                )
        self.c_m = max(c1 // reduction_m, 1)
        self.c_n = max(c1 // reduction_n, 1)
        self.proj = nn.Conv2d(c1, self.c_m + 2 * self.c_n, 1)
        self.out = nn.Conv2d(self.c_m, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return conv_out(A softmax_positions(B)^T softmax_maps(V)) with the shape and dtype of x."""
        h, w = x.shape[2:]
        dtype = torch.promote_types(x.dtype, torch.float32)  # float32 attention for half/bfloat16
        a, bm, v = self.proj(x).flatten(2).to(dtype).split([self.c_m, self.c_n, self.c_n], dim=1)
        gather = F.softmax(bm, dim=2)  # (b, c_n, N): over positions
        distribute = F.softmax(v, dim=1)  # (b, c_n, N): over the c_n descriptors
        # bmm, not matmul: matmul's broadcasting rules make torch.export (the default ONNX exporter)
        # specialise the batch to the example's 1, and a --dynamic export then fails at batch 2
        descriptors = torch.bmm(a, gather.transpose(1, 2))  # (b, c_m, c_n): G = A Bb^T
        z = torch.bmm(descriptors, distribute)  # (b, c_m, N): Z = G Vb
        return self.out(z.to(x.dtype).unflatten(2, (h, w)))
