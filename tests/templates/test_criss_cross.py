"""CrissCrossAttention (templates/criss_cross.py) against an oracle written from the CCNet paper's equations."""

from __future__ import annotations

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "criss-cross"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _cca(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).CrissCrossAttention(*args, **kwargs)


def _project(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    weight = conv.weight.detach().double()[:, :, 0, 0]
    return torch.einsum("oc,bchw->bohw", weight, x) + conv.bias.detach().double()[None, :, None, None]


def one_pass(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per position u = (i, j): Omega_u = its column and its row, u once; softmax of Q_u . K_o over Omega_u;
    out_u = gamma * sum_o A_uo V_o + x_u. Written as a loop over positions, in float64."""
    q, k, v = (_project(conv, x) for conv in (module.query_conv, module.key_conv, module.value_conv))
    b, _, h, w = x.shape
    out = torch.empty_like(x)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                keys = [(g, j) for g in range(h)] + [(i, c) for c in range(w) if c != j]
                logits = torch.stack([torch.dot(q[n, :, i, j], k[n, :, g, c]) for g, c in keys])
                weights = torch.exp(logits - logits.max())
                weights = weights / weights.sum()
                context = sum(weight * v[n, :, g, c] for weight, (g, c) in zip(weights, keys))
                out[n, :, i, j] = module.gamma.detach().double() * context + x[n, :, i, j]
    return out


def oracle(module: torch.nn.Module, x: torch.Tensor, recurrence: int = 1) -> torch.Tensor:
    x = x.double()
    for _ in range(recurrence):
        x = one_pass(module, x)
    return x


@pytest.mark.parametrize(
    ("c", "reduction", "h", "w"), [(16, 8, 5, 4), (12, 4, 3, 7), (8, 8, 1, 1), (5, 8, 1, 6), (6, 2, 7, 1), (16, 8, 6, 6)]
)
def test_matches_oracle(c: int, reduction: int, h: int, w: int) -> None:
    module = randomise(_cca(c, c, reduction), seed=c + h, scale=0.5).double()
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x), rtol=1e-9, atol=1e-10)


def test_recurrence_two_is_the_module_applied_twice() -> None:
    module = randomise(_cca(8, None, 4, 2), seed=1, scale=0.5).double()
    x = torch.randn(1, 8, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x, recurrence=2), rtol=1e-9, atol=1e-10)


def test_float32_matches_oracle() -> None:
    module = randomise(_cca(32), seed=2, scale=0.3)
    x = torch.randn(2, 32, 6, 7)
    torch.testing.assert_close(module(x).double(), oracle(module, x), rtol=1e-4, atol=1e-4)


def test_official_init_is_the_identity() -> None:
    module = _cca(32)
    assert torch.equal(module.gamma, torch.zeros(1))
    x = torch.randn(2, 32, 5, 6)
    assert torch.equal(module(x), x)


def test_one_pass_reaches_exactly_the_row_and_column() -> None:
    # The gradient of output (2, 3) reaches the inputs of row 2 and column 3 only (values path), after
    # one pass; two passes reach every position (the paper's argument for R = 2).
    module = randomise(_cca(8, None, 8), seed=3, scale=0.5).double()
    x = torch.randn(1, 8, 5, 6, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(module(x)[0, :, 2, 3].sum(), x)
    reached = grad.abs().sum(1)[0] > 0
    expected = torch.zeros(5, 6, dtype=torch.bool)
    expected[2, :] = True
    expected[:, 3] = True
    assert torch.equal(reached, expected)
    twice = randomise(_cca(8, None, 8, 2), seed=3, scale=0.5).double()
    (grad2,) = torch.autograd.grad(twice(x)[0, :, 2, 3].sum(), x)
    assert (grad2.abs().sum(1)[0] > 0).all()


def test_attention_weights_sum_to_one_over_h_plus_w_minus_one_keys() -> None:
    # With V = 1 everywhere (value weight 0, bias 1) and gamma = 1 the output is x + 1 exactly.
    module = randomise(_cca(8, None, 2), seed=4).double()
    with torch.no_grad():
        module.value_conv.weight.zero_()
        module.value_conv.bias.fill_(1.0)
        module.gamma.fill_(1.0)
    x = torch.randn(2, 8, 7, 3, dtype=torch.float64) * 5
    torch.testing.assert_close(module(x), x + 1)


def test_half_large_logits_stay_finite() -> None:
    # Logits beyond float16's range (|x| ~ 300): computed in float32, the output is finite.
    module = randomise(_cca(16), seed=5, scale=0.3)
    x = torch.randn(1, 16, 6, 6) * 300
    out = module.half()(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["reduction", "recurrence"])
@pytest.mark.parametrize("value", [0, -1, 2.0, "8", True, None])
def test_bad_hyperparameters_raise(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        _cca(64, None, **{name: value})


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _cca(64, 128)


@pytest.mark.parametrize("c1", [0, -16])
def test_bad_c1_raises(c1: int) -> None:
    with pytest.raises(ValueError, match="c1"):
        _cca(c1)


@pytest.mark.parametrize("c", [1, 3, 7, 16, 24, 80, 256])
@pytest.mark.parametrize("reduction", [1, 8, 16])
def test_param_count_matches_formula(c: int, reduction: int) -> None:
    module = _cca(c, None, reduction, 2)
    assert sum(p.numel() for p in module.parameters()) == param_count(KEY, c, reduction=reduction, recurrence=2)
    assert module.query_conv.out_channels == max(c // reduction, 1)


def test_gradcheck_float64() -> None:
    module = randomise(_cca(4, None, 2), seed=6, scale=0.5).double()
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-6)
