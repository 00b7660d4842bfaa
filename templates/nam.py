"""NAM, normalization-based attention (Liu et al. 2021), channel sub-module, for YOLOv5's models/common.py.

The input is batch-normalised and each channel weighted by its share of the BatchNorm scale factors
|gamma_i| / sum_j |gamma_j|: channels whose features vary more (larger learnt scale) count more in
the sigmoid gate. No layers besides one BatchNorm.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

YOLOPATCH = {
    "key": "nam",
    "class_name": "NAM",
    "version": 1,
    "aliases": ["NAMAttention", "NormalizationAttention", "Channel_Att"],
    "paper": "NAM: Normalization-based Attention Module",
    "authors": "Liu et al.",
    "venue": "arXiv",
    "year": 2021,
    "summary": "Sigmoid gate from the batch-normalised input, each channel weighted by its BatchNorm scale's "
    "share |gamma_i| / sum |gamma_j|.",
    "hyperparameters": {},
    "param_count": "2 * c",
    "constraints": [
        "any c1 >= 1 and any H, W >= 1; in training the BatchNorm normalises over batch and positions, so "
        "batch 1 with a 1x1 map cannot be normalised (torch refuses, as for any BatchNorm)",
        "the channel weights |gamma_i| / sum |gamma_j| are treated as constants in the backward pass, as in "
        "the official code (gamma still learns through the BatchNorm affine)",
        "the paper's L1 sparsity penalty on gamma is part of its training loop (the official script adds "
        "1e-4 * sign(gamma) to gamma's gradient), not of the module; YOLOv5's train.py does not add it",
        "only the channel attention sub-module: the official code implements no spatial (pixel) branch",
    ],
    "registration": "width",
    "kind": "channel",
    "official_code": "Christian-lyc/NAM",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class NAM(nn.Module):
    """NAM channel attention (Liu et al. 2021); input and output (b, c1, H, W).

    With BN the BatchNorm of the input (batch statistics in training, running statistics in eval,
    affine gamma, beta) and w_i = |gamma_i| / sum_j |gamma_j| (a constant for autograd):
        out = x * sigmoid(w * BN(x))                         (w broadcast over channels)
    computed as one BatchNorm whose affine is (w * gamma, w * beta), which is the same function:
    w * (gamma * x_hat + beta) = (w * gamma) * x_hat + w * beta; the running statistics are updated
    exactly as nn.BatchNorm2d does (momentum, or the cumulative average when momentum is None). When
    ``bn`` has been replaced by another BatchNorm class (torch's convert_sync_batchnorm, which YOLOv5's
    --sync-bn runs), it is called as it is and its output multiplied by w.

    Deviations from the official Channel_Att: the official multiplies the BatchNorm output by w on
    two channels-last copies (permute, contiguous, mul, permute back); the folded affine gives the same
    values without them. w's denominator is clamped at 1e-12 (the official divides by zero when every
    gamma is 0; here the gate is then sigmoid(0) = 1/2). w uses ``detach()`` where the official reads
    ``.data``: the same gradients. Initialisation: BatchNorm weight 1, bias 0, as the official ResNet sets.
    BatchNorm keeps its own precision rules for float16/bfloat16 inputs (float32 accumulation of the
    statistics); w is computed in at least float32.
    """

    def __init__(self, c1: int, c2: "int | None" = None) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(f"NAM: c2={c2} must be None or equal to c1={c1}: the module keeps its input width")
        if not isinstance(c1, int) or isinstance(c1, bool) or c1 < 1:
            raise ValueError(f"NAM: c1={c1!r} must be a positive int")
        self.bn = nn.BatchNorm2d(c1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x * sigmoid(w * BN(x)), w_i = |gamma_i| / sum |gamma_j|; same shape and dtype as x."""
        bn = self.bn
        share = bn.weight.detach().to(torch.promote_types(bn.weight.dtype, torch.float32)).abs()
        share = (share / share.sum().clamp(min=1e-12)).to(bn.weight.dtype)
        if type(bn) is not nn.BatchNorm2d:  # e.g. SyncBatchNorm after convert_sync_batchnorm (DDP --sync-bn)
            return x * torch.sigmoid(bn(x) * share[:, None, None])
        momentum = 0.0
        if self.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        batch_stats = self.training or not bn.track_running_stats
        normed = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight * share, bn.bias * share,
                              batch_stats, momentum, bn.eps)
        return x * torch.sigmoid(normed)
