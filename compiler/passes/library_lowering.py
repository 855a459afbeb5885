"""The portable lowering of library regions: matmul and 2-D convolution as plain reductions.

Fusion maps matmul (+bias, +relu) and NHWC x HWIO convolutions onto library bodies
(`MatmulBody`, `ConvBody`) that the CPU target turns into its register-blocked kernels. A target
without such kernels (a new GPU target, before it has tuned ones) takes this lowering instead:
the same computation as a `ReductionBody` over the output and contraction dims, which every
target must support. It is exact kernel IR, so it is correct before it is fast.
"""

from __future__ import annotations

import numpy as np

from compiler import kernel_ir as kir

F32 = np.dtype(np.float32)
I = kir.INDEX


def matmul_slots(region: kir.KernelRegion, bias: bool) -> tuple[int, int, int, int | None]:
    """(A, B, C, bias) slots: fusion gives each distinct (tensor, shape) one input slot, so A
    and B share one when they are the same square tensor."""
    inputs = [i for i, d in enumerate(region.bindings) if not d.output]
    output = next(i for i, d in enumerate(region.bindings) if d.output)
    bias_slot = inputs[-1] if bias else None
    operands = inputs[:-1] if bias else inputs
    return operands[0], operands[1] if len(operands) > 1 else operands[0], output, bias_slot


def b_index(body: kir.MatmulBody, batch: kir.Expr, k: kir.Expr, n: kir.Expr) -> tuple[kir.Expr, ...]:
    """Where B[batch, k, n] is in binding 1: row-major, or in panel n // NR, row k, column
    n % NR when pre-packed (`b_panel` = NR)."""
    if not body.b_panel:
        return batch, k, n
    return (kir.Compute("divide", (n, _c(body.b_panel)), I), k, kir.Compute("remainder", (n, _c(body.b_panel)), I))


def _c(v: int) -> kir.Const:
    return kir.Const(v, I)


def _add(*xs: kir.Expr) -> kir.Expr:
    out = xs[0]
    for x in xs[1:]:
        out = kir.Compute("add", (out, x), out.dtype)
    return out


def _mul(x: kir.Expr, k: int) -> kir.Expr:
    return x if k == 1 else kir.Compute("multiply", (x, _c(k)), I)


def _grid(shape: tuple[int, ...]) -> kir.Grid:
    return kir.tile_elementwise(shape)


def _applied(activation: kir.Expr, value: kir.Expr, memo: dict[int, kir.Expr]) -> kir.Expr:
    """`activation` (of Arg(0), constants and computes) of `value`."""
    if id(activation) not in memo:
        if isinstance(activation, kir.Arg):
            memo[id(activation)] = value
        elif isinstance(activation, kir.Compute):
            operands = tuple(_applied(x, value, memo) for x in activation.operands)
            memo[id(activation)] = kir.Compute(activation.op, operands, activation.dtype, activation.attr)
        else:
            memo[id(activation)] = activation
    return memo[id(activation)]


def matmul_as_reduction(region: kir.KernelRegion) -> kir.KernelRegion:
    """C[b, i, j] = sum_p A[b, i, p] * B[b, p, j] (then + bias[j], relu, the activation) over shape
    (batch, m, n, k) with k reduced; B indexed by `b_index` (pre-packed weights too)."""
    body = region.body
    assert isinstance(body, kir.MatmulBody)
    a, b, c, bias = matmul_slots(region, "bias_add" in body.epilogue)
    bb, i, j, p = (kir.Coord(d) for d in range(4))
    product = kir.Compute("multiply", (kir.Load(a, (bb, i, p), F32), kir.Load(b, b_index(body, bb, p, j), F32)), F32)
    combiner = (kir.Compute("add", (kir.Arg(0, F32), kir.Arg(1, F32)), F32),)
    out: kir.Expr = kir.Arg(0, F32)
    for step in body.epilogue:
        if step == "bias_add":
            out = kir.Compute("add", (out, kir.Load(bias, (kir.Coord(2),), F32)), F32)
        elif step == "relu":
            out = kir.Compute("maximum", (out, kir.Const(0.0, F32)), F32)
    if body.activation is not None:
        out = _applied(body.activation, out, {})
    shape = (body.batch, body.m, body.n, body.k)
    new = kir.ReductionBody(shape, (3,), (product,), (kir.Const(0.0, F32),), combiner, (out,), (c,),
                            _grid((body.batch, body.m, body.n)))
    return kir.KernelRegion(region.name, region.bindings, new)


def conv_as_reduction(region: kir.KernelRegion) -> kir.KernelRegion:
    """out[n, oh, ow, f] = sum_{kh, kw, c} in[n, oh*sh + kh*dh - pt, ow*sw + kw*dw - pl, c] *
    filter[kh, kw, c, f], zero outside the input (padding); depthwise: input channel f, c = 0;
    then the epilogue (bias, residual, relu, minimum) on the sum.
    A pre-packed filter (`filter_panel` = NR) is read in panel f // NR, row (kh*KW + kw)*C + c,
    column f % NR."""
    body = region.body
    assert isinstance(body, kir.ConvBody)
    out_slot = next(i for i, d in enumerate(region.bindings) if d.output)
    src, flt = 0, 1 if out_slot > 1 else 0  # one slot when the input is the filter
    n_, h, w, _ = body.input_shape
    kh_, kw_, cin, f_ = body.filter_shape
    oh_, ow_ = region.bindings[out_slot].shape[1:3]
    (pt, _), (pl, _) = body.padding
    sh, sw = body.strides
    dh, dw = body.dilation
    n, oh, ow, f, kh, kw, c = (kir.Coord(d) for d in range(7))
    y = _add(_mul(oh, sh), _mul(kh, dh), _c(-pt))
    x = _add(_mul(ow, sw), _mul(kw, dw), _c(-pl))
    inside = kir.Compute("and", (
        kir.Compute("and", (kir.Compute("compare", (y, _c(0)), np.dtype(np.bool_), "GE"),
                            kir.Compute("compare", (y, _c(h)), np.dtype(np.bool_), "LT")), np.dtype(np.bool_)),
        kir.Compute("and", (kir.Compute("compare", (x, _c(0)), np.dtype(np.bool_), "GE"),
                            kir.Compute("compare", (x, _c(w)), np.dtype(np.bool_), "LT")), np.dtype(np.bool_))),
        np.dtype(np.bool_))
    yc = kir.Compute("clamp", (_c(0), y, _c(h - 1)), I)
    xc = kir.Compute("clamp", (_c(0), x, _c(w - 1)), I)
    channel = f if body.depthwise else c
    at = (n, channel, yc, xc) if body.channels_first else (n, yc, xc, channel)
    value = kir.Compute("select", (inside, kir.Load(src, at, F32), kir.Const(0.0, F32)), F32)
    tap = (kh, kw, c, f)
    if body.filter_panel:
        nr = _c(body.filter_panel)
        tap = (kir.Compute("divide", (f, nr), I), _add(_mul(_add(_mul(kh, kw_), kw), cin), c),
               kir.Compute("remainder", (f, nr), I))
    product = kir.Compute("multiply", (value, kir.Load(flt, tap, F32)), F32)
    combiner = (kir.Compute("add", (kir.Arg(0, F32), kir.Arg(1, F32)), F32),)
    shape = (n_, oh_, ow_, f_, kh_, kw_, cin)
    out: kir.Expr = kir.Arg(0, F32)
    extra = iter(range(out_slot + 1, len(region.bindings)))  # the epilogue's operands, in its order
    for step in body.epilogue:
        if step == "bias_add":
            out = kir.Compute("add", (out, kir.Load(next(extra), (f,), F32)), F32)
        elif step == "residual_add":
            out = kir.Compute("add", (out, kir.Load(next(extra), (n, oh, ow, f), F32)), F32)
        elif step == "relu":
            out = kir.Compute("maximum", (out, kir.Const(0.0, F32)), F32)
        else:  # "minimum:V"
            out = kir.Compute("minimum", (out, kir.Const(float(step.partition(":")[2]), F32)), F32)
    new = kir.ReductionBody(shape, (4, 5, 6), (product,), (kir.Const(0.0, F32),), combiner, (out,),
                            (out_slot,), _grid((n_, oh_, ow_, f_)))
    return kir.KernelRegion(region.name, region.bindings, new)


def portable(region: kir.KernelRegion) -> kir.KernelRegion:
    """`region` with library bodies replaced by their portable lowering."""
    if isinstance(region.body, kir.MatmulBody):
        return matmul_as_reduction(region)
    if isinstance(region.body, kir.ConvBody):
        return conv_as_reduction(region)
    return region
