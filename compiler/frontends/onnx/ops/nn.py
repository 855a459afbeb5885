"""Contractions and windows: MatMul, Gemm, Einsum, Det, Conv, ConvTranspose, MaxPool (and its
Indices), AveragePool, GlobalAveragePool/GlobalMaxPool.

MatMul with a 2-D right operand (a weight) flattens the left operand's batch dims into rows, so
the CPU backend sees one [M, K] x [K, N] matmul (its register-blocked kernel, bias fused) rather
than a batched one. Conv keeps ONNX's NCHW/OIHW layouts in the IR's dimension numbers; fusion picks
the kernel layout.
"""

from __future__ import annotations

import itertools
import math
import string

import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of, lowest, scalar_body, shape_of
from compiler.frontends.onnx.graph import Ctx
from compiler.ir import Value


def matmul(c: Ctx, a: Tensor, b: Tensor) -> Tensor:
    """numpy.matmul: 1-D operands promoted, batch dims broadcast. float16/bfloat16 products
    accumulate in float32 (as numpy and ONNX Runtime do), rounded once at the end."""
    if dtype_of(a) != dtype_of(b):
        raise c.error(f"operand types differ: {dtype_of(a)} and {dtype_of(b)}")
    if dtype_of(a).kind in "fV" and dtype_of(a).itemsize == 2:
        return c.b.convert(matmul(c, c.b.convert(a, np.float32), c.b.convert(b, np.float32)), dtype_of(a))
    sa, sb = shape_of(a), shape_of(b)
    if not sa or not sb:
        raise c.error("MatMul operands must have rank >= 1")
    squeeze_a, squeeze_b = len(sa) == 1, len(sb) == 1
    if squeeze_a:
        a, sa = c.b.reshape(a, [1, sa[0]]), (1, sa[0])
    if squeeze_b:
        b, sb = c.b.reshape(b, [sb[0], 1]), (sb[0], 1)
    if sa[-1] != sb[-2]:
        raise c.error(f"cannot multiply {sa} by {sb}")
    batch = tuple(np.broadcast_shapes(sa[:-2], sb[:-2]))
    if len(sb) == 2:  # weights: one 2-D matmul over all rows
        rows = c.b.view(a, [math.prod(sa[:-1]), sa[-1]])
        product = c.b.dot(rows, b, 0, 1, 0)
        y = c.b.view(product, [*sa[:-1], sb[-1]])
        if isinstance(y, Value) and y is not product:
            c.b.matmul_rows[y] = product
    else:
        a = c.b.broadcast(a, [*batch, *sa[-2:]])
        b = c.b.broadcast(b, [*batch, *sb[-2:]])
        n = len(batch)
        y = c.b.dot(a, b, n, n + 1, n)
    out = list(shape_of(y))
    if squeeze_b:
        out.pop(-1)
    if squeeze_a:
        out.pop(-1 if squeeze_b else -2)
    return c.b.reshape(y, out)


def _det(c: Ctx) -> list[Tensor]:
    """Determinants of [..., n, n] matrices by the Leibniz expansion (n! products of n entries),
    for n <= 4; larger matrices would need a pivoted LU, which the frontend lacks."""
    x = c.input(0)
    xs = shape_of(x)
    if len(xs) < 2 or xs[-1] != xs[-2]:
        raise c.error(f"Det needs square matrices [..., n, n], got {xs}")
    n, batch = xs[-1], list(xs[:-2])
    if n > 4:
        raise c.error(f"Det of {n}x{n} matrices is not supported (at most 4x4)")
    entry = lambda i, j: c.b.reshape(c.b.slice(x, [0] * len(batch) + [i, j], [*batch, i + 1, j + 1]), batch)  # noqa: E731
    total = None
    for perm in itertools.permutations(range(n)):
        term = entry(0, perm[0])
        for i in range(1, n):
            term = c.b.binary("multiply", term, entry(i, perm[i]))
        odd = sum(1 for i in range(n) for j in range(i + 1, n) if perm[i] > perm[j]) % 2
        total = term if total is None else c.b.binary("subtract" if odd else "add", total, term)
    return [total]


def _matmul(c: Ctx) -> list[Tensor]:
    return [matmul(c, c.input(0), c.input(1))]


def _matmul_integer(c: Ctx) -> list[Tensor]:
    """(A - a_zero_point) @ (B - b_zero_point) in int32 (a per-row A zero point, per-column B one)."""
    a, b = c.b.convert(c.input(0), np.int32), c.b.convert(c.input(1), np.int32)
    azp, bzp = c.optional(2), c.optional(3)
    if azp is not None:
        azp = c.b.convert(azp, np.int32)
        a = c.b.binary("subtract", a, azp if len(shape_of(azp)) == 0 else c.b.reshape(azp, [shape_of(azp)[0], 1]))
    if bzp is not None:
        b = c.b.binary("subtract", b, c.b.convert(bzp, np.int32))
    return [matmul(c, a, b)]


def _gemm(c: Ctx) -> list[Tensor]:
    a, b, bias = c.input(0), c.input(1), c.optional(2)
    if c.attr("transA", 0):
        a = a.T.copy() if isinstance(a, np.ndarray) else c.b.transpose(a, [1, 0])
    if c.attr("transB", 0):
        b = b.T.copy() if isinstance(b, np.ndarray) else c.b.transpose(b, [1, 0])
    dtype = dtype_of(a)
    alpha, beta = c.attr("alpha", 1.0), c.attr("beta", 1.0)
    if alpha != 1.0:
        b = b * dtype.type(alpha) if isinstance(b, np.ndarray) else c.b.binary("multiply", b, c.b.scalar(alpha, dtype))
    y = matmul(c, a, b)
    if bias is not None and beta != 0.0:
        if beta != 1.0:
            bias = c.b.binary("multiply", bias, c.b.scalar(beta, dtype))
        y = c.b.binary("add", y, bias)
    return [y]


def _conv_geometry(c: Ctx, spatial: tuple[int, ...], kernel: tuple[int, ...]):
    """(strides, dilations, [(low, high)] padding) of a Conv or pool node."""
    n = len(spatial)
    strides = list(c.attr("strides", [1] * n))
    dilations = list(c.attr("dilations", [1] * n))
    auto = c.attr("auto_pad", "NOTSET")
    pads = list(c.attr("pads", [0] * (2 * n)))
    padding = [(pads[i], pads[i + n]) for i in range(n)]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        padding = []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            padding.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
    elif auto == "VALID":
        padding = [(0, 0)] * n
    elif auto != "NOTSET":
        raise c.error(f"unknown auto_pad '{auto}'")
    return strides, dilations, padding


def _conv_attrs(n: int, strides, dilations, padding, groups: int, lhs_dilation=None) -> dict:
    sp = tuple(range(2, 2 + n))
    return {"input_batch_dimension": 0, "input_feature_dimension": 1, "input_spatial_dimensions": sp,
            "kernel_output_feature_dimension": 0, "kernel_input_feature_dimension": 1, "kernel_spatial_dimensions": sp,
            "output_batch_dimension": 0, "output_feature_dimension": 1, "output_spatial_dimensions": sp,
            "window_strides": tuple(strides), "padding": tuple(tuple(p) for p in padding),
            "lhs_dilation": tuple(lhs_dilation or (1,) * n), "rhs_dilation": tuple(dilations),
            "window_reversal": (False,) * n, "feature_group_count": groups, "batch_group_count": 1}


def _window_out(size: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
    return max(0, (size + lo + hi - ((k - 1) * d + 1)) // s + 1)


def _zero_padding_of(c: Ctx, x: Tensor) -> tuple[Tensor, list[tuple[int, int]]] | None:
    """(source, spatial pads) when `x` is a Pad with zeros of the spatial dims only (TF-style
    "SAME" padding exported as its own node, as MobileNetV2 has before each convolution): a
    convolution then pads the source itself instead of reading a padded copy."""
    if not isinstance(x, Value):
        return None
    producers = {id(r): op for op in reversed(c.b.ops[-64:]) for r in op.results}
    op = producers.get(id(x))
    if op is None or op.name != "pad":
        return None
    fill = producers.get(id(op.operands[1]))
    lo, hi = op.attrs["edge_padding_low"], op.attrs["edge_padding_high"]
    if fill is None or fill.name != "constant" or np.any(np.asarray(fill.attrs["value"]) != 0) \
            or any(op.attrs["interior_padding"]) or any(lo[:2]) or any(hi[:2]) or min(*lo, *hi) < 0:
        return None
    return op.operands[0], list(zip(lo[2:], hi[2:]))


def _conv(c: Ctx) -> list[Tensor]:
    return [convolve(c, c.input(0), c.input(1), c.optional(2))]


def convolve(c: Ctx, x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """ONNX Conv of x by w (its geometry from the node's attributes)."""
    xs, ws = shape_of(x), shape_of(w)
    n = len(xs) - 2
    groups = c.attr("group", 1)
    if len(ws) != len(xs) or xs[1] != ws[1] * groups or ws[0] % groups:
        raise c.error(f"input {xs} and weight {ws} do not fit group={groups}")
    strides, dilations, padding = _conv_geometry(c, xs[2:], ws[2:])
    out = [xs[0], ws[0], *(_window_out(xs[2 + i], ws[2 + i], strides[i], dilations[i], *padding[i]) for i in range(n))]
    padded = _zero_padding_of(c, x)
    if padded is not None:  # the Pad's zeros become the convolution's own padding
        x, pads = padded
        padding = [(lo + a, hi + b) for (lo, hi), (a, b) in zip(padding, pads)]
    attrs = _conv_attrs(n, strides, dilations, padding, groups)
    if isinstance(w, np.ndarray):  # constant weights: laid out [spatial..., in, out] (HWIO) once here,
        w = np.ascontiguousarray(np.moveaxis(w, (0, 1), (-1, -2)))  # not transposed by every call
        attrs.update(kernel_spatial_dimensions=tuple(range(n)), kernel_input_feature_dimension=n,
                     kernel_output_feature_dimension=n + 1)
    y = c.b.emit("convolution", [x, w], out, dtype_of(x), attrs)
    if bias is not None:
        y = c.b.binary("add", y, c.b.reshape(bias, [ws[0]] + [1] * n))
    return y


def _conv_transpose(c: Ctx) -> list[Tensor]:
    x, w, bias = c.input(0), c.input(1), c.optional(2)
    xs, ws = shape_of(x), shape_of(w)
    n = len(xs) - 2
    g = c.attr("group", 1)
    cin, mg, kernel = ws[0], ws[1], ws[2:]
    strides = list(c.attr("strides", [1] * n))
    dilations = list(c.attr("dilations", [1] * n))
    out_pad = list(c.attr("output_padding", [0] * n))
    pads = list(c.attr("pads", [0] * (2 * n)))
    auto = c.attr("auto_pad", "NOTSET")
    out_shape = c.attr("output_shape")
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = list(out_shape)[-n:] if out_shape is not None else [xs[2 + i] * strides[i] for i in range(n)]
        for i in range(n):
            total = strides[i] * (xs[2 + i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - target[i]
            if auto == "SAME_UPPER":
                pads[i], pads[i + n] = total // 2, total - total // 2
            else:
                pads[i], pads[i + n] = total - total // 2, total // 2
    # the gradient of a convolution: dilate the input by the strides, flip the kernel, swap its io
    wt = c.b.reshape(w, [g, cin // g, mg, *kernel])
    wt = c.b.transpose(wt, [0, 2, 1, *range(3, 3 + n)])
    wt = c.b.reshape(wt, [g * mg, cin // g, *kernel])
    wt = c.b.emit("reverse", [wt], shape_of(wt), dtype_of(w), {"dimensions": tuple(range(2, 2 + n))})
    padding = [((kernel[i] - 1) * dilations[i] - pads[i], (kernel[i] - 1) * dilations[i] - pads[i + n] + out_pad[i])
               for i in range(n)]
    out = [xs[0], g * mg, *((xs[2 + i] - 1) * strides[i] + 1 + padding[i][0] + padding[i][1] - (kernel[i] - 1) * dilations[i]
                            for i in range(n))]
    y = c.b.emit("convolution", [x, wt], out, dtype_of(x),
                 _conv_attrs(n, [1] * n, dilations, padding, g, lhs_dilation=strides))
    if bias is not None:
        y = c.b.binary("add", y, c.b.reshape(bias, [g * mg] + [1] * n))
    return [y]


def _max_pool_indices(c: Ctx, x: Tensor, kernel, strides, dilations, padding, out) -> Tensor:
    """MaxPool's Indices: per window the flat index (over the whole input, spatial dims in
    `storage_order`) of its first largest element, padding skipped, as the reference scans it."""
    xs = shape_of(x)
    spatial = xs[2:]
    dtype = dtype_of(x)
    padded = c.b.emit("pad", [x, c.b.scalar(lowest(dtype), dtype)], [*xs[:2], *(d + lo + hi for d, (lo, hi) in zip(spatial, padding))],
                      dtype, {"edge_padding_low": (0, 0, *(lo for lo, _ in padding)),
                              "edge_padding_high": (0, 0, *(hi for _, hi in padding)), "interior_padding": (0,) * len(xs)})
    order = "F" if c.attr("storage_order", 0) else "C"
    grid = np.indices(out)
    best, index = None, None
    for offset in np.ndindex(*kernel):
        pos = [grid[i] * strides[i] + offset[i] * dilations[i] - padding[i][0] for i in range(len(kernel))]
        real = np.logical_and.reduce([(p >= 0) & (p < d) for p, d in zip(pos, spatial)])
        source = np.where(real, np.ravel_multi_index([np.clip(p, 0, d - 1) for p, d in zip(pos, spatial)], spatial, order=order), -1)
        start = [0, 0, *(o * d for o, d in zip(offset, dilations))]
        limit = [*xs[:2], *(s + (m - 1) * st + 1 for s, m, st in zip(start[2:], out, strides))]
        value = c.b.slice(padded, start, limit, [1, 1, *strides])
        if best is None:
            best, index = value, c.b.broadcast(source.astype(np.int64), [*xs[:2], *out])
            continue
        take = c.b.binary("and", c.b.broadcast(real, [*xs[:2], *out]), c.b.binary(
            "or", c.b.compare("EQ", index, c.b.scalar(-1, np.int64)), c.b.compare("GT", value, best)))
        best = c.b.select(take, value, best)
        index = c.b.select(take, c.b.broadcast(source.astype(np.int64), [*xs[:2], *out]), index)
    channel = c.b.binary("add", c.b.binary("multiply", c.b.iota([*xs[:2], *out], 0), c.b.scalar(xs[1], np.int64)),
                         c.b.iota([*xs[:2], *out], 1))
    return c.b.binary("add", index, c.b.binary("multiply", channel, c.b.scalar(math.prod(spatial), np.int64)))


def _channels_last_window(c: Ctx, x: Tensor, init: float, combine: str, kernel, strides, dilations, padding,
                          out) -> Tensor:
    """reduce_window of an N x C x spatial... tensor over its spatial dims, computed with the
    channels last (N x spatial... x C) and transposed back. The CPU's reduction kernel vectorises
    along the output's last dim: channels are contiguous in a convolution's output (fusion keeps
    it NHWC, so the transposes cancel) where the last spatial dim is read with the stride, and
    the result feeds the next convolution without a transpose."""
    xs, dtype = shape_of(x), dtype_of(x)
    n = len(xs) - 2
    last = [0, *range(2, n + 2), 1]
    attrs = {"window_dimensions": (1, *kernel, 1), "window_strides": (1, *strides, 1),
             "base_dilations": (1,) * (n + 2), "window_dilations": (1, *dilations, 1),
             "padding": ((0, 0), *(tuple(p) for p in padding), (0, 0))}
    y = c.b.emit("reduce_window", [c.b.transpose(x, last), c.b.scalar(init, dtype)], [xs[0], *out, xs[1]], dtype,
                 attrs, [scalar_body(combine, dtype)])
    return c.b.transpose(y, [0, n + 1, *range(1, n + 1)])


def _pool(kind: str):
    def handler(c: Ctx) -> list[Tensor]:
        x = c.input(0)
        xs = shape_of(x)
        n = len(xs) - 2
        kernel = list(c.attr("kernel_shape"))
        strides, dilations, padding = _conv_geometry(c, xs[2:], kernel)
        out = []
        for i in range(n):
            lo, hi = padding[i]
            span = (kernel[i] - 1) * dilations[i] + 1
            if c.attr("ceil_mode", 0):
                o = -(-(xs[2 + i] + lo + hi - span) // strides[i]) + 1
                if (o - 1) * strides[i] >= xs[2 + i] + lo:  # a window may not start in the right padding
                    o -= 1
                padding[i] = (lo, max(hi, (o - 1) * strides[i] + span - xs[2 + i] - lo))
            else:
                o = _window_out(xs[2 + i], kernel[i], strides[i], dilations[i], lo, hi)
            out.append(o)
        dtype = dtype_of(x)

        def window(x: Tensor, init: float, combine: str) -> Tensor:
            return _channels_last_window(c, x, init, combine, kernel, strides, dilations, padding, out)

        if kind == "max":
            y = window(x, lowest(dtype), "maximum")
            if len(c.node.output) > 1 and c.node.output[1]:
                return [y, _max_pool_indices(c, x, kernel, strides, dilations, padding, out)]
            return [y]
        if kind == "lp":  # (sum |x|^p over the window)^(1/p); padding counts as 0
            p = c.b.scalar(c.attr("p", 2), dtype)
            total = window(c.b.binary("power", c.b.unary("abs", x), p), 0, "add")
            return [c.b.binary("power", total, c.b.binary("divide", c.b.scalar(1, dtype), p))]
        total = window(x, 0, "add")
        if c.attr("count_include_pad", 0):
            # the window counted over the explicit pads (not ceil_mode's extra)
            explicit = _conv_geometry(c, xs[2:], kernel)[2]
            ones = c.b.full(1, xs[2:], dtype)
            ones = c.b.emit("pad", [ones, c.b.scalar(1, dtype)], [d + lo + hi for d, (lo, hi) in zip(xs[2:], explicit)], dtype,
                            {"edge_padding_low": tuple(lo for lo, _ in explicit), "edge_padding_high": tuple(hi for _, hi in explicit),
                             "interior_padding": (0,) * n})
            extra = [(0, p[1] - e[1]) for p, e in zip(padding, explicit)]
        else:
            ones = c.b.full(1, xs[2:], dtype)
            extra = padding
        count = c.b.emit("reduce_window", [ones, c.b.scalar(0, dtype)], out, dtype, {
            "window_dimensions": tuple(kernel), "window_strides": tuple(strides), "base_dilations": (1,) * n,
            "window_dilations": tuple(dilations), "padding": tuple(tuple(p) for p in extra)}, [scalar_body("add", dtype)])
        return [c.b.binary("divide", total, count)]
    return handler


def _global_pool(kind: str):
    def handler(c: Ctx) -> list[Tensor]:
        x = c.input(0)
        xs = shape_of(x)
        axes = list(range(2, len(xs)))
        dtype = dtype_of(x)
        if kind == "max":
            y = c.b.reduce(x, axes, "maximum", lowest(dtype))
        else:
            y = c.b.binary("divide", c.b.reduce(x, axes, "add", 0), c.b.scalar(math.prod(xs[2:]), dtype))
        return [c.b.reshape(y, [*xs[:2]] + [1] * len(axes))]
    return handler


# --------------------------------------------------------------------------------------------
# Einsum

def _parse_einsum(c: Ctx, equation: str, ranks: list[int]) -> tuple[list[str], str]:
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise c.error(f"equation '{equation}' has {len(terms)} operands, the node {len(ranks)}")
    free = [ch for ch in string.ascii_letters if ch not in eq]
    ell_rank = max([r - len(t.replace("...", "")) for t, r in zip(terms, ranks) if "..." in t] or [0])
    ell = "".join(free[:ell_rank])
    expanded = []
    for t, r in zip(terms, ranks):
        if "..." in t:
            k = r - len(t.replace("...", ""))
            t = t.replace("...", ell[ell_rank - k:])
        if len(t) != r:
            raise c.error(f"term '{t}' does not fit an operand of rank {r}")
        expanded.append(t)
    if arrow:
        out = out.replace("...", ell)
    else:
        counts = {ch: "".join(expanded).count(ch) for ch in "".join(expanded)}
        out = ell + "".join(sorted(ch for ch, k in counts.items() if k == 1 and ch not in ell))
    return expanded, out


def _einsum(c: Ctx) -> list[Tensor]:
    xs = [x for x in c.inputs if x is not None]
    terms, out = _parse_einsum(c, c.attr("equation"), [len(shape_of(x)) for x in xs])
    xs, terms = [list(z) for z in zip(*(_diagonal(c, x, t) for x, t in zip(xs, terms)))]
    sizes: dict[str, int] = {}
    for t, x in zip(terms, xs):
        for ch, d in zip(t, shape_of(x)):
            sizes[ch] = max(sizes.get(ch, 1), d)
    x, t = xs[0], terms[0]
    for i in range(1, len(xs)):
        later = set(out).union(*terms[i + 1:])
        x, t = _contract(c, x, t, xs[i], terms[i], later, sizes)
    drop = [k for k, ch in enumerate(t) if ch not in out]
    if drop:
        x = c.b.reduce(x, drop, "add", 0)
        t = "".join(ch for ch in t if ch in out)
    return [c.b.transpose(x, [t.index(ch) for ch in out])]


def _diagonal(c: Ctx, x: Tensor, t: str) -> tuple[Tensor, str]:
    """An einsum operand whose term repeats a letter ('ii', 'bii') reduced to its diagonal: that
    letter once, last (a gather on the two dims flattened)."""
    while (dup := next((ch for ch in t if t.count(ch) > 1), None)) is not None:
        i = t.index(dup)
        j = t.index(dup, i + 1)
        shape = shape_of(x)
        if shape[i] != shape[j]:
            raise c.error(f"index '{dup}' of term '{t}' has sizes {shape[i]} and {shape[j]}")
        rest = [k for k in range(len(t)) if k not in (i, j)]
        flat = c.b.reshape(c.b.transpose(x, rest + [i, j]), [*(shape[k] for k in rest), shape[i] * shape[i]])
        x = c.b.take(flat, np.arange(shape[i], dtype=np.int64) * (shape[i] + 1), len(rest))
        t = "".join(t[k] for k in rest) + dup
    return x, t


def _contract(c: Ctx, a: Tensor, ta: str, b: Tensor, tb: str, keep: set[str], sizes: dict[str, int]):
    """Two einsum operands -> one, keeping the letters in `keep` (a dot_general)."""
    # sum away letters only one side has and nothing later needs
    for x_name in ("a", "b"):
        x, t, other = (a, ta, tb) if x_name == "a" else (b, tb, ta)
        drop = [k for k, ch in enumerate(t) if ch not in other and ch not in keep]
        if drop:
            x = c.b.reduce(x, drop, "add", 0)
            t = "".join(ch for k, ch in enumerate(t) if k not in drop)
        if x_name == "a":
            a, ta = x, t
        else:
            b, tb = x, t
    shared = [ch for ch in ta if ch in tb]
    batch = [ch for ch in shared if ch in keep]
    contract = [ch for ch in shared if ch not in keep]
    # broadcast size-1 dims of shared letters (ellipsis broadcasting)
    a = c.b.broadcast(a, [sizes[ch] if ch in shared else d for ch, d in zip(ta, shape_of(a))])
    b = c.b.broadcast(b, [sizes[ch] if ch in shared else d for ch, d in zip(tb, shape_of(b))])
    free_a = [ch for ch in ta if ch not in shared]
    free_b = [ch for ch in tb if ch not in shared]
    sa, sb = shape_of(a), shape_of(b)
    shape = [sa[ta.index(ch)] for ch in batch] + [sa[ta.index(ch)] for ch in free_a] + [sb[tb.index(ch)] for ch in free_b]
    y = c.b.emit("dot_general", [a, b], shape, dtype_of(a), {
        "lhs_batching_dimensions": tuple(ta.index(ch) for ch in batch),
        "rhs_batching_dimensions": tuple(tb.index(ch) for ch in batch),
        "lhs_contracting_dimensions": tuple(ta.index(ch) for ch in contract),
        "rhs_contracting_dimensions": tuple(tb.index(ch) for ch in contract)})
    return y, "".join(batch + free_a + free_b)


HANDLERS = {
    "MatMul": _matmul, "Det": _det, "MatMulInteger": _matmul_integer, "LpPool": _pool("lp"), "Gemm": _gemm, "Einsum": _einsum, "Conv": _conv, "ConvTranspose": _conv_transpose,
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": _global_pool("avg"), "GlobalMaxPool": _global_pool("max"),
}
