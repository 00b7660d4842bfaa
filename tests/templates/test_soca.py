"""SOCA (templates/soca.py) against an oracle written literally from the SAN paper's equations.

The oracle builds the M x M centring matrix I_hat, runs the five matrix Newton-Schulz iterations and
takes the mean over the rows, all in float64; it shares no code with the template.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import List

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "soca"


def _module():
    return load_template(KEY)


def _soca(*args: object, **kwargs: object) -> torch.nn.Module:
    return _module().SOCA(*args, **kwargs)


def _randomise(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    return randomise(module, seed, scale)


def _matrix_newton_schulz(a: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """Y0 = A, Z0 = I, T = (3I - Z Y)/2, Y <- Y T, Z <- T Z; returns Y after `iterations` steps."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype).expand_as(a)
    y, z = a, eye
    for _ in range(iterations):
        t = 0.5 * (3.0 * eye - z @ y)
        y, z = y @ t, t @ z
    return y


def _oracle_pool(x: torch.Tensor) -> torch.Tensor:
    """z = mean over rows of sqrt(tr Sigma) NS5(Sigma / tr Sigma), Sigma = X I_hat X^T (float64)."""
    x = x.double()
    b, c, h, w = x.shape
    m = h * w
    features = x.reshape(b, c, m)
    i_hat = (torch.eye(m, dtype=torch.float64) - torch.ones(m, m, dtype=torch.float64) / m) / m
    sigma = features @ i_hat @ features.transpose(1, 2)
    trace = sigma.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None]
    y_hat = trace.sqrt() * _matrix_newton_schulz(sigma / trace)
    return y_hat.mean(dim=1)


def _oracle(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """gate = sigmoid(W_up ReLU(W_down z + b_down) + b_up), out = gate * x, with the module's weights."""
    down, up = module.conv_du[0], module.conv_du[2]
    w_down = down.weight.detach().double()[:, :, 0, 0]
    w_up = up.weight.detach().double()[:, :, 0, 0]
    z = _oracle_pool(x)
    hidden = torch.clamp(z @ w_down.T + down.bias.detach().double(), min=0.0)
    gate = 1.0 / (1.0 + torch.exp(-(hidden @ w_up.T + up.bias.detach().double())))
    return gate[:, :, None, None] * x.double()


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.detach().double() - expected.detach()).abs().max() / expected.detach().abs().max())


@pytest.mark.parametrize("shape", [(2, 32, 7, 9), (3, 16, 5, 5), (1, 40, 3, 4), (2, 8, 1, 11), (2, 64, 6, 2)])
def test_float32_output_matches_oracle(shape):
    torch.manual_seed(1)
    module = _randomise(_soca(shape[1]))
    x = torch.randn(*shape) * 2.0 + 0.5
    assert _relative_error(module(x), _oracle(module, x)) < 1e-5


def test_float64_output_matches_oracle_to_float64_precision():
    torch.manual_seed(2)
    module = _randomise(_soca(24, reduction=4)).double()
    x = torch.randn(2, 24, 6, 5, dtype=torch.float64)
    out = module(x)
    assert out.dtype == torch.float64
    assert _relative_error(out, _oracle(module, x)) < 1e-12


def test_row_mean_is_taken_over_rows_like_san():
    """The pooled vector is mean over dim 1 of Y_hat; compared directly, before the gate MLP."""
    torch.manual_seed(3)
    x = torch.randn(2, 12, 4, 5, dtype=torch.float64)
    coefficients = torch.tensor(_soca(12).ns_coefficients, dtype=torch.float64)
    z = _module()._SOCASecondOrderPool.apply(x, coefficients, 1e-12, 1)
    assert _relative_error(z, _oracle_pool(x)) < 1e-12


def test_large_offset_small_spread_keeps_float32_accuracy():
    """Features 1000 +- 0.01: X X^T / M - mu mu^T would cancel to noise (and the degree-122 polynomial of
    an indefinite A overflows); the template centres first, so float32 stays close to the oracle."""
    torch.manual_seed(12)
    x = 1000.0 + 0.01 * torch.randn(2, 16, 12, 12)
    coefficients = torch.tensor(_soca(16).ns_coefficients, dtype=torch.float32)
    z = _module()._SOCASecondOrderPool.apply(x, coefficients, 1e-12, 1)
    assert torch.isfinite(z).all()
    assert _relative_error(z, _oracle_pool(x)) < 1e-3


def _spd(c: int, condition: float, rank: int, seed: int) -> torch.Tensor:
    """Random trace-one PSD matrix with log-spaced eigenvalues 1 .. 1/condition, zero beyond rank."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(c, c, generator=generator, dtype=torch.float64))
    eigenvalues = torch.logspace(0.0, -math.log10(condition), c, dtype=torch.float64)
    eigenvalues[rank:] = 0.0
    a = (q * eigenvalues) @ q.T
    a = 0.5 * (a + a.T)
    return a / a.trace()


@pytest.mark.parametrize("c, condition, rank", [(16, 1e2, 16), (64, 1e8, 64), (96, 1e16, 96),
                                                (128, 1e12, 70), (200, 1e6, 200)])
def test_chebyshev_recurrence_equals_five_matrix_iterations(c, condition, rank):
    """p(A) 1 by the template's matrix-vector recurrence == NS5(A) 1 by matrix products, in float64."""
    a = _spd(c, condition, rank, seed=c)
    coefficients = torch.tensor(_soca(8).ns_coefficients, dtype=torch.float64)
    kmat = 4.0 * a - 2.0 * torch.eye(c, dtype=torch.float64)
    vectors = _module()._SOCASecondOrderPool.chebyshev_vectors(kmat[None], coefficients.numel(), 1)
    fast = coefficients @ vectors[:, 0, :, 0]
    reference = _matrix_newton_schulz(a) @ torch.ones(c, dtype=torch.float64)
    assert _relative_error(fast, reference) < 1e-13


def _input_with_covariance(sigma: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    """A (1, C, m, 1) map whose covariance X I_hat X^T is sigma (up to rounding), mean not zero."""
    c = sigma.shape[0]
    generator = torch.Generator().manual_seed(seed)
    columns = torch.randn(m, c, generator=generator, dtype=torch.float64)
    columns = columns - columns.mean(0)
    basis, _ = torch.linalg.qr(columns)  # orthonormal columns, each orthogonal to the ones vector
    eigenvalues, vectors = torch.linalg.eigh(sigma)
    root = (vectors * eigenvalues.clamp_min(0.0).sqrt()) @ vectors.T
    x = root @ basis.T * math.sqrt(m) + torch.linspace(-3.0, 3.0, c, dtype=torch.float64)[:, None]
    return x.reshape(1, c, m, 1)


@pytest.mark.parametrize("c, condition, rank", [(32, 1e10, 32), (48, 1e14, 20)])
def test_ill_conditioned_covariance_value_and_gradient_match_matrix_iterations(c, condition, rank):
    """End to end from x: the fast Function against autograd through I_hat and the matrix loop."""
    x = _input_with_covariance(_spd(c, condition, rank, seed=7) * 3.0, m=60, seed=8).requires_grad_(True)
    coefficients = torch.tensor(_soca(c).ns_coefficients, dtype=torch.float64)
    weights = torch.randn(1, c, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    fast = _module()._SOCASecondOrderPool.apply(x, coefficients, 1e-12, 1)
    (fast_grad,) = torch.autograd.grad((fast * weights).sum(), x)
    reference = _oracle_pool(x)
    (reference_grad,) = torch.autograd.grad((reference * weights).sum(), x)
    assert _relative_error(fast.detach(), reference.detach()) < 1e-12
    assert _relative_error(fast_grad, reference_grad) < 1e-12


@pytest.fixture
def one_thread():
    """gradcheck makes hundreds of calls on tiny tensors: threads only add OpenMP barrier waits, which on a
    busy 2-core machine cost milliseconds per small matmul. Values are unaffected."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("shape, c, reduction", [((2, 6, 3, 4), 6, 2), ((1, 9, 2, 2), 9, 8), ((2, 4, 1, 1), 4, 1),
                                                 ((1, 5, 1, 3), 5, 2)])
def test_gradcheck_float64(shape, c, reduction, one_thread):
    torch.manual_seed(4)
    module = _randomise(_soca(c, reduction=reduction)).double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_function_gradcheck_with_image_chunks(one_thread):
    """The accelerator setting (several images per step, here 2 + 1 of 3) against finite differences."""
    torch.manual_seed(11)
    x = torch.randn(3, 5, 2, 3, dtype=torch.float64, requires_grad=True)
    coefficients = torch.tensor(_soca(5).ns_coefficients, dtype=torch.float64)
    pool = _module()._SOCASecondOrderPool
    assert torch.autograd.gradcheck(lambda t: pool.apply(t, coefficients, 1e-12, 2), (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_fast_path_and_graph_capture_path_agree(chunk):
    """The batched plain-autograd evaluation (used under jit.trace/ONNX/compile) equals the Function,
    whether the Function takes one image at a time (CPU), ragged chunks, or the whole batch."""
    torch.manual_seed(5)
    pool = _module()._SOCASecondOrderPool
    x = torch.randn(3, 20, 5, 7, dtype=torch.float64, requires_grad=True)
    coefficients = torch.tensor(_soca(20).ns_coefficients, dtype=torch.float64)
    upstream = torch.randn(3, 20, dtype=torch.float64)
    fast = pool.apply(x, coefficients, 1e-12, chunk)
    (fast_grad,) = torch.autograd.grad(fast, x, upstream)
    plain = pool.plain(x, _soca(20).ns_coefficients, 1e-12)
    (plain_grad,) = torch.autograd.grad(plain, x, upstream)
    assert _relative_error(fast.detach(), plain.detach()) < 1e-13
    assert _relative_error(fast_grad, plain_grad) < 1e-12


def test_jit_trace_follows_new_inputs():
    torch.manual_seed(6)
    module = _randomise(_soca(16)).eval()
    traced = torch.jit.trace(module, torch.randn(2, 16, 6, 6), check_trace=False)
    other = torch.randn(2, 16, 6, 6)
    assert _relative_error(traced(other), _oracle(module, other)) < 1e-5


def _exact_newton_schulz_chebyshev(iterations: int) -> List[Fraction]:
    """The Newton-Schulz polynomial's Chebyshev coefficients on [0, 1] in exact rational arithmetic."""
    def product(a: List[Fraction], b: List[Fraction]) -> List[Fraction]:
        out = [Fraction(0)] * (len(a) + len(b) - 1)
        for i, ai in enumerate(a):
            for j, bj in enumerate(b):
                out[i + j] += ai * bj / 2
                out[abs(i - j)] += ai * bj / 2
        return out

    y, z = [Fraction(1, 2), Fraction(1, 2)], [Fraction(1)]
    for _ in range(iterations):
        t = [-value / 2 for value in product(z, y)]
        t[0] += Fraction(3, 2)
        y, z = product(y, t), product(t, z)
    return y


def test_truncated_chebyshev_series_is_exact_in_float64():
    exact = _exact_newton_schulz_chebyshev(5)
    assert len(exact) == 123  # degree 122
    used = _soca(8).ns_coefficients
    assert max(abs(float(Fraction(value) - exact[k])) for k, value in enumerate(used)) < 2.0 ** -52
    dropped = sum(abs(value) for value in exact[len(used):])
    assert float(dropped) < 2.0 ** -56
    # p(1) = 1: five iterations keep the fixed point of the square root
    assert abs(sum(used) - 1.0) < 1e-15


@pytest.mark.parametrize("c", [1, 3, 8, 16, 32, 64, 80, 100, 256, 1280])
@pytest.mark.parametrize("reduction", [1, 4, 8, 16, 32])
def test_param_count_formula(c, reduction):
    module = _soca(c, reduction=reduction)
    assert sum(p.numel() for p in module.parameters()) == param_count(KEY, c, reduction=reduction)


def test_param_count_default_reduction():
    assert sum(p.numel() for p in _soca(512).parameters()) == param_count(KEY, 512)


def test_metadata_matches_constructor():
    import inspect

    meta = _module().YOLOPATCH
    parameters = list(inspect.signature(_module().SOCA).parameters.values())
    assert [p.name for p in parameters[:2]] == ["c1", "c2"]
    assert {p.name: p.default for p in parameters[2:]} == meta["hyperparameters"]


def test_c2_equal_or_none_accepted_and_other_c2_rejected():
    assert _soca(64, 64)(torch.randn(1, 64, 4, 4)).shape == (1, 64, 4, 4)
    assert _soca(64, None)(torch.randn(1, 64, 4, 4)).shape == (1, 64, 4, 4)
    with pytest.raises(ValueError, match=r"c2=32 must be None or equal to c1=64"):
        _soca(64, 32)


@pytest.mark.parametrize("kwargs, message", [
    ({"c1": 0}, r"c1=0 must be an integer >= 1"),
    ({"c1": 16.0}, r"c1=16.0 must be an integer >= 1"),
    ({"c1": 16, "reduction": 0}, r"reduction=0 must be an integer >= 1"),
    ({"c1": 16, "reduction": 2.5}, r"reduction=2.5 must be an integer >= 1"),
    ({"c1": 16, "reduction": True}, r"reduction=True must be an integer >= 1"),
])
def test_invalid_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _soca(**kwargs)


def test_small_widths_keep_one_hidden_channel():
    module = _soca(16, 16, 32)
    assert module.conv_du[0].out_channels == 1
    assert module(torch.randn(2, 16, 5, 5)).shape == (2, 16, 5, 5)


@pytest.mark.parametrize("fill", [0.0, 1.0, 1000.0, -7.25])
@pytest.mark.parametrize("size", [(1, 1), (6, 6), (1, 9), (5, 1)])
def test_constant_and_degenerate_maps_are_finite_with_finite_gradients(fill, size):
    module = _randomise(_soca(16)).train()
    x = torch.full((2, 16, *size), fill, requires_grad=True)
    out = module(x)
    out.square().sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_zero_trace_gives_the_bias_only_gate():
    """Sigma = 0 (1x1 map): the clamped trace makes z = 0, so gate = sigmoid(W_up ReLU(b_down) + b_up)."""
    module = _randomise(_soca(8, reduction=2))
    x = torch.randn(3, 8, 1, 1)
    down, up = module.conv_du[0], module.conv_du[2]
    gate = torch.sigmoid(up.weight[:, :, 0, 0] @ torch.relu(down.bias) + up.bias)
    torch.testing.assert_close(module(x), gate[None, :, None, None] * x)


def test_half_input_statistics_do_not_overflow():
    """x^2 of these values overflows float16 (max 65504); the statistics are taken in float32."""
    torch.manual_seed(7)
    module = _randomise(_soca(32))
    x = torch.randn(2, 32, 8, 8) * 400.0
    out_half = module.half()(x.half())
    assert out_half.dtype == torch.float16
    assert torch.isfinite(out_half).all()
    reference = _oracle(module.float(), x.half().float())
    assert _relative_error(out_half, reference) < 2e-3


def test_bfloat16_autocast_keeps_float32_statistics():
    torch.manual_seed(8)
    module = _randomise(_soca(32))
    x = torch.randn(2, 32, 8, 8)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = module(x)
    assert out.dtype == torch.float32
    assert _relative_error(out, _oracle(module, x)) < 2e-2


def test_channels_last_input_gives_same_values_and_gradients():
    torch.manual_seed(9)
    module = _randomise(_soca(24))
    x = torch.randn(2, 24, 5, 7)
    upstream = torch.randn(2, 24, 5, 7)
    a = x.clone().requires_grad_(True)
    b = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out_a, out_b = module(a), module(b)
    out_a.backward(upstream)
    out_b.backward(upstream)
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(a.grad, b.grad)


def test_inplace_activation_after_construction_changes_nothing():
    torch.manual_seed(10)
    module = _randomise(_soca(16))
    x = torch.randn(2, 16, 6, 6)
    before = module(x)
    for layer in module.modules():
        if isinstance(layer, torch.nn.ReLU):
            layer.inplace = True
    torch.testing.assert_close(module(x), before)


def test_state_dict_keys_follow_san():
    assert set(_soca(16).state_dict()) == {"conv_du.0.weight", "conv_du.0.bias", "conv_du.2.weight",
                                           "conv_du.2.bias"}


def _gated_inputs(c: int = 6, hidden: int = 3, dtype: torch.dtype = torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype).requires_grad_()
    return (draw(3, c, 4, 5), draw(hidden, c, 1, 1), draw(hidden), draw(c, hidden, 1, 1), draw(c))


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_fused_gate_function_gradcheck_for_input_and_weights(chunk, one_thread):
    module = _module()
    coefficients = torch.tensor(module.SOCA.newton_schulz_chebyshev(5), dtype=torch.float64)
    fused = module._SOCAGatedPool
    inputs = _gated_inputs()
    assert torch.autograd.gradcheck(lambda *t: fused.apply(*t, coefficients, 1e-12, chunk), inputs,
                                    eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_gate_matches_autograd_composition(channels_last):
    soca = _module().SOCA(16, None, 4)
    with torch.no_grad():
        for parameter in soca.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.5)
    x = torch.randn(3, 16, 7, 6) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(3, 16, 7, 6)
    x_fused = x.clone().requires_grad_()
    soca(x_fused).backward(upstream)
    fused_grads = [x_fused.grad] + [p.grad.clone() for p in soca.parameters()]
    soca.zero_grad()
    # the same function through the pool Function and autograd's own linear, ReLU, sigmoid and multiply
    pool = _module()._SOCASecondOrderPool
    coefficients = torch.tensor(soca.newton_schulz_chebyshev(5))
    x_plain = x.clone().requires_grad_()
    z = pool.apply(x_plain, coefficients, 1e-12, 1)
    down, _, up, _ = soca.conv_du
    hidden = torch.relu(torch.nn.functional.linear(z, down.weight.flatten(1), down.bias))
    gate = torch.sigmoid(torch.nn.functional.linear(hidden, up.weight.flatten(1), up.bias))
    out = x_plain * gate[:, :, None, None]
    out.backward(upstream)
    torch.testing.assert_close(soca(x), out.detach())
    plain_grads = [x_plain.grad] + [p.grad for p in soca.parameters()]
    for fused_grad, plain_grad in zip(fused_grads, plain_grads):
        torch.testing.assert_close(fused_grad, plain_grad, rtol=1e-4, atol=1e-5)


def test_frozen_weights_and_input_without_grad():
    soca = _module().SOCA(8, None, 2)
    soca.conv_du.requires_grad_(False)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    soca(x).sum().backward()
    assert torch.isfinite(x.grad).all() and soca.conv_du[0].weight.grad is None
    soca.conv_du.requires_grad_(True)
    soca(torch.randn(2, 8, 5, 5)).sum().backward()  # x needs no gradient: only the weights get one
    assert all(torch.isfinite(p.grad).all() for p in soca.parameters())
