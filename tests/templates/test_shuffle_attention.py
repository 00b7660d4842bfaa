"""ShuffleAttention (templates/shuffle_attention.py) against an oracle written from the SA-Net paper."""

from __future__ import annotations

import io
import math

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "shuffle-attention"
EPS = 1e-5  # GroupNorm's default eps, which the template reads from its gn submodule


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _sa(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).ShuffleAttention(*args, **kwargs)


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    return randomise(module, seed)


def _sigmoid(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


def oracle(module: torch.nn.Module, x: torch.Tensor, groups: int) -> torch.Tensor:
    """SA per image, group and channel, in float64, from the paper (Eqs. 1-4 and the channel shuffle).

    Group g holds channels [2kg, 2k(g+1)): the first k are X_k1, the last k X_k2 (k = C / 2G).
    X'_k1 = sigmoid(W1 s + b1) X_k1, s = the channel's spatial mean;
    X'_k2 = sigmoid(W2 GN(X_k2) + b2) X_k2, GN = per-channel (x - mean) / sqrt(var + eps) * gamma + beta;
    the groups' [X'_k1, X'_k2] concatenated, then shuffled with 2 groups: out[2i + s] = cat[s * C/2 + i].
    """
    x = x.double()
    b, channels, h, w = x.shape
    k = channels // (2 * groups)
    p = {name: [float(v) for v in getattr(module, name).detach().flatten()]
         for name in ("cweight", "cbias", "sweight", "sbias")}
    gn_weight = [float(v) for v in module.gn.weight.detach()]
    gn_bias = [float(v) for v in module.gn.bias.detach()]
    cat = torch.empty_like(x)
    for n in range(b):
        for g in range(groups):
            for j in range(k):
                first, second = x[n, 2 * k * g + j], x[n, 2 * k * g + k + j]
                s = float(first.sum()) / (h * w)
                cat[n, 2 * k * g + j] = first * _sigmoid(p["cweight"][j] * s + p["cbias"][j])
                mean = float(second.sum()) / (h * w)
                var = float(((second - mean) ** 2).sum()) / (h * w)
                normed = (second - mean) / math.sqrt(var + EPS) * gn_weight[j] + gn_bias[j]
                cat[n, 2 * k * g + k + j] = second / (1.0 + torch.exp(-(p["sweight"][j] * normed + p["sbias"][j])))
    out = torch.empty_like(x)
    for i in range(channels // 2):
        for s in range(2):
            out[:, 2 * i + s] = cat[:, s * channels // 2 + i]
    return out


@pytest.mark.parametrize(
    ("c", "groups", "h", "w"),
    [(16, 64, 6, 5), (48, 64, 7, 9), (12, 3, 1, 1), (24, 4, 1, 9), (20, 64, 9, 1), (8, 1, 5, 5), (128, 64, 4, 3)],
)
def test_matches_oracle(c: int, groups: int, h: int, w: int) -> None:
    module = _randomise(_sa(c, c, groups)).double()
    x = torch.randn(2, c, h, w, dtype=torch.float64) * 2 + 0.5
    torch.testing.assert_close(module(x), oracle(module, x, math.gcd(c // 2, groups)), rtol=1e-7, atol=1e-10)


def test_float32_matches_oracle() -> None:
    module = _randomise(_sa(64, None, 8), seed=3)
    x = torch.randn(2, 64, 10, 12)
    torch.testing.assert_close(module(x).double(), oracle(module, x, 8), rtol=1e-4, atol=1e-4)


def test_official_init_is_the_shuffled_constant_gate_sigmoid_one() -> None:
    module = _sa(32, None, 4)
    assert all(torch.equal(getattr(module, n), torch.zeros(1, 4, 1, 1)) for n in ("cweight", "sweight"))
    assert all(torch.equal(getattr(module, n), torch.ones(1, 4, 1, 1)) for n in ("cbias", "sbias"))
    x = torch.randn(2, 32, 5, 6)
    shuffle = [s * 16 + i for i in range(16) for s in range(2)]  # output 2i + s <- input s * C/2 + i
    torch.testing.assert_close(module(x), x[:, shuffle] * torch.sigmoid(torch.tensor(1.0)), rtol=0, atol=0)


def test_state_dict_has_the_official_names_and_shapes() -> None:
    shapes = {name: tuple(t.shape) for name, t in _sa(256).state_dict().items()}
    k = (1, 2, 1, 1)  # 256 channels, 64 groups: 2 channels per half
    assert shapes == {"cweight": k, "cbias": k, "sweight": k, "sbias": k, "gn.weight": (2,), "gn.bias": (2,)}


@pytest.mark.parametrize(
    ("c1", "groups", "used"),
    [(128, 64, 64), (256, 64, 64), (1280, 64, 64), (64, 64, 32), (16, 64, 8), (48, 64, 8), (80, 64, 8),
     (24, 64, 4), (2, 64, 1), (96, 5, 1), (30, 64, 1), (96, 6, 6)],
)
def test_groups_rule_is_gcd_of_half_width(c1: int, groups: int, used: int) -> None:
    module = _sa(c1, None, groups)
    assert module.groups == used
    assert module.cweight.numel() == c1 // (2 * used)
    assert module(torch.randn(1, c1, 3, 4)).shape == (1, c1, 3, 4)


def test_single_position_is_finite_with_finite_gradients() -> None:
    # One value per channel: the normalised map is 0 and the spatial gate sigmoid(sweight * beta + sbias).
    module = _randomise(_sa(16, None, 4), seed=2)
    x = torch.randn(1, 16, 1, 1, requires_grad=True)
    out = module(x)
    torch.testing.assert_close(out.detach(), oracle(module, x.detach(), 4).float())
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_images_of_a_batch_are_independent() -> None:
    module = _randomise(_sa(16, None, 4), seed=6)
    x = torch.randn(2, 16, 5, 5)
    changed = x.clone()
    changed[1] = torch.randn(16, 5, 5) * 10
    torch.testing.assert_close(module(changed)[0], module(x)[0], rtol=0, atol=0)


def test_half_input_at_large_magnitude_is_finite_and_follows_float32() -> None:
    module = _randomise(_sa(32, None, 4), seed=7)
    x = (torch.randn(2, 32, 9, 7) * 150).half()
    out = module.half()(x)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), module.float()(x.float()), rtol=5e-3, atol=5e-2)


def test_gradcheck_float64() -> None:
    module = _randomise(_sa(12, None, 2), seed=1).double()
    x = torch.randn(2, 12, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_onnx_exported_at_batch_one_runs_at_single_row_column_and_position_maps() -> None:
    # test_properties runs both exporters at 16x16 and 12x20; these are the degenerate sizes
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    module = _randomise(_sa(32, None, 4), seed=5).eval()
    buffer = io.BytesIO()
    axes = {0: "b", 2: "h", 3: "w"}
    torch.onnx.export(module, (torch.randn(1, 32, 16, 16),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": axes, "y": axes})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(3, 32, 13, 7), (2, 32, 1, 1), (1, 32, 1, 9), (2, 32, 9, 1)]:
        sample = torch.randn(shape)
        (got,) = session.run(None, {session.get_inputs()[0].name: sample.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), module(sample), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c1", [15, 1, 0, -16, 16.0])
def test_odd_or_bad_c1_raises(c1: object) -> None:
    with pytest.raises(ValueError, match="c1"):
        _sa(c1)


@pytest.mark.parametrize("groups", [0, -8, 2.5, "8", True, None])
def test_bad_groups_raise(groups: object) -> None:
    with pytest.raises(ValueError, match="groups"):
        _sa(64, None, groups)


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _sa(64, 128)


@pytest.mark.parametrize("c", [2, 16, 24, 64, 80, 128, 256, 1280])
@pytest.mark.parametrize("groups", [1, 8, 64])
def test_param_count_matches_formula(c: int, groups: int) -> None:
    module = _sa(c, None, groups)
    assert sum(p.numel() for p in module.parameters()) == param_count(KEY, c, groups=groups)


def test_catalogue_requires_even_width() -> None:
    from yolopatch import catalog

    spec = catalog.get(KEY)
    assert spec.accepts_width(16) and spec.accepts_width(1280) and not spec.accepts_width(15)
