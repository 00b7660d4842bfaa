"""SimAM, a simple parameter-free attention module (Yang et al., ICML 2021), for YOLOv5's models/common.py.

Every activation is weighted by a closed-form "energy" from neuroscience's spatial suppression: a neuron
that stands out from the other neurons of its channel (large (x - mean)^2 against the channel's
variance) gets a gate close to 1, an ordinary one a gate close to sigmoid(0.5). No parameters.
"""

import torch
import torch.nn as nn

YOLOPATCH = {
    "key": "simam",
    "class_name": "SimAM",
    "version": 1,
    "aliases": ["SimAMAttention", "simam_module"],
    "paper": "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks",
    "authors": "Yang et al.",
    "venue": "ICML",
    "year": 2021,
    "summary": "Parameter-free 3-D gate sigmoid(1/E) from each neuron's closed-form energy: its squared "
    "distance to the channel mean over the channel's variance plus lambda.",
    "hyperparameters": {"e_lambda": 1e-4},
    "param_count": "0",
    "constraints": [
        "any c1 >= 1 and any H, W >= 1: the variance divides by max(H*W - 1, 1), so a 1x1 map gives the "
        "constant gate sigmoid(0.5) where the official code divides 0 by 0",
        "e_lambda is a number > 0 (the paper's lambda, 1e-4); YAML args are [e_lambda] only, without a width",
        "statistics and the gate are computed in float32 for float16/bfloat16 inputs ((x - mean)^2 overflows "
        "float16 from |x - mean| > 256); the result has the input's dtype",
    ],
    "registration": "no-width",
    "kind": "parameter-free",
    "official_code": "ZjjConan/SimAM",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class SimAM(nn.Module):
    """SimAM (Yang et al. 2021): parameter-free, full 3-D attention weights; input and output (b, c1, H, W).

    Per image and channel, over its N = H*W positions t:
        mu     = (1/N) sum_t x_t
        d_t    = (x_t - mu)^2
        var    = (1/n) sum_t d_t,          n = max(N - 1, 1)
        1/E_t  = d_t / (4 (var + lambda)) + 1/2
        out_t  = x_t * sigmoid(1/E_t)

    Deviations from the official simam_module (the same values wherever the official one is finite):
    - n = max(N - 1, 1) instead of N - 1: at N = 1 the official forward divides 0 by 0 (NaN output and
      gradients); here d = 0 and the gate is sigmoid(0.5). Identical for every N >= 2.
    - N is counted with tensor ops (ones over one channel's map, summed; the max as a clamp) rather
      than from ``x.size()`` in Python, so no tracer can freeze it at the tracing size (torch 2.15's
      jit.trace and both ONNX exporters do follow Python size arithmetic; this does not depend on it).
    - float16/bfloat16 inputs are promoted to float32 for the statistics and the gate ((x - mu)^2 reaches
      65504, float16's largest value, at |x - mu| = 256); the product is taken in the input dtype.
    The c1/c2 arguments exist for parse_model's calling convention only: nothing depends on the width.
    """

    def __init__(self, c1: int, c2: "int | None" = None, e_lambda: float = 1e-4) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(f"SimAM: c2={c2} must be None or equal to c1={c1}: the module keeps its input width")
        if not isinstance(c1, int) or isinstance(c1, bool) or c1 < 1:
            raise ValueError(f"SimAM: c1={c1!r} must be a positive int")
        if isinstance(e_lambda, bool) or not isinstance(e_lambda, (int, float)) or not e_lambda > 0:
            raise ValueError(f"SimAM: e_lambda={e_lambda!r} must be a number > 0 (the paper uses 1e-4)")
        self.e_lambda = float(e_lambda)

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x * sigmoid((x - mu)^2 / (4 (var + lambda)) + 1/2), per channel; same shape and dtype as x."""
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        d = (xf - xf.mean((2, 3), keepdim=True)).square()
        n = torch.ones_like(xf[:1, :1]).sum((2, 3), keepdim=True).sub(1.0).clamp(min=1.0)  # max(H*W - 1, 1)
        scale = 0.25 / (d.sum((2, 3), keepdim=True) / n + self.e_lambda)
        return x * torch.sigmoid(d * scale + 0.5).to(x.dtype)
