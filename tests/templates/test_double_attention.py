"""DoubleAttention (templates/double_attention.py) against an oracle written from the A^2-Nets equations."""

from __future__ import annotations

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "double-attention"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _da(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).DoubleAttention(*args, **kwargs)


def _randomise(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    return randomise(module, seed, scale)


def _softmax_rows(m: torch.Tensor) -> torch.Tensor:
    """exp(m_ij) / sum_j exp(m_ij), written out (shifted by the row maximum)."""
    e = torch.exp(m - m.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def oracle(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A^2 block per image in float64 with the module's own weights (proj = [conv_A; conv_B; conv_V])."""
    c_m, c_n = module.c_m, module.c_n
    weight = module.proj.weight.detach().double()[:, :, 0, 0]
    bias = module.proj.bias.detach().double()
    w_a, w_b, w_v = weight[:c_m], weight[c_m:c_m + c_n], weight[c_m + c_n:]
    b_a, b_b, b_v = bias[:c_m], bias[c_m:c_m + c_n], bias[c_m + c_n:]
    w_out = module.out.weight.detach().double()[:, :, 0, 0]
    b_out = module.out.bias.detach().double()
    b, c, h, w = x.shape
    outputs = []
    for n in range(b):
        feature = x[n].double().reshape(c, h * w)
        a = w_a @ feature + b_a[:, None]  # (c_m, N)
        b_bar = _softmax_rows(w_b @ feature + b_b[:, None])  # softmax over the N positions
        v_bar = _softmax_rows((w_v @ feature + b_v[:, None]).T).T  # softmax over the c_n maps
        g = a @ b_bar.T  # (c_m, c_n) global descriptors
        z = g @ v_bar  # (c_m, N)
        outputs.append((w_out @ z + b_out[:, None]).reshape(c, h, w))
    return torch.stack(outputs)


@pytest.mark.parametrize(
    ("c", "reduction_m", "reduction_n", "h", "w"),
    [(32, 4, 4, 6, 5), (16, 2, 8, 7, 9), (12, 4, 2, 13, 7), (8, 1, 1, 1, 1), (3, 4, 4, 4, 4), (24, 4, 4, 1, 11)],
)
def test_matches_oracle(c: int, reduction_m: int, reduction_n: int, h: int, w: int) -> None:
    module = _randomise(_da(c, c, reduction_m, reduction_n)).double()
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x), rtol=1e-5, atol=1e-10)


def test_float32_matches_oracle() -> None:
    module = _randomise(_da(32), seed=3)
    x = torch.randn(2, 32, 20, 20) * 3
    torch.testing.assert_close(module(x).double(), oracle(module, x), rtol=1e-4, atol=2e-4)


def test_widths_are_relative_to_c1() -> None:
    assert (_da(256).c_m, _da(256).c_n) == (64, 64)
    assert (_da(16).c_m, _da(16).c_n) == (4, 4)
    assert (_da(3).c_m, _da(3).c_n) == (1, 1)
    module = _da(64, 64, 2, 8)
    assert (module.c_m, module.c_n) == (32, 8)
    assert module(torch.randn(1, 64, 5, 5)).shape == (1, 64, 5, 5)


def test_softmax_dimensions() -> None:
    """With conv_A constant (zero weights, bias a), G = a 1^T iff Bb sums to 1 over positions, and then
    Z = a 1^T Vb = a at every position iff Vb sums to 1 over the c_n maps: the output is conv_out(a)
    everywhere, whatever x, conv_B and conv_V are. Any other softmax axis (maps, batch) breaks it."""
    module = _randomise(_da(16), seed=1, scale=2.0).double()
    with torch.no_grad():
        module.proj.weight[: module.c_m].zero_()
    a = module.proj.bias[: module.c_m].detach()
    expected = module.out.weight[:, :, 0, 0].detach() @ a + module.out.bias.detach()
    x = torch.randn(3, 16, 7, 6, dtype=torch.float64) * 3
    out = module(x)
    torch.testing.assert_close(out, expected[None, :, None, None].expand_as(out), rtol=1e-10, atol=1e-10)


def test_images_of_a_batch_are_independent() -> None:
    module = _randomise(_da(16), seed=2)
    x = torch.randn(3, 16, 6, 6)
    changed = x.clone()
    changed[1] = torch.randn(16, 6, 6) * 10
    out, out_changed = module(x), module(changed)
    torch.testing.assert_close(out_changed[0], out[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out_changed[2], out[2], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(out_changed[1], out[1])


def test_batch_of_one_equals_batched() -> None:
    module = _randomise(_da(16), seed=4)
    x = torch.randn(4, 16, 5, 7)
    singles = torch.cat([module(x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(module(x), singles, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["reduction_m", "reduction_n"])
@pytest.mark.parametrize("value", [0, -4, 2.0, "4", True, None])
def test_bad_reductions_raise_clear_error(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        _da(64, None, **{name: value})


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _da(64, 128)


def test_seed_yaml_args_no_longer_set_absolute_widths() -> None:
    # The seed's [128, 3] made c_n = 3; here the argument after the width is a reduction factor.
    module = _da(128, 128, 3)
    assert (module.c_m, module.c_n) == (42, 32)
    assert module(torch.randn(1, 128, 4, 4)).shape == (1, 128, 4, 4)


@pytest.mark.parametrize("c", [1, 3, 16, 24, 64, 80, 256, 1280])
@pytest.mark.parametrize(("reduction_m", "reduction_n"), [(4, 4), (1, 1), (2, 8), (8, 2), (64, 64)])
def test_param_count_matches_formula(c: int, reduction_m: int, reduction_n: int) -> None:
    module = _da(c, None, reduction_m, reduction_n)
    counted = sum(p.numel() for p in module.parameters())
    assert counted == param_count(KEY, c, reduction_m=reduction_m, reduction_n=reduction_n)


def test_param_count_default_hyperparameters() -> None:
    assert sum(p.numel() for p in _da(48).parameters()) == param_count(KEY, 48)


def test_gradcheck_float64() -> None:
    module = _randomise(_da(8, None, 2, 4), seed=5).double()
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_channels_last_input_matches_contiguous() -> None:
    module = _randomise(_da(32), seed=6)
    x = torch.randn(2, 32, 6, 7)
    torch.testing.assert_close(module(x.contiguous(memory_format=torch.channels_last)), module(x))


def test_bfloat16_keeps_dtype_and_follows_float32() -> None:
    module = _randomise(_da(32), seed=7)
    x = torch.randn(2, 32, 8, 8) * 4
    expected = module(x)
    out = module.bfloat16()(x.bfloat16())
    assert out.dtype == torch.bfloat16
    # bfloat16 keeps ~3 significant digits: compare in norm (about 2% here, mostly the rounded logits).
    assert ((out.float() - expected).norm() / expected.norm()).item() < 0.05
