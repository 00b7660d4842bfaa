"""SimAM (templates/simam.py) against an oracle written from the SimAM paper's energy function."""

from __future__ import annotations

import io
import math

import pytest
import torch

from tests.templates.loader import load_template
from yolopatch.catalog import param_count

KEY = "simam"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _simam(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).SimAM(*args, **kwargs)


def oracle(x: torch.Tensor, e_lambda: float = 1e-4) -> torch.Tensor:
    """SimAM per image and channel, in float64, from the paper's minimal energy.

    Over the N = H*W neurons t of a channel: mu = mean t, sigma^2 = sum (t - mu)^2 / max(N - 1, 1),
    e_t = 4 (sigma^2 + lambda) / ((t - mu)^2 + 2 sigma^2 + 2 lambda)   (the paper's Eq. 16),
    out_t = t * sigmoid(1 / e_t).
    """
    x = x.double()
    b, channels, h, w = x.shape
    out = torch.empty_like(x)
    for n in range(b):
        for k in range(channels):
            t = [float(v) for v in x[n, k].flatten()]
            mu = sum(t) / len(t)
            sigma2 = sum((v - mu) ** 2 for v in t) / max(len(t) - 1, 1)
            gated = []
            for v in t:
                energy = 4 * (sigma2 + e_lambda) / ((v - mu) ** 2 + 2 * sigma2 + 2 * e_lambda)
                gated.append(v / (1.0 + math.exp(-1.0 / energy)))
            out[n, k] = torch.tensor(gated, dtype=torch.float64).reshape(h, w)
    return out


@pytest.mark.parametrize(
    ("c", "h", "w", "e_lambda"),
    [(8, 6, 5, 1e-4), (3, 13, 7, 1e-4), (16, 1, 1, 1e-4), (4, 1, 9, 1e-4), (5, 9, 1, 0.1), (2, 2, 1, 1e-4),
     (6, 7, 7, 2.0)],
)
def test_matches_oracle(c: int, h: int, w: int, e_lambda: float) -> None:
    module = _simam(c, None, e_lambda)
    x = torch.randn(2, c, h, w, dtype=torch.float64) * 3 + 0.5
    torch.testing.assert_close(module(x), oracle(x, e_lambda), rtol=1e-10, atol=1e-12)


def test_float32_matches_oracle() -> None:
    x = torch.randn(2, 16, 20, 20) * 5
    torch.testing.assert_close(_simam(16)(x).double(), oracle(x), rtol=1e-5, atol=1e-5)


def test_single_position_is_the_constant_gate_sigmoid_half_with_finite_gradients() -> None:
    # The official n = H*W - 1 divides 0 by 0 here (NaN); the energy's limit gives sigmoid(1/2).
    x = torch.randn(3, 8, 1, 1, requires_grad=True)
    out = _simam(8)(x)
    torch.testing.assert_close(out, x.detach() * torch.sigmoid(torch.tensor(0.5)))
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_outlier_neuron_gets_the_largest_gate() -> None:
    # The energy is lowest (the weight highest) for the neuron farthest from its channel's mean.
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 3] = 4.0
    x[0, 0, 1, 1] = 1.0
    gate = _simam(1)(x + 10.0) / (x + 10.0)
    assert gate[0, 0, 2, 3] == gate.max()
    assert gate[0, 0, 2, 3] > gate[0, 0, 1, 1] > gate[0, 0, 0, 0]


def test_channels_and_images_are_independent() -> None:
    module = _simam(6)
    x = torch.randn(2, 6, 5, 4)
    changed = x.clone()
    changed[0, 2] = torch.randn(5, 4) * 10
    changed[1] = torch.randn(6, 5, 4)
    out, out_changed = module(x), module(changed)
    keep = [k for k in range(6) if k != 2]
    torch.testing.assert_close(out_changed[0, keep], out[0, keep], rtol=0, atol=0)


def test_half_input_at_large_magnitude_is_finite_and_follows_float32() -> None:
    # (x - mu)^2 passes float16's 65504 from |x - mu| = 256: the official forward gives inf / inf = NaN.
    x = torch.randn(2, 8, 9, 7) * 150
    out = _simam(8)(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), _simam(8)(x.half().float()), rtol=2e-3, atol=1e-2)


def test_gradcheck_float64() -> None:
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_simam(3, None, 0.05), (x,), eps=1e-6, atol=1e-6)
    single = torch.randn(1, 2, 1, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_simam(2), (single,), eps=1e-6, atol=1e-6)


def test_onnx_exported_at_batch_one_runs_at_single_row_column_and_position_maps() -> None:
    # test_properties runs both exporters at 16x16 and 12x20; these are the degenerate sizes
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    module = _simam(8).eval()
    buffer = io.BytesIO()
    axes = {0: "b", 2: "h", 3: "w"}
    torch.onnx.export(module, (torch.randn(1, 8, 16, 16),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": axes, "y": axes})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(3, 8, 13, 7), (2, 8, 1, 1), (1, 8, 1, 9), (2, 8, 9, 1)]:
        sample = torch.randn(shape)
        (got,) = session.run(None, {session.get_inputs()[0].name: sample.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), module(sample), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("e_lambda", [0, -1e-4, 0.0, "1e-4", True, None, float("nan")])
def test_bad_lambda_raises(e_lambda: object) -> None:
    with pytest.raises(ValueError, match="e_lambda"):
        _simam(16, None, e_lambda)


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _simam(64, 128)


def test_hyperparameter_in_c2_position_is_refused() -> None:
    # "no-width" registration passes [c1, c2, *args]; a lambda landing in c2 must not pass silently.
    with pytest.raises(ValueError, match="c2"):
        _simam(64, 1e-4)


@pytest.mark.parametrize("c1", [0, -16, 2.0])
def test_bad_c1_raises(c1: object) -> None:
    with pytest.raises(ValueError, match="c1"):
        _simam(c1)


@pytest.mark.parametrize("c", [1, 16, 1280])
def test_no_parameters_or_buffers(c: int) -> None:
    module = _simam(c)
    assert list(module.parameters()) == [] and list(module.buffers()) == []
    assert param_count(KEY, c) == 0


def test_catalogue_declares_no_width_registration() -> None:
    template = load_template(KEY).YOLOPATCH
    assert template["registration"] == "no-width" and template["kind"] == "parameter-free"
    assert template["hyperparameters"] == {"e_lambda": 1e-4}
