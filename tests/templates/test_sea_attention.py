"""Tests for templates/sea_attention.py (SeaAttention, SeaFormer ICLR 2023).

The oracle below is a literal, functional transcription of the official ``Sea_Attention.forward``
(fudan-zvg/SeaFormer, seaformer-cls/seaformer.py) in float64. It reads the template's parameters by
name and re-labels them with the official names (the template's fused q/k/v projection and its
stacked [q; k] positional embeddings are sliced back into the official separate tensors); it shares
no code with the template.
"""

from __future__ import annotations

import ast
import inspect
from typing import Dict, Tuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.templates.loader import load_template, template_path
from yolopatch import catalog

KEY = "sea-attention"
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
CONV_BN = ("to_q", "to_k", "to_v", "dwconv", "pwconv", "proj.1", "proj_encode_row.1", "proj_encode_column.1")


@pytest.fixture(scope="module")
def SeaAttention() -> type:
    return load_template(KEY).SeaAttention


# --------------------------------------------------------------------------------------------------
# The official module, transcribed
# --------------------------------------------------------------------------------------------------

def official_params(m: nn.Module) -> Dict[str, torch.Tensor]:
    """The template's tensors under the official ``Sea_Attention`` state-dict names (views, not copies)."""
    nk, dh = m.nk, m.dh
    parts = {"to_q": slice(0, nk), "to_k": slice(nk, 2 * nk), "to_v": slice(2 * nk, 2 * nk + dh)}
    p: Dict[str, torch.Tensor] = {}
    for name, part in parts.items():
        p[f"{name}.c.weight"] = m.qkv.conv.weight[part]
        for field in ("weight", "bias", "running_mean", "running_var"):
            p[f"{name}.bn.{field}"] = getattr(m.qkv.bn, field)[part]
    for name, block in (("dwconv", m.detail[0]), ("pwconv", m.detail[2]), ("proj.1", m.proj[1]),
                        ("proj_encode_row.1", m.encode_row[1]), ("proj_encode_column.1", m.encode_col[1])):
        p[f"{name}.c.weight"] = block.conv.weight
        for field in ("weight", "bias", "running_mean", "running_var"):
            p[f"{name}.bn.{field}"] = getattr(block.bn, field)
    p["pos_emb_rowq.pos_embed"] = m.pos_row[:, :nk]
    p["pos_emb_rowk.pos_embed"] = m.pos_row[:, nk:]
    p["pos_emb_columnq.pos_embed"] = m.pos_col[:, :nk]
    p["pos_emb_columnk.pos_embed"] = m.pos_col[:, nk:]
    return p


def official_shapes(c: int, key_dim: int, num_heads: int, attn_ratio: float) -> Dict[str, Tuple[int, ...]]:
    """Parameter shapes of the official ``Sea_Attention(c, key_dim, num_heads, attn_ratio)``."""
    nh_kd = key_dim * num_heads
    dh = int(attn_ratio * key_dim) * num_heads
    e = 2 * nh_kd + dh
    convs = {"to_q": (nh_kd, c, 1, 1), "to_k": (nh_kd, c, 1, 1), "to_v": (dh, c, 1, 1),
             "dwconv": (e, 1, 3, 3), "pwconv": (c, e, 1, 1), "proj.1": (c, dh, 1, 1),
             "proj_encode_row.1": (dh, dh, 1, 1), "proj_encode_column.1": (dh, dh, 1, 1)}
    shapes: Dict[str, Tuple[int, ...]] = {}
    for name, shape in convs.items():
        shapes[f"{name}.c.weight"] = shape
        shapes[f"{name}.bn.weight"] = shapes[f"{name}.bn.bias"] = (shape[0],)
    for name in ("rowq", "rowk", "columnq", "columnk"):
        shapes[f"pos_emb_{name}.pos_embed"] = (1, nh_kd, 16)
    return shapes


def official_forward(x: torch.Tensor, p: Dict[str, torch.Tensor], key_dim: int, num_heads: int,
                     attn_ratio: float, training: bool) -> torch.Tensor:
    """``Sea_Attention.forward`` with activation=nn.ReLU6, line by line (train mode updates running stats)."""

    def conv_bn(name: str, t: torch.Tensor, pad: int = 0, groups: int = 1) -> torch.Tensor:
        t = F.conv2d(t, p[f"{name}.c.weight"], None, 1, pad, 1, groups)
        return F.batch_norm(t, p[f"{name}.bn.running_mean"], p[f"{name}.bn.running_var"], p[f"{name}.bn.weight"],
                            p[f"{name}.bn.bias"], training, BN_MOMENTUM, BN_EPS)

    def pos_emb(name: str, t: torch.Tensor) -> torch.Tensor:
        B, C, N = t.shape
        return t + F.interpolate(p[f"pos_emb_{name}.pos_embed"], size=(N), mode="linear", align_corners=False)

    def h_sigmoid(t: torch.Tensor) -> torch.Tensor:
        return F.relu6(t + 3) / 6

    scale = key_dim ** -0.5
    nh_kd = key_dim * num_heads
    dh = int(attn_ratio * key_dim) * num_heads
    B, C, H, W = x.shape

    q = conv_bn("to_q", x)
    k = conv_bn("to_k", x)
    v = conv_bn("to_v", x)

    # detail enhance
    qkv = torch.cat([q, k, v], dim=1)
    qkv = F.relu6(conv_bn("dwconv", qkv, pad=1, groups=2 * nh_kd + dh))
    qkv = conv_bn("pwconv", qkv)

    # squeeze axial attention: row
    qrow = pos_emb("rowq", q.mean(-1)).reshape(B, num_heads, -1, H).permute(0, 1, 3, 2)
    krow = pos_emb("rowk", k.mean(-1)).reshape(B, num_heads, -1, H)
    vrow = v.mean(-1).reshape(B, num_heads, -1, H).permute(0, 1, 3, 2)
    attn_row = torch.matmul(qrow, krow) * scale
    attn_row = attn_row.softmax(dim=-1)
    xx_row = torch.matmul(attn_row, vrow)
    xx_row = conv_bn("proj_encode_row.1", F.relu6(xx_row.permute(0, 1, 3, 2).reshape(B, dh, H, 1)))

    # squeeze axial attention: column
    qcolumn = pos_emb("columnq", q.mean(-2)).reshape(B, num_heads, -1, W).permute(0, 1, 3, 2)
    kcolumn = pos_emb("columnk", k.mean(-2)).reshape(B, num_heads, -1, W)
    vcolumn = v.mean(-2).reshape(B, num_heads, -1, W).permute(0, 1, 3, 2)
    attn_column = torch.matmul(qcolumn, kcolumn) * scale
    attn_column = attn_column.softmax(dim=-1)
    xx_column = torch.matmul(attn_column, vcolumn)
    xx_column = conv_bn("proj_encode_column.1", F.relu6(xx_column.permute(0, 1, 3, 2).reshape(B, dh, 1, W)))

    xx = xx_row.add(xx_column)
    xx = v.add(xx)
    xx = conv_bn("proj.1", F.relu6(xx))
    return h_sigmoid(xx) * qkv


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

def randomise(m: nn.Module, seed: int) -> nn.Module:
    """Random parameters and BN running stats (the official init would zero the proj path's BN weight)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in m.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * 1.5 / fan_in ** 0.5)
            elif isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=g) + 0.5)
                module.bias.copy_(torch.randn(n, generator=g) * 0.5)
                module.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                module.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
        m.pos_row.copy_(torch.randn(m.pos_row.shape, generator=g))
        m.pos_col.copy_(torch.randn(m.pos_col.shape, generator=g))
    return m


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


HYPER = [(16, 4, 2), (8, 2, 2), (4, 3, 1), (6, 2, 1.5)]
SHAPES = [(2, 32, 20, 20), (2, 48, 13, 7), (3, 16, 1, 1), (2, 24, 5, 1), (2, 24, 1, 9), (1, 40, 16, 16),
          (2, 20, 24, 17)]


# --------------------------------------------------------------------------------------------------
# Equality with the official forward
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hyper", HYPER, ids=lambda h: "kd{}-h{}-r{}".format(*h))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_official_eval(SeaAttention: type, shape: Tuple[int, ...], hyper: Tuple) -> None:
    key_dim, num_heads, attn_ratio = hyper
    torch.manual_seed(0)
    m = randomise(SeaAttention(shape[1], None, key_dim, num_heads, attn_ratio), seed=1).double().eval()
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        ref = official_forward(x, official_params(m), key_dim, num_heads, attn_ratio, training=False)
        out = m(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert rel_err(out, ref) < 1e-5


@pytest.mark.parametrize("shape", [(4, 32, 20, 20), (3, 24, 13, 7), (4, 16, 1, 1), (2, 24, 6, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_matches_official_train_including_running_stats(SeaAttention: type, shape: Tuple[int, ...]) -> None:
    key_dim, num_heads, attn_ratio = 8, 2, 2
    torch.manual_seed(0)
    m = randomise(SeaAttention(shape[1], None, key_dim, num_heads, attn_ratio), seed=2).double().train()
    ref_params = {name: t.detach().clone() for name, t in official_params(m).items()}
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        ref = official_forward(x, ref_params, key_dim, num_heads, attn_ratio, training=True)
        out = m(x)
    assert rel_err(out, ref) < 1e-5
    updated = official_params(m)
    for name in CONV_BN:
        for field in ("running_mean", "running_var"):
            key = f"{name}.bn.{field}"
            assert rel_err(updated[key], ref_params[key]) < 1e-10, key


def test_gradients_match_official(SeaAttention: type) -> None:
    """d(out . g) for the input and every parameter equals the official graph's, in float64.

    The bound is 1e-6, not float64 rounding: the template's gate is F.hardsigmoid, whose CPU
    backward kernel multiplies by a float32 constant 1/6 (relative error 2**-25 = 3e-8) even in
    float64, where the official relu6(t + 3) / 6 is exact.
    """
    torch.manual_seed(0)
    m = randomise(SeaAttention(24, None, 8, 2, 2), seed=3).double().train()
    x = torch.randn(2, 24, 9, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 24, 9, 6, dtype=torch.float64)
    params = [x, *m.parameters()]
    out_grads = torch.autograd.grad((m(x) * g).sum(), params)
    ref = official_forward(x, official_params(m), 8, 2, 2, training=True)
    ref_grads = torch.autograd.grad((ref * g).sum(), params)
    for (name, _), a, b in zip([("x", x), *m.named_parameters()], out_grads, ref_grads):
        assert rel_err(a, b) < 1e-6, name


def test_float32_close_to_float64_official(SeaAttention: type) -> None:
    torch.manual_seed(0)
    m = randomise(SeaAttention(64), seed=4).eval()
    x = torch.randn(2, 64, 20, 12)
    ref = official_forward(x.double(), {n: t.double() for n, t in official_params(m).items()}, 16, 4, 2, False)
    with torch.no_grad():
        assert rel_err(m(x).double(), ref) < 1e-4


# --------------------------------------------------------------------------------------------------
# Gradients, initialisation, activations
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hw, train", [((3, 4), True), ((1, 1), False), ((2, 1), True), ((1, 3), False)],
                         ids=["3x4-train", "1x1-eval", "2x1-train", "1x3-eval"])
def test_gradcheck(SeaAttention: type, hw: Tuple[int, int], train: bool) -> None:
    """Input and all parameters at once (fast mode: random directional derivatives)."""
    torch.manual_seed(0)
    m = randomise(SeaAttention(6, None, 2, 2, 2), seed=5).double().train(train)
    batch = 3 if hw == (1, 1) else 2  # train-mode BN needs more than one value per channel
    x = torch.randn(batch, 6, *hw, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    buffers = {n: b for n, b in m.named_buffers()}

    def f(inp: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        state = {**{n: b.clone() for n, b in buffers.items()}, **dict(zip(names, ps))}
        return torch.func.functional_call(m, state, (inp,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_official_initialisation(SeaAttention: type) -> None:
    """BN weights 1, except 0 on proj / proj_encode_row / proj_encode_column (bn_weight_init=0)."""
    torch.manual_seed(0)
    m = SeaAttention(32)
    zero = {m.proj[1].bn, m.encode_row[1].bn, m.encode_col[1].bn}
    for module in m.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == (0.0 if module in zero else 1.0))
            assert torch.all(module.bias == 0.0)
    m.eval()
    x = torch.randn(2, 32, 7, 5)
    with torch.no_grad():  # the gate is h_sigmoid(0) = 1/2 everywhere at initialisation
        assert torch.allclose(m(x), 0.5 * m.detail(m.qkv(x)), rtol=0, atol=1e-6)


def test_inplace_activations_change_nothing(SeaAttention: type) -> None:
    torch.manual_seed(0)
    m = randomise(SeaAttention(16, None, 4, 2, 2), seed=6).train()
    x = torch.randn(2, 16, 6, 5, requires_grad=True)
    ref_state = {k: v.clone() for k, v in m.state_dict().items()}
    y0 = m(x)
    (g0,) = torch.autograd.grad(y0.square().sum(), x)
    m.load_state_dict(ref_state)
    relus = [mod for mod in m.modules() if isinstance(mod, nn.ReLU6)]
    assert len(relus) == 4 and not any(mod.inplace for mod in relus)  # official default: not in place
    for mod in relus:
        mod.inplace = True
    y1 = m(x)
    (g1,) = torch.autograd.grad(y1.square().sum(), x)
    assert torch.equal(y0, y1) and torch.equal(g0, g1)


@pytest.mark.parametrize("hw", [(1, 9), (9, 1)], ids=["1x9", "9x1"])
def test_batch_one_single_row_or_column_trains(SeaAttention: type, hw: Tuple[int, int]) -> None:
    """Batch 1 with H = 1 (or W = 1) leaves the row (column) encoder's BN one value per channel.

    The official module crashes there (torch's BatchNorm refuses); the template returns the exact
    train-mode BN value, its bias, with zero gradient to its input, and keeps that BN's running
    statistics.
    """
    torch.manual_seed(0)
    m = randomise(SeaAttention(16, None, 4, 2, 2), seed=8).double().train()
    single = [block[1].bn for block, n in ((m.encode_row, hw[0]), (m.encode_col, hw[1])) if n == 1]
    kept = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in single]
    assert len(single) == 1
    x = torch.randn(1, 16, *hw, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        official_forward(x, {n: t.detach().clone() for n, t in official_params(m).items()}, 4, 2, 2, True)
    y = m(x)
    y.square().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    for bn, (mean, var) in zip(single, kept):
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    t = torch.randn(1, m.dh, 1, 1, dtype=torch.float64, requires_grad=True)
    out = m.encode_row(t)
    assert torch.equal(out.flatten(), m.encode_row[1].bn.bias.detach())
    (grad,) = torch.autograd.grad(out.sum(), t)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_low_precision_softmax_is_stable(SeaAttention: type) -> None:
    """Huge attention logits stay finite in bfloat16 and half: the softmax runs in float32."""
    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float16):
        m = randomise(SeaAttention(16, None, 4, 2, 2), seed=7).eval()
        with torch.no_grad():
            m.pos_row.mul_(300.0)
            m.pos_col.mul_(300.0)
        m = m.to(dtype)
        x = torch.randn(2, 16, 9, 11).to(dtype)
        with torch.no_grad():
            y = m(x)
        assert y.dtype == dtype and torch.isfinite(y).all()


# --------------------------------------------------------------------------------------------------
# Constructor contract and metadata
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("c", [1, 3, 16, 32, 80, 256, 1280])
@pytest.mark.parametrize("hyper", [(16, 4, 2), (8, 2, 2), (24, 8, 2), (16, 4, 1), (5, 3, 1.5), (16, 4, 2.0),
                                   (1, 1, 1)], ids=str)
def test_param_count_formula(SeaAttention: type, c: int, hyper: Tuple) -> None:
    key_dim, num_heads, attn_ratio = hyper
    m = SeaAttention(c, c, key_dim, num_heads, attn_ratio)
    actual = sum(p.numel() for p in m.parameters())
    assert catalog.param_count(KEY, c, key_dim=key_dim, num_heads=num_heads, attn_ratio=attn_ratio) == actual
    official = official_shapes(c, key_dim, num_heads, attn_ratio)
    assert {n: tuple(t.shape) for n, t in official_params(m).items() if "running" not in n} == official
    assert actual == sum(torch.Size(s).numel() for s in official.values())


def test_default_param_count_is_catalog_default(SeaAttention: type) -> None:
    m = SeaAttention(512)
    assert catalog.param_count(KEY, 512) == sum(p.numel() for p in m.parameters()) == 370432


def test_signature_matches_metadata(SeaAttention: type) -> None:
    meta = load_template(KEY).YOLOPATCH
    params = list(inspect.signature(SeaAttention.__init__).parameters.values())[1:]
    assert [p.name for p in params[:2]] == ["c1", "c2"] and params[1].default is None
    assert {p.name: p.default for p in params[2:]} == meta["hyperparameters"]
    assert list(meta["hyperparameters"]) == [p.name for p in params[2:]]
    m = SeaAttention(64, 64, 8, 2, 3)  # YAML order: [c2, key_dim, num_heads, attn_ratio]
    assert (m.key_dim, m.num_heads, m.d, m.dh) == (8, 2, 24, 48)


def test_c2_must_equal_c1(SeaAttention: type) -> None:
    SeaAttention(32, 32)
    SeaAttention(32, None)
    with pytest.raises(ValueError, match=r"c2=64 must be None or equal to c1=32"):
        SeaAttention(32, 64)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"c1": 0}, r"c1=0 must be an int >= 1"),
    ({"c1": 16, "key_dim": 0}, r"key_dim=0 must be an int >= 1"),
    ({"c1": 16, "key_dim": 2.5}, r"key_dim=2.5 must be an int >= 1"),
    ({"c1": 16, "num_heads": 0}, r"num_heads=0 must be an int >= 1"),
    ({"c1": 16, "num_heads": True}, r"num_heads=True must be an int >= 1"),
    ({"c1": 16, "attn_ratio": 0}, r"attn_ratio=0 must be a number > 0"),
    ({"c1": 16, "attn_ratio": "2"}, r"attn_ratio='2' must be a number > 0"),
    ({"c1": 16, "key_dim": 16, "attn_ratio": 0.05}, r"int\(attn_ratio \* key_dim\)=0; it must be >= 1"),
])
def test_constraint_errors_are_clear(SeaAttention: type, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        SeaAttention(**kwargs)


@pytest.mark.parametrize("c", [16, 32, 64, 128, 256, 512, 1024, 1280])
def test_every_yolo_width_and_odd_sizes_run(SeaAttention: type, c: int) -> None:
    m = SeaAttention(c).eval()
    with torch.no_grad():
        for hw in ((1, 1), (13, 7), (1, 9), (5, 1), (20, 20)):
            assert m(torch.randn(1, c, *hw)).shape == (1, c, *hw)


def test_template_file_contract() -> None:
    """Only the allowed imports, one YOLOPATCH literal, then classes/defs with SeaAttention names."""
    tree = ast.parse(template_path(KEY).read_text(encoding="utf-8"))
    body = tree.body
    assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    allowed = {"import math", "import torch", "import torch.nn as nn", "import torch.nn.functional as F"}
    rest = body[1:]
    while rest and isinstance(rest[0], (ast.Import, ast.ImportFrom)):
        assert ast.unparse(rest[0]) in allowed
        rest = rest[1:]
    assert isinstance(rest[0], ast.Assign) and rest[0].targets[0].id == "YOLOPATCH"
    assert ast.literal_eval(rest[0].value)["key"] == KEY
    for node in rest[1:]:
        assert isinstance(node, (ast.ClassDef, ast.FunctionDef))
        assert node.name.startswith(("SeaAttention", "_SeaAttention")), node.name
    assert catalog.get("Sea_Attention").key == catalog.get("SeaFormerAttention").key == KEY
