"""Multi-head self-attention with 2-D relative position logits (BoTNet's MHSA), Srinivas et al. 2021,
for YOLOv5's models/common.py.

Global self-attention over all H x W positions, per head, with logits q . k + q . r^H_{p-x} + q . r^W_{q-y}
from learnt relative-position embeddings for the row and column offsets; the heads' outputs are
concatenated. BoTNet puts it in place of the 3x3 convolutions of the last (1/32) stage.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

YOLOPATCH = {
    "key": "mhsa",
    "class_name": "MHSA",
    "version": 2,
    "aliases": ["BoTNetMHSA", "BottleneckTransformerMHSA"],
    "paper": "Bottleneck Transformers for Visual Recognition",
    "authors": "Srinivas et al.",
    "venue": "CVPR",
    "year": 2021,
    "summary": "Global multi-head self-attention with 2-D relative position logits (row and column offset "
    "embeddings), as in BoTNet's bottleneck blocks.",
    "hyperparameters": {"heads": 4, "rel_size": 32},
    "param_count": "3 * c * c + 2 * (2 * rel_size - 1) * (c // gcd(c, heads))",
    "constraints": [
        "any c1 >= 1 and heads >= 1; the heads used are gcd(c1, heads), so the head width is an integer at "
        "every width (heads=4: 4 heads at every multiple of 4)",
        "any feature size: the relative embeddings hold 2 * rel_size - 1 offsets per axis, exactly BoTNet's "
        "tables for maps up to rel_size x rel_size (rel_size=32: BoTNet's 1024-pixel COCO input at 1/32); "
        "offsets beyond +-(rel_size - 1) share the last embedding (clipped relative distance)",
        "no residual: the paper's MHSA replaces the 3x3 convolution inside a bottleneck block whose "
        "shortcut adds the input back",
        "global attention costs O((H * W)^2) time per head; the (H * W)^2 logits are built whole only while "
        "b * heads * (H * W)^2 <= 2^23 (32 MB in float32); above that, blocks of query rows (at most 2^22 "
        "logits each, recomputed in backward) keep memory O(b * H * W * (heads * (H + W) + c)); meant for "
        "the 1/32 map",
        "deterministic backward: matrix products, softmax and sums only (tested on CPU)",
    ],
    "registration": "width",
    "kind": "self-attention",
    "official_code": "",  # BoTNet's reference TensorFlow code was published as a gist, not a repository
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
}


class _MHSABlockAttention(torch.autograd.Function):
    """softmax(Q K^T + relative logits) V computed over blocks of query rows, for MHSA.

    Inputs: query (b, n, L, d), key and value (b, n, d, L), logits_h (b, n, L, H), logits_w (b, n, L, W)
    with L = H * W, and ``block``, the query rows per block. No (L x L) tensor exists: each block builds
    its (block x L) logits, adds the relative logits (a broadcast over the key's column, then its row),
    takes the softmax and multiplies by V. Backward recomputes each block's weights (flash-attention
    style: saved are the inputs and the output, O(L * (d + H + W)) per head), then
    dS = P * (dO V^T - rowsum(dO * O)), dQ = dS K, dK += dS^T Q, dV += P^T dO, and the relative logits'
    gradients are dS summed over the key's column (rows) and over its row (columns).
    """

    @staticmethod
    def forward(ctx, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, logits_h: torch.Tensor,
                logits_w: torch.Tensor, block: int) -> torch.Tensor:
        out = torch.empty(query.shape, dtype=query.dtype, device=query.device)
        for start in range(0, query.shape[2], block):
            rows = slice(start, start + block)
            weights = _MHSABlockAttention.weights(query[:, :, rows], key, logits_h[:, :, rows], logits_w[:, :, rows])
            out[:, :, rows] = torch.matmul(weights, value.transpose(2, 3))
        ctx.save_for_backward(query, key, value, logits_h, logits_w, out)
        ctx.block = block
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        query, key, value, logits_h, logits_w, out = ctx.saved_tensors
        with torch.autocast(device_type=query.device.type, enabled=False):
            b, n, length, d = query.shape
            grad_query = torch.empty(query.shape, dtype=query.dtype, device=query.device)
            grad_key = torch.zeros(b * n, d, length, dtype=query.dtype, device=query.device)
            grad_value = torch.zeros(b * n, d, length, dtype=query.dtype, device=query.device)
            grad_h = torch.empty(logits_h.shape, dtype=query.dtype, device=query.device)
            grad_w = torch.empty(logits_w.shape, dtype=query.dtype, device=query.device)
            delta = (grad_out * out).sum(3, keepdim=True)  # rowsum(dO * O) = rowsum(P * dP)
            for start in range(0, length, ctx.block):
                rows = slice(start, start + ctx.block)
                weights = _MHSABlockAttention.weights(query[:, :, rows], key, logits_h[:, :, rows],
                                                      logits_w[:, :, rows])  # (b, n, C, L)
                grad_rows = grad_out[:, :, rows]
                count = weights.shape[2]
                # (b * n, d, C) operands: views when the tensors are (b, n, d, L) underneath, as MHSA makes them
                grad_value.baddbmm_(grad_rows.transpose(2, 3).reshape(b * n, d, count),
                                    weights.view(b * n, count, length))
                grad_scores = torch.matmul(grad_rows, value).sub_(delta[:, :, rows]).mul_(weights)  # dS
                grad_query[:, :, rows] = torch.matmul(grad_scores, key.transpose(2, 3))
                grad_key.baddbmm_(query[:, :, rows].transpose(2, 3).reshape(b * n, d, count),
                                  grad_scores.view(b * n, count, length))
                grad_scores = grad_scores.unflatten(3, (logits_h.shape[3], logits_w.shape[3]))
                grad_h[:, :, rows] = grad_scores.sum(4)
                grad_w[:, :, rows] = grad_scores.sum(3)
        return grad_query, grad_key.view(key.shape), grad_value.view(value.shape), grad_h, grad_w, None

    @staticmethod
    def weights(query: torch.Tensor, key: torch.Tensor, logits_h: torch.Tensor,
                logits_w: torch.Tensor) -> torch.Tensor:
        """(b, n, C, L) softmax weights of C query rows (outside autograd: written in place)."""
        scores = torch.matmul(query, key)
        grid = scores.unflatten(3, (logits_h.shape[3], logits_w.shape[3]))  # (b, n, C, H, W): key (p, q)
        grid.add_(logits_h[..., None]).add_(logits_w[..., None, :])
        return torch.softmax(scores, 3)


class MHSA(nn.Module):
    """BoTNet's multi-head self-attention layer (Srinivas et al. 2021); input and output (b, c1, H, W).

    With n = gcd(c1, heads) heads of width d = c1 / n, projections without bias, for head h, query
    position (x, y) and key position (p, q):
        Q, K, V = W_q x, W_k x, W_v x  split into n heads;   Q <- Q / sqrt(d)
        l_{(x,y),(p,q)} = Q_{xy} . K_{pq} + Q_{xy} . r^H[p - x] + Q_{xy} . r^W[q - y]
        A = softmax over (p, q) of l;   out_{xy} = sum_{pq} A_{(x,y),(p,q)} V_{pq};  heads concatenated
    r^H, r^W hold 2 * rel_size - 1 embeddings of width d, offsets clipped to +-(rel_size - 1). This is
    the paper's reference code (relpos_self_attention with relative_logits / rel_to_abs): projections
    initialised normal(0, 0.01), relative embeddings normal(0, d^-0.5), no output projection.

    Every feature size: the paper's tables are 2H - 1 and 2W - 1 rows for one fixed H x W; here they
    have 2 * rel_size - 1 rows and are indexed by the clipped offset, so for H, W <= rel_size the logits
    are exactly the paper's at that size (same formula, the middle rows of a larger table), and larger
    maps share the end embeddings for the far offsets (Shaw et al.'s clipping) instead of failing.

    Computation: the relative logits are two small products, Q . r^H (HW x H) and Q . r^W (HW x W),
    added to Q K^T by broadcasting (the paper's rel_to_abs builds the same numbers). The path is picked
    by the size of the logits of the whole batch, b * n * (HW)^2 (yolov5s at 640, batch 8: P5 5.1e6,
    P4 8.2e7, P3 1.3e9): up to ``plain_logits`` (2^23) autograd runs the plain form (logits, softmax,
    product: 6 matrix products forward and backward); above it _MHSABlockAttention takes blocks of query
    rows with at most ``block_logits`` (2^22, 16 MB in float32) logits each and recomputes each block's
    weights in backward (7 matrix products, no (HW)^2 tensor). Measured on one CPU thread, forward +
    backward: at 5.1e6 logits (P5, batch 8) the plain form is 3% to 9% faster than blocks; at 1.0e7 the
    two are within a few percent (P5 at batch 16: plain 2% faster; P4 at batch 1: blocks 8% faster);
    at 8.2e7 (P4, batch 8) blocks are 1.3x faster (the plain form's (HW)^2 passes of softmax and
    gradients fall out of cache) and take 220 MB instead of about 1 GB. Hence 2^23 = 8.4e6. Under
    torch.jit.trace, ONNX export, torch.compile and torch.export the plain form is recorded whatever the
    size: it is correct at every size (a branch on the traced size would freeze one path), and ONNX
    (opset 17) has no fused attention anyway. The projections and the attention run in float32
    (autocast off) for half/bfloat16 inputs: at YOLO magnitudes (|x| ~ 300) the logits reach 1e4 and
    half-rounded Q, K flip the softmax at near-ties; the output has the input's dtype.

    BoTNet has no official repository (its reference TensorFlow code is a gist). Deviation from
    leaderj1001/BottleneckTransformers (the usual unofficial PyTorch port): that code learns
    absolute per-position embeddings for one fixed size and adds pos_i . q_j (the query position's
    embedding times the key position's q), does not scale the logits and gives the projections
    biases; this layer follows the paper instead (its content path matches that code to 1e-15 in
    float64 with the embeddings zeroed and the scale folded into W_q).
    """

    plain_logits = 1 << 23  # b * n * (HW)^2 above which attention runs in blocks of query rows
    block_logits = 1 << 22  # logits per block (see the docstring for both measurements)

    def __init__(self, c1: int, c2: "int | None" = None, heads: int = 4, rel_size: int = 32) -> None:
        super().__init__()
        if c2 is not None and c2 != c1:
            raise ValueError(f"MHSA: c2={c2} must be None or equal to c1={c1}: the module keeps its input width")
        if not isinstance(c1, int) or c1 < 1:
            raise ValueError(f"MHSA: c1={c1!r} must be a positive int")
        if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
            raise ValueError(f"MHSA: heads={heads!r} must be an int >= 1 (the heads used are gcd(c1, heads))")
        if not isinstance(rel_size, int) or isinstance(rel_size, bool) or rel_size < 1:
            raise ValueError(
                f"MHSA: rel_size={rel_size!r} must be an int >= 1 (relative offsets up to +-(rel_size - 1))"
            )
        self.heads = math.gcd(c1, heads)
        self.rel_size = rel_size
        dim = c1 // self.heads
        self.query = nn.Conv2d(c1, c1, 1, bias=False)
        self.key = nn.Conv2d(c1, c1, 1, bias=False)
        self.value = nn.Conv2d(c1, c1, 1, bias=False)
        self.rel_h = nn.Parameter(torch.randn(2 * rel_size - 1, dim) * dim ** -0.5)
        self.rel_w = nn.Parameter(torch.randn(2 * rel_size - 1, dim) * dim ** -0.5)
        for conv in (self.query, self.key, self.value):
            nn.init.normal_(conv.weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the concatenated heads of softmax(Q K^T + relative logits) V."""
        work = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):  # autocast would run these in half
            # projections in float32 too: half-rounded Q and K move the (large) logits by more than the rest
            x_work = x.to(work)
            q = F.conv2d(x_work, self.query.weight.to(work)).unflatten(1, (self.heads, -1))  # (b, n, d, H, W)
            q = q * self.rel_h.shape[1] ** -0.5
            k = F.conv2d(x_work, self.key.weight.to(work)).unflatten(1, (self.heads, -1)).flatten(3)  # (b, n, d, HW)
            v = F.conv2d(x_work, self.value.weight.to(work)).unflatten(1, (self.heads, -1)).flatten(3)
            # 1..H and 1..W from the data ("* 0 + 1": the legacy exporter folds ones_like here to a constant)
            rows = (q[0, 0, 0, :, 0] * 0 + 1).cumsum(0)
            cols = (q[0, 0, 0, 0, :] * 0 + 1).cumsum(0)
            rel_h = self._table(self.rel_h.to(work), rows)  # (H, H, d): r^H[p - x] at [x, p]
            rel_w = self._table(self.rel_w.to(work), cols)  # (W, W, d): r^W[q - y] at [y, q]
            logits_h = torch.einsum("bndxy,xpd->bnxyp", q, rel_h).flatten(2, 3)  # (b, n, HW, H)
            logits_w = torch.einsum("bndxy,yqd->bnxyq", q, rel_w).flatten(2, 3)  # (b, n, HW, W)
            q = q.flatten(3).transpose(2, 3)  # (b, n, HW, d)
            block = self._block_rows(q)
            if block:
                out = _MHSABlockAttention.apply(q, k, v, logits_h, logits_w, block)
            else:
                # (b * n, HW, HW): relative logits broadcast to every key, Q K^T added by the matrix product
                bias = (logits_h[..., :, None] + logits_w[..., None, :]).flatten(3).flatten(0, 1)
                weights = torch.softmax(torch.baddbmm(bias, q.flatten(0, 1), k.flatten(0, 1)), 2)
                del bias  # freed before backward, as the sum's operand would be
                out = torch.matmul(weights, v.flatten(0, 1).transpose(1, 2)).unflatten(0, (-1, self.heads))
        return out.transpose(2, 3).reshape_as(x).to(x.dtype)

    def _block_rows(self, q: torch.Tensor) -> int:
        """Query rows per block for _MHSABlockAttention, or 0 for the plain form (small logits, graph capture)."""
        if MHSA.capturing_graph():
            return 0
        b, n, length, _ = q.shape
        if b * n * length * length <= self.plain_logits:
            return 0
        return max(1, self.block_logits // (b * n * length))

    @staticmethod
    def capturing_graph() -> bool:
        """True under torch.jit.trace, ONNX export, torch.compile and torch.export."""
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return True
        compiler = getattr(torch, "compiler", None)
        for name in ("is_compiling", "is_exporting"):
            check = getattr(compiler, name, None)
            if check is not None and check():
                return True
        return False

    def _table(self, embeddings: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(n, n, d): embeddings[clip(j - i) + rel_size - 1] at [i, j], for positions index = 1..n."""
        far = self.rel_size - 1
        offset = (index[None, :] - index[:, None]).clamp(-far, far) + far
        return embeddings[offset.long()]
