"""LSKA (templates/lska.py) against an oracle written from the LSKA paper's equations."""

from __future__ import annotations

import math

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "lska"
# k_size -> (local kernel, dilated kernel, dilation), the paper's Table / the official if-chain
KERNELS = {7: (3, 3, 2), 11: (3, 5, 2), 23: (5, 7, 3), 35: (5, 11, 3), 41: (5, 13, 3), 53: (5, 17, 3)}


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _lska(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).LSKA(*args, **kwargs)


def _conv1d_same(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor, dilation: int, axis: int) -> torch.Tensor:
    """Depth-wise 1-D convolution along ``axis`` (2 = H, 3 = W), zero padded to the same size, as a sum of
    shifted copies: out[.., i] = bias + sum_t taps[t] * x[.., i + (t - (K - 1) / 2) * dilation]."""
    size = x.shape[axis]
    out = bias.double()[None, :, None, None].expand_as(x).clone()
    half = (taps.shape[1] - 1) // 2
    for t in range(taps.shape[1]):
        shift = (t - half) * dilation
        for i in range(size):
            j = i + shift
            if 0 <= j < size:
                src = x.select(axis, j)
                out.select(axis, i).add_(taps[:, t].double()[None, :, None] * src)
    return out


def oracle(module: torch.nn.Module, x: torch.Tensor, k_size: int) -> torch.Tensor:
    """a = DW_lx1(DW_1xl(x)); a = DW_mx1,d(DW_1xm,d(a)); out = x * (W a + b), in float64."""
    local, dilated, dilation = KERNELS[k_size]
    x = x.double()
    a = _conv1d_same(x, module.conv0h.weight.detach()[:, 0, 0, :], module.conv0h.bias.detach(), 1, 3)
    a = _conv1d_same(a, module.conv0v.weight.detach()[:, 0, :, 0], module.conv0v.bias.detach(), 1, 2)
    a = _conv1d_same(a, module.conv_spatial_h.weight.detach()[:, 0, 0, :], module.conv_spatial_h.bias.detach(),
                     dilation, 3)
    a = _conv1d_same(a, module.conv_spatial_v.weight.detach()[:, 0, :, 0], module.conv_spatial_v.bias.detach(),
                     dilation, 2)
    w1 = module.conv1.weight.detach().double()[:, :, 0, 0]
    attn = torch.einsum("oc,bchw->bohw", w1, a) + module.conv1.bias.detach().double()[None, :, None, None]
    return x * attn


@pytest.mark.parametrize(
    ("c", "k_size", "h", "w"),
    [(8, 7, 6, 5), (8, 11, 13, 7), (6, 23, 9, 11), (4, 53, 5, 26), (8, 23, 1, 1), (5, 7, 1, 9), (5, 35, 9, 1)],
)
def test_matches_oracle(c: int, k_size: int, h: int, w: int) -> None:
    module = randomise(_lska(c, c, k_size), seed=c + k_size, scale=0.5).double()
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x, k_size), rtol=1e-9, atol=1e-10)


def test_float32_matches_oracle() -> None:
    module = randomise(_lska(16), seed=3, scale=0.5)
    x = torch.randn(2, 16, 10, 12)
    torch.testing.assert_close(module(x).double(), oracle(module, x, 23), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k_size", sorted(KERNELS))
def test_kernel_table_follows_the_paper(k_size: int) -> None:
    local, dilated, dilation = KERNELS[k_size]
    module = _lska(8, None, k_size)
    assert module.conv0h.kernel_size == (1, local) and module.conv0v.kernel_size == (local, 1)
    assert module.conv_spatial_h.kernel_size == (1, dilated) and module.conv_spatial_v.kernel_size == (dilated, 1)
    # dilation along the kernel's long axis (the official passes a scalar; the other axis has one tap)
    assert module.conv_spatial_h.dilation[1] == dilation and module.conv_spatial_v.dilation[0] == dilation
    assert all(conv.groups == 8 for conv in (module.conv0h, module.conv0v, module.conv_spatial_h, module.conv_spatial_v))
    # the receptive field of the cascade is k_size: local + (dilated - 1) * dilation
    assert local + (dilated - 1) * dilation == k_size


def test_receptive_field_of_one_pixel() -> None:
    # An impulse spreads over exactly local + (dilated - 1) * dilation positions along each axis.
    module = randomise(_lska(1, None, 23), seed=4).double()
    with torch.no_grad():
        for conv in (module.conv0h, module.conv0v, module.conv_spatial_h, module.conv_spatial_v):
            conv.weight.fill_(1.0)
            conv.bias.zero_()
        module.conv1.weight.fill_(1.0)
        module.conv1.bias.zero_()
    x = torch.zeros(1, 1, 41, 41, dtype=torch.float64)
    x[0, 0, 20, 20] = 1.0
    a = module.conv_spatial_v(module.conv_spatial_h(module.conv0v(module.conv0h(x))))
    rows, cols = torch.nonzero(a[0, 0], as_tuple=True)
    assert rows.max() - rows.min() + 1 == 5 + 6 * 3 and cols.max() - cols.min() + 1 == 5 + 6 * 3


def test_official_init() -> None:
    module = _lska(256, None, 23)
    for conv in (module.conv0h, module.conv_spatial_v, module.conv1):
        fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
        assert abs(conv.weight.std().item() - math.sqrt(2.0 / fan_out)) < 0.15 * math.sqrt(2.0 / fan_out)
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))


@pytest.mark.parametrize("k_size", [0, 5, 21, 24, 7.0, "23", True, None])
def test_bad_k_size_raises_and_lists_allowed(k_size: object) -> None:
    with pytest.raises(ValueError, match=r"k_size=.* must be one of \[7, 11, 23, 35, 41, 53\]"):
        _lska(64, None, k_size)


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _lska(64, 128)


@pytest.mark.parametrize("c1", [0, -16])
def test_bad_c1_raises(c1: int) -> None:
    with pytest.raises(ValueError, match="c1"):
        _lska(c1)


@pytest.mark.parametrize("c", [1, 16, 24, 80, 256])
@pytest.mark.parametrize("k_size", sorted(KERNELS))
def test_param_count_matches_formula(c: int, k_size: int) -> None:
    module = _lska(c, None, k_size)
    assert sum(p.numel() for p in module.parameters()) == param_count(KEY, c, k_size=k_size)


def test_gradcheck_float64() -> None:
    module = randomise(_lska(3, None, 7), seed=5, scale=0.5).double()
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-6)
