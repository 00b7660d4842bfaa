"""NAM (templates/nam.py) against an oracle written from the NAM paper's channel attention equation."""

from __future__ import annotations

import io

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "nam"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _nam(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).NAM(*args, **kwargs)


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    return randomise(module, seed, 1.0, batchnorm_stats=True)


def oracle(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, mean: "torch.Tensor | None" = None,
           var: "torch.Tensor | None" = None, eps: float = 1e-5) -> torch.Tensor:
    """M_c = sigmoid(W_gamma (BN(x))), W_gamma,i = |gamma_i| / sum_j |gamma_j|; out = M_c * x, per channel.

    BN uses the given (running) mean and variance, or, when they are None, the batch statistics over
    (batch, H, W) with the population variance. float64; gamma's share is a constant (no autograd).
    """
    x = x.double()
    gamma, beta = gamma.double(), beta.double()
    share = gamma.detach().abs() / gamma.detach().abs().sum()
    out = torch.empty_like(x)
    for c in range(x.shape[1]):
        values = x[:, c]
        mu = values.sum() / values.numel() if mean is None else mean[c].double()
        sigma2 = ((values - mu) ** 2).sum() / values.numel() if var is None else var[c].double()
        normed = gamma[c] * (values - mu) / torch.sqrt(sigma2 + eps) + beta[c]
        out[:, c] = values / (1.0 + torch.exp(-share[c] * normed))
    return out


@pytest.mark.parametrize(("c", "h", "w"), [(16, 6, 5), (8, 1, 1), (4, 1, 9), (12, 9, 1), (3, 13, 7), (1, 4, 4)])
def test_matches_oracle_eval(c: int, h: int, w: int) -> None:
    module = _randomise(_nam(c, c)).double().eval()
    x = torch.randn(2, c, h, w, dtype=torch.float64) * 2
    bn = module.bn
    expected = oracle(x, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    torch.testing.assert_close(module(x), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("c", "h", "w"), [(16, 6, 5), (8, 1, 1), (3, 13, 7)])
def test_matches_oracle_train_mode(c: int, h: int, w: int) -> None:
    module = _randomise(_nam(c), seed=1).double().train()
    x = torch.randn(2, c, h, w, dtype=torch.float64) * 2 + 1
    torch.testing.assert_close(module(x), oracle(x, module.bn.weight, module.bn.bias), rtol=1e-9, atol=1e-12)


def test_float32_matches_oracle() -> None:
    module = _randomise(_nam(64), seed=2).eval()
    x = torch.randn(2, 64, 10, 9) * 3
    bn = module.bn
    expected = oracle(x, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    torch.testing.assert_close(module(x).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("momentum", [0.1, 0.03, None])
def test_running_statistics_follow_batchnorm2d(momentum: "float | None") -> None:
    module = _nam(8).train()
    reference = torch.nn.BatchNorm2d(8, momentum=momentum).train()
    module.bn.momentum = momentum
    for step in range(3):
        x = torch.randn(4, 8, 5, 3) * (step + 1) + step
        module(x)
        reference(x)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(module.bn, name), getattr(reference, name), rtol=1e-6, atol=1e-7)


def test_yolov5_initialize_weights_settings_are_used() -> None:
    # YOLOv5's initialize_weights sets every BatchNorm2d to eps 1e-3 and momentum 0.03.
    module = _randomise(_nam(6), seed=3).double().eval()
    module.bn.eps = 1e-3
    x = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    bn = module.bn
    expected = oracle(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, eps=1e-3)
    torch.testing.assert_close(module(x), expected, rtol=1e-9, atol=1e-12)


def test_gamma_share_is_a_constant_for_autograd_as_in_the_official_code() -> None:
    module = _randomise(_nam(6), seed=4).double().train()
    x = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    (grad,) = torch.autograd.grad(module(x).sum(), module.bn.weight)
    gamma = module.bn.weight.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(oracle(x, gamma, module.bn.bias.detach()).sum(), gamma)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)
    # differentiating through the share as well gives another gradient: the test tells them apart
    share_through = gamma.abs() / gamma.abs().sum()
    normed = torch.nn.functional.batch_norm(x, None, None, gamma * share_through,
                                            module.bn.bias.detach() * share_through, True)
    (through,) = torch.autograd.grad((x * torch.sigmoid(normed)).sum(), gamma)
    assert not torch.allclose(through, expected, rtol=1e-3, atol=1e-6)


def test_sync_batchnorm_conversion_is_honoured() -> None:
    # YOLOv5's --sync-bn runs convert_sync_batchnorm on the whole model: the converted layer must be used.
    module = _randomise(_nam(8), seed=6).eval()
    x = torch.randn(2, 8, 5, 4)
    expected = module(x)
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    assert type(converted.bn) is torch.nn.SyncBatchNorm
    calls = []
    converted.bn.register_forward_hook(lambda *_: calls.append(1))
    torch.testing.assert_close(converted(x), expected)
    assert calls == [1]


def test_official_init_gate_is_sigmoid_of_bn_over_c() -> None:
    module = _nam(32).eval()
    assert torch.equal(module.bn.weight, torch.ones(32)) and torch.equal(module.bn.bias, torch.zeros(32))
    x = torch.randn(2, 32, 5, 6)
    expected = x * torch.sigmoid(x / torch.sqrt(torch.tensor(1.0 + 1e-5)) / 32)
    torch.testing.assert_close(module(x), expected)


def test_all_zero_gamma_gives_the_gate_one_half() -> None:
    # The official share divides 0 by 0 here.
    module = _nam(8).train()
    with torch.no_grad():
        module.bn.weight.zero_()
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    out = module(x)
    torch.testing.assert_close(out, x.detach() * 0.5)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(module.bn.weight.grad).all()


def test_half_input_at_large_magnitude_is_finite_and_follows_float32() -> None:
    module = _randomise(_nam(32), seed=7).train()
    x = (torch.randn(2, 32, 9, 7) * 150 + 100).half()
    out = module.half()(x)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), module.float()(x.float()), rtol=5e-3, atol=5e-2)


@pytest.mark.parametrize("training", [False, True])
def test_gradcheck_float64(training: bool) -> None:
    module = _randomise(_nam(4), seed=5).double().train(training)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


def test_onnx_exported_at_batch_one_runs_at_single_row_column_and_position_maps() -> None:
    # test_properties runs both exporters at 16x16 and 12x20; these are the degenerate sizes
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    module = _randomise(_nam(32), seed=5).eval()
    buffer = io.BytesIO()
    axes = {0: "b", 2: "h", 3: "w"}
    torch.onnx.export(module, (torch.randn(1, 32, 16, 16),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": axes, "y": axes})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(3, 32, 13, 7), (2, 32, 1, 1), (1, 32, 1, 9), (2, 32, 9, 1)]:
        sample = torch.randn(shape)
        (got,) = session.run(None, {session.get_inputs()[0].name: sample.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), module(sample), rtol=1e-5, atol=1e-5)


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _nam(64, 128)


@pytest.mark.parametrize("c1", [0, -16, 16.0, True])
def test_bad_c1_raises(c1: object) -> None:
    with pytest.raises(ValueError, match="c1"):
        _nam(c1)


@pytest.mark.parametrize("c", [1, 16, 24, 256, 1280])
def test_param_count_matches_formula(c: int) -> None:
    assert sum(p.numel() for p in _nam(c).parameters()) == param_count(KEY, c) == 2 * c
