"""TripletAttention (templates/triplet_attention.py) against an oracle written from the paper's equations."""

from __future__ import annotations

import io
import math

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "triplet-attention"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _ta(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).TripletAttention(*args, **kwargs)


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    return randomise(module, seed, 0.5, batchnorm_stats=True)


def _conv_same(z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Zero-padded k x k convolution, 2 -> 1 channels, as a sum over the k*k taps."""
    b, _, rows, cols = z.shape
    k = weight.shape[-1]
    r = k // 2
    padded = torch.zeros(b, 2, rows + 2 * r, cols + 2 * r, dtype=z.dtype)
    padded[:, :, r:r + rows, r:r + cols] = z
    out = torch.zeros(b, rows, cols, dtype=z.dtype)
    for dy in range(k):
        for dx in range(k):
            out += torch.einsum("i,bipq->bpq", weight[0, :, dy, dx], padded[:, :, dy:dy + rows, dx:dx + cols])
    return out


def _gate(z: torch.Tensor, gate: torch.nn.Module, training: bool) -> torch.Tensor:
    """sigmoid(BN(conv(z))) for one (b, 2, P, Q) Z-pooled plane; BN over the batch and the plane in training."""
    t = _conv_same(z, gate.conv.weight.detach().double())
    bn = gate.bn
    if training:
        mean = t.sum() / t.numel()
        var = ((t - mean) ** 2).sum() / t.numel()
    else:
        mean, var = bn.running_mean.double()[0], bn.running_var.double()[0]
    normed = (t - mean) / torch.sqrt(var + bn.eps) * bn.weight.detach().double()[0] + bn.bias.detach().double()[0]
    return 1.0 / (1.0 + torch.exp(-normed))


def _zpool(x: torch.Tensor, dim: int) -> torch.Tensor:
    """[max, mean] over ``dim``, the two maps stacked as channels (dimension 1) of the remaining plane."""
    return torch.stack((x.max(dim).values, x.sum(dim) / x.shape[dim]), 1)


def oracle(module: torch.nn.Module, x: torch.Tensor, training: bool = False) -> torch.Tensor:
    """out[c,h,w] = x[c,h,w] * mean of the gates a_cw[c,w], a_hc[h,c], a_hw[h,w] (float64).

    a_cw from Z-pool over H on the (C, W) plane, a_hc over W on the (H, C) plane, a_hw over C on (H, W).
    """
    x = x.double()
    a_cw = _gate(_zpool(x, 2), module.cw, training)  # (b, C, W)
    a_hc = _gate(_zpool(x, 3).transpose(2, 3), module.hc, training)  # (b, H, C)
    total = torch.einsum("bcw,h->bchw", a_cw, torch.ones(x.shape[2], dtype=x.dtype))
    total = total + torch.einsum("bhc,w->bchw", a_hc, torch.ones(x.shape[3], dtype=x.dtype))
    branches = 2
    if module.hw is not None:
        a_hw = _gate(_zpool(x, 1), module.hw, training)  # (b, H, W)
        total = total + torch.einsum("bhw,c->bchw", a_hw, torch.ones(x.shape[1], dtype=x.dtype))
        branches = 3
    return x * total / branches


@pytest.mark.parametrize(
    ("c", "h", "w", "no_spatial", "kernel_size"),
    [(16, 6, 5, False, 7), (8, 1, 1, False, 7), (4, 1, 9, False, 7), (12, 9, 1, False, 3), (3, 13, 7, False, 5),
     (1, 4, 4, False, 7), (10, 5, 8, True, 7), (6, 3, 3, False, 1)],
)
def test_matches_oracle_eval(c: int, h: int, w: int, no_spatial: bool, kernel_size: int) -> None:
    module = _randomise(_ta(c, c, no_spatial, kernel_size)).double().eval()
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x), rtol=1e-7, atol=1e-10)


def test_matches_oracle_train_mode() -> None:
    module = _randomise(_ta(16), seed=1).double().train()
    x = torch.randn(3, 16, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x, training=True), rtol=1e-7, atol=1e-10)


def test_float32_matches_oracle() -> None:
    module = _randomise(_ta(32), seed=2).eval()
    x = torch.randn(2, 32, 10, 9)
    torch.testing.assert_close(module(x).double(), oracle(module, x), rtol=1e-4, atol=1e-4)


def test_official_initialisation() -> None:
    module = _ta(64)
    assert module.cw.bn.weight.item() == 1.0 and module.hc.bn.weight.item() == 1.0
    assert module.hw.bn.weight.item() == 0.0  # the official ResNet zeroes BatchNorm weights under "SpatialGate"
    assert all(gate.bn.bias.item() == 0.0 for gate in (module.cw, module.hc, module.hw))
    assert (module.cw.bn.eps, module.cw.bn.momentum) == (1e-5, 0.01)
    # kaiming normal, fan_out = 49: std sqrt(2 / 49); three convs, 294 draws
    weights = torch.cat([gate.conv.weight.flatten() for gate in (module.cw, module.hc, module.hw)])
    assert 0.7 * math.sqrt(2 / 49) < weights.std().item() < 1.3 * math.sqrt(2 / 49)
    x = torch.randn(2, 64, 5, 6)
    torch.testing.assert_close(module.eval().hw(module._zpool(x, 1)), torch.full((2, 1, 5, 6), 0.5))


def test_gates_lie_between_zero_and_one() -> None:
    module = _randomise(_ta(16), seed=3).eval()
    x = torch.randn(2, 16, 8, 8) * 3
    out = module(x)
    assert (out.abs() <= x.abs()).all() and (torch.sign(out) == torch.sign(x)).all()


def test_batch_one_single_position_in_training_is_refused_by_batchnorm() -> None:
    # The documented constraint: the (H, W) gate's BatchNorm then sees one value.
    with pytest.raises(ValueError, match="more than 1 value"):
        _ta(16).train()(torch.randn(1, 16, 1, 1))


def test_half_input_at_large_magnitude_is_finite_and_follows_float32() -> None:
    module = _randomise(_ta(32), seed=7).eval()
    x = (torch.randn(2, 32, 9, 7) * 150).half()
    out = module.half()(x)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), module.float()(x.float()), rtol=2e-2, atol=1.0)


@pytest.mark.parametrize("training", [False, True])
def test_gradcheck_float64(training: bool) -> None:
    module = _randomise(_ta(4, None, False, 3), seed=5).double().train(training)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_onnx_exported_at_batch_one_runs_at_single_row_column_and_position_maps() -> None:
    # test_properties runs both exporters at 16x16 and 12x20; these are the degenerate sizes
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    module = _randomise(_ta(32), seed=5).eval()
    buffer = io.BytesIO()
    axes = {0: "b", 2: "h", 3: "w"}
    torch.onnx.export(module, (torch.randn(1, 32, 16, 16),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": axes, "y": axes})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(3, 32, 13, 7), (2, 32, 1, 1), (1, 32, 1, 9), (2, 32, 9, 1)]:
        sample = torch.randn(shape)
        (got,) = session.run(None, {session.get_inputs()[0].name: sample.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), module(sample), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size", [0, 4, -7, 7.0, True, "7", None])
def test_bad_kernel_size_raises(kernel_size: object) -> None:
    with pytest.raises(ValueError, match="kernel_size"):
        _ta(16, None, False, kernel_size)


@pytest.mark.parametrize("no_spatial", [1, 0, "False", None])
def test_bad_no_spatial_raises(no_spatial: object) -> None:
    with pytest.raises(ValueError, match="no_spatial"):
        _ta(16, None, no_spatial)


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _ta(64, 128)


@pytest.mark.parametrize("c1", [0, -16, 16.0])
def test_bad_c1_raises(c1: object) -> None:
    with pytest.raises(ValueError, match="c1"):
        _ta(c1)


@pytest.mark.parametrize("c", [1, 16, 1280])
@pytest.mark.parametrize(("no_spatial", "kernel_size"), [(False, 7), (True, 7), (False, 3), (True, 1)])
def test_param_count_matches_formula(c: int, no_spatial: bool, kernel_size: int) -> None:
    module = _ta(c, None, no_spatial, kernel_size)
    expected = param_count(KEY, c, no_spatial=no_spatial, kernel_size=kernel_size)
    assert sum(p.numel() for p in module.parameters()) == expected
