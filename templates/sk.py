"""Selective Kernel (SK) convolution, Li et al. 2019, for YOLOv5's models/common.py.

M grouped 3x3 branches with growing dilation (3x3, 5x5, ... receptive fields) are summed, pooled and
squeezed into a descriptor z; per branch a fully connected layer scores every channel, a softmax across
the branches turns the scores into weights, and the output is the weighted sum of the branches.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

YOLOPATCH = {
    "key": "sk",
    "class_name": "SKAttention",
    "version": 1,
    "aliases": ["SK", "SKConv", "SelectiveKernel"],
    "paper": "Selective Kernel Networks",
    "authors": "Li et al.",
    "venue": "CVPR",
    "year": 2019,
    "summary": "Grouped 3x3 branches of growing dilation, mixed per channel by a softmax across the branches "
    "computed from their pooled sum.",
    "hyperparameters": {"branches": 2, "groups": 32, "reduction": 16, "min_dim": 32},
    "param_count": "branches * (9 * c * (c // gcd(c, groups)) + 2 * c) "
    "+ c * max(c // reduction, min_dim) * (1 + branches) + 2 * max(c // reduction, min_dim)",
    "constraints": [
        "any c1 >= 1; branches >= 1 (branch m is a 3x3 convolution with dilation m + 1: 2 = the paper's 3x3 "
        "and 5x5 pair); the convolution groups actually used are gcd(c1, groups), which always divides c1 "
        "(groups=32: 32 at every multiple of 32, 16 at c1=16, 48 or 80)",
        "the squeeze width is d = max(c1 // reduction, min_dim), the paper's max(C / r, L)",
        "the output is the selected convolution output, not x times a gate (the SK unit replaces a 3x3 "
        "convolution; there is no residual), so a freshly inserted module changes the features it receives",
        "the BatchNorm after the squeeze layer sees one value per channel and image; with a single image in "
        "training mode (YOLOv5's stride probe) it normalises with its running statistics instead of "
        "raising, otherwise it is ordinary BatchNorm",
        "softmax and global pooling run in float32 for float16/bfloat16 inputs; the output has the input's dtype",
    ],
    "registration": "width",
    "kind": "multi-scale",
    "official_code": "implus/SKNet",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class SKAttention(nn.Module):
    """Selective Kernel convolution (Li et al. 2019); input and output (b, c1, H, W).

    With M branches, G = gcd(c1, groups) and d = max(c1 // reduction, min_dim):
        U_m = ReLU(BN_m(conv3x3_{dilation m+1, groups G}(x)))     m = 0 .. M-1, no conv bias
        s   = mean_hw sum_m U_m                                   (c1,)
        z   = ReLU(BN(W_fc1 s))                                   (d,), no bias
        a   = softmax_m(W_fc2 z)                                  W_fc2: d -> M * c1 (branch-major), no bias
        V   = sum_m a_m * U_m
    This is the official Caffe SK unit (implus/SKNet sknet50.prototxt: "3x3g32" and "3x3g32d2" branches
    with BN+ReLU, Eltwise SUM, global AVE pooling, B_fc1 + BN + ReLU, B_fc2, Reshape (N, M, C), Softmax
    over axis 1, Scale + Axpy) with c1 channels in and out. Initialisation as there: branch convolutions
    "msra" (normal, std sqrt(2 / fan_in)), both fully connected layers gaussian std 0.01, BN 1 and 0;
    the ReLUs work in place, as the prototxt's (each BN output is consumed only by its ReLU).

    Deviations from the official unit:
      - groups = gcd(c1, groups) so that every width works (the prototxt's group 32 needs 32 | c1);
      - branch m uses dilation m + 1 for any M (the released models have M = 2);
      - the squeeze BatchNorm with one image in training mode uses its running statistics (torch
        refuses batch statistics of a single value; YOLOv5 probes strides with one image in training
        mode), identical to the official BN in every other case;
      - pooling and softmax in float32 for half/bfloat16 inputs; reshapes use unflatten (no Python ints).
    """

    def __init__(self, c1: int, c2: "int | None" = None, branches: int = 2, groups: int = 32,
                 reduction: int = 16, min_dim: int = 32) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(
                f"SKAttention: c2={c2} must be None or equal to c1={c1}: the module keeps its input width"
            )
        if not isinstance(c1, int) or isinstance(c1, bool) or c1 < 1:
            raise ValueError(f"SKAttention: c1={c1!r} must be a positive int")
        for name, value in (("branches", branches), ("groups", groups), ("reduction", reduction),
                            ("min_dim", min_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SKAttention: {name}={value!r} must be an int >= 1 "
                                 f"(paper: branches=2, groups=32, reduction=16, min_dim=32)")
        self.num_branches = branches
        self.groups = math.gcd(c1, groups)
        dim = max(c1 // reduction, min_dim)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c1, c1, 3, padding=m + 1, dilation=m + 1, groups=self.groups, bias=False),
                nn.BatchNorm2d(c1),
                nn.ReLU(inplace=True),
            )
            for m in range(branches)
        )
        self.fc1 = nn.Conv2d(c1, dim, 1, bias=False)
        self.bn = nn.BatchNorm2d(dim)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(dim, branches * c1, 1, bias=False)
        for branch in self.branches:
            nn.init.kaiming_normal_(branch[0].weight, mode="fan_in", nonlinearity="relu")
        nn.init.normal_(self.fc1.weight, std=0.01)
        nn.init.normal_(self.fc2.weight, std=0.01)

    def _squeeze_norm(self, z: torch.Tensor) -> torch.Tensor:
        """BatchNorm of the pooled descriptor; running statistics for a single image in training mode."""
        if self.training and z.shape[0] == 1:
            bn = self.bn
            return F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return self.bn(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return sum_m softmax_m(scores)_c * U_m; same shape and dtype as x."""
        stats = torch.promote_types(x.dtype, torch.float32)
        features = [branch(x) for branch in self.branches]
        total = features[0]
        for feature in features[1:]:
            total = total + feature
        pooled = torch.mean(total, dim=(2, 3), keepdim=True, dtype=stats)  # (b, c1, 1, 1)
        z = self.relu(self._squeeze_norm(self.fc1(pooled.to(self.fc1.weight.dtype))))
        scores = self.fc2(z).to(stats).unflatten(1, (self.num_branches, -1))  # (b, M, c1, 1, 1)
        weights = torch.softmax(scores, dim=1).to(features[0].dtype)
        out = features[0] * weights[:, 0]
        for m in range(1, self.num_branches):
            out = out + features[m] * weights[:, m]
        return out
