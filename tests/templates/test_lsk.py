"""LSKBlock (templates/lsk.py) against an oracle written from the LSKNet paper's equations.

The oracle works in float64: each depthwise (dilated) convolution as a per-channel sum over its taps,
the 1x1 projections as einsum, the spatial selection from an explicit channel mean and max, the 7x7
squeeze convolution as a sum over taps. It shares no code with the template.
"""

from __future__ import annotations

import io

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "lsk"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _lsk(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).LSKBlock(*args, **kwargs)


def _w(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double()


def _depthwise(x: torch.Tensor, conv: torch.nn.Conv2d, dilation: int) -> torch.Tensor:
    """out[c] = b[c] + sum_{dy, dx} w[c, dy, dx] * x[c, i + d (dy - k//2), j + d (dx - k//2)], zero outside."""
    b, c, h, w = x.shape
    k = conv.kernel_size[0]
    reach = dilation * (k // 2)
    padded = torch.zeros(b, c, h + 2 * reach, w + 2 * reach, dtype=x.dtype)
    padded[:, :, reach:reach + h, reach:reach + w] = x
    out = _w(conv.bias)[None, :, None, None].expand(b, c, h, w).clone()
    for dy in range(k):
        for dx in range(k):
            window = padded[:, :, dy * dilation:dy * dilation + h, dx * dilation:dx * dilation + w]
            out += _w(conv.weight)[None, :, 0, dy, dx, None, None] * window
    return out


def _pointwise(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    return torch.einsum("oi,bihw->bohw", _w(conv.weight)[:, :, 0, 0], x) + _w(conv.bias)[None, :, None, None]


def _squeeze(maps: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """2 -> 2 channels, 7x7, padding 3: full convolution as a sum over taps."""
    b, _, h, w = maps.shape
    padded = torch.zeros(b, 2, h + 6, w + 6, dtype=maps.dtype)
    padded[:, :, 3:3 + h, 3:3 + w] = maps
    out = _w(conv.bias)[None, :, None, None].expand(b, 2, h, w).clone()
    for dy in range(7):
        for dx in range(7):
            out += torch.einsum("oi,bihw->bohw", _w(conv.weight)[:, :, dy, dx], padded[:, :, dy:dy + h, dx:dx + w])
    return out


def oracle(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """U1 = DW5(x); U2 = DW7_{d3}(U1); A_i = W_i U_i; S = [mean_c, max_c]([A1, A2]);
    s = sigmoid(conv7(S)); out = x * W3 (s_0 A1 + s_1 A2)."""
    x = x.double()
    u1 = _depthwise(x, module.conv0, 1)
    u2 = _depthwise(u1, module.conv_spatial, 3)
    a1, a2 = _pointwise(u1, module.conv1), _pointwise(u2, module.conv2)
    both = torch.cat([a1, a2], dim=1)
    stats = torch.stack([both.sum(dim=1) / both.shape[1], both.max(dim=1).values], dim=1)
    select = 1.0 / (1.0 + torch.exp(-_squeeze(stats, module.conv_squeeze)))
    return x * _pointwise(a1 * select[:, :1] + a2 * select[:, 1:], module.conv)


@pytest.mark.parametrize(("c", "h", "w"), [(16, 6, 5), (24, 13, 7), (7, 5, 5), (16, 1, 1), (8, 1, 9), (8, 9, 1),
                                           (1, 4, 4), (4, 25, 3)])
def test_matches_oracle(c: int, h: int, w: int) -> None:
    module = randomise(_lsk(c, c), 0, 0.3).double()
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x), rtol=1e-6, atol=1e-10)


def test_float32_matches_oracle() -> None:
    module = randomise(_lsk(32), 2, 0.3)
    x = torch.randn(2, 32, 10, 9)
    torch.testing.assert_close(module(x).double(), oracle(module, x), rtol=1e-4, atol=1e-5)


def test_large_kernel_reaches_eleven_pixels() -> None:
    # 5x5 then 7x7 dilation 3: receptive field 5 + 3 * 6 = 23, i.e. 11 pixels each side and no more
    module = randomise(_lsk(4), 3, 0.3).double()
    x = torch.zeros(1, 4, 31, 31, dtype=torch.float64)
    x[0, :, 15, 15] = 1.0
    base = torch.randn(1, 4, 31, 31, dtype=torch.float64)
    changed = module(base + x) - module(base)
    reached = (changed.abs().sum(dim=(0, 1)) > 0).nonzero()
    # the product with x and the 7x7 squeeze add 3 more pixels around the attention's own reach
    assert reached[:, 0].min() == 15 - 11 - 3 and reached[:, 0].max() == 15 + 11 + 3


def test_official_init() -> None:
    module = _lsk(128)
    assert torch.equal(module.conv0.bias, torch.zeros(128))
    assert abs(module.conv1.weight.std().item() - (2 / 64) ** 0.5) < 0.01  # sqrt(2 / fan_out), fan_out = 64
    assert abs(module.conv0.weight.std().item() - (2 / 25) ** 0.5) < 0.02  # depthwise: fan_out = 25


def test_projection_width() -> None:
    assert _lsk(256).conv1.out_channels == 128
    assert _lsk(1).conv1.out_channels == 1
    assert _lsk(7).conv2.out_channels == 3


def test_float16_follows_float32_below_the_documented_range() -> None:
    # amp_safe is False: the output grows as x squared. Below max |x| ~ 150 float16 stays finite and close.
    module = _lsk(128).eval()
    x = torch.randn(1, 128, 12, 12)
    x = x * (100.0 / x.abs().max())
    reference = module(x)
    half = load_template(KEY).LSKBlock(128).half()
    half.load_state_dict(module.state_dict())
    out = half(x.half()).float()
    assert torch.isfinite(out).all()
    assert (out - reference).abs().max() <= 1e-2 * reference.abs().max()


def test_no_hyperparameters() -> None:
    with pytest.raises(TypeError):
        _lsk(16, None, 4)


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _lsk(64, 128)


@pytest.mark.parametrize("c1", [0, -16, 2.0, True])
def test_bad_c1_raises(c1: object) -> None:
    with pytest.raises(ValueError, match="c1"):
        _lsk(c1)


@pytest.mark.parametrize("c", [1, 2, 3, 7, 16, 24, 80, 256, 1280])
def test_param_count_matches_formula(c: int) -> None:
    assert sum(p.numel() for p in _lsk(c).parameters()) == param_count(KEY, c)


def test_gradcheck_float64() -> None:
    module = randomise(_lsk(6), 5, 0.3).double()
    x = torch.randn(2, 6, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_onnx_traced_at_batch_one_runs_at_degenerate_sizes() -> None:
    ort = pytest.importorskip("onnxruntime")
    module = randomise(_lsk(16), 6, 0.3).eval()
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.randn(1, 16, 8, 8),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(3, 16, 1, 1), (2, 16, 1, 9), (2, 16, 7, 1), (1, 16, 13, 5)]:
        x = torch.randn(shape)
        out = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(out, module(x), rtol=1e-5, atol=1e-5)
