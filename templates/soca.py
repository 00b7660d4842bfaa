"""SOCA: second-order channel attention (Dai et al., "Second-order Attention Network for Single Image
Super-Resolution", CVPR 2019), written for YOLOv5's models/common.py.

For each image, with X the C x M feature matrix (M = H*W):
    Sigma = X I_hat X^T,  I_hat = (1/M)(I - 1 1^T / M)     (= Xc Xc^T / M for row-centred Xc)
    A = Sigma / tr(Sigma)
    Y0 = A, Z0 = I;  T = (3I - Z Y) / 2,  Y <- Y T,  Z <- T Z   (five Newton-Schulz iterations)
    Y_hat = sqrt(tr(Sigma)) * Y5,   z = mean over the rows of Y_hat
    gate = sigmoid(W_up ReLU(W_down z)),   out = gate * x
"""

import torch
import torch.nn as nn

YOLOPATCH = {
    "key": "soca",
    "class_name": "SOCA",
    "version": 1,
    "aliases": ["SecondOrderChannelAttention"],
    "paper": "Second-order Attention Network for Single Image Super-Resolution",
    "authors": "Dai et al.",
    "venue": "CVPR",
    "year": 2019,
    "registration": "width",
    "kind": "channel",
    "official_code": "daitao/SAN",
    "guarantees": {"dynamic_onnx": True, "deterministic_backward": True, "amp_safe": True, "onnx_opset": 17},
    "summary": "Channel gates from the Newton-Schulz square root of the feature covariance "
               "(second-order pooling).",
    "hyperparameters": {"reduction": 8},
    "param_count": "2 * c * max(c // reduction, 1) + max(c // reduction, 1) + c",
    "constraints": [
        "any c1 >= 1; the bottleneck width is max(c1 // reduction, 1), so yolov5n's 16 channels "
        "with reduction 32 still get one hidden channel",
        "reduction is an integer >= 1",
        "c2 must be None or equal to c1 (the output keeps the input width)",
        "any H, W >= 1: a 1x1 map has zero covariance, the trace is clamped and the gate is "
        "sigmoid(W_up ReLU(b_down) + b_up)",
    ],
}


class _SOCASecondOrderPool(torch.autograd.Function):
    """z = (1/C) sqrt(t) p(Sigma / t) 1 per image, t = max(tr Sigma, floor), p = the Newton-Schulz map.

    p is the fixed polynomial (degree 122 for five iterations) that five matrix Newton-Schulz
    iterations apply to A = Sigma / t (every Y_k, Z_k is a polynomial in A). Only the row mean of
    Y_hat is used, i.e. p(A) 1, so the forward evaluates the Chebyshev series
    p(lambda) = sum_k c_k T_k(2 lambda - 1) (cut at degree 44, where its tail falls below float64
    resolution: SOCA.newton_schulz_chebyshev) with matrix-vector products: with K = 4A - 2I,
    t_0 = 1, t_1 = K t_0 / 2, t_{k+1} = K t_k - t_{k-1}, p(A) 1 = sum_k c_k t_k.
    The backward is the adjoint recurrence: the adjoint of t_k is sum_j c_{k+j} u_j with
    u_0 = ybar, u_1 = K^T ybar, u_{j+1} = K^T u_j - u_{j-1}, and dL/dK is one matrix product of the
    stacked adjoints with the stacked forward vectors.

    The covariance is (X - mu 1^T)(X - mu 1^T)^T / M from a transient centred copy (never the
    M x M centring matrix; centring first keeps Sigma positive semi-definite in floating point,
    which the degree-122 polynomial needs); nothing input-sized is saved for the backward.
    The centred copies (forward and backward) and the recurrences take ``chunk`` images per step:
    1 on the CPU, where each C x C matrix then stays in cache (a batched matrix-vector product is
    also a slower kernel there) and no input-sized temporary exists, the whole batch on
    accelerators, where fewer kernel launches matter more. SOCA itself runs _SOCAGatedPool, which
    uses pool() and add_input_gradient(); this Function is the pool alone.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficients: torch.Tensor, floor: float, chunk: int) -> torch.Tensor:
        z, saved = _SOCASecondOrderPool.pool(x, coefficients, floor, chunk)
        ctx.save_for_backward(*saved)
        ctx.floor = floor
        ctx.chunk = chunk
        return z

    @staticmethod
    def pool(x: torch.Tensor, coefficients: torch.Tensor, floor: float,
             chunk: int) -> "tuple[torch.Tensor, tuple[torch.Tensor, ...]]":
        """(z, the tensors add_input_gradient needs) for input x."""
        b, c, h, w = x.shape
        m = h * w
        dtype = coefficients.dtype
        kmats, means = _SOCASecondOrderPool.scatter(x, dtype, chunk)  # M Sigma
        traces = kmats.diagonal(dim1=1, dim2=2).sum(1) / m
        clamped = traces.clamp_min(floor)
        # K = 4 Sigma / t - 2I
        kmats.mul_((4.0 / (m * clamped))[:, None, None])
        kmats.diagonal(dim1=1, dim2=2).sub_(2.0)
        vectors = _SOCASecondOrderPool.chebyshev_vectors(kmats, coefficients.numel(), chunk)
        series = torch.tensordot(coefficients, vectors, dims=1).squeeze(2)  # (b, c) = p(A) 1
        z = series * (clamped.sqrt() / c)[:, None]
        return z, (x, coefficients, means, traces, kmats, vectors, series)

    @staticmethod
    def scatter(x: torch.Tensor, dtype: torch.dtype, chunk: int = 1) -> "tuple[torch.Tensor, torch.Tensor]":
        """(Xc Xc^T, mu) per image in dtype, Xc = X - mu 1^T, X = the (C, H*W) view of an image.

        The centred copy exists for ``chunk`` images at a time (one image on the CPU: 3.3 MB at P3
        instead of an input-sized 26 MB at batch 8)."""
        b, c = x.shape[:2]
        features = x.reshape(b, c, -1)  # a view, also for channels_last input
        means = features.mean(2, dtype=dtype)
        out = torch.empty(b, c, c, dtype=dtype, device=x.device)
        for start in range(0, b, chunk):
            part = slice(start, start + chunk)
            centred = torch.sub(features[part], means[part, :, None])
            torch.bmm(centred, centred.mT, out=out[part])
        return out, means

    @staticmethod
    def chebyshev_vectors(kmats: torch.Tensor, count: int, chunk: int) -> torch.Tensor:
        """(count, b, C, 1): t_0 = 1, t_1 = K 1 / 2, t_{k+1} = K t_k - t_{k-1} for each K in kmats."""
        b, c, _ = kmats.shape
        out = torch.empty(count, b, c, 1, dtype=kmats.dtype, device=kmats.device)
        out[0].fill_(1.0)
        if count > 1:
            torch.sum(kmats, 2, keepdim=True, out=out[1])
            out[1].mul_(0.5)
        for start in range(0, b, chunk):
            part = slice(start, start + chunk)
            kmat = kmats[part]
            for k in range(1, count - 1):
                torch.baddbmm(out[k - 1, part], kmat, out[k, part], beta=-1.0, out=out[k + 1, part])
        return out

    @staticmethod
    def adjoint_vectors(kmats_t: torch.Tensor, start: torch.Tensor, count: int, chunk: int) -> torch.Tensor:
        """(count, b, C, 1): u_0 = start, u_1 = K^T u_0, u_{j+1} = K^T u_j - u_{j-1} for each K^T."""
        b, c, _ = kmats_t.shape
        out = torch.empty(count, b, c, 1, dtype=kmats_t.dtype, device=kmats_t.device)
        out[0].copy_(start)
        for first in range(0, b, chunk):
            part = slice(first, first + chunk)
            kmat_t = kmats_t[part]
            if count > 1:
                torch.bmm(kmat_t, out[0, part], out=out[1, part])
            for j in range(1, count - 1):
                torch.baddbmm(out[j - 1, part], kmat_t, out[j, part], beta=-1.0, out=out[j + 1, part])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z: torch.Tensor):
        x = ctx.saved_tensors[0]
        with torch.autocast(device_type=x.device.type, enabled=False):
            grad_x = torch.zeros(x.shape, dtype=x.dtype, device=x.device)
            _SOCASecondOrderPool.add_input_gradient(grad_x, grad_z, ctx.saved_tensors, ctx.floor, ctx.chunk)
        return grad_x, None, None, None

    @staticmethod
    def add_input_gradient(grad_x: torch.Tensor, grad_z: torch.Tensor, saved: "tuple[torch.Tensor, ...]",
                           floor: float, chunk: int) -> None:
        """grad_x += dL/dx for z's upstream gradient grad_z; saved = what forward saved, in its order.

        grad_x is a contiguous (b, C, H, W) tensor of x's dtype; the product with the centred input is
        taken ``chunk`` images at a time, each added in place (no input-sized temporary)."""
        x, coefficients, means, traces, kmats, vectors, series = saved
        b, c, h, w = x.shape
        m = h * w
        n = coefficients.numel() - 1
        dtype = coefficients.dtype
        grad_z = grad_z.to(dtype)
        clamped = traces.clamp_min(floor)
        root = clamped.sqrt()
        grad_series = grad_z * (root / c)[:, None]
        # z = sqrt(t) s / C: the part of dL/dt that comes through sqrt(t)
        grad_trace = (grad_z * series).sum(1) / (2.0 * root * c)
        adjoint = _SOCASecondOrderPool.adjoint_vectors(kmats.mT, grad_series[:, :, None], n, chunk)
        # row r: adjoint of t_{r+1} = sum_j c_{r+1+j} u_j; t_1 = K t_0 / 2 carries the factor 1/2
        adjoint_t = torch.mm(_SOCASecondOrderPool.hankel(coefficients), adjoint.view(n, -1)).view(n, b, c)
        adjoint_t[0].mul_(0.5)
        forward_t = vectors[..., 0]
        grad_k = torch.bmm(adjoint_t.permute(1, 2, 0), forward_t[:n].permute(1, 0, 2))
        # K = (4/t) Sigma - 2I  =>  dL/dSigma = (4/t) dL/dK,  dL/dt -= <dL/dK, K + 2I> / t, where
        # <dL/dK, K + 2I> = sum_r a_r . (K + 2I) t_r and K t_r = t_{r+1} + t_{r-1} (K t_0 = 2 t_1)
        k_times_t = forward_t[1:] + torch.cat([forward_t[1:2], forward_t[:n - 1]])
        inner = (adjoint_t * (k_times_t + 2.0 * forward_t[:n])).sum((0, 2))
        # t = tr(Sigma) unless clamped; the clamp passes no gradient
        grad_t = (grad_trace - inner / clamped) * (traces > floor).to(dtype)
        # Sigma = Xc Xc^T / M  =>  dL/dX = (G + G^T) Xc / M (the mean's path adds (..) Xc 1 = 0);
        # the 1/M is folded into G here
        grad_sigma = grad_k.mul_((4.0 / (m * clamped))[:, None, None])
        grad_sigma.diagonal(dim1=1, dim2=2).add_((grad_t / m)[:, None])
        sym = grad_sigma + grad_sigma.mT
        features = x.reshape(b, c, m)
        flat = grad_x.view(b, c, m)
        for start in range(0, b, chunk):
            part = slice(start, start + chunk)
            centred = torch.sub(features[part], means[part, :, None])
            if flat.dtype == dtype:
                flat[part].baddbmm_(sym[part], centred)
            else:  # half/bfloat16 x: the product in float32, added into the low-precision gradient
                flat[part].add_(torch.bmm(sym[part], centred))

    @staticmethod
    def hankel(coefficients: torch.Tensor) -> torch.Tensor:
        """H[r, j] = c_{r+1+j} (0 past the degree): the adjoint of t_{r+1} is sum_j H[r, j] u_j."""
        n = coefficients.numel() - 1
        padded = torch.cat([coefficients, coefficients.new_zeros(n)])
        index = torch.arange(n, device=coefficients.device)
        return padded[index[:, None] + index[None, :] + 1]

    @staticmethod
    def plain(x: torch.Tensor, coefficients: "list[float]", floor: float) -> torch.Tensor:
        """The same z with batched tensor ops under plain autograd (for jit.trace, ONNX, compile).

        The coefficients stay Python floats, so a traced or exported graph holds them as scalars.
        """
        b, c, h, w = x.shape
        m = h * w
        dtype = torch.promote_types(x.dtype, torch.float32)
        xf = x.reshape(b, c, m).to(dtype)
        centred = xf - xf.mean(2, keepdim=True)
        sigma = torch.matmul(centred, centred.transpose(1, 2)) / m
        clamped = (centred * centred).sum((1, 2)).div(m).clamp_min(floor)
        # four times A; K t = 4A t - 2t keeps the identity matrix out of the graph
        a4 = sigma * (4.0 / clamped)[:, None, None]
        previous = torch.ones(b, c, 1, dtype=dtype, device=x.device)
        current = 0.5 * torch.matmul(a4, previous) - previous
        total = coefficients[0] * previous + coefficients[1] * current
        for k in range(2, len(coefficients)):
            previous, current = current, torch.matmul(a4, current) - 2.0 * current - previous
            total = total + coefficients[k] * current
        return total.squeeze(2) * (clamped.sqrt() / c)[:, None]


class _SOCAGatedPool(torch.autograd.Function):
    """out = x * sigmoid(W_up ReLU(W_down z + b_down) + b_up), z = _SOCASecondOrderPool(x), in one Function.

    Under plain autograd the gate multiply and the pool each produce an input-sized gradient for x
    (g * gate, then the pool's (G + G^T) Xc / M), autograd adds them, and the multiply's gradient for
    the gate takes an input-sized g * x first: four input-sized buffers live at once at P3. Here
    the backward writes g * gate into one buffer, takes sum_hw g * x ``chunk`` images at a time, runs
    the gate MLP's backward on (b, C) matrices and adds the pool's part into the same buffer, image by
    image. The MLP runs in the statistics' dtype (float32 at least). Weights are the conv_du
    convolutions' (hidden, C, 1, 1) tensors; their gradients come back in their shapes and dtypes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w_down: torch.Tensor, b_down: torch.Tensor, w_up: torch.Tensor,
                b_up: torch.Tensor, coefficients: torch.Tensor, floor: float, chunk: int) -> torch.Tensor:
        dtype = coefficients.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            z, pool_saved = _SOCASecondOrderPool.pool(x, coefficients, floor, chunk)
            down = w_down.to(dtype).flatten(1)
            up = w_up.to(dtype).flatten(1)
            hidden = torch.relu(torch.addmm(b_down.to(dtype), z, down.t()))
            gate = torch.sigmoid(torch.addmm(b_up.to(dtype), hidden, up.t()))
            out = x * gate.to(x.dtype)[:, :, None, None]
        ctx.save_for_backward(*pool_saved, z, hidden, gate, down, up, w_down, w_up)
        ctx.pool_count = len(pool_saved)
        ctx.floor = floor
        ctx.chunk = chunk
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        saved = ctx.saved_tensors
        pool_saved = saved[:ctx.pool_count]
        z, hidden, gate, down, up, w_down, w_up = saved[ctx.pool_count:]
        x = pool_saved[0]
        b, c = x.shape[:2]
        dtype = gate.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            # dL/dgate[n, k] = sum_hw g * x, a chunk of images at a time
            grad_gate = torch.empty(b, c, dtype=dtype, device=x.device)
            for start in range(0, b, ctx.chunk):
                part = slice(start, start + ctx.chunk)
                torch.sum(grad_out[part].to(dtype) * x[part], (2, 3), out=grad_gate[part])
            grad_gate_pre = grad_gate.mul_(gate * (1.0 - gate))
            grad_hidden = torch.mm(grad_gate_pre, up).mul_(hidden > 0)
            grad_z = torch.mm(grad_hidden, down)
            grads_w = [None, None, None, None]
            if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
                grads_w[0] = torch.mm(grad_hidden.t(), z).view(w_down.shape).to(w_down.dtype)
                grads_w[1] = grad_hidden.sum(0).to(w_down.dtype)
            if ctx.needs_input_grad[3] or ctx.needs_input_grad[4]:
                grads_w[2] = torch.mm(grad_gate_pre.t(), hidden).view(w_up.shape).to(w_up.dtype)
                grads_w[3] = grad_gate_pre.sum(0).to(w_up.dtype)
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous for the views
                torch.mul(grad_out, gate.to(x.dtype)[:, :, None, None], out=grad_x)
                _SOCASecondOrderPool.add_input_gradient(grad_x, grad_z, pool_saved, ctx.floor, ctx.chunk)
        return (grad_x, *grads_w, None, None, None)


class SOCA(nn.Module):
    """Second-order channel attention (SAN's SOCA): gates from the square root of the covariance.

    Args:
        c1: input channels (any c1 >= 1).
        c2: output channels as YOLOv5's parse_model passes them; None or c1 (the module keeps width).
        reduction: bottleneck reduction of the gate MLP. 8 is the default of the SOCA class in the
            published SAN code, but the SAN network builds its SOCA blocks with reduction 16 and was
            trained that way (YAML ``[c, 16]`` for SAN's setting). The hidden width is
            max(c1 // reduction, 1): small YOLO widths keep at least one hidden channel rather than
            failing; that is the choice for yolov5n-size layers.

    The statistics are computed in float32 (float64 for float64 input) with autocast off, whatever
    the model's dtype, and the trace is clamped at ``trace_floor`` so a constant or 1x1 input gives
    a finite gate. Only the row mean of the matrix square root is used, so five matrix Newton-Schulz
    iterations reduce to p(A) 1 for one fixed polynomial p, evaluated by a Chebyshev recurrence of
    matrix-vector products (same numbers, see _SOCASecondOrderPool). The pool, the gate MLP and the
    gate multiply are one autograd Function (_SOCAGatedPool) whose backward writes the input
    gradient into a single buffer: at P3, batch 8, forward+backward holds 58 MB of tensors at its
    peak instead of 102 MB (output and input gradient, 26 MB each, are the floor). The MLP always
    applies ReLU and sigmoid with conv_du's weights (the activation modules are not called; that
    YOLOv5 switches them to in-place changes nothing). The state-dict keys (conv_du.0, conv_du.2)
    are those of the published SAN code.
    """

    newton_schulz_iterations = 5
    trace_floor = 1e-12

    def __init__(self, c1: int, c2: "int | None" = None, reduction: int = 8) -> None:
        super().__init__()
        if isinstance(c1, bool) or not isinstance(c1, int) or c1 < 1:
            raise ValueError(f"SOCA: c1={c1!r} must be an integer >= 1 (the input channels)")
        if c2 is not None and c2 != c1:
            raise ValueError(f"SOCA: c2={c2} must be None or equal to c1={c1}: the module keeps its input width")
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"SOCA: reduction={reduction!r} must be an integer >= 1 "
                             f"(the hidden width is max(c1 // reduction, 1))")
        hidden = max(c1 // reduction, 1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(c1, hidden, 1, bias=True),
            nn.ReLU(),
            nn.Conv2d(hidden, c1, 1, bias=True),
            nn.Sigmoid(),
        )
        self.ns_coefficients = SOCA.newton_schulz_chebyshev(self.newton_schulz_iterations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down, act, up, sigmoid = self.conv_du
        with torch.autocast(device_type=x.device.type, enabled=False):
            if not SOCA.capturing_graph():
                dtype = torch.promote_types(x.dtype, torch.float32)
                coefficients = torch.tensor(self.ns_coefficients, dtype=dtype, device=x.device)
                chunk = 1 if x.device.type == "cpu" else max(x.shape[0], 1)
                return _SOCAGatedPool.apply(x, down.weight, down.bias, up.weight, up.bias, coefficients,
                                            self.trace_floor, chunk)
            z = _SOCASecondOrderPool.plain(x, self.ns_coefficients, self.trace_floor)
        # graph capture: plain tensor ops that a tracer or exporter records
        # 1x1 convolutions of a (b, C, 1, 1) tensor are matrix products: linear() on the same weights
        # skips the convolution kernels' per-call set-up (at P5 their backward outweighed the covariance;
        # reached through torch so that common.py needs no extra import)
        linear = torch.nn.functional.linear
        hidden = act(linear(z.to(down.weight.dtype), down.weight.flatten(1), down.bias))
        gate = sigmoid(linear(hidden, up.weight.flatten(1), up.bias))
        return x * gate.to(x.dtype)[:, :, None, None]

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

    @staticmethod
    def newton_schulz_chebyshev(iterations: int) -> "list[float]":
        """Chebyshev coefficients c_k of p with p(lambda) = sum_k c_k T_k(2 lambda - 1).

        p is the scalar Newton-Schulz map y_0 = lambda, z_0 = 1, t = (3 - z y)/2, y <- y t, z <- t z,
        run on Chebyshev series with T_i T_j = (T_{i+j} + T_|i-j|)/2, in float64: this is exact
        algebra up to rounding (no sampling). The coefficients fall faster than geometrically (for
        five iterations |c_k| < 1e-17 beyond k = 45 of 122), so the series is cut where the
        remaining tail sum is below 2**-56, an eighth of float64's unit roundoff: on [0, 1]
        the cut polynomial and p differ by less than float64 can resolve next to p(1) = 1.
        """
        y = [0.5, 0.5]  # lambda = (x + 1) / 2
        z = [1.0]
        for _ in range(iterations):
            t = [-0.5 * value for value in SOCA.chebyshev_product(z, y)]
            t[0] += 1.5
            y, z = SOCA.chebyshev_product(y, t), SOCA.chebyshev_product(t, z)
        tail = 0.0
        degree = len(y) - 1
        while degree > 0 and tail + abs(y[degree]) < 2.0 ** -56:
            tail += abs(y[degree])
            degree -= 1
        return y[:degree + 1]

    @staticmethod
    def chebyshev_product(a: "list[float]", b: "list[float]") -> "list[float]":
        """Coefficients of (sum a_i T_i)(sum b_j T_j), using T_i T_j = (T_{i+j} + T_|i-j|) / 2."""
        out = [0.0] * (len(a) + len(b) - 1)
        for i, ai in enumerate(a):
            for j, bj in enumerate(b):
                half = 0.5 * ai * bj
                out[i + j] += half
                out[abs(i - j)] += half
        return out
