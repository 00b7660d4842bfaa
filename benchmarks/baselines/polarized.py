"""Baseline for PolarizedSelfAttention: the official PSA_p (semantic-segmentation/network/PSA.py) op order,
with the paper's math.

Channel-only branch: conv_v_right, view, conv_q_right, view, softmax over HW, matmul, unsqueeze, conv_up,
sigmoid; spatial-only branch: conv_q_left, AdaptiveAvgPool2d(1), view + permute, conv_v_left, view,
matmul, view, sigmoid; the two gated inputs added. Two changes make it compute the paper's function
(the same one as the yolopatch module): LayerNorm([c, 1, 1]) between conv_up and the sigmoid, and the
spatial branch's softmax on the pooled query over its channels instead of on the product over HW.
Written from the published forward, for timing only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

NAME = "official PSA_p op order (view/matmul, AdaptiveAvgPool2d), paper's LayerNorm and softmax axis"


class _PSAParallel(nn.Module):
    def __init__(self, planes: int) -> None:
        super().__init__()
        self.inter_planes = planes // 2
        self.conv_q_right = nn.Conv2d(planes, 1, kernel_size=1, bias=False)
        self.conv_v_right = nn.Conv2d(planes, self.inter_planes, kernel_size=1, bias=False)
        self.conv_up = nn.Conv2d(self.inter_planes, planes, kernel_size=1, bias=False)
        self.layer_norm = nn.LayerNorm([planes, 1, 1])
        self.softmax_right = nn.Softmax(dim=2)
        self.sigmoid = nn.Sigmoid()
        self.conv_q_left = nn.Conv2d(planes, self.inter_planes, kernel_size=1, bias=False)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_v_left = nn.Conv2d(planes, self.inter_planes, kernel_size=1, bias=False)
        self.softmax_left = nn.Softmax(dim=2)

    def spatial_pool(self, x: torch.Tensor) -> torch.Tensor:
        input_x = self.conv_v_right(x)
        batch, channel, height, width = input_x.size()
        input_x = input_x.view(batch, channel, height * width)
        context_mask = self.conv_q_right(x).view(batch, 1, height * width)
        context_mask = self.softmax_right(context_mask)
        context = torch.matmul(input_x, context_mask.transpose(1, 2)).unsqueeze(-1)
        mask_ch = self.sigmoid(self.layer_norm(self.conv_up(context)))
        return x * mask_ch

    def channel_pool(self, x: torch.Tensor) -> torch.Tensor:
        g_x = self.conv_q_left(x)
        batch, channel, height, width = g_x.size()
        avg_x = self.avg_pool(g_x)
        avg_x = avg_x.view(batch, channel, 1).permute(0, 2, 1)
        avg_x = self.softmax_left(avg_x)
        theta_x = self.conv_v_left(x).view(batch, self.inter_planes, height * width)
        context = torch.matmul(avg_x, theta_x).view(batch, 1, height, width)
        return x * self.sigmoid(context)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_pool(x) + self.spatial_pool(x)


def build(c: int) -> nn.Module:
    return _PSAParallel(c)
