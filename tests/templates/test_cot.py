"""CoT (templates/cot.py) against an oracle written from the CoTNet paper's equations.

The oracle works in float64: convolutions as sums over taps per group, BatchNorm and GroupNorm written
out, the local aggregation as an explicit sum over the k x k neighbourhood in which channel c reads
kernel row c mod W' (the official CUDA kernel's indexing, written with modulo, not the template's
reshape), and the split-attention fusion per image with an explicit two-way softmax.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "cot"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _cot(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).CoT(*args, **kwargs)


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    return randomise(module, seed, 0.3, batchnorm_stats=True)


def _w(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double()


def _conv(x: torch.Tensor, weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Zero-padded ('same', odd k) grouped convolution as a sum over taps per group; no bias."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    p = k // 2
    padded = torch.zeros(b, c, h + 2 * p, w + 2 * p, dtype=x.dtype)
    padded[:, :, p:p + h, p:p + w] = x
    out = torch.zeros(b, weight.shape[0], h, w, dtype=x.dtype)
    per_in, per_out = c // groups, weight.shape[0] // groups
    for g in range(groups):
        rows, cols = slice(g * per_out, (g + 1) * per_out), slice(g * per_in, (g + 1) * per_in)
        for dy in range(k):
            for dx in range(k):
                out[:, rows] += torch.einsum("oi,bihw->bohw", _w(weight)[rows, :, dy, dx],
                                             padded[:, cols, dy:dy + h, dx:dx + w])
    return out


def _bias(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    return x + _w(conv.bias)[None, :, None, None]


def _bn(x: torch.Tensor, bn: torch.nn.BatchNorm2d, training: bool) -> torch.Tensor:
    if training:
        mean = x.mean(dim=(0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
    else:
        mean, var = _w(bn.running_mean), _w(bn.running_var)
    scale = _w(bn.weight) / torch.sqrt(var + bn.eps)
    return (x - mean[None, :, None, None]) * scale[None, :, None, None] + _w(bn.bias)[None, :, None, None]


def _gn(x: torch.Tensor, gn: torch.nn.GroupNorm) -> torch.Tensor:
    b, c, h, w = x.shape
    per = c // gn.num_groups
    out = torch.empty_like(x)
    for g in range(gn.num_groups):
        block = x[:, g * per:(g + 1) * per]
        mean = block.mean(dim=(1, 2, 3), keepdim=True)
        var = ((block - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True)
        out[:, g * per:(g + 1) * per] = (block - mean) / torch.sqrt(var + gn.eps)
    return out * _w(gn.weight)[None, :, None, None] + _w(gn.bias)[None, :, None, None]


def _local_aggregation(values: torch.Tensor, kernels: torch.Tensor, k: int) -> torch.Tensor:
    """K2[c, i, j] = sum_{dy, dx} kernels[c mod W', dy * k + dx, i, j] * values[c, i + dy - k//2, j + dx - k//2]."""
    b, c, h, w = values.shape
    n_kernels = kernels.shape[1] // (k * k)
    a = kernels.reshape(b, n_kernels, k * k, h, w)
    row = torch.arange(c) % n_kernels
    out = torch.zeros_like(values)
    for dy in range(k):
        for dx in range(k):
            for i in range(h):
                for j in range(w):
                    y, x = i + dy - k // 2, j + dx - k // 2
                    if 0 <= y < h and 0 <= x < w:
                        out[:, :, i, j] += a[:, row, dy * k + dx, i, j] * values[:, :, y, x]
    return out


def oracle(module: torch.nn.Module, x: torch.Tensor, training: bool = False) -> torch.Tensor:
    """K1 = ReLU(BN(conv_k(x))); A = GN(W_b ReLU(BN(W_a [x, K1])) + b_b); V = BN(W_v x);
    K2 = SiLU(BN(local(V, A))); r = W_2 ReLU(BN(W_1 mean(K2 + K1) + b_1)) + b_2;
    out = softmax_t(r[c, t])_0 K2 + softmax_t(r[c, t])_1 K1."""
    x = x.double()
    k = module.kernel_size
    key_conv, key_bn = module.key_embed[0], module.key_embed[1]
    k1 = torch.clamp(_bn(_conv(x, key_conv.weight, key_conv.groups), key_bn, training), min=0)
    e = module.embed
    hidden = torch.clamp(_bn(_conv(torch.cat([x, k1], dim=1), e[0].weight), e[1], training), min=0)
    kernels = _gn(_bias(_conv(hidden, e[3].weight), e[3]), e[4])
    values = _bn(_conv(x, module.conv1x1[0].weight), module.conv1x1[1], training)
    k2 = _bn(_local_aggregation(values, kernels, k), module.bn, training)
    k2 = k2 / (1 + torch.exp(-k2))  # SiLU
    pooled = (k2 + k1).mean(dim=(2, 3))[:, :, None, None]
    se = module.se
    s = torch.clamp(_bn(_bias(_conv(pooled, se[0].weight), se[0]), se[1], training), min=0)
    r = _bias(_conv(s, se[3].weight), se[3])[:, :, 0, 0]  # (b, 2c), row 2c' + t
    c = x.shape[1]
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        for ch in range(c):
            e0, e1 = torch.exp(r[n, 2 * ch]), torch.exp(r[n, 2 * ch + 1])
            out[n, ch] = (e0 * k2[n, ch] + e1 * k1[n, ch]) / (e0 + e1)
    return out


@pytest.mark.parametrize(
    ("c", "k", "h", "w"),
    [(16, 3, 6, 5), (24, 3, 5, 7), (12, 3, 4, 4), (8, 5, 5, 6), (16, 3, 1, 1), (8, 3, 1, 7), (6, 3, 5, 1),
     (8, 1, 3, 3)],
)
def test_matches_oracle_eval(c: int, k: int, h: int, w: int) -> None:
    module = _randomise(_cot(c, c, k)).double().eval()
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x), rtol=1e-6, atol=1e-10)


def test_matches_oracle_train_mode() -> None:
    module = _randomise(_cot(16), seed=1).double().train()
    x = torch.randn(3, 16, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x, training=True), rtol=1e-6, atol=1e-10)


def test_float32_matches_oracle() -> None:
    module = _randomise(_cot(32), seed=2).eval()
    x = torch.randn(2, 32, 7, 6)
    torch.testing.assert_close(module(x).double(), oracle(module, x), rtol=1e-4, atol=1e-5)


def test_kernel_rows_are_shared_by_channels_c_mod_w() -> None:
    # c1=32: W' = 4 kernel rows, channel c reads row c mod 4 (official), not c // 8
    module = _cot(32)
    assert module.embed[3].out_channels == 9 * 4 and module.embed[4].num_groups == 4
    values = torch.zeros(1, 32, 3, 3)
    values[0, 5, 1, 1] = 1.0  # one channel, centre pixel
    kernels = torch.zeros(1, 4, 9, 3, 3)
    kernels[0, 1, 4, 1, 1] = 2.0  # row 1 = 5 mod 4, centre tap, centre pixel
    out = module._aggregate(values, kernels)
    expected = torch.zeros(1, 32, 3, 3)
    expected[0, 5, 1, 1] = 2.0
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_single_image_in_training_does_not_raise() -> None:
    module = _randomise(_cot(16), seed=3).train()
    running = module.se[1].running_mean.clone()
    x = torch.randn(1, 16, 8, 8, requires_grad=True)
    out = module(x)
    assert torch.equal(module.se[1].running_mean, running)
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(module.se[1].weight.grad).all()


def test_official_init_is_kaiming_fan_out() -> None:
    module = _cot(256)
    weight = module.conv1x1[0].weight
    assert abs(weight.std().item() - math.sqrt(2 / 256)) < 0.005
    assert torch.equal(module.embed[4].weight, torch.ones(9 * 32))


@pytest.mark.parametrize(("c1", "key_groups", "kernel_rows"), [(256, 4, 32), (16, 4, 2), (12, 4, 3), (6, 2, 3), (7, 1, 7)])
def test_group_rules_are_gcd(c1: int, key_groups: int, kernel_rows: int) -> None:
    module = _cot(c1)
    assert module.key_embed[0].groups == key_groups
    assert module.embed[4].num_groups == kernel_rows
    assert module(torch.randn(2, c1, 3, 4)).shape == (2, c1, 3, 4)


@pytest.mark.parametrize("kernel_size", [0, 2, -3, 3.0, "3", True, None])
def test_bad_kernel_size_raises_clear_error(kernel_size: object) -> None:
    with pytest.raises(ValueError, match="kernel_size"):
        _cot(32, None, kernel_size)


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _cot(64, 128)


@pytest.mark.parametrize("c1", [0, -16])
def test_bad_c1_raises(c1: int) -> None:
    with pytest.raises(ValueError, match="c1"):
        _cot(c1)


@pytest.mark.parametrize("c", [1, 2, 7, 16, 24, 80, 256, 1280])
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_param_count_matches_formula(c: int, kernel_size: int) -> None:
    module = _cot(c, None, kernel_size)
    assert sum(p.numel() for p in module.parameters()) == param_count(KEY, c, kernel_size=kernel_size)


def test_gradcheck_float64() -> None:
    module = _randomise(_cot(8), seed=5).double().eval()
    x = torch.randn(1, 8, 3, 3, dtype=torch.float64, requires_grad=True)  # eval mode: images are independent
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_onnx_traced_at_batch_one_runs_at_degenerate_sizes() -> None:
    ort = pytest.importorskip("onnxruntime")
    module = _randomise(_cot(16), seed=6).eval()
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.randn(1, 16, 8, 8),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(3, 16, 1, 1), (2, 16, 1, 9), (2, 16, 7, 1), (1, 16, 13, 5)]:
        x = torch.randn(shape)
        out = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(out, module(x), rtol=1e-5, atol=1e-5)
