"""CBAM (templates/cbam.py) against an oracle written from the CBAM paper's equations."""

from __future__ import annotations

import io

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "cbam"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _cbam(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).CBAM(*args, **kwargs)


def _randomise(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    return randomise(module, seed, scale, batchnorm_stats=True)


def _sigmoid(t: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-t))


def _conv_same(maps: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(b, 2, H, W) * (1, 2, k, k) -> (b, H, W): zero-padded k x k convolution as a sum over its k * k taps."""
    b, channels, h, w = maps.shape
    k = weight.shape[-1]
    half = (k - 1) // 2
    padded = torch.zeros(b, channels, h + 2 * half, w + 2 * half, dtype=maps.dtype)
    padded[:, :, half:half + h, half:half + w] = maps
    out = torch.zeros(b, h, w, dtype=maps.dtype)
    for dy in range(k):
        for dx in range(k):
            out += torch.einsum("i,bihw->bhw", weight[0, :, dy, dx], padded[:, :, dy:dy + h, dx:dx + w])
    return out


def oracle(module: torch.nn.Module, x: torch.Tensor, training: bool = False) -> torch.Tensor:
    """M_c = sigmoid(MLP(avg) + MLP(max)); x' = M_c x; M_s = sigmoid(BN(conv([max_c x'; mean_c x']))); M_s x'."""
    x = x.double()
    w1, b1 = module.mlp[0].weight.detach().double(), module.mlp[0].bias.detach().double()
    w2, b2 = module.mlp[2].weight.detach().double(), module.mlp[2].bias.detach().double()

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return torch.einsum("cm,bm->bc", w2, torch.clamp(torch.einsum("mc,bc->bm", w1, v) + b1, min=0)) + b2

    b, channels, h, w = x.shape
    flat = x.reshape(b, channels, h * w)
    avg = flat.sum(dim=2) / (h * w)
    peak = flat.max(dim=2).values
    gated = _sigmoid(mlp(avg) + mlp(peak))[:, :, None, None] * x
    maps = torch.stack((gated.max(dim=1).values, gated.sum(dim=1) / channels), dim=1)
    s = _conv_same(maps, module.conv.weight.detach().double())
    bn = module.bn
    if training:
        mean = s.mean()
        var = ((s - mean) ** 2).mean()
    else:
        mean, var = bn.running_mean.double()[0], bn.running_var.double()[0]
    s = (s - mean) / torch.sqrt(var + bn.eps) * bn.weight.detach().double()[0] + bn.bias.detach().double()[0]
    return _sigmoid(s)[:, None] * gated


@pytest.mark.parametrize(
    ("c", "reduction", "kernel", "h", "w"),
    [(32, 16, 7, 6, 5), (16, 16, 7, 1, 1), (24, 4, 3, 13, 7), (8, 16, 7, 1, 9), (48, 8, 5, 9, 1), (3, 16, 1, 4, 4)],
)
def test_matches_oracle_eval(c: int, reduction: int, kernel: int, h: int, w: int) -> None:
    module = _randomise(_cbam(c, c, reduction, kernel)).double().eval()
    x = torch.randn(2, c, h, w, dtype=torch.float64) * 2 + 0.5
    torch.testing.assert_close(module(x), oracle(module, x), rtol=1e-7, atol=1e-12)


def test_matches_oracle_train_mode() -> None:
    module = _randomise(_cbam(16, None, 4), 1).double().train()
    x = torch.randn(3, 16, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x, training=True), rtol=1e-7, atol=1e-12)


def test_float32_matches_oracle() -> None:
    module = _randomise(_cbam(64), 2, 0.2).eval()
    x = torch.randn(2, 64, 10, 12)
    torch.testing.assert_close(module(x).double(), oracle(module, x), rtol=1e-5, atol=1e-5)


def test_half_at_realistic_magnitudes_follows_float64() -> None:
    module = _randomise(_cbam(64), 3, 0.02).eval()
    x = torch.randn(2, 64, 40, 40) * 100
    out = module.half()(x.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double(), oracle(module.double(), x), rtol=2e-2, atol=0.5)


def test_official_init() -> None:
    # The official ResNet init: 7x7 conv kaiming_normal(fan_out), spatial BN weight 0, every bias 0.
    module = _cbam(256)
    assert torch.equal(module.bn.weight, torch.zeros(1)) and torch.equal(module.bn.bias, torch.zeros(1))
    assert torch.equal(module.mlp[0].bias, torch.zeros(16)) and torch.equal(module.mlp[2].bias, torch.zeros(256))
    std = module.conv.weight.std().item()
    assert 0.5 * (2 / 49) ** 0.5 < std < 1.5 * (2 / 49) ** 0.5
    x = torch.randn(2, 256, 5, 6)
    channel = torch.sigmoid(module.mlp(x.mean((2, 3))) + module.mlp(x.amax((2, 3))))
    torch.testing.assert_close(module.eval()(x), 0.5 * x * channel[:, :, None, None])


def test_hidden_width_and_kernel() -> None:
    assert _cbam(256).mlp[0].out_features == 16
    assert _cbam(8).mlp[0].out_features == 1  # the official c // 16 would be a layer without units
    assert _cbam(64, None, 16, 3).conv.weight.shape == (1, 2, 3, 3)


@pytest.mark.parametrize("reduction", [0, -4, 1.5, "16", True, None])
def test_bad_reduction_raises(reduction: object) -> None:
    with pytest.raises(ValueError, match="reduction"):
        _cbam(64, None, reduction)


@pytest.mark.parametrize("kernel_size", [0, 2, 6, -7, 7.0, "7", None])
def test_bad_kernel_size_raises(kernel_size: object) -> None:
    with pytest.raises(ValueError, match="kernel_size"):
        _cbam(64, None, 16, kernel_size)


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _cbam(64, 128)


@pytest.mark.parametrize("c1", [0, -16])
def test_bad_c1_raises(c1: int) -> None:
    with pytest.raises(ValueError, match="c1"):
        _cbam(c1)


@pytest.mark.parametrize("c", [1, 7, 16, 24, 80, 256, 1280])
@pytest.mark.parametrize(("reduction", "kernel_size"), [(16, 7), (1, 3), (4, 1), (32, 5)])
def test_param_count_matches_formula(c: int, reduction: int, kernel_size: int) -> None:
    module = _cbam(c, None, reduction, kernel_size)
    assert sum(p.numel() for p in module.parameters()) == param_count(KEY, c, reduction=reduction,
                                                                       kernel_size=kernel_size)


def test_param_count_default_hyperparameters() -> None:
    assert sum(p.numel() for p in _cbam(48).parameters()) == param_count(KEY, 48)


def test_gradcheck_float64() -> None:
    module = _randomise(_cbam(8, None, 2, 3), 4).double().eval()
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_deterministic_backward() -> None:
    module = _randomise(_cbam(32), 5).train()
    x = torch.randn(2, 32, 9, 7, requires_grad=True)
    try:
        torch.use_deterministic_algorithms(True)
        module(x).square().sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.isfinite(x.grad).all()


def test_onnx_traced_at_batch_one_runs_at_other_batches_and_sizes() -> None:
    # The official avg_pool2d/max_pool2d with a kernel of the input's size export as fixed-size pools.
    ort = pytest.importorskip("onnxruntime")
    module = _randomise(_cbam(16, None, 4), 6).eval()
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.randn(1, 16, 8, 8),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(2, 16, 12, 20), (3, 16, 1, 1), (2, 16, 1, 9)]:
        x = torch.randn(shape)
        out = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(out, module(x), rtol=1e-5, atol=1e-5)
