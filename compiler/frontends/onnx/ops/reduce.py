"""Reductions and the ops built from them: Reduce*, ArgMax/ArgMin, Softmax/LogSoftmax/Hardmax,
TopK (a stable sort), CumSum (a reduce_window), LayerNormalization, BatchNormalization,
InstanceNormalization, LpNormalization.

Reductions map onto the IR's `reduce` with a scalar reducer body; the means and variances are the
formulas ONNX's reference gives, computed in the input's float type.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of, highest, lowest, region, scalar_body, shape_of
from compiler.frontends.onnx.graph import Ctx, Handler


def _axes(c: Ctx, rank: int) -> list[int] | None:
    """The reduction axes (attribute before opset 18, ReduceSum's input from 13); None: all."""
    axes = c.ints(1, "axes", "axes")
    if not axes:
        return [] if c.attr("noop_with_empty_axes", 0) else None
    return sorted({c.axis(a, rank) for a in axes})


def reduce_keep(c: Ctx, x: Tensor, axes: list[int], body: str, init, keepdims: bool) -> Tensor:
    y = c.b.reduce(x, axes, body, init)
    if keepdims:
        y = c.b.reshape(y, [1 if i in axes else d for i, d in enumerate(shape_of(x))])
    return y


def _reduction(kind: str) -> Handler:
    def handler(c: Ctx) -> list[Tensor]:
        x = c.input(0)
        rank = len(shape_of(x))
        axes = _axes(c, rank)
        if axes is None:
            axes = list(range(rank))
        keep = bool(c.attr("keepdims", 1))
        dtype = dtype_of(x)
        if not axes:  # noop_with_empty_axes: the input (after the op's elementwise part)
            if kind == "ReduceL1":
                return [c.b.unary("abs", x)]
            if kind in ("ReduceSumSquare", "ReduceL2"):
                sq = c.b.binary("multiply", x, x)
                return [sq if kind == "ReduceSumSquare" else c.b.unary("sqrt", sq)]
            if kind == "ReduceLogSum":
                return [c.b.unary("log", x)]
            return [x]
        count = math.prod(shape_of(x)[a] for a in axes)
        if kind == "ReduceSum":
            return [reduce_keep(c, x, axes, "add", 0, keep)]
        if kind == "ReduceMean":
            s = reduce_keep(c, x, axes, "add", 0, keep)
            return [c.b.binary("divide", s, c.b.scalar(count, dtype))]
        if kind == "ReduceMax":
            return [reduce_keep(c, x, axes, "maximum", lowest(dtype), keep)]
        if kind == "ReduceMin":
            return [reduce_keep(c, x, axes, "minimum", highest(dtype), keep)]
        if kind == "ReduceProd":
            return [reduce_keep(c, x, axes, "multiply", 1, keep)]
        if kind == "ReduceL1":
            return [reduce_keep(c, c.b.unary("abs", x), axes, "add", 0, keep)]
        if kind == "ReduceSumSquare":
            return [reduce_keep(c, c.b.binary("multiply", x, x), axes, "add", 0, keep)]
        if kind == "ReduceL2":
            s = reduce_keep(c, c.b.binary("multiply", x, x), axes, "add", 0, keep)
            if dtype.kind in "iu":
                f = c.b.unary("sqrt", c.b.convert(s, np.float64))
                return [c.b.convert(c.b.unary("floor", c.b.binary("add", f, c.b.scalar(0.5, np.float64))), dtype)]
            return [c.b.unary("sqrt", s)]
        if kind == "ReduceLogSum":
            return [c.b.unary("log", reduce_keep(c, x, axes, "add", 0, keep))]
        if kind == "ReduceLogSumExp":
            m = reduce_keep(c, x, axes, "maximum", lowest(dtype), True)
            m = c.b.select(c.b.compare("EQ", c.b.unary("abs", m), c.b.scalar(np.inf, dtype)), c.b.scalar(0, dtype), m)
            e = c.b.unary("exponential", c.b.binary("subtract", x, m))
            s = c.b.unary("log", reduce_keep(c, e, axes, "add", 0, True))
            y = c.b.binary("add", s, m)
            return [y if keep else c.b.reshape(y, [d for i, d in enumerate(shape_of(x)) if i not in axes])]
        raise c.error(f"unknown reduction {kind}")
    return handler


def _arg(direction: str) -> Handler:
    def handler(c: Ctx) -> list[Tensor]:
        x = c.input(0)
        src = shape_of(x)
        axis = c.axis(c.attr("axis", 0), len(src))
        last = bool(c.attr("select_last_index", 0))
        dtype = dtype_of(x)

        def body(b, args):
            av, ai, bv, bi = args
            better = b.compare(direction, av, bv)
            tie = b.binary("and", b.compare("EQ", av, bv), b.compare("GT" if last else "LT", ai, bi))
            take_a = b.binary("or", better, tie)
            return [b.select(take_a, av, bv), b.select(take_a, ai, bi)]

        init = lowest(dtype) if direction == "GT" else highest(dtype)
        out = [d for i, d in enumerate(src) if i != axis]
        _, idx = c.b.emit_n("reduce", [x, c.b.iota(src, axis), c.b.scalar(init, dtype), c.b.scalar(-1 if last else 2**62, np.int64)],
                            [(out, dtype), (out, np.int64)], {"dimensions": (axis,)},
                            [region([dtype, np.int64, dtype, np.int64], body)])
        if c.attr("keepdims", 1):
            idx = c.b.reshape(idx, [1 if i == axis else d for i, d in enumerate(src)])
        return [idx]
    return handler


def softmax(c: Ctx, x: Tensor, axis: int, log: bool = False) -> Tensor:
    """(Log)Softmax along `axis`; float16/bfloat16 computed in float32 and rounded once."""
    dtype = dtype_of(x)
    if dtype.kind in "fV" and dtype.itemsize == 2:
        return c.b.convert(softmax(c, c.b.convert(x, np.float32), axis, log), dtype)
    m = reduce_keep(c, x, [axis], "maximum", lowest(dtype), True)
    shifted = c.b.binary("subtract", x, m)
    e = c.b.unary("exponential", shifted)
    s = reduce_keep(c, e, [axis], "add", 0, True)
    if log:
        return c.b.binary("subtract", shifted, c.b.unary("log", s))
    return c.b.binary("divide", e, s)


def _softmax(log: bool) -> Handler:
    def handler(c: Ctx) -> list[Tensor]:
        x = c.input(0)
        src = shape_of(x)
        if c.opset < 13:  # then: over all dims from `axis` on, as one flattened dim
            axis = c.axis(c.attr("axis", 1), len(src))
            flat = c.b.reshape(x, [math.prod(src[:axis]), math.prod(src[axis:])])
            return [c.b.reshape(softmax(c, flat, 1, log), src)]
        return [softmax(c, x, c.axis(c.attr("axis", -1), len(src)), log)]
    return handler


def _hardmax(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    src = shape_of(x)
    axis = c.axis(c.attr("axis", -1), len(src))
    idx = _arg("GT")(_Sub(c, {"axis": axis, "keepdims": 1}))[0]
    hot = c.b.compare("EQ", c.b.iota(src, axis), idx)
    return [c.b.select(hot, c.b.scalar(1, dtype_of(x)), c.b.scalar(0, dtype_of(x)))]


class _Sub(Ctx):
    """The same node seen with other attributes (an op built from another op's handler)."""

    def __init__(self, c: Ctx, attrs: dict) -> None:
        super().__init__(c.node, c.inputs, c.b, c.opset, c.scope)
        self._attrs = attrs


def _topk(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    src = shape_of(x)
    k = c.ints(1, "K", "k")[0]  # an attribute before opset 10
    axis = c.axis(c.attr("axis", -1), len(src))
    if not 0 <= k <= src[axis]:
        raise c.error(f"k={k} is out of range for a dim of {src[axis]}")
    largest = bool(c.attr("largest", 1))
    dtype = dtype_of(x)

    def less(b, args):  # the stable sort's comparator: larger (smaller) values first, ties by index
        av, bv, ai, bi = args
        return [b.compare("GT" if largest else "LT", av, bv)]

    values, idx = c.b.emit_n("sort", [x, c.b.iota(src, axis)], [(src, dtype), (src, np.int64)],
                             {"dimension": axis, "is_stable": True}, [region([dtype, dtype, np.int64, np.int64], less)])
    hi = list(src)
    hi[axis] = k
    return [c.b.slice(values, [0] * len(src), hi), c.b.slice(idx, [0] * len(src), hi)]


def _cumulative(body: str) -> Handler:
    def handler(c: Ctx) -> list[Tensor]:
        return [cumulative(c, body)]
    return handler


def cumulative(c: Ctx, body: str) -> Tensor:
    """CumSum / CumProd: a reduce_window whose window covers everything up to each element."""
    x = c.input(0)
    src = shape_of(x)
    axis = c.axis(c.ints(1, "axis")[0], len(src))
    n = src[axis]
    if c.attr("reverse", 0):
        x = c.b.emit("reverse", [x], src, dtype_of(x), {"dimensions": (axis,)})
    identity = 0 if body == "add" else 1
    if c.attr("exclusive", 0) and n:  # what comes before each element: shift by one, identity first
        lo, hi = [0] * len(src), list(src)
        hi[axis] = n - 1
        first = list(src)
        first[axis] = 1
        x = c.b.concat([c.b.full(identity, first, dtype_of(x)), c.b.slice(x, lo, hi)], axis)
    window = [1] * len(src)
    window[axis] = n
    pad = [(0, 0)] * len(src)
    pad[axis] = (n - 1, 0)
    y = c.b.emit("reduce_window", [x, c.b.scalar(identity, dtype_of(x))], src, dtype_of(x), {
        "window_dimensions": tuple(window), "window_strides": (1,) * len(src), "base_dilations": (1,) * len(src),
        "window_dilations": (1,) * len(src), "padding": tuple(pad)}, [scalar_body(body, dtype_of(x))])
    if c.attr("reverse", 0):
        y = c.b.emit("reverse", [y], src, dtype_of(x), {"dimensions": (axis,)})
    return y


def _lrn(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    xs = shape_of(x)
    dtype = dtype_of(x)
    size = c.attr("size")
    window = [1] * len(xs)
    window[1] = size
    pad = [(0, 0)] * len(xs)
    pad[1] = ((size - 1) // 2, size // 2)
    square = c.b.binary("multiply", x, x)
    total = c.b.emit("reduce_window", [square, c.b.scalar(0, dtype)], xs, dtype, {
        "window_dimensions": tuple(window), "window_strides": (1,) * len(xs), "base_dilations": (1,) * len(xs),
        "window_dilations": (1,) * len(xs), "padding": tuple(pad)}, [scalar_body("add", dtype)])
    base = c.b.binary("add", c.b.binary("multiply", total, c.b.scalar(c.attr("alpha", 1e-4) / size, dtype)),
                      c.b.scalar(c.attr("bias", 1.0), dtype))
    return [c.b.binary("divide", x, c.b.binary("power", base, c.b.scalar(c.attr("beta", 0.75), dtype)))]


def _moments(c: Ctx, x: Tensor, axes: list[int]) -> tuple[Tensor, Tensor]:
    """(mean, variance) over `axes`, both with kept dims."""
    dtype = dtype_of(x)
    count = math.prod(shape_of(x)[a] for a in axes)
    inv = c.b.scalar(1.0 / count, dtype)
    mean = c.b.binary("multiply", reduce_keep(c, x, axes, "add", 0, True), inv)
    centred = c.b.binary("subtract", x, mean)
    var = c.b.binary("multiply", reduce_keep(c, c.b.binary("multiply", centred, centred), axes, "add", 0, True), inv)
    return mean, var


def _layer_norm(c: Ctx) -> list[Tensor]:
    x, scale, bias = c.input(0), c.input(1), c.optional(2)
    src = shape_of(x)
    axis = c.axis(c.attr("axis", -1), len(src))
    axes = list(range(axis, len(src)))
    dtype = dtype_of(x)
    mean, var = _moments(c, x, axes)
    inv_std = c.b.unary("rsqrt", c.b.binary("add", var, c.b.scalar(c.attr("epsilon", 1e-5), dtype)))
    y = c.b.binary("multiply", c.b.binary("subtract", x, mean), inv_std)
    y = c.b.binary("multiply", y, scale)
    if bias is not None:
        y = c.b.binary("add", y, bias)
    return [y, mean, inv_std]


def _channel(c: Ctx, v: Tensor, rank: int) -> Tensor:
    """A per-channel [C] vector shaped to broadcast over NC...: [C, 1, ...]."""
    return c.b.reshape(v, [shape_of(v)[0]] + [1] * (rank - 2))


def _batch_norm(c: Ctx) -> list[Tensor]:
    x, scale, bias, mean, var = (c.input(i) for i in range(5))
    rank = len(shape_of(x))
    dtype = dtype_of(x)
    eps = c.b.scalar(c.attr("epsilon", 1e-5), dtype)
    if c.attr("training_mode", 0):  # batch statistics; the running ones updated with `momentum`
        axes = [0, *range(2, rank)]
        batch_mean, batch_var = _moments(c, x, axes)
        inv = c.b.unary("rsqrt", c.b.binary("add", batch_var, eps))
        y = c.b.binary("multiply", c.b.binary("subtract", x, batch_mean), inv)
        y = c.b.binary("add", c.b.binary("multiply", y, _channel(c, scale, rank)), _channel(c, bias, rank))
        momentum = c.b.scalar(c.attr("momentum", 0.9), dtype_of(mean))
        rest = c.b.scalar(1 - c.attr("momentum", 0.9), dtype_of(mean))
        flat = [shape_of(x)[1]]
        running_mean = c.b.binary("add", c.b.binary("multiply", mean, momentum), c.b.binary("multiply", c.b.reshape(batch_mean, flat), rest))
        running_var = c.b.binary("add", c.b.binary("multiply", var, momentum), c.b.binary("multiply", c.b.reshape(batch_var, flat), rest))
        return [y, running_mean, running_var]
    if all(isinstance(v, np.ndarray) for v in (scale, bias, mean, var)):  # fold into one scale and shift
        s = (scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + float(eps))).astype(dtype)
        t = (bias.astype(np.float64) - mean.astype(np.float64) * s.astype(np.float64)).astype(dtype)
        return [c.b.binary("add", c.b.binary("multiply", x, _channel(c, s, rank)), _channel(c, t, rank))]
    inv = c.b.unary("rsqrt", c.b.binary("add", c.b.convert(var, dtype), eps))
    y = c.b.binary("multiply", c.b.binary("subtract", x, _channel(c, c.b.convert(mean, dtype), rank)), _channel(c, inv, rank))
    return [c.b.binary("add", c.b.binary("multiply", y, _channel(c, c.b.convert(scale, dtype), rank)),
                       _channel(c, c.b.convert(bias, dtype), rank))]


def _instance_norm(c: Ctx) -> list[Tensor]:
    x, scale, bias = c.input(0), c.input(1), c.input(2)
    rank = len(shape_of(x))
    dtype = dtype_of(x)
    mean, var = _moments(c, x, list(range(2, rank)))
    inv = c.b.unary("rsqrt", c.b.binary("add", var, c.b.scalar(c.attr("epsilon", 1e-5), dtype)))
    y = c.b.binary("multiply", c.b.binary("subtract", x, mean), inv)
    return [c.b.binary("add", c.b.binary("multiply", y, _channel(c, scale, rank)), _channel(c, bias, rank))]


def _lp_norm(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    axis = c.axis(c.attr("axis", -1), len(shape_of(x)))
    p = c.attr("p", 2)
    if p == 1:
        n = reduce_keep(c, c.b.unary("abs", x), [axis], "add", 0, True)
    elif p == 2:
        n = c.b.unary("sqrt", reduce_keep(c, c.b.binary("multiply", x, x), [axis], "add", 0, True))
    else:
        raise c.error(f"p={p} (1 or 2 are defined)")
    zero = c.b.scalar(0, dtype_of(x))
    return [c.b.select(c.b.compare("EQ", n, zero), zero, c.b.binary("divide", x, n))]


def _mvn(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    axes = [c.axis(a, len(shape_of(x))) for a in c.attr("axes", [0, 2, 3])]
    mean, var = _moments(c, x, axes)
    std = c.b.unary("sqrt", var)
    return [c.b.binary("divide", c.b.binary("subtract", x, mean), c.b.binary("add", std, c.b.scalar(1e-9, dtype_of(x))))]


HANDLERS = {
    **{k: _reduction(k) for k in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                  "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")},
    "ArgMax": _arg("GT"), "ArgMin": _arg("LT"), "Softmax": _softmax(False), "LogSoftmax": _softmax(True),
    "Hardmax": _hardmax, "TopK": _topk, "CumSum": _cumulative("add"),
    "CumProd": _cumulative("multiply"), "LRN": _lrn, "LayerNormalization": _layer_norm,
    "BatchNormalization": _batch_norm, "InstanceNormalization": _instance_norm,
    "LpNormalization": _lp_norm, "MeanVarianceNormalization": _mvn,
}
