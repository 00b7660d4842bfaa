"""SOCA baseline: the published SAN formulation (Dai et al., CVPR 2019), written from its equations.

Covariance pooling with the explicit M x M centring matrix I_hat = (1/M)(I - 1 1^T / M), materialised
for every image of the batch as the published code does (``repeat`` before ``bmm``), then five matrix
Newton-Schulz iterations on A = Sigma / tr(Sigma), post-compensation by sqrt(tr(Sigma)), the mean over
the rows and the 1x1-conv gate. Gradients come from autograd (the published code's hand-written
backward computes the same products). Float32 throughout, no trace clamp: a benchmark reference,
not something to train with.
"""

import torch
import torch.nn as nn

NAME = "SAN: explicit (b, M, M) centring matrix + 5 matrix Newton-Schulz iterations, autograd"


class SOCABaseline(nn.Module):
    """Paper-literal SOCA: Sigma = X I_hat X^T, matrix Newton-Schulz square root, channel gate."""

    def __init__(self, c: int, reduction: int = 8, iterations: int = 5) -> None:
        super().__init__()
        hidden = max(c // reduction, 1)
        self.iterations = iterations
        self.conv_du = nn.Sequential(
            nn.Conv2d(c, hidden, 1, bias=True),
            nn.ReLU(),
            nn.Conv2d(hidden, c, 1, bias=True),
            nn.Sigmoid(),
        )

    def covariance(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        m = h * w
        features = x.reshape(b, c, m)
        eye = torch.eye(m, dtype=x.dtype, device=x.device)
        centring = (eye - torch.ones(m, m, dtype=x.dtype, device=x.device) / m) / m
        centring = centring.unsqueeze(0).repeat(b, 1, 1)
        return features.bmm(centring).bmm(features.transpose(1, 2))

    def square_root(self, sigma: torch.Tensor) -> torch.Tensor:
        b, c, _ = sigma.shape
        eye = torch.eye(c, dtype=sigma.dtype, device=sigma.device).unsqueeze(0).repeat(b, 1, 1)
        trace = sigma.diagonal(dim1=1, dim2=2).sum(1).view(b, 1, 1)
        y = sigma / trace
        z = eye
        for step in range(self.iterations):
            t = 0.5 * (3.0 * eye - z.bmm(y))
            if step < self.iterations - 1:  # the last iteration needs Y only
                z = t.bmm(z)
            y = y.bmm(t)
        return y * trace.sqrt()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        root = self.square_root(self.covariance(x))
        pooled = root.mean(1).view(b, c, 1, 1)
        return self.conv_du(pooled) * x


def build(c: int) -> nn.Module:
    return SOCABaseline(c)
