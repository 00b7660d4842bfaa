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
