"""PolarizedSelfAttention (templates/polarized.py) against an oracle written from the PSA paper's equations."""

from __future__ import annotations

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "polarized"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _psa(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).PolarizedSelfAttention(*args, **kwargs)


def _sigmoid(t: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-t))


def _softmax(t: torch.Tensor) -> torch.Tensor:
    e = torch.exp(t - t.max())
    return e / e.sum()


def _w(conv: torch.nn.Conv2d) -> torch.Tensor:
    return conv.weight.detach().double()[:, :, 0, 0]


def oracle(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Paper Eqs. 1-5 per image, in float64:
    A^ch = sigmoid(LN(W_z (sigma1(W_v x) x softmax(sigma2(W_q x))))),
    A^sp = sigmoid(sigma3(softmax(sigma1(GP(W_q x))) x sigma2(W_v x))), out = A^ch x + A^sp x."""
    x = x.double()
    b, c, h, w = x.shape
    out = torch.empty_like(x)
    gamma, beta = module.norm.weight.detach().double(), module.norm.bias.detach().double()
    for n in range(b):
        pixels = x[n].reshape(c, h * w)  # columns are positions
        # channel-only branch
        s = _softmax((_w(module.conv_q_right) @ pixels)[0])  # (HW,)
        z = (_w(module.conv_v_right) @ pixels) @ s  # (m,)
        lifted = _w(module.conv_up) @ z  # (c,)
        mean = lifted.mean()
        var = ((lifted - mean) ** 2).mean()
        a_ch = _sigmoid((lifted - mean) / torch.sqrt(var + module.norm.eps) * gamma + beta)
        # spatial-only branch
        t = _softmax((_w(module.conv_q_left) @ pixels).mean(1))  # (m,)
        a_sp = _sigmoid(t @ (_w(module.conv_v_left) @ pixels))  # (HW,)
        out[n] = (pixels * a_ch[:, None] + pixels * a_sp[None, :]).reshape(c, h, w)
    return out


@pytest.mark.parametrize(("c", "h", "w"), [(16, 6, 5), (12, 13, 7), (8, 1, 1), (5, 1, 9), (7, 9, 1), (1, 4, 4)])
def test_matches_oracle(c: int, h: int, w: int) -> None:
    module = randomise(_psa(c, c), seed=c + h, scale=0.5).double()
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x), rtol=1e-9, atol=1e-10)


def test_float32_matches_oracle() -> None:
    module = randomise(_psa(32), seed=2, scale=0.3)
    x = torch.randn(2, 32, 10, 9)
    torch.testing.assert_close(module(x).double(), oracle(module, x), rtol=1e-4, atol=1e-4)


def test_gates_lie_in_zero_one_so_output_is_at_most_twice_the_input() -> None:
    module = randomise(_psa(16), seed=3)
    x = torch.randn(2, 16, 8, 8) * 5
    out = module(x)
    assert (out.abs() <= 2 * x.abs() + 1e-6).all()
    assert (torch.sign(out) == torch.sign(x)).all()


def test_spatial_gate_varies_over_positions() -> None:
    # The official PSA_p softmaxes the 1 x HW product over positions, so its spatial gate is sigmoid(~1/HW),
    # nearly 0.5 everywhere; the paper's softmax over the pooled query's channels gives a real spatial map.
    module = randomise(_psa(16), seed=4)
    gate = module._spatial_gate(torch.randn(1, 16, 12, 12) * 3)
    assert gate.shape == (1, 1, 12, 12)
    assert gate.max() - gate.min() > 0.3


def test_channel_gate_has_the_papers_layernorm() -> None:
    # LayerNorm before the sigmoid: with weight 0 the gate is sigmoid(bias) whatever the input.
    module = randomise(_psa(8), seed=5)
    with torch.no_grad():
        module.norm.weight.zero_()
        module.norm.bias.copy_(torch.linspace(-2, 2, 8))
    gate = module._channel_gate(torch.randn(3, 8, 5, 5) * 10)
    torch.testing.assert_close(gate, torch.sigmoid(torch.linspace(-2, 2, 8))[None, :, None, None].expand(3, 8, 1, 1))


def test_official_init() -> None:
    module = _psa(512)
    for conv in (module.conv_q_right, module.conv_v_right, module.conv_q_left, module.conv_v_left):
        assert abs(conv.weight.std().item() - (2.0 / 512) ** 0.5) < 0.1 * (2.0 / 512) ** 0.5  # Kaiming fan_in
        assert conv.bias is None
    assert module.conv_up.bias is None
    assert torch.equal(module.norm.weight, torch.ones(512)) and torch.equal(module.norm.bias, torch.zeros(512))


def test_half_yolo_magnitudes_stay_finite() -> None:
    module = randomise(_psa(32), seed=6, scale=0.3)
    x = torch.randn(1, 32, 20, 20) * 300
    out = module.half()(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _psa(64, 128)


@pytest.mark.parametrize("c1", [0, -16, 2.0])
def test_bad_c1_raises(c1: object) -> None:
    with pytest.raises(ValueError, match="c1"):
        _psa(c1)


@pytest.mark.parametrize("c", [1, 2, 3, 7, 16, 24, 80, 256, 1280])
def test_param_count_matches_formula(c: int) -> None:
    assert sum(p.numel() for p in _psa(c).parameters()) == param_count(KEY, c)


def test_gradcheck_float64() -> None:
    module = randomise(_psa(6), seed=7, scale=0.5).double()
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-6)
