"""Contextual Transformer (CoT) block, Li et al. 2022, for YOLOv5's models/common.py.

A k x k grouped convolution gives static context keys K1; from [x, K1] two 1x1 layers predict, at every
position, a k x k aggregation kernel (shared by channel groups) that is applied to the values (a 1x1
projection of x) over the position's k x k neighbourhood: the dynamic context K2. K1 and K2 are fused
by a split-attention softmax over the two per channel.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

YOLOPATCH = {
    "key": "cot",
    "class_name": "CoT",
    "version": 1,
    "aliases": ["CoTAttention", "CotLayer", "ContextualTransformer"],
    "paper": "Contextual Transformer Networks for Visual Recognition",
    "authors": "Li et al.",
    "venue": "TPAMI",
    "year": 2022,
    "summary": "Static k x k context keys plus a dynamic context from per-position local attention kernels "
    "predicted from [query, keys], fused by a per-channel softmax over the two.",
    "hyperparameters": {"kernel_size": 3},
    "param_count": "kernel_size ** 2 * c * (c // gcd(c, 4)) + 2 * c "
    "+ 2 * c * max(c // 2, 1) + 2 * max(c // 2, 1) "
    "+ (max(c // 2, 1) + 3) * kernel_size ** 2 * (c // gcd(c, 8)) "
    "+ c * c + 4 * c "
    "+ c * max(c // 2, 32) + 3 * max(c // 2, 32) + 2 * c * max(c // 2, 32) + 2 * c",
    "constraints": [
        "any c1 >= 1 and any odd kernel_size >= 1 (3 = the paper); the key convolution uses gcd(c1, 4) "
        "groups and the aggregation kernels are shared by gcd(c1, 8) channels each (the official 4 and 8 "
        "whenever 8 divides c1)",
        "the local aggregation is written as k * k shifted multiply-adds over a zero-padded input (the "
        "official code is a CUDA-only CuPy kernel); it has no Python-int shapes, so exports stay dynamic",
        "the output is the fused context, not x times a gate (the CoT block replaces the 3x3 convolution of "
        "a ResNet bottleneck; there is no residual), so a freshly inserted module changes its input",
        "the BatchNorm inside the fusion's squeeze layer sees one value per channel and image; with a "
        "single image in training mode (YOLOv5's stride probe) it normalises with its running statistics "
        "instead of raising, otherwise it is ordinary BatchNorm",
        "GroupNorm, global pooling and the softmax run in float32 for float16/bfloat16 inputs; the output "
        "has the input's dtype",
    ],
    "registration": "width",
    "kind": "self-attention",
    "official_code": "JDAI-CV/CoTNet",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class CoT(nn.Module):
    """Contextual Transformer block, the official CotLayer (Li et al. 2022); input and output (b, c1, H, W).

    With k = kernel_size, S = gcd(c1, 8) channels sharing each kernel, W' = c1 / S kernel channels:
        K1  = ReLU(BN(conv_kxk_{groups gcd(c1, 4)}(x)))                   static context, no conv bias
        A   = GN_{W' groups}(W_b ReLU(BN(W_a [x, K1])) + b_b)             (k*k*W', H, W): per position,
                                                                          a k x k kernel per kernel channel
        V   = BN(W_v x)                                                   1x1, no bias
        K2  = SiLU(BN(sum_{(i, j) in k x k} A[c mod W', (i, j), p] * V[c, p + (i, j) - k // 2]))
                                                                          zero padding outside the map
        g   = mean_hw (K2 + K1)                                           (c1,)
        r   = W_2 ReLU(BN(W_1 g + b_1)) + b_2 viewed (c1, 2)              split-attention scores
        out = softmax(r)[:, 0] * K2 + softmax(r)[:, 1] * K1               softmax over the pair, per channel
    Widths as in the official layer: W_a is 2 c1 -> max(c1 // 2, 1), W_1 is c1 -> max(c1 // 2, 32).
    Initialisation as the official network's: every convolution kaiming_normal_(fan_out, relu), BN and
    GroupNorm 1 and 0, biases PyTorch's default. Activations in place, as the official layer's.

    Deviations from the official code:
      - the aggregation kernel (official: CuPy CUDA kernel "aggregation_zeropad", CUDA only) is written
        as k * k shifted multiply-adds in torch: same sum, runs on any device and exports to ONNX;
      - groups gcd(c1, 4) and sharing gcd(c1, 8) instead of 4 and 8, and widths max(c1 // 2, 1), so that
        every c1 works (identical when 8 divides c1, e.g. every YOLO width);
      - the fusion's BatchNorm with one image in training mode uses its running statistics (torch refuses
        batch statistics of one value per channel);
      - GroupNorm, pooling and the softmax in float32 for half/bfloat16 inputs.
    """

    def __init__(self, c1: int, c2: "int | None" = None, kernel_size: int = 3) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(f"CoT: c2={c2} must be None or equal to c1={c1}: the module keeps its input width")
        if not isinstance(c1, int) or isinstance(c1, bool) or c1 < 1:
            raise ValueError(f"CoT: c1={c1!r} must be a positive int")
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CoT: kernel_size={kernel_size!r} must be an odd int >= 1 (the paper uses 3)")
        self.kernel_size = kernel_size
        self.share = math.gcd(c1, 8)
        kernels = c1 // self.share
        mid = max(c1 // 2, 1)
        attn = max(c1 * 2 // 4, 32)
        self.key_embed = nn.Sequential(
            nn.Conv2d(c1, c1, kernel_size, padding=kernel_size // 2, groups=math.gcd(c1, 4), bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
        )
        self.embed = nn.Sequential(
            nn.Conv2d(2 * c1, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, kernel_size ** 2 * kernels, 1),
            nn.GroupNorm(kernels, kernel_size ** 2 * kernels),
        )
        self.conv1x1 = nn.Sequential(nn.Conv2d(c1, c1, 1, bias=False), nn.BatchNorm2d(c1))
        self.bn = nn.BatchNorm2d(c1)
        self.act = nn.SiLU(inplace=True)
        self.se = nn.Sequential(
            nn.Conv2d(c1, attn, 1),
            nn.BatchNorm2d(attn),
            nn.ReLU(inplace=True),
            nn.Conv2d(attn, 2 * c1, 1),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _kernels(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Per-position aggregation kernels (b, W', k*k, H, W), GroupNorm in float32 for half inputs."""
        stats = torch.promote_types(x.dtype, torch.float32)
        hidden = self.embed[:4](torch.cat([x, keys], dim=1))
        gn = self.embed[4]
        kernels = F.group_norm(hidden.to(stats), gn.num_groups, gn.weight.to(stats), gn.bias.to(stats), gn.eps)
        return kernels.to(hidden.dtype).unflatten(1, (gn.num_groups, -1))

    def _aggregate(self, values: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """K2[c, p] = sum_t kernels[c mod W', t, p] * values[c, p + offset_t], zero padding."""
        k = self.kernel_size
        span = k - 1
        padded = F.pad(values, (span // 2, span // 2, span // 2, span // 2)).unflatten(1, (self.share, -1))
        out = None
        for i in range(k):
            for j in range(k):
                tap = padded[:, :, :, i:(i - span) or None, j:(j - span) or None]  # (b, S, W', H, W)
                weight = kernels[:, None, :, i * k + j]  # (b, 1, W', H, W)
                out = tap * weight if out is None else torch.addcmul(out, tap, weight)
        return out.flatten(1, 2)

    def _fusion_norm(self, z: torch.Tensor) -> torch.Tensor:
        """BatchNorm of the pooled descriptor; running statistics for a single image in training mode."""
        bn = self.se[1]
        if self.training and z.shape[0] == 1:
            return F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return bn(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return softmax-weighted K2 and K1, per channel; same shape and dtype as x."""
        stats = torch.promote_types(x.dtype, torch.float32)
        keys = self.key_embed(x)
        context = self._aggregate(self.conv1x1(x), self._kernels(x, keys))
        context = self.act(self.bn(context))
        pooled = torch.mean(context + keys, dim=(2, 3), keepdim=True, dtype=stats)
        hidden = self.se[2](self._fusion_norm(self.se[0](pooled.to(self.se[0].weight.dtype))))
        scores = self.se[3](hidden).to(stats).unflatten(1, (-1, 2))  # (b, c1, 2, 1, 1)
        weights = torch.softmax(scores, dim=2).to(context.dtype)
        return context * weights[:, :, 0] + keys * weights[:, :, 1]
