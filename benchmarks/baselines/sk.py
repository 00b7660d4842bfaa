"""Baseline for SKAttention: the official Caffe SK unit (implus/SKNet sknet50.prototxt), layer by layer.

Two grouped (32) 3x3 branches, the second dilated 2, each Convolution + BatchNorm + ReLU; Eltwise SUM;
global AVE Pooling; B_fc1 (1x1, no bias) + BatchNorm + ReLU; B_fc2 (1x1, no bias, 2C outputs); Reshape
to (N, 2, C, 1); Softmax over axis 1; Slice into the two branch weights; Scale the first branch and Axpy
the second onto it. Widths as the template's defaults (d = max(C / 16, 32)), groups gcd(c, 32).
Written here from the prototxt, for timing only.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

NAME = "official Caffe SK unit (2 branches g32, Eltwise SUM, fc+BN+ReLU, fc, Softmax axis 1, Scale + Axpy)"


class _CaffeSKUnit(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        groups = math.gcd(c, 32)
        dim = max(c // 16, 32)
        self.conv_3x3 = nn.Conv2d(c, c, 3, padding=1, groups=groups, bias=False)
        self.bn_3x3 = nn.BatchNorm2d(c)
        self.conv_3x3_d2 = nn.Conv2d(c, c, 3, padding=2, dilation=2, groups=groups, bias=False)
        self.bn_3x3_d2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, dim, 1, bias=False)
        self.fc1_bn = nn.BatchNorm2d(dim)
        self.fc2 = nn.Conv2d(dim, 2 * c, 1, bias=False)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u0 = self.relu(self.bn_3x3(self.conv_3x3(x)))
        u1 = self.relu(self.bn_3x3_d2(self.conv_3x3_d2(x)))
        s = self.global_pool(u0 + u1)
        z = self.relu(self.fc1_bn(self.fc1(s)))
        scores = self.fc2(z)
        n, c2 = scores.shape[:2]
        attention = self.softmax(scores.reshape(n, 2, c2 // 2, 1))
        a0, a1 = attention[:, :1], attention[:, 1:]
        scaled = u0 * a0.reshape(n, c2 // 2, 1, 1)
        return a1.reshape(n, c2 // 2, 1, 1) * u1 + scaled


def build(c: int) -> nn.Module:
    return _CaffeSKUnit(c)
