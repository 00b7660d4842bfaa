"""EMA (templates/ema.py) against an oracle written from the EMA paper's equations.

The oracle works per image and per group in float64 with plain loops: directional means, the shared
1x1 convolution as a matrix product, per-channel normalisation written out, the 3x3 convolution as a
sum over its nine taps, and the cross-spatial sums as dot products. It shares no code with the template.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "ema"
EPS = 1e-5  # GroupNorm's epsilon


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _ema(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).EMA(*args, **kwargs)


def _sigmoid(t: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-t))


def _softmax(t: torch.Tensor) -> torch.Tensor:
    e = torch.exp(t - t.max())
    return e / e.sum()


def _conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(C', H, W) -> (C', H, W): zero-padded 3x3 convolution as a sum of nine shifted channel mixes."""
    c, h, w = x.shape
    padded = torch.zeros(c, h + 2, w + 2, dtype=x.dtype)
    padded[:, 1:1 + h, 1:1 + w] = x
    out = bias[:, None, None].expand(c, h, w).clone()
    for dy in range(3):
        for dx in range(3):
            out += torch.einsum("oi,ihw->ohw", weight[:, :, dy, dx], padded[:, dy:dy + h, dx:dx + w])
    return out


def oracle(module: torch.nn.Module, x: torch.Tensor, groups: int) -> torch.Tensor:
    """Per image and group g (C', H, W):
    x1 = GN(g * sigmoid(W1 mean_w g + b1) * sigmoid(W1 mean_h g + b1)); x2 = conv3x3(g);
    w = softmax(mean x1) . x2 + softmax(mean x2) . x1; out = g * sigmoid(w)."""
    x = x.double()
    b, channels, h, w = x.shape
    per = channels // groups
    w1 = module.conv1x1.weight.detach().double()[:, :, 0, 0]
    b1 = module.conv1x1.bias.detach().double()
    w3, b3 = module.conv3x3.weight.detach().double(), module.conv3x3.bias.detach().double()
    gamma, beta = module.gn.weight.detach().double(), module.gn.bias.detach().double()
    out = torch.empty_like(x)
    for n in range(b):
        for k in range(groups):
            g = x[n, k * per:(k + 1) * per]
            z_h = g.sum(dim=2) / w  # (C', H)
            z_w = g.sum(dim=1) / h  # (C', W)
            gate_h = _sigmoid(w1 @ z_h + b1[:, None])
            gate_w = _sigmoid(w1 @ z_w + b1[:, None])
            y = g * gate_h[:, :, None] * gate_w[:, None, :]
            x1 = torch.empty_like(y)
            for c in range(per):
                mean = y[c].sum() / (h * w)
                var = ((y[c] - mean) ** 2).sum() / (h * w)
                x1[c] = (y[c] - mean) / math.sqrt(var.item() + EPS) * gamma[c] + beta[c]
            x2 = _conv3x3(g, w3, b3)
            s1 = _softmax(x1.sum(dim=(1, 2)) / (h * w))
            s2 = _softmax(x2.sum(dim=(1, 2)) / (h * w))
            weights = torch.zeros(h, w, dtype=torch.float64)
            for c in range(per):
                weights += s1[c] * x2[c] + s2[c] * x1[c]
            out[n, k * per:(k + 1) * per] = g * _sigmoid(weights)[None]
    return out


@pytest.mark.parametrize(
    ("c", "factor", "h", "w"),
    [(64, 32, 6, 5), (48, 32, 7, 9), (16, 32, 5, 5), (12, 4, 13, 7), (24, 8, 1, 1), (8, 2, 1, 9), (8, 4, 9, 1),
     (9, 1, 4, 4)],
)
def test_matches_oracle(c: int, factor: int, h: int, w: int) -> None:
    module = randomise(_ema(c, c, factor), 0, 0.5).double()
    x = torch.randn(2, c, h, w, dtype=torch.float64) * 2 + 0.3
    torch.testing.assert_close(module(x), oracle(module, x, math.gcd(c, factor)), rtol=1e-6, atol=1e-10)


def test_float32_matches_oracle() -> None:
    module = randomise(_ema(64, None, 8), 3, 0.5)
    x = torch.randn(2, 64, 10, 12)
    torch.testing.assert_close(module(x).double(), oracle(module, x, 8), rtol=1e-4, atol=1e-5)


def test_official_init_is_pytorch_default() -> None:
    module = _ema(64)
    assert torch.equal(module.gn.weight, torch.ones(2)) and torch.equal(module.gn.bias, torch.zeros(2))
    bound = 1 / math.sqrt(2 * 3 * 3)  # kaiming_uniform(a=sqrt(5)) of Conv2d: 1 / sqrt(fan_in)
    assert module.conv3x3.weight.abs().max() <= bound


@pytest.mark.parametrize(
    ("c1", "factor", "groups"),
    [(1280, 32, 32), (256, 32, 32), (80, 32, 16), (48, 32, 16), (16, 32, 16), (24, 32, 8), (7, 32, 1), (96, 1, 1)],
)
def test_groups_rule_is_gcd(c1: int, factor: int, groups: int) -> None:
    module = _ema(c1, None, factor)
    assert module.groups == groups
    assert module.conv3x3.in_channels == c1 // groups
    assert module(torch.randn(1, c1, 3, 4)).shape == (1, c1, 3, 4)


def test_yaml_written_for_large_width_runs_at_yolov5n_width() -> None:
    # YOLOv5 passes m(c1, c2, *args[1:]) and never scales args by width_multiple: [1024, 32] meets 16.
    assert _ema(16, 16, *[32])(torch.randn(1, 16, 4, 4)).shape == (1, 16, 4, 4)


@pytest.mark.parametrize("factor", [0, -8, 2.5, "8", True, None])
def test_bad_factor_raises_clear_error(factor: object) -> None:
    with pytest.raises(ValueError, match="factor"):
        _ema(64, None, factor)


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _ema(64, 128)


@pytest.mark.parametrize("c1", [0, -16, 2.0])
def test_bad_c1_raises(c1: object) -> None:
    with pytest.raises(ValueError, match="c1"):
        _ema(c1)


@pytest.mark.parametrize("c", [1, 7, 16, 24, 64, 80, 256, 1280])
@pytest.mark.parametrize("factor", [1, 8, 32])
def test_param_count_matches_formula(c: int, factor: int) -> None:
    module = _ema(c, None, factor)
    assert sum(p.numel() for p in module.parameters()) == param_count(KEY, c, factor=factor)


def test_gradcheck_float64() -> None:
    module = randomise(_ema(8, None, 2), 1, 0.5).double()
    x = torch.randn(2, 8, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_gate_is_a_sigmoid_of_the_input() -> None:
    # out = x * sigmoid(.): never larger than, nor of another sign than, the input
    module = randomise(_ema(32), 4, 0.5)
    x = torch.randn(2, 32, 8, 8) * 3
    out = module(x)
    assert (out.abs() <= x.abs()).all() and (torch.sign(out) == torch.sign(x)).all()


def test_images_of_a_batch_are_independent() -> None:
    module = randomise(_ema(32, None, 8), 6, 0.5)
    x = torch.randn(2, 32, 5, 5)
    changed = x.clone()
    changed[1] = torch.randn(32, 5, 5) * 10
    torch.testing.assert_close(module(changed)[0], module(x)[0], rtol=0, atol=0)


def test_onnx_traced_at_batch_one_runs_at_degenerate_sizes() -> None:
    ort = pytest.importorskip("onnxruntime")
    module = randomise(_ema(16, None, 4), 7, 0.5).eval()
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.randn(1, 16, 8, 8),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(3, 16, 1, 1), (2, 16, 1, 9), (2, 16, 7, 1), (1, 16, 13, 5)]:
        x = torch.randn(shape)
        out = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(out, module(x), rtol=1e-5, atol=1e-5)
