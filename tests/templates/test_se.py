"""SE (templates/se.py) against an oracle written from the Squeeze-and-Excitation paper's equations."""

from __future__ import annotations

import io

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "se"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _se(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).SE(*args, **kwargs)


def _sigmoid(t: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-t))


def oracle(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per image: z_c = (1/HW) sum_ij x_c(i, j); s = sigmoid(W2 max(W1 z + b1, 0) + b2); out_c = s_c x_c (float64)."""
    x = x.double()
    w1 = module.down.weight.detach().double()[:, :, 0, 0]
    b1 = module.down.bias.detach().double()
    w2 = module.up.weight.detach().double()[:, :, 0, 0]
    b2 = module.up.bias.detach().double()
    b, channels, h, w = x.shape
    out = torch.empty_like(x)
    for n in range(b):
        z = torch.stack([x[n, c].sum() / (h * w) for c in range(channels)])
        hidden = torch.clamp(torch.einsum("mc,c->m", w1, z) + b1, min=0)
        s = _sigmoid(torch.einsum("cm,m->c", w2, hidden) + b2)
        for c in range(channels):
            out[n, c] = s[c] * x[n, c]
    return out


@pytest.mark.parametrize(
    ("c", "reduction", "h", "w"),
    [(32, 16, 6, 5), (16, 16, 1, 1), (24, 4, 13, 7), (8, 16, 1, 9), (48, 8, 9, 1), (3, 16, 4, 4), (64, 1, 5, 3)],
)
def test_matches_oracle(c: int, reduction: int, h: int, w: int) -> None:
    module = randomise(_se(c, c, reduction), 0).double()
    x = torch.randn(2, c, h, w, dtype=torch.float64) * 2 + 0.5
    torch.testing.assert_close(module(x), oracle(module, x), rtol=1e-7, atol=1e-12)


def test_float32_matches_oracle() -> None:
    module = randomise(_se(64), 1, 0.3)
    x = torch.randn(2, 64, 10, 12)
    torch.testing.assert_close(module(x).double(), oracle(module, x), rtol=1e-5, atol=1e-5)


def test_half_at_realistic_magnitudes_follows_float64() -> None:
    # |x| up to ~300: the spatial mean of a float16 map must not lose the gate.
    module = randomise(_se(64), 2, 0.05)
    x = torch.randn(2, 64, 40, 40) * 100
    out = module.half()(x.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double(), oracle(module.double(), x), rtol=2e-2, atol=0.5)


def test_gate_is_a_sigmoid_per_channel() -> None:
    module = randomise(_se(16, None, 4), 3)
    x = torch.randn(2, 16, 7, 5)
    ratio = module(x) / x
    assert ((ratio > 0) & (ratio < 1)).all()
    torch.testing.assert_close(ratio, ratio[:, :, :1, :1].expand_as(ratio))


def test_bottleneck_width() -> None:
    assert _se(256).down.out_channels == 16
    assert _se(16).down.out_channels == 1
    assert _se(8).down.out_channels == 1  # the official c // 16 would be a layer without units
    assert _se(64, None, 4).up.in_channels == 16


@pytest.mark.parametrize("reduction", [0, -4, 1.5, "16", True, None])
def test_bad_reduction_raises(reduction: object) -> None:
    with pytest.raises(ValueError, match="reduction"):
        _se(64, None, reduction)


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _se(64, 128)


@pytest.mark.parametrize("c1", [0, -16, 2.0])
def test_bad_c1_raises(c1: object) -> None:
    with pytest.raises(ValueError, match="c1"):
        _se(c1)


@pytest.mark.parametrize("c", [1, 7, 16, 24, 80, 256, 1280])
@pytest.mark.parametrize("reduction", [1, 4, 16, 32])
def test_param_count_matches_formula(c: int, reduction: int) -> None:
    module = _se(c, None, reduction)
    assert sum(p.numel() for p in module.parameters()) == param_count(KEY, c, reduction=reduction)


def test_param_count_default_hyperparameters() -> None:
    assert sum(p.numel() for p in _se(48).parameters()) == param_count(KEY, 48)


def test_gradcheck_float64() -> None:
    module = randomise(_se(8, None, 2), 4).double()
    x = torch.randn(2, 8, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_deterministic_backward() -> None:
    module = randomise(_se(32), 5)
    x = torch.randn(2, 32, 9, 7, requires_grad=True)
    try:
        torch.use_deterministic_algorithms(True)
        module(x).square().sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.isfinite(x.grad).all()


def test_onnx_traced_at_batch_one_runs_at_other_batches_and_sizes() -> None:
    ort = pytest.importorskip("onnxruntime")
    module = randomise(_se(16, None, 4), 6).eval()
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.randn(1, 16, 8, 8),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(2, 16, 12, 20), (3, 16, 1, 1), (2, 16, 1, 9)]:
        x = torch.randn(shape)
        out = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(out, module(x), rtol=1e-5, atol=1e-5)
