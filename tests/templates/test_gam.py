"""GAM (templates/gam.py) against an oracle written from the GAM paper's equations."""

from __future__ import annotations

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "gam"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _gam(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).GAM(*args, **kwargs)


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    return randomise(module, seed, 0.3, batchnorm_stats=True)


def _sigmoid(t: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-t))


def _conv7(x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """Zero-padded 7x7 convolution as a sum over the 49 taps of per-tap channel mixes."""
    b, c_in, h, w = x.shape
    c_out = weight.shape[0]
    padded = torch.zeros(b, c_in, h + 6, w + 6, dtype=x.dtype)
    padded[:, :, 3:3 + h, 3:3 + w] = x
    out = torch.zeros(b, c_out, h, w, dtype=x.dtype)
    in_per_group, out_per_group = c_in // groups, c_out // groups
    for g in range(groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        cols = slice(g * in_per_group, (g + 1) * in_per_group)
        for dy in range(7):
            for dx in range(7):
                window = padded[:, cols, dy:dy + h, dx:dx + w]
                out[:, rows] += torch.einsum("oi,bihw->bohw", weight[rows, :, dy, dx], window)
    return out


def _batch_norm(x: torch.Tensor, bn: torch.nn.BatchNorm2d, training: bool) -> torch.Tensor:
    if training:
        mean = x.mean(dim=(0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
    else:
        mean, var = bn.running_mean.double(), bn.running_var.double()
    scale = bn.weight.detach().double() / torch.sqrt(var + bn.eps)
    return (x - mean[None, :, None, None]) * scale[None, :, None, None] + bn.bias.detach().double()[None, :, None, None]


def oracle(module: torch.nn.Module, x: torch.Tensor, groups: int = 1, training: bool = False) -> torch.Tensor:
    """F2 = sigmoid(MLP(x_p)) * x (per pixel p); F3 = sigmoid(BN(conv7(ReLU(BN(conv7(F2)))))) * F2, float64."""
    x = x.double()
    lin1, lin2 = module.channel[0], module.channel[2]
    w1, b1 = lin1.weight.detach().double()[:, :, 0, 0], lin1.bias.detach().double()
    w2, b2 = lin2.weight.detach().double()[:, :, 0, 0], lin2.bias.detach().double()
    hidden = torch.clamp(torch.einsum("mc,bchw->bmhw", w1, x) + b1[None, :, None, None], min=0)
    channel_map = torch.einsum("cm,bmhw->bchw", w2, hidden) + b2[None, :, None, None]
    f2 = _sigmoid(channel_map) * x
    conv_a, bn_a, conv_b, bn_b = module.spatial[0], module.spatial[1], module.spatial[3], module.spatial[4]
    s = _conv7(f2, conv_a.weight.detach().double(), groups)
    s = torch.clamp(_batch_norm(s, bn_a, training), min=0)
    s = _batch_norm(_conv7(s, conv_b.weight.detach().double(), groups), bn_b, training)
    return _sigmoid(s) * f2


@pytest.mark.parametrize(
    ("c", "rate", "groups", "h", "w"),
    [(16, 4, 1, 6, 5), (16, 4, 2, 7, 9), (12, 2, 3, 13, 7), (8, 4, 1, 1, 1), (3, 4, 1, 4, 4), (8, 1, 4, 1, 9)],
)
def test_matches_oracle_eval(c: int, rate: int, groups: int, h: int, w: int) -> None:
    module = _randomise(_gam(c, c, rate, groups)).double().eval()
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x, groups), rtol=1e-5, atol=1e-10)


def test_matches_oracle_train_mode() -> None:
    module = _randomise(_gam(16, None, 4, 2), seed=1).double().train()
    x = torch.randn(3, 16, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x, 2, training=True), rtol=1e-5, atol=1e-10)


def test_float32_matches_oracle() -> None:
    module = _randomise(_gam(32), seed=2).eval()
    x = torch.randn(2, 32, 10, 9)
    torch.testing.assert_close(module(x).double(), oracle(module, x), rtol=1e-4, atol=1e-4)


def test_both_gates_are_sigmoids() -> None:
    # Both gates lie in (0, 1), so no output is larger than or of opposite sign to its input (the seed's
    # ungated channel map flipped and amplified features).
    module = _randomise(_gam(16), seed=3).eval()
    x = torch.randn(2, 16, 8, 8) * 3
    out = module(x)
    assert (out.abs() <= x.abs()).all()
    assert (torch.sign(out) == torch.sign(x)).all()


def test_inplace_relu_after_construction_changes_nothing() -> None:
    module = _randomise(_gam(16), seed=4).train()
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    out = module(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    for m in module.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = True
    x2 = x.detach().clone().requires_grad_()
    out2 = module(x2)
    (grad2,) = torch.autograd.grad(out2.square().sum(), x2)
    torch.testing.assert_close(out2, out)
    torch.testing.assert_close(grad2, grad)


def test_bottleneck_width() -> None:
    assert _gam(256).channel[0].out_channels == 64
    assert _gam(2).channel[0].out_channels == 1
    assert _gam(64, None, 16).spatial[0].out_channels == 4


@pytest.mark.parametrize(("c1", "rate", "groups"), [(16, 4, 3), (16, 4, 8), (12, 4, 2), (64, 4, 0), (64, 4, 2.0)])
def test_bad_groups_raise_and_list_allowed_values(c1: int, rate: int, groups: object) -> None:
    with pytest.raises(ValueError, match=r"groups=.* must divide both c1=.*allowed: \["):
        _gam(c1, None, rate, groups)


def test_groups_error_lists_common_divisors() -> None:
    with pytest.raises(ValueError, match=r"allowed: \[1, 2, 4\]"):
        _gam(16, None, 4, 8)


@pytest.mark.parametrize("rate", [0, -4, 1.5, "4", True, None])
def test_bad_rate_raises(rate: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        _gam(64, None, rate)


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _gam(64, 128)


@pytest.mark.parametrize(
    ("c", "rate", "groups"),
    [(1, 4, 1), (3, 4, 1), (16, 4, 1), (16, 4, 4), (24, 4, 2), (64, 2, 8), (80, 4, 4), (256, 4, 1), (96, 8, 3)],
)
def test_param_count_matches_formula(c: int, rate: int, groups: int) -> None:
    module = _gam(c, None, rate, groups)
    assert sum(p.numel() for p in module.parameters()) == param_count(KEY, c, rate=rate, groups=groups)


def test_param_count_default_hyperparameters() -> None:
    assert sum(p.numel() for p in _gam(48).parameters()) == param_count(KEY, 48)


@pytest.mark.parametrize("groups", [1, 2])
def test_gradcheck_float64(groups: int) -> None:
    module = _randomise(_gam(8, None, 2, groups), seed=5).double().eval()
    x = torch.randn(1, 8, 3, 3, dtype=torch.float64, requires_grad=True)  # eval mode: images are independent
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_channels_last_input_matches_contiguous() -> None:
    module = _randomise(_gam(16), seed=6).eval()
    x = torch.randn(2, 16, 6, 7)
    torch.testing.assert_close(module(x.contiguous(memory_format=torch.channels_last)), module(x))
