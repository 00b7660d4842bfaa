"""Properties every template module must have, whatever its math: the ways YOLOv5 uses a module.

dtypes (half, bfloat16, CPU bf16 autocast), memory formats, odd and degenerate sizes, train-mode
batch 1, constant input, in-place activations switched on after construction (initialize_weights),
torch.jit.trace, state_dict round trip, declared parameter count; and what each template's
``guarantees`` promise: ONNX export with a dynamic batch and size (both exporters, run in onnxruntime),
deterministic backward, float16 at YOLO feature-map magnitudes. Metadata: the registration, kind,
official code and guarantees keys, and the YAML arguments each registration implies.
"""

from __future__ import annotations

import copy
import inspect
import io
import math
import re
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import torch
import torch.nn as nn

from tests.templates.loader import load_template, main_class
from yolopatch import catalog
from yolopatch.transforms.yolo_py import ARGUMENT_LINES

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


# --- metadata ---------------------------------------------------------------------------------------

GUARANTEES = {"dynamic_onnx": bool, "deterministic_backward": bool, "amp_safe": bool, "onnx_opset": int}
OFFICIAL_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+")  # a GitHub owner/repo


def declared(key: str) -> Dict[str, Any]:
    """The template's own YOLOPATCH dict, as written (no catalogue defaults filled in)."""
    return load_template(key).YOLOPATCH


def guarantee(key: str, name: str) -> Any:
    return declared(key)["guarantees"][name]


@pytest.mark.parametrize("key", KEYS)
def test_metadata_declares_registration_kind_code_and_guarantees(key: str) -> None:
    meta = declared(key)
    spec = catalog.get(key)
    assert meta["registration"] in catalog.REGISTRATIONS and meta["registration"] == spec.registration
    assert meta["kind"] in catalog.KINDS and meta["kind"] == spec.kind
    assert meta["official_code"] == "" or OFFICIAL_CODE.fullmatch(meta["official_code"]), meta["official_code"]
    assert set(meta["guarantees"]) == set(GUARANTEES)
    for name, kind in GUARANTEES.items():
        value = meta["guarantees"][name]
        assert type(value) is kind, f"guarantees[{name!r}]={value!r} must be a {kind.__name__}"
    assert 9 <= meta["guarantees"]["onnx_opset"] <= 21


@pytest.mark.parametrize("key", KEYS)
def test_hyperparameters_are_the_constructor_arguments_after_c1_c2(key: str) -> None:
    # YOLOv5 passes YAML args positionally: their order is the constructor's order.
    parameters = list(inspect.signature(main_class(key).__init__).parameters.values())[1:]
    hyperparameters = declared(key)["hyperparameters"]
    assert [parameter.name for parameter in parameters] == ["c1", "c2", *hyperparameters]
    assert {parameter.name: parameter.default for parameter in parameters[2:]} == hyperparameters


def yaml_args(key: str, nominal_width: int) -> List[Any]:
    """The YAML args list a user writes: [width, hp...] or, for "no-width", [hp...]."""
    hyperparameters = list(declared(key)["hyperparameters"].values())
    return [nominal_width, *hyperparameters] if declared(key)["registration"] == "width" else hyperparameters


def registered_arguments(registration: str, c1: int, args: List[Any]) -> List[Any]:
    """What parse_model's yolopatch branch passes to the class: its argument line, run on these args."""
    scope: Dict[str, Any] = {"c1": c1, "c2": c1, "args": list(args)}
    exec(ARGUMENT_LINES[registration], {}, scope)  # the branch's own text, e.g. args = [c1, c2, *args[1:]]
    return scope["args"]


@pytest.mark.parametrize("key", KEYS)
def test_yaml_args_of_the_registration_build_the_default_module(key: str) -> None:
    # e.g. "no-width" SimAM: YAML [1e-4] must give SimAM(c1, c1, 1e-4), not treat 1e-4 as a width
    c1 = 48
    registration = declared(key)["registration"]
    arguments = registered_arguments(registration, c1, yaml_args(key, nominal_width=1024))
    assert arguments[:2] == [c1, c1]
    torch.manual_seed(0)
    from_yaml = main_class(key)(*arguments).eval()
    torch.manual_seed(0)
    default = main_class(key)(c1).eval()
    assert [(n, p.shape) for n, p in from_yaml.state_dict().items()] == \
           [(n, p.shape) for n, p in default.state_dict().items()]
    x = sample((1, c1, 6, 5))
    torch.testing.assert_close(from_yaml(x), default(x), rtol=0, atol=0)


# --- dynamic-batch ONNX -----------------------------------------------------------------------------

ONNX_AXES = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "height", 3: "width"}}


def export_like_yolov5(module: nn.Module, example: torch.Tensor, dynamo: bool, opset: int) -> bytes:
    """ONNX bytes from a batch-1 example with dynamic batch/height/width: YOLOv5's export.py --dynamic."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset, verbose=False,
                                        input_names=["images"], output_names=["output0"], dynamic_axes=ONNX_AXES)
            return program.model_proto.SerializeToString()
        buffer = io.BytesIO()
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["output0"], dynamic_axes=ONNX_AXES)
        return buffer.getvalue()


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_onnx_export_at_batch_one_runs_at_other_batches_and_sizes(key: str, dynamo: bool) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    module = build(key)
    opset = guarantee(key, "onnx_opset")
    data = export_like_yolov5(module, sample((1, WIDTH, 16, 16)), dynamo, opset)
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    if not dynamo:  # torch 2.15's dynamo exporter builds opset 18 and converts down when it can; often it can't
        assert [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")] == [opset]
    if not guarantee(key, "dynamic_onnx"):
        pytest.skip(f"{key}: guarantees say dynamic_onnx=False (exported and checked at batch 1 only)")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for shape in [(2, WIDTH, 16, 16), (2, WIDTH, 12, 20)]:
        x = sample(shape, seed=11)
        with torch.no_grad():
            expected = module(x).numpy()
        out = session.run(None, {name: x.numpy()})[0]
        assert out.shape == expected.shape, shape
        torch.testing.assert_close(torch.from_numpy(out), torch.from_numpy(expected), atol=1e-4, rtol=1e-4,
                                   msg=lambda text: f"{key} at {shape}: {text}")


# --- deterministic backward -------------------------------------------------------------------------

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture
def deterministic(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """torch.use_deterministic_algorithms(True) for one test, then the previous setting back; on CUDA with
    the cuBLAS workspace setting that YOLOv5's init_seeds(deterministic=True) exports alongside it."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def gradients(module: nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Input and parameter gradients of one train-mode forward+backward on a fresh copy of module."""
    model = copy.deepcopy(module).train()
    x = x.clone().requires_grad_()
    model(x).backward(upstream)
    grads = {"input": x.grad}
    grads.update({name: parameter.grad for name, parameter in model.named_parameters()})
    return grads


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_backward_gives_bit_identical_gradients(key: str, device: str, deterministic: None) -> None:
    if not guarantee(key, "deterministic_backward"):
        pytest.skip(f"{key}: guarantees say deterministic_backward=False")
    module = build(key).to(device)
    x = sample((2, WIDTH, 12, 10)).to(device)
    upstream = sample((2, WIDTH, 12, 10), seed=5).to(device)
    first = gradients(module, x, upstream)
    second = gradients(module, x, upstream)
    for name, grad in first.items():
        assert grad is not None and torch.isfinite(grad).all(), name
        assert torch.equal(grad, second[name]), f"{key}: gradient of {name} differs between two runs"


# --- float16 at YOLO magnitudes ---------------------------------------------------------------------

AMP_WIDTH = 512  # wide groups: SGE's 8 channels per group, P5 width of yolov5s


def fan_in_randomised(key: str, c: int, seed: int = 0) -> nn.Module:
    """Weights at a trained network's scale (normal / sqrt(fan-in)), vectors around 0.1: large inputs then
    give large intermediates without the 0.2-scale random weights' exaggerated logits."""
    torch.manual_seed(seed)
    module = main_class(key)(c)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.dim() > 1:
                parameter.copy_(noise / math.sqrt(parameter[0].numel()))
            else:
                parameter.copy_(noise * 0.2 + 0.1)
    return module.eval()


def yolo_feature_map(shape: Tuple[int, ...], peak: float = 300.0, seed: int = 1) -> torch.Tensor:
    """N(0, 1) plus a positive per-channel offset in [0, 2) (post-SiLU maps are mostly positive), scaled so
    that max |x| = peak: YOLO feature maps reach a few hundred."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator) + 2 * torch.rand(1, shape[1], 1, 1, generator=generator)
    return x * (peak / x.abs().max())


def assert_follows_float32(out: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    """Finite; mean error under 1% of the mean |output|; at most 0.1% of the outputs off by more than 5%
    of the peak |output| (float16's own rounding stays near 0.1%; a softmax saturated by large logits
    may flip at a few near-ties, not at many)."""
    assert torch.isfinite(out).all(), f"{what}: non-finite values"
    error = (out.float() - reference).abs()
    assert error.mean() <= 1e-2 * reference.abs().mean(), f"{what}: mean error {error.mean():.4g}"
    far = (error > 5e-2 * reference.abs().max()).float().mean().item()
    assert far <= 1e-3, f"{what}: {far:.3%} of the outputs are off by more than 5% of the peak"


@pytest.mark.parametrize("key", KEYS)
def test_float16_at_yolo_magnitudes_is_finite_and_follows_float32(key: str) -> None:
    if not guarantee(key, "amp_safe"):
        pytest.skip(f"{key}: guarantees say amp_safe=False")
    module = fan_in_randomised(key, AMP_WIDTH)
    x = yolo_feature_map((1, AMP_WIDTH, 8, 8))
    with torch.no_grad():
        reference = module(x)
        half = copy.deepcopy(module).half()(x.half())  # --half inference
        with torch.autocast("cpu", dtype=torch.float16):  # AMP: float32 weights, float16 kernels
            autocast = module(x)
    assert half.dtype == torch.float16
    assert_follows_float32(half, reference, f"{key} .half()")
    assert_follows_float32(autocast, reference, f"{key} autocast float16")
