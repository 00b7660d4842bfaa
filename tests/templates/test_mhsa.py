"""MHSA (templates/mhsa.py) against an oracle written from the BoTNet paper's equations."""

from __future__ import annotations

import math

import pytest
import torch

from tests.templates.loader import load_template, randomise
from yolopatch.catalog import param_count

KEY = "mhsa"


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws its inputs from a fixed seed: failures reproduce."""
    torch.manual_seed(0)


def _mhsa(*args: object, **kwargs: object) -> torch.nn.Module:
    return load_template(KEY).MHSA(*args, **kwargs)


def oracle(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per image, head and query (x, y), over every key (p, q), in float64:
    l = (Q/sqrt(d)) . K + (Q/sqrt(d)) . r^H[clip(p - x)] + (Q/sqrt(d)) . r^W[clip(q - y)]; out = softmax(l) V."""
    x = x.double()
    b, c, h, w = x.shape
    heads, rel = module.heads, module.rel_size
    d = c // heads
    proj = [conv.weight.detach().double()[:, :, 0, 0] for conv in (module.query, module.key, module.value)]
    rel_h, rel_w = module.rel_h.detach().double(), module.rel_w.detach().double()
    out = torch.empty_like(x)
    for n in range(b):
        pixels = x[n].reshape(c, h * w)
        q, k, v = (weight @ pixels for weight in proj)  # (c, HW), position index = row * w + col
        for head in range(heads):
            rows = slice(head * d, (head + 1) * d)
            for i in range(h * w):
                xi, yi = divmod(i, w)
                qi = q[rows, i] / math.sqrt(d)
                logits = torch.empty(h * w, dtype=torch.float64)
                for j in range(h * w):
                    pj, qj = divmod(j, w)
                    dh = min(max(pj - xi, -(rel - 1)), rel - 1) + rel - 1
                    dw = min(max(qj - yi, -(rel - 1)), rel - 1) + rel - 1
                    logits[j] = qi @ k[rows, j] + qi @ rel_h[dh] + qi @ rel_w[dw]
                weights = torch.exp(logits - logits.max())
                weights = weights / weights.sum()
                out[n, rows].reshape(d, h * w)[:, i] = v[rows] @ weights
    return out


def _random(c: int, heads: int = 4, rel_size: int = 32, seed: int = 0) -> torch.nn.Module:
    return randomise(_mhsa(c, c, heads, rel_size), seed=seed, scale=0.5).double()


@pytest.mark.parametrize(
    ("c", "heads", "rel_size", "h", "w"),
    [(8, 2, 32, 4, 5), (12, 4, 8, 3, 7), (8, 4, 32, 1, 1), (6, 2, 4, 1, 6), (4, 1, 4, 5, 1),
     (8, 2, 3, 5, 6), (8, 8, 2, 4, 4)],  # rel_size < H or W: offsets clipped
)
def test_matches_oracle(c: int, heads: int, rel_size: int, h: int, w: int) -> None:
    module = _random(c, heads, rel_size, seed=c + h + w)
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x), rtol=1e-9, atol=1e-10)


def test_float32_matches_oracle() -> None:
    module = randomise(_mhsa(16, None, 4, 6), seed=2, scale=0.3)
    x = torch.randn(2, 16, 7, 9)
    torch.testing.assert_close(module(x).double(), oracle(module, x), rtol=1e-4, atol=1e-4)


def _rel_to_abs(rel: torch.Tensor) -> torch.Tensor:
    """BoTNet's rel_to_abs (pad, flatten, reshape): [.., L, 2L-1] relative -> [.., L, L] absolute."""
    *batch, length, _ = rel.shape
    rel = torch.cat([rel, torch.zeros(*batch, length, 1, dtype=rel.dtype)], -1).reshape(*batch, length * 2 * length)
    rel = torch.cat([rel, torch.zeros(*batch, length - 1, dtype=rel.dtype)], -1)
    return rel.reshape(*batch, length + 1, 2 * length - 1)[..., :length, length - 1:]


def test_relative_logits_follow_botnets_rel_to_abs() -> None:
    # At H = W = rel_size the tables are BoTNet's own: the relative logits equal the paper code's
    # relative_logits_1d (einsum with the table, then rel_to_abs) for rows and columns.
    size, d = 5, 3
    module = randomise(_mhsa(d, None, 1, size), seed=3, scale=0.5).double()
    with torch.no_grad():
        for conv in (module.key, module.value):
            conv.weight.zero_()
        module.value.weight[:, :, 0, 0] = torch.eye(d)
    x = torch.randn(1, d, size, size, dtype=torch.float64)
    q = torch.einsum("oc,chw->hwo", module.query.weight.detach().double()[:, :, 0, 0], x[0]) / math.sqrt(d)
    logits_w = _rel_to_abs(torch.einsum("hwd,md->hwm", q, module.rel_w.detach().double()))  # [x, y, q]
    logits_h = _rel_to_abs(torch.einsum("hwd,md->whm", q, module.rel_h.detach().double()))  # [y, x, p]
    logits = logits_h.permute(1, 0, 2)[:, :, :, None] + logits_w[:, :, None, :]  # [x, y, p, q]; K = 0
    weights = torch.softmax(logits.reshape(size * size, size * size), -1)
    expected = (weights @ x[0].reshape(d, -1).T).T.reshape(1, d, size, size)
    torch.testing.assert_close(module(x), expected, rtol=1e-9, atol=1e-10)


def test_sizes_beyond_rel_size_share_the_end_embeddings() -> None:
    # rel_size = 2 on a 5 x 9 map equals a rel_size = 9 module whose tables repeat the end embeddings for
    # every offset beyond +-1: offsets are clipped, not wrapped or dropped.
    small = _random(4, 2, 2, seed=4)
    big = _mhsa(4, None, 2, 9).double()
    big.load_state_dict({name: value for name, value in small.state_dict().items() if not name.startswith("rel")},
                        strict=False)
    clipped = [min(max(offset, -1), 1) + 1 for offset in range(-8, 9)]
    with torch.no_grad():
        big.rel_h.copy_(small.rel_h[clipped])
        big.rel_w.copy_(small.rel_w[clipped])
    x = torch.randn(1, 4, 5, 9, dtype=torch.float64)
    torch.testing.assert_close(small(x), big(x), rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        big.rel_w[0] += 1.0  # offset -8 now differs from offset -1
    assert not torch.allclose(small(x), big(x))


@pytest.mark.parametrize(("c1", "heads", "used"), [(512, 4, 4), (16, 4, 4), (24, 4, 4), (6, 4, 2), (7, 4, 1)])
def test_heads_rule_is_gcd(c1: int, heads: int, used: int) -> None:
    module = _mhsa(c1, None, heads)
    assert module.heads == used
    assert module(torch.randn(1, c1, 3, 4)).shape == (1, c1, 3, 4)


def test_official_init() -> None:
    module = _mhsa(256)
    for conv in (module.query, module.key, module.value):
        assert abs(conv.weight.std().item() - 0.01) < 0.001 and conv.bias is None
    assert module.rel_h.shape == (63, 64)
    assert abs(module.rel_h.std().item() - 64 ** -0.5) < 0.1 * 64 ** -0.5


def test_images_of_a_batch_are_independent() -> None:
    module = _random(8, 2, 4, seed=5)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    changed = x.clone()
    changed[1] = torch.randn(8, 5, 6, dtype=torch.float64) * 10
    torch.testing.assert_close(module(changed)[0], module(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["heads", "rel_size"])
@pytest.mark.parametrize("value", [0, -1, 2.0, "4", True, None])
def test_bad_hyperparameters_raise(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        _mhsa(64, None, **{name: value})


def test_c2_other_than_c1_raises() -> None:
    with pytest.raises(ValueError, match="c2=128 must be None or equal to c1=64"):
        _mhsa(64, 128)


@pytest.mark.parametrize("c1", [0, -16])
def test_bad_c1_raises(c1: int) -> None:
    with pytest.raises(ValueError, match="c1"):
        _mhsa(c1)


@pytest.mark.parametrize("c", [1, 6, 16, 24, 80, 256])
@pytest.mark.parametrize(("heads", "rel_size"), [(4, 32), (1, 5), (8, 14)])
def test_param_count_matches_formula(c: int, heads: int, rel_size: int) -> None:
    module = _mhsa(c, None, heads, rel_size)
    assert sum(p.numel() for p in module.parameters()) == param_count(KEY, c, heads=heads, rel_size=rel_size)


def test_gradcheck_float64() -> None:
    module = _random(4, 2, 2, seed=6)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-6)


# --- the two computations: plain (whole logits) and blocks of query rows ------------------------------


def _count_blocked_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record every _MHSABlockAttention.apply call (its block size), still running it."""
    function = load_template(KEY)._MHSABlockAttention
    calls: list = []
    original = function.apply

    def spy(*args: object) -> torch.Tensor:
        calls.append(args[-1])
        return original(*args)

    monkeypatch.setattr(function, "apply", spy)
    return calls


def _blocked(module: torch.nn.Module, block_logits: int) -> torch.nn.Module:
    module.plain_logits = 0  # every size takes the blocked path
    module.block_logits = block_logits
    return module


@pytest.mark.parametrize(
    ("c", "heads", "rel_size", "h", "w", "block_logits"),
    [(8, 2, 32, 4, 5, 7 * 2 * 2 * 20), (12, 4, 8, 3, 7, 5 * 2 * 4 * 21), (8, 4, 32, 1, 1, 1),
     (4, 1, 4, 5, 1, 2 * 2 * 5), (8, 2, 3, 5, 6, 1)],  # 7, 5, 1, 2, 1 query rows per block (ragged last block)
)
def test_blocked_path_matches_oracle(monkeypatch: pytest.MonkeyPatch, c: int, heads: int, rel_size: int, h: int,
                                     w: int, block_logits: int) -> None:
    calls = _count_blocked_calls(monkeypatch)
    module = _blocked(_random(c, heads, rel_size, seed=c + h + w), block_logits)
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    torch.testing.assert_close(module(x), oracle(module, x), rtol=1e-9, atol=1e-10)
    assert calls == [max(1, block_logits // (2 * module.heads * h * w))]


def test_plain_path_below_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_blocked_calls(monkeypatch)
    module = _random(8, 2, 4, seed=9)
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    module.plain_logits = 2 * 2 * 20 * 20  # exactly the logits of this input: still plain
    torch.testing.assert_close(module(x), oracle(module, x), rtol=1e-9, atol=1e-10)
    assert calls == []
    module.plain_logits -= 1
    module(x)
    assert len(calls) == 1


@pytest.mark.parametrize(("shape", "rows"), [((8, 4, 400, 128), 0), ((16, 4, 400, 128), 163),
                                             ((1, 4, 1600, 64), 655), ((8, 4, 1600, 64), 81), ((1, 4, 6400, 32), 163)])
def test_default_threshold_picks_plain_at_p5_and_blocks_at_p4_and_p3(shape: tuple, rows: int) -> None:
    # q of yolov5s at 640 (b, 4 heads, HW, d): P5 at batch 8 has 5.1e6 logits (plain, <= 2^23), at batch 16
    # 1.0e7 (blocks of 2^22 // (16 * 4 * 400) = 163 query rows); P4 1.0e7 at batch 1, 8.2e7 at batch 8;
    # P3 1.6e8 at batch 1
    module = _mhsa(shape[1] * shape[3], None, shape[1])
    assert (module.plain_logits, module.block_logits) == (1 << 23, 1 << 22)
    assert module._block_rows(torch.empty(shape)) == rows


def test_blocked_gradients_match_plain_and_gradcheck() -> None:
    plain = _random(4, 2, 2, seed=6)
    blocked = _blocked(_random(4, 2, 2, seed=6), 2 * 2 * 12 * 4)  # 4 query rows per block: 3 blocks
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 4, 3, 4, dtype=torch.float64)
    grads = [torch.autograd.grad(module(x), [x, *module.parameters()], upstream) for module in (plain, blocked)]
    for expected, got in zip(*grads):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(blocked, (x,), eps=1e-6, atol=1e-6)


def test_blocked_path_in_half_bfloat16_autocast_and_channels_last() -> None:
    module = randomise(_mhsa(16, None, 4, 6), seed=2, scale=0.3)
    x = torch.randn(2, 16, 7, 9)
    expected = module(x)
    _blocked(module, 4 * 2 * 4 * 63)  # b * heads * HW = 504 logits per query row: 4 rows per block
    torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(module(x.contiguous(memory_format=torch.channels_last)), expected,
                               rtol=1e-5, atol=1e-5)
    for dtype in (torch.float16, torch.bfloat16):
        out = _blocked(randomise(_mhsa(16, None, 4, 6), seed=2, scale=0.3).to(dtype), 4 * 2 * 4 * 63)(x.to(dtype))
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), expected, rtol=3e-2, atol=3e-2)
    x_grad = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x_grad)
    out.float().square().mean().backward()
    assert out.dtype == torch.float32 and torch.isfinite(x_grad.grad).all()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_blocked_backward_is_deterministic() -> None:
    module = _blocked(randomise(_mhsa(16, None, 4, 6), seed=2, scale=0.3), 4 * 2 * 4 * 63)
    x = torch.randn(2, 16, 7, 9)
    upstream = torch.randn(2, 16, 7, 9)
    enabled = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        grads = [torch.autograd.grad(module(x.clone().requires_grad_()), [*module.parameters()], upstream)
                 for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(enabled)
    for first, second in zip(*grads):
        assert torch.equal(first, second)


def _peak_live_bytes(step) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    live = peak = 0
    events = [event for event in prof.profiler.kineto_results.events() if event.name() == "[memory]"]
    for event in sorted(events, key=lambda event: event.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def test_blocked_path_never_holds_the_whole_logits() -> None:
    # 1 x 4 heads x (32 * 32)^2 logits = 16.8 MB in float32; blocks of 2^14 logits (64 kB) keep the forward
    # and backward peak (Q, K, V, the relative logits, their gradients: about 3 MB) far below one such
    # tensor, while the plain form holds several.
    module = randomise(_mhsa(16, None, 4, 32), seed=1, scale=0.3)
    x = torch.randn(1, 16, 32, 32, requires_grad=True)
    logits_bytes = 4 * 4 * (32 * 32) ** 2

    def step() -> None:
        module(x).sum().backward()

    plain = _peak_live_bytes(step)
    _blocked(module, 1 << 14)
    blocked = _peak_live_bytes(step)
    assert plain > 2 * logits_bytes
    assert blocked < logits_bytes / 4


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_exports_record_the_plain_form_and_match_the_blocked_path(dynamo: bool) -> None:
    # Graph capture always records the plain form (a branch on the example's size would freeze one path):
    # exported at 16 x 16, run in onnxruntime at sizes where eager MHSA takes the blocked path.
    ort = pytest.importorskip("onnxruntime")
    from tests.templates.test_properties import export_like_yolov5

    module = _blocked(randomise(_mhsa(32), seed=4, scale=0.2).eval(), 2 * 4 * 50)
    session = ort.InferenceSession(export_like_yolov5(module, torch.randn(1, 32, 16, 16), dynamo, 17),
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for shape in [(2, 32, 16, 16), (2, 32, 12, 20)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = module(x)
        out = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_jit_trace_records_the_plain_form(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_blocked_calls(monkeypatch)
    module = _blocked(randomise(_mhsa(16, None, 4, 6), seed=2, scale=0.3), 4 * 2 * 4 * 63)
    traced = torch.jit.trace(module, torch.randn(1, 16, 5, 6), check_trace=False)
    assert calls == []
    x = torch.randn(2, 16, 7, 9)
    torch.testing.assert_close(traced(x), module(x), rtol=1e-5, atol=1e-5)
    assert len(calls) == 1
