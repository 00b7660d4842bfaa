"""Properties every template module must have, whatever its math: the ways YOLOv5 uses a module.

dtypes (half, bfloat16, CPU bf16 autocast), memory formats, odd and degenerate sizes, train-mode
batch 1, constant input, in-place activations switched on after construction (initialize_weights),
torch.jit.trace, ONNX export (both exporters), state_dict round trip, declared parameter count.
"""

from __future__ import annotations

import copy
import io
from typing import Tuple

import pytest
import torch
import torch.nn as nn

from tests.templates.loader import load_template, main_class
from yolopatch import catalog

KEYS = [spec.key for spec in catalog.all_modules()]
WIDTH = 32


def build(key: str, c: int = WIDTH, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    module = main_class(key)(c)
    _randomise(module)
    return module.eval()


def _randomise(module: nn.Module) -> None:
    """Non-trivial weights everywhere (zero-initialised gates would hide bugs)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.2 + (1.0 if parameter.dim() == 1 else 0.0) * 0.1)
        for child in module.modules():
            if isinstance(child, nn.BatchNorm2d):
                child.running_mean.uniform_(-0.1, 0.1)
                child.running_var.uniform_(0.5, 1.5)


def sample(shape: Tuple[int, ...], seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).to(dtype)


@pytest.mark.parametrize("key", KEYS)
def test_template_contract(key: str) -> None:
    module = load_template(key)
    spec = catalog.get(key)
    assert module.YOLOPATCH["class_name"] == spec.class_name
    cls = main_class(key)
    out = cls(16)(sample((1, 16, 8, 8)))
    assert out.shape == (1, 16, 8, 8)
    with pytest.raises(ValueError, match="c2"):
        cls(16, 32)
    assert cls(16, 16) is not None


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("c", [16, 24, 48, 64, 256])
def test_parameter_count_matches_formula(key: str, c: int) -> None:
    module = main_class(key)(c)
    assert sum(p.numel() for p in module.parameters()) == catalog.param_count(key, c)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_models(key: str, dtype: torch.dtype) -> None:
    module = build(key).to(dtype)
    out = module(sample((2, WIDTH, 12, 10), dtype=dtype))
    assert out.dtype == dtype
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("key", KEYS)
def test_half_matches_float(key: str) -> None:
    module = build(key)
    x = sample((2, WIDTH, 12, 10))
    reference = module(x)
    half = copy.deepcopy(module).half()(x.half()).float()
    torch.testing.assert_close(half, reference, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("key", KEYS)
def test_cpu_bf16_autocast(key: str) -> None:
    module = build(key).train()
    x = sample((2, WIDTH, 12, 10)).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    assert torch.isfinite(out.float()).all()
    out.float().mean().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("key", KEYS)
def test_channels_last_input(key: str) -> None:
    module = build(key)
    x = sample((2, WIDTH, 12, 10))
    expected = module(x)
    out = module(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    module_cl = copy.deepcopy(module).to(memory_format=torch.channels_last)
    torch.testing.assert_close(module_cl(x.contiguous(memory_format=torch.channels_last)), expected,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("size", [(13, 7), (1, 1), (1, 9), (9, 1), (80, 80)])
def test_odd_and_degenerate_sizes(key: str, size: Tuple[int, int]) -> None:
    module = build(key)
    out = module(sample((2, WIDTH, *size)))
    assert out.shape == (2, WIDTH, *size)
    assert torch.isfinite(out).all()
    x = sample((2, WIDTH, *size)).requires_grad_()
    trained = module.train()(x)
    trained.square().mean().backward()
    assert torch.isfinite(trained).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("size", [(1, 9), (8, 8)])  # 1x1 at batch 1 leaves BatchNorm one value: torch refuses
def test_batch_one_train_mode_backward(key: str, size: Tuple[int, int]) -> None:
    module = build(key).train()
    x = sample((1, WIDTH, *size)).requires_grad_()
    out = module(x)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("value", [0.0, 3.0])
def test_constant_input_is_finite(key: str, value: float) -> None:
    # YOLOv5 computes strides with a forward of torch.zeros(1, ch, 256, 256).
    module = build(key).train()
    x = torch.full((2, WIDTH, 16, 16), value, requires_grad=True)
    out = module(x)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    half = build(key).half()
    assert torch.isfinite(half(torch.full((1, WIDTH, 16, 16), value).half()).float()).all()


@pytest.mark.parametrize("key", KEYS)
def test_inplace_activations_after_construction_change_nothing(key: str) -> None:
    module = build(key).train()
    x = sample((2, WIDTH, 12, 10))
    expected = module(x.clone())
    for child in module.modules():  # what YOLOv5's initialize_weights does
        if type(child) in (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU):
            child.inplace = True
    x_grad = x.clone().requires_grad_()
    out = module(x_grad)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert torch.isfinite(x_grad.grad).all()


@pytest.mark.parametrize("key", KEYS)
def test_jit_trace(key: str) -> None:
    module = build(key)
    x = sample((1, WIDTH, 12, 10))
    traced = torch.jit.trace(module, x, check_trace=False)
    torch.testing.assert_close(traced(x), module(x))
    other = sample((2, WIDTH, 12, 10), seed=7)
    torch.testing.assert_close(traced(other), module(other), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_export(key: str, dynamo: bool) -> None:
    onnx = pytest.importorskip("onnx")
    module = build(key)
    buffer = io.BytesIO()
    x = sample((1, WIDTH, 16, 16))
    if dynamo:
        program = torch.onnx.export(module, (x,), dynamo=True, opset_version=18)
        model = program.model_proto
    else:
        torch.onnx.export(module, (x,), buffer, dynamo=False, opset_version=17)
        model = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(model)


@pytest.mark.parametrize("key", KEYS)
def test_state_dict_round_trip(key: str) -> None:
    source = build(key, seed=3)
    target = main_class(key)(WIDTH).eval()
    target.load_state_dict(source.state_dict())
    x = sample((2, WIDTH, 9, 11))
    torch.testing.assert_close(target(x), source(x))
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    again = main_class(key)(WIDTH).eval()
    again.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(again(x), source(x))
