"""ECA (templates/eca.py) against an oracle written from the ECA-Net paper's equations."""

from __future__ import annotations

import io
import math

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "eca"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _eca(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).ECA(*args, **kwargs)


def _sigmoid(t: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-t))


def paper_k(c: int, gamma: int = 2, b: int = 1) -> int:
    """psi(C) = |log2(C) / gamma + b / gamma|_odd, the way the authors compute it (floats)."""
    t = int(abs((math.log(c, 2) + b) / gamma))
    return t if t % 2 else t + 1


def oracle(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y_c = (1/HW) sum_ij x_c(i, j); w_c = sigmoid(sum_j W_j y_{c+j-(k-1)/2}), zero outside 0..C-1; out = w_c x_c."""
    x = x.double()
    kernel = kernel.detach().double().flatten()
    k = kernel.numel()
    half = (k - 1) // 2
    b, channels, h, w = x.shape
    out = torch.empty_like(x)
    for n in range(b):
        y = [x[n, c].sum() / (h * w) for c in range(channels)]
        for c in range(channels):
            total = torch.zeros((), dtype=torch.float64)
            for j in range(k):
                source = c + j - half
                if 0 <= source < channels:
                    total = total + kernel[j] * y[source]
            out[n, c] = _sigmoid(total) * x[n, c]
    return out


@pytest.mark.parametrize(
    ("c", "k_size", "h", "w"),
    [(32, 0, 6, 5), (16, 0, 1, 1), (24, 5, 13, 7), (8, 3, 1, 9), (130, 0, 9, 1), (2, 0, 4, 4), (3, 7, 2, 3)],
)
def test_matches_oracle(c: int, k_size: int, h: int, w: int) -> None:
    module = randomise(_eca(c, c, k_size), 0).double()
    x = torch.randn(2, c, h, w, dtype=torch.float64) * 2 + 0.5
    torch.testing.assert_close(module(x), oracle(x, module.conv.weight), rtol=1e-7, atol=1e-12)


def test_float32_matches_oracle() -> None:
    module = randomise(_eca(256), 1)
    x = torch.randn(2, 256, 10, 12)
    torch.testing.assert_close(module(x).double(), oracle(x, module.conv.weight), rtol=1e-5, atol=1e-5)


def test_half_at_realistic_magnitudes_follows_float64() -> None:
    module = randomise(_eca(64), 2, 0.01)
    x = torch.randn(2, 64, 40, 40) * 100
    out = module.half()(x.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double(), oracle(x, module.conv.weight), rtol=2e-2, atol=0.5)


@pytest.mark.parametrize(("c", "k"), [(1, 1), (2, 1), (3, 1), (7, 1), (8, 3), (16, 3), (32, 3), (64, 3), (127, 3),
                                      (128, 5), (256, 5), (512, 5), (1024, 5), (1280, 5), (2047, 5), (2048, 7)])
def test_adaptive_kernel_size_table(c: int, k: int) -> None:
    assert _eca(c).k == k == paper_k(c)


@pytest.mark.parametrize(("gamma", "b"), [(2, 1), (1, 0), (3, 2), (1, 1), (4, 0)])
def test_adaptive_kernel_size_is_the_papers_rule_at_every_width(gamma: int, b: int) -> None:
    for c in range(1, 2049):
        assert _eca(c, None, 0, gamma, b).k == paper_k(c, gamma, b), c


def test_fixed_kernel_size_overrides_the_rule() -> None:
    module = _eca(512, None, 3)
    assert module.k == 3 and module.conv.weight.shape == (1, 1, 3)


def test_official_init_is_conv1d_default() -> None:
    module = _eca(256)  # k = 5: PyTorch's default bound 1 / sqrt(fan_in) = 1 / sqrt(5)
    assert module.conv.bias is None
    assert module.conv.weight.abs().max() <= 1 / math.sqrt(5)


@pytest.mark.parametrize("k_size", [-1, 2, 4, 3.0, "3", True, None])
def test_bad_k_size_raises(k_size: object) -> None:
    with pytest.raises(ValueError, match="k_size"):
        _eca(64, None, k_size)


@pytest.mark.parametrize("gamma", [0, -2, 2.0, None])
def test_bad_gamma_raises(gamma: object) -> None:
    with pytest.raises(ValueError, match="gamma"):
        _eca(64, None, 0, gamma)


@pytest.mark.parametrize("b", [-1, 1.0, None])
def test_bad_b_raises(b: object) -> None:
    with pytest.raises(ValueError, match="b="):
        _eca(64, None, 0, 2, b)


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _eca(64, 128)


@pytest.mark.parametrize("c1", [0, -16])
def test_bad_c1_raises(c1: int) -> None:
    with pytest.raises(ValueError, match="c1"):
        _eca(c1)


@pytest.mark.parametrize("c", [1, 2, 7, 16, 127, 128, 1280, 2048, 100000])
@pytest.mark.parametrize(("k_size", "gamma", "b"), [(0, 2, 1), (0, 1, 0), (0, 3, 2), (3, 2, 1), (9, 2, 1)])
def test_param_count_matches_formula(c: int, k_size: int, gamma: int, b: int) -> None:
    module = _eca(c, None, k_size, gamma, b)
    assert sum(p.numel() for p in module.parameters()) == param_count(KEY, c, k_size=k_size, gamma=gamma, b=b)


def test_param_count_default_hyperparameters() -> None:
    assert sum(p.numel() for p in _eca(48).parameters()) == param_count(KEY, 48)


def test_gradcheck_float64() -> None:
    module = randomise(_eca(6, None, 3), 4).double()
    x = torch.randn(2, 6, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_deterministic_backward() -> None:
    module = randomise(_eca(32), 5)
    x = torch.randn(2, 32, 9, 7, requires_grad=True)
    try:
        torch.use_deterministic_algorithms(True)
        module(x).square().sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.isfinite(x.grad).all()


def test_onnx_traced_at_batch_one_runs_at_other_batches_and_sizes() -> None:
    ort = pytest.importorskip("onnxruntime")
    module = randomise(_eca(16), 6).eval()
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.randn(1, 16, 8, 8),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(2, 16, 12, 20), (3, 16, 1, 1), (2, 16, 1, 9)]:
        x = torch.randn(shape)
        out = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(out, module(x), rtol=1e-5, atol=1e-5)
