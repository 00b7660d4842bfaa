"""SpatialGroupEnhance (templates/sge.py) against an oracle written from the SGE paper's equations."""

from __future__ import annotations

import math

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "sge"
EPS = 1e-5  # the documented variance epsilon of the template


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _sge(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).SpatialGroupEnhance(*args, **kwargs)


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    return randomise(module, seed)


def oracle(x: torch.Tensor, groups: int, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """SGE written out per image and group, in float64, straight from the paper.

    g = mean_i x_i; c_i = g . x_i; c^_i = (c_i - mean c) / sqrt(var c + eps) (population variance);
    a_i = gamma * c^_i + beta; out_i = x_i * sigmoid(a_i).
    """
    x = x.double()
    b, channels, h, w = x.shape
    per_group = channels // groups
    out = torch.empty_like(x)
    for n in range(b):
        for k in range(groups):
            block = x[n, k * per_group:(k + 1) * per_group].reshape(per_group, h * w)  # columns are x_i
            g = block.sum(dim=1) / (h * w)
            c = torch.stack([torch.dot(g, block[:, i]) for i in range(h * w)])
            mean = c.sum() / (h * w)
            variance = ((c - mean) ** 2).sum() / (h * w)
            c_hat = (c - mean) / math.sqrt(variance.item() + EPS)
            a = gamma[k].double() * c_hat + beta[k].double()
            gate = 1.0 / (1.0 + torch.exp(-a))
            out[n, k * per_group:(k + 1) * per_group] = (block * gate).reshape(per_group, h, w)
    return out


@pytest.mark.parametrize(
    ("c", "groups", "h", "w"),
    [(64, 64, 6, 5), (48, 8, 7, 9), (12, 64, 5, 5), (16, 5, 4, 6), (32, 8, 13, 7), (24, 4, 1, 1), (8, 2, 1, 9)],
)
def test_matches_oracle(c: int, groups: int, h: int, w: int) -> None:
    module = _randomise(_sge(c, c, groups)).double()
    x = torch.randn(2, c, h, w, dtype=torch.float64) * 2 + 0.5
    expected = oracle(x, math.gcd(c, groups), module.weight, module.bias)
    torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-10)


def test_float32_matches_oracle() -> None:
    module = _randomise(_sge(64, None, 8), seed=3)
    x = torch.randn(2, 64, 10, 12)
    expected = oracle(x, 8, module.weight, module.bias)
    torch.testing.assert_close(module(x).double(), expected, rtol=1e-4, atol=1e-4)


def test_official_init_is_constant_gate_sigmoid_one() -> None:
    module = _sge(32)
    assert torch.equal(module.weight, torch.zeros(module.groups))
    assert torch.equal(module.bias, torch.ones(module.groups))
    x = torch.randn(3, 32, 9, 11)
    assert torch.equal(module(x), x * torch.sigmoid(torch.tensor(1.0)))


@pytest.mark.parametrize(
    ("c1", "groups", "used"),
    [(1024, 64, 64), (256, 64, 64), (128, 64, 64), (80, 64, 16), (48, 64, 16), (16, 64, 16), (24, 64, 8),
     (256, 8, 8), (20, 8, 4), (7, 64, 1), (96, 1, 1)],
)
def test_groups_rule_is_gcd(c1: int, groups: int, used: int) -> None:
    module = _sge(c1, None, groups)
    assert module.groups == used
    assert module(torch.randn(1, c1, 3, 4)).shape == (1, c1, 3, 4)


def test_yaml_written_for_large_width_runs_at_yolov5n_width() -> None:
    # YOLOv5 passes m(c1, c2, *args[1:]) and never scales args by width_multiple: [1024, 64] meets 256.
    module = _sge(256, 256, *[64])
    assert module.groups == 64


@pytest.mark.parametrize("groups", [0, -8, 2.5, "8", True, None])
def test_bad_groups_raise_clear_error(groups: object) -> None:
    with pytest.raises(ValueError, match="groups"):
        _sge(64, None, groups)


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _sge(64, 128)


@pytest.mark.parametrize("c1", [0, -16])
def test_bad_c1_raises(c1: int) -> None:
    with pytest.raises(ValueError, match="c1"):
        _sge(c1)


@pytest.mark.parametrize("c", [1, 7, 16, 24, 64, 80, 256, 1280])
@pytest.mark.parametrize("groups", [1, 8, 64])
def test_param_count_matches_formula(c: int, groups: int) -> None:
    module = _sge(c, None, groups)
    assert sum(p.numel() for p in module.parameters()) == param_count(KEY, c, groups=groups)


def test_param_count_default_hyperparameters() -> None:
    assert sum(p.numel() for p in _sge(48).parameters()) == param_count(KEY, 48)


def test_gradcheck_float64() -> None:
    module = _randomise(_sge(8, None, 4), seed=1).double()
    x = torch.randn(2, 8, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_single_position_is_finite_with_finite_gradients() -> None:
    # The seed's unbiased std of one value is NaN; here c^ = 0 and the gate is sigmoid(beta).
    module = _randomise(_sge(16, None, 4), seed=2)
    x = torch.randn(1, 16, 1, 1, requires_grad=True)
    out = module(x)
    expected = x.detach() * torch.sigmoid(module.bias.detach()).repeat_interleave(4)[None, :, None, None]
    torch.testing.assert_close(out.detach(), expected)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_constant_input_gives_finite_values_and_gradients() -> None:
    module = _randomise(_sge(16, None, 4), seed=4)
    x = torch.full((2, 16, 8, 8), 0.7, requires_grad=True)
    out = module(x)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(x.grad).all()


def test_channels_last_input_matches_contiguous() -> None:
    module = _randomise(_sge(32, None, 8), seed=5)
    x = torch.randn(2, 32, 6, 7)
    torch.testing.assert_close(module(x.contiguous(memory_format=torch.channels_last)), module(x))


def test_images_of_a_batch_are_independent() -> None:
    module = _randomise(_sge(16, None, 4), seed=6)
    x = torch.randn(2, 16, 5, 5)
    changed = x.clone()
    changed[1] = torch.randn(16, 5, 5) * 10
    torch.testing.assert_close(module(changed)[0], module(x)[0], rtol=0, atol=0)


def _feature_map(shape: "tuple[int, ...]", peak: float = 300.0, seed: int = 8) -> torch.Tensor:
    """YOLO-like activations: N(0, 1) plus a positive per-channel offset, scaled so that max |x| = peak."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator) + 2 * torch.rand(1, shape[1], 1, 1, generator=generator)
    return x * (peak / x.abs().max())


@pytest.mark.parametrize("peak", [150.0, 300.0])
def test_half_input_at_yolo_magnitudes_is_finite_and_follows_float32(peak: float) -> None:
    # g . x_i over 8 channels of a few hundred is ~1e5: past float16's 65504 unless taken in float32
    module = _randomise(_sge(64, None, 8), seed=7)
    x = _feature_map((2, 64, 6, 6), peak)
    out = module.half()(x.half())
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()
    expected = module.float()(x)
    torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2 * expected.abs().max().item())


def test_similarity_runs_in_float32_under_bfloat16_autocast() -> None:
    module = _randomise(_sge(64, None, 8), seed=9)
    x = _feature_map((2, 64, 6, 6))
    expected = module(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
