"""CoordAtt (templates/coord_attention.py) against an oracle written from the Coordinate Attention paper."""

from __future__ import annotations

import io
import math

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "coord-attention"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _ca(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).CoordAtt(*args, **kwargs)


def _randomise(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    return randomise(module, seed, scale, batchnorm_stats=True)


def _sigmoid(t: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-t))


def _h_swish(t: torch.Tensor) -> torch.Tensor:
    return t * torch.clamp(t + 3, 0, 6) / 6


def oracle(module: torch.nn.Module, x: torch.Tensor, training: bool = False) -> torch.Tensor:
    """z^h_c(i) = mean_j x_c(i, j), z^w_c(j) = mean_i x_c(i, j); f = h_swish(BN(W1 [z^h; z^w] + b1)) with BN over
    the batch and all H + W positions in training; g^h = sigmoid(W_h f^h + b_h), g^w = sigmoid(W_w f^w + b_w);
    out_c(i, j) = x_c(i, j) g^h_c(i) g^w_c(j). Float64, per row and column."""
    x = x.double()

    def weights(conv: torch.nn.Conv2d) -> tuple:
        return conv.weight.detach().double()[:, :, 0, 0], conv.bias.detach().double()

    w1, b1 = weights(module.conv1)
    wh, bh = weights(module.conv_h)
    ww, bw = weights(module.conv_w)
    b, channels, h, w = x.shape
    rows = torch.stack([torch.stack([x[:, :, i, j] for j in range(w)]).sum(0) / w for i in range(h)], dim=2)
    cols = torch.stack([torch.stack([x[:, :, i, j] for i in range(h)]).sum(0) / h for j in range(w)], dim=2)
    profile = torch.cat((rows, cols), dim=2)  # (b, c, H + W)
    f = torch.einsum("mc,bcp->bmp", w1, profile) + b1[None, :, None]
    bn = module.bn1
    if training:
        mean = f.mean(dim=(0, 2))
        var = ((f - mean[None, :, None]) ** 2).mean(dim=(0, 2))
    else:
        mean, var = bn.running_mean.double(), bn.running_var.double()
    scale = bn.weight.detach().double() / torch.sqrt(var + bn.eps)
    f = _h_swish((f - mean[None, :, None]) * scale[None, :, None] + bn.bias.detach().double()[None, :, None])
    g_h = _sigmoid(torch.einsum("cm,bmp->bcp", wh, f[:, :, :h]) + bh[None, :, None])  # (b, c, H)
    g_w = _sigmoid(torch.einsum("cm,bmp->bcp", ww, f[:, :, h:]) + bw[None, :, None])  # (b, c, W)
    out = torch.empty_like(x)
    for i in range(h):
        for j in range(w):
            out[:, :, i, j] = x[:, :, i, j] * g_h[:, :, i] * g_w[:, :, j]
    return out


@pytest.mark.parametrize(
    ("c", "reduction", "h", "w"),
    [(32, 32, 6, 5), (16, 32, 1, 1), (24, 4, 13, 7), (8, 32, 1, 9), (48, 2, 9, 1), (3, 32, 4, 4), (512, 32, 3, 2)],
)
def test_matches_oracle_eval(c: int, reduction: int, h: int, w: int) -> None:
    module = _randomise(_ca(c, c, reduction), 0, 0.3).double().eval()
    x = torch.randn(2, c, h, w, dtype=torch.float64) * 2 + 0.5
    torch.testing.assert_close(module(x), oracle(module, x), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize(("h", "w"), [(6, 7), (1, 1), (1, 5)])
def test_matches_oracle_train_mode(h: int, w: int) -> None:
    module = _randomise(_ca(16, None, 4), 1).double().train()
    x = torch.randn(3, 16, h, w, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x, training=True), rtol=1e-7, atol=1e-12)


def test_float32_matches_oracle() -> None:
    module = _randomise(_ca(64), 2, 0.2).eval()
    x = torch.randn(2, 64, 10, 12)
    torch.testing.assert_close(module(x).double(), oracle(module, x), rtol=1e-5, atol=1e-5)


def test_half_at_realistic_magnitudes_follows_float64() -> None:
    module = _randomise(_ca(64), 3, 0.02).eval()
    x = torch.randn(2, 64, 40, 40) * 100
    out = module.half()(x.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double(), oracle(module.double(), x), rtol=2e-2, atol=0.5)


def test_gate_factorises_into_rows_and_columns() -> None:
    module = _randomise(_ca(16), 4).eval()
    x = torch.randn(2, 16, 5, 7)
    gate = module(x) / x
    rank_one = gate[:, :, :, :1] * gate[:, :, :1, :] / gate[:, :, :1, :1]
    torch.testing.assert_close(gate, rank_one)


def test_official_init() -> None:
    module = _ca(256)
    for conv in (module.conv1, module.conv_h, module.conv_w):
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
        expected = math.sqrt(2.0 / conv.out_channels)
        assert 0.8 * expected < conv.weight.std().item() < 1.2 * expected
    assert torch.equal(module.bn1.weight, torch.ones(8)) and torch.equal(module.bn1.bias, torch.zeros(8))


def test_bottleneck_width_is_at_least_eight() -> None:
    assert _ca(16).conv1.out_channels == 8
    assert _ca(1024).conv1.out_channels == 32
    assert _ca(1280, None, 16).conv1.out_channels == 80


@pytest.mark.parametrize("reduction", [0, -4, 1.5, "32", True, None])
def test_bad_reduction_raises(reduction: object) -> None:
    with pytest.raises(ValueError, match="reduction"):
        _ca(64, None, reduction)


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _ca(64, 128)


@pytest.mark.parametrize("c1", [0, -16])
def test_bad_c1_raises(c1: int) -> None:
    with pytest.raises(ValueError, match="c1"):
        _ca(c1)


@pytest.mark.parametrize("c", [1, 7, 16, 24, 80, 256, 1280])
@pytest.mark.parametrize("reduction", [1, 8, 32])
def test_param_count_matches_formula(c: int, reduction: int) -> None:
    module = _ca(c, None, reduction)
    assert sum(p.numel() for p in module.parameters()) == param_count(KEY, c, reduction=reduction)


def test_param_count_default_hyperparameters() -> None:
    assert sum(p.numel() for p in _ca(48).parameters()) == param_count(KEY, 48)


def test_gradcheck_float64() -> None:
    module = _randomise(_ca(4, None, 1), 5).double().eval()
    x = torch.randn(1, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_gradcheck_float64_train_mode() -> None:
    module = _randomise(_ca(4, None, 1), 6).double().train()
    x = torch.randn(2, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_deterministic_backward() -> None:
    module = _randomise(_ca(32), 7).train()
    x = torch.randn(2, 32, 9, 7, requires_grad=True)
    try:
        torch.use_deterministic_algorithms(True)
        module(x).square().sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.isfinite(x.grad).all()


def test_onnx_traced_at_batch_one_runs_at_other_batches_and_sizes() -> None:
    # The profiles are split at the input's own H: a size traced as a constant would break H != 8 here.
    ort = pytest.importorskip("onnxruntime")
    module = _randomise(_ca(16, None, 4), 8).eval()
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.randn(1, 16, 8, 8),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(2, 16, 12, 20), (3, 16, 1, 1), (2, 16, 1, 9), (1, 16, 9, 1)]:
        x = torch.randn(shape)
        out = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(out, module(x), rtol=1e-5, atol=1e-5)


def test_jit_trace_runs_at_other_heights() -> None:
    # YOLOv5's TorchScript export traces once; the split point must follow the input's H, not the traced one.
    module = _randomise(_ca(16, None, 4), 9).eval()
    traced = torch.jit.trace(module, torch.randn(1, 16, 12, 10), check_trace=False)
    for shape in [(2, 16, 7, 9), (1, 16, 1, 1), (3, 16, 20, 3)]:
        x = torch.randn(shape)
        torch.testing.assert_close(traced(x), module(x))
