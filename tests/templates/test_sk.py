"""SKAttention (templates/sk.py) against an oracle written from the SKNet paper's equations.

The oracle works in float64 with plain loops: each grouped, dilated 3x3 convolution as a sum over its
nine taps per group, BatchNorm written out, the fuse/select steps per image as matrix-vector products
and an explicit softmax across the branches. It shares no code with the template.
"""

from __future__ import annotations

import io
import math
from typing import List

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "sk"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _sk(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).SKAttention(*args, **kwargs)


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights; the squeeze BN's shift made positive and fc2 scaled up, so that z is not all zero
    after the ReLU and the branch weights are far from 1/M (otherwise a wrong selection hides)."""
    randomise(module, seed, 0.3, batchnorm_stats=True)
    with torch.no_grad():
        module.bn.bias.abs_().add_(0.5)
        module.fc2.weight.mul_(5.0)
    return module


def _conv3x3(x: torch.Tensor, weight: torch.Tensor, dilation: int, groups: int) -> torch.Tensor:
    """Zero-padded ('same') grouped 3x3 convolution with dilation, as a sum over taps per group."""
    b, c, h, w = x.shape
    d = dilation
    padded = torch.zeros(b, c, h + 2 * d, w + 2 * d, dtype=x.dtype)
    padded[:, :, d:d + h, d:d + w] = x
    out = torch.zeros(b, weight.shape[0], h, w, dtype=x.dtype)
    per_in, per_out = c // groups, weight.shape[0] // groups
    for g in range(groups):
        rows, cols = slice(g * per_out, (g + 1) * per_out), slice(g * per_in, (g + 1) * per_in)
        for dy in range(3):
            for dx in range(3):
                window = padded[:, cols, dy * d:dy * d + h, dx * d:dx * d + w]
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


def oracle(module: torch.nn.Module, x: torch.Tensor, groups: int, training: bool = False,
           squeeze_training: "bool | None" = None) -> torch.Tensor:
    """U_m = ReLU(BN(conv3x3_{dil m+1}(x))); s = mean_hw sum U_m; z = ReLU(BN(W1 s));
    a_m[c] = exp(W2_m[c] z) / sum_m' exp(W2_m'[c] z); V = sum_m a_m * U_m. squeeze_training: batch
    statistics in the squeeze BN (default: as the branches)."""
    squeeze_training = training if squeeze_training is None else squeeze_training
    x = x.double()
    branches = len(module.branches)
    features: List[torch.Tensor] = []
    for m, branch in enumerate(module.branches):
        u = _conv3x3(x, branch[0].weight.detach().double(), m + 1, groups)
        features.append(torch.clamp(_batch_norm(u, branch[1], training), min=0))
    b, c = x.shape[:2]
    s = sum(features).mean(dim=(2, 3))  # (b, c)
    w1 = module.fc1.weight.detach().double()[:, :, 0, 0]
    w2 = module.fc2.weight.detach().double()[:, :, 0, 0].reshape(branches, c, -1)  # branch-major rows
    z = _batch_norm((s @ w1.T)[:, :, None, None], module.bn, squeeze_training)[:, :, 0, 0].clamp(min=0)
    out = torch.zeros_like(features[0])
    for n in range(b):
        scores = torch.stack([w2[m] @ z[n] for m in range(branches)])  # (M, c)
        weights = torch.exp(scores - scores.max(dim=0).values)
        weights = weights / weights.sum(dim=0)
        for m in range(branches):
            out[n] += weights[m][:, None, None] * features[m][n]
    return out


@pytest.mark.parametrize(
    ("c", "branches", "groups", "h", "w"),
    [(32, 2, 32, 6, 5), (48, 2, 32, 7, 9), (16, 3, 4, 5, 5), (24, 2, 8, 1, 1), (8, 1, 2, 1, 9), (12, 2, 1, 9, 1),
     (7, 2, 32, 4, 6)],
)
def test_matches_oracle_eval(c: int, branches: int, groups: int, h: int, w: int) -> None:
    module = _randomise(_sk(c, c, branches, groups, 4, 4)).double().eval()
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    expected = oracle(module, x, math.gcd(c, groups))
    torch.testing.assert_close(module(x), expected, rtol=1e-6, atol=1e-10)


def test_matches_oracle_train_mode() -> None:
    module = _randomise(_sk(16, None, 2, 4, 4, 4), seed=1).double().train()
    x = torch.randn(3, 16, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x, 4, training=True), rtol=1e-6, atol=1e-10)


def test_float32_matches_oracle() -> None:
    module = _randomise(_sk(64), seed=2).eval()
    x = torch.randn(2, 64, 10, 9)
    torch.testing.assert_close(module(x).double(), oracle(module, x, 32), rtol=1e-4, atol=1e-5)


def test_single_image_in_training_uses_running_statistics_for_the_squeeze() -> None:
    # YOLOv5's stride probe: one image, training mode. Torch refuses batch statistics of one value per
    # channel; the branches still use batch statistics (64 values per channel here).
    module = _randomise(_sk(16, None, 2, 4, 4, 4), seed=3).double().train()
    x = torch.randn(1, 16, 8, 8, dtype=torch.float64, requires_grad=True)
    running = module.bn.running_mean.clone()
    out = module(x)
    expected = oracle(module, x.detach(), 4, training=True, squeeze_training=False)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-10)
    assert torch.equal(module.bn.running_mean, running)  # a one-image probe does not move the statistics
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(module.bn.weight.grad).all()


def test_official_init() -> None:
    module = _sk(256)
    fc_std = torch.cat([module.fc1.weight.flatten(), module.fc2.weight.flatten()]).std()
    assert 0.008 < fc_std < 0.012  # gaussian std 0.01
    conv = module.branches[0][0].weight
    assert abs(conv.std().item() - math.sqrt(2 / (9 * 256 // 32))) < 0.02  # msra: sqrt(2 / fan_in)


def test_fresh_module_averages_the_branches() -> None:
    # With the std-0.01 fully connected layers the selection starts near 1/M for every channel.
    module = _sk(32).eval()
    x = torch.randn(2, 32, 6, 6)
    mean_of_branches = sum(branch(x) for branch in module.branches) / 2
    torch.testing.assert_close(module(x), mean_of_branches, rtol=0.05, atol=1e-3)


@pytest.mark.parametrize(
    ("c1", "groups", "used"), [(1280, 32, 32), (256, 32, 32), (80, 32, 16), (48, 32, 16), (16, 32, 16), (7, 32, 1)]
)
def test_groups_rule_is_gcd(c1: int, groups: int, used: int) -> None:
    module = _sk(c1, None, 2, groups)
    assert module.branches[0][0].groups == used
    assert module(torch.randn(2, c1, 3, 4)).shape == (2, c1, 3, 4)


def test_squeeze_width_is_max_of_c_over_r_and_l() -> None:
    assert _sk(128).fc1.out_channels == 32
    assert _sk(1024).fc1.out_channels == 64
    assert _sk(64, None, 2, 32, 4, 8).fc1.out_channels == 16


@pytest.mark.parametrize("name", ["branches", "groups", "reduction", "min_dim"])
@pytest.mark.parametrize("value", [0, -2, 2.5, "2", True, None])
def test_bad_hyperparameters_raise_clear_error(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        _sk(64, None, **{name: value})


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _sk(64, 128)


@pytest.mark.parametrize("c1", [0, -16])
def test_bad_c1_raises(c1: int) -> None:
    with pytest.raises(ValueError, match="c1"):
        _sk(c1)


@pytest.mark.parametrize(
    ("c", "branches", "groups", "reduction", "min_dim"),
    [(1, 2, 32, 16, 32), (7, 3, 32, 16, 32), (16, 2, 32, 16, 32), (80, 2, 32, 16, 32), (256, 1, 8, 4, 8),
     (1280, 2, 32, 16, 32)],
)
def test_param_count_matches_formula(c: int, branches: int, groups: int, reduction: int, min_dim: int) -> None:
    module = _sk(c, None, branches, groups, reduction, min_dim)
    expected = param_count(KEY, c, branches=branches, groups=groups, reduction=reduction, min_dim=min_dim)
    assert sum(p.numel() for p in module.parameters()) == expected


def test_gradcheck_float64() -> None:
    module = _randomise(_sk(8, None, 2, 4, 4, 4), seed=5).double().eval()
    x = torch.randn(2, 8, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_onnx_traced_at_batch_one_runs_at_degenerate_sizes() -> None:
    ort = pytest.importorskip("onnxruntime")
    module = _randomise(_sk(16, None, 2, 4, 4, 4), seed=6).eval()
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.randn(1, 16, 8, 8),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(3, 16, 1, 1), (2, 16, 1, 9), (2, 16, 7, 1), (1, 16, 13, 5)]:
        x = torch.randn(shape)
        out = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(out, module(x), rtol=1e-5, atol=1e-5)
