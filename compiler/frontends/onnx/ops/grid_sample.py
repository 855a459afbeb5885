"""GridSample: X sampled at the positions a grid (a model input, read at run time) gives.

Vectorised over every output point with elementwise ops and gathers, following the reference
(onnx/reference/ops/op_grid_sample.py) step by step: grid values denormalised per dim (in
float32, with or without align_corners), rounded half to even for 'nearest', positions outside
the borders clamped ('border') or reflected ('reflection'); then per dim the taps (1 nearest, 2
linear, 4 cubic with a = -0.75) and their weights, each tap's index mapped by the padding mode
(zeros: an out-of-range tap reads 0). Every combination of taps over the dims is one gather from X
laid out as rows of channels, weighted, summed.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of, shape_of
from compiler.frontends.onnx.graph import Ctx

F32 = np.dtype(np.float32)


class _Coords:
    """Elementwise helpers on float32 coordinate tensors of one output shape."""

    def __init__(self, c: Ctx) -> None:
        self.b = c.b

    def k(self, v: float) -> np.ndarray:
        return self.b.scalar(v, F32)

    def op(self, name: str, a: Tensor, b: Tensor) -> Tensor:
        return self.b.binary(name, a, b)

    def clamp(self, v: Tensor, lo: float, hi: float) -> Tensor:
        return self.op("minimum", self.op("maximum", v, self.k(lo)), self.k(hi))

    def reflect(self, v: Tensor, lo: float, hi: float) -> Tensor:
        """Reflected by the nearer border until inside [lo, hi] (the reference's _gs_reflect)."""
        b, rng = self.b, hi - lo

        def fold(dx: Tensor) -> tuple[Tensor, Tensor]:
            n = b.unary("floor", self.op("divide", dx, self.k(rng)))
            r = self.op("subtract", dx, self.op("multiply", n, self.k(rng)))
            half = b.unary("floor", self.op("multiply", n, self.k(0.5)))
            return b.compare("EQ", self.op("multiply", half, self.k(2)), n), r

        even, r = fold(self.op("subtract", self.k(lo), v))
        below = b.select(even, self.op("add", self.k(lo), r), self.op("subtract", self.k(hi), r))
        even, r = fold(self.op("subtract", v, self.k(hi)))
        above = b.select(even, self.op("subtract", self.k(hi), r), self.op("add", self.k(lo), r))
        return b.select(b.compare("LT", v, self.k(lo)), below, b.select(b.compare("GT", v, self.k(hi)), above, v))


def _cubic(d: _Coords, t: Tensor) -> list[Tensor]:
    a = -0.75
    k, op = d.k, d.op

    def far(x: Tensor) -> Tensor:  # ((a x - 5a) x + 8a) x - 4a, for 1 <= x < 2
        inner = op("multiply", op("subtract", op("multiply", x, k(a)), k(5 * a)), x)
        return op("subtract", op("multiply", op("add", inner, k(8 * a)), x), k(4 * a))

    def near(x: Tensor) -> Tensor:  # ((a+2) x - (a+3)) x x + 1, for x <= 1
        return op("add", op("multiply", op("multiply", op("subtract", op("multiply", x, k(a + 2)), k(a + 3)), x), x), k(1))

    one_minus = op("subtract", k(1), t)
    return [far(op("add", t, k(1))), near(t), near(one_minus), far(op("subtract", k(2), t))]


def _grid_sample(c: Ctx) -> list[Tensor]:
    x, grid = c.input(0), c.input(1)
    xs, gs = shape_of(x), shape_of(grid)
    k = len(xs) - 2
    if len(gs) != k + 2 or gs[0] != xs[0] or gs[-1] != k:
        raise c.error(f"grid {gs} does not fit input {xs} (expected [N, ..., {k}])")
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(c.attr("mode", "linear"), c.attr("mode", "linear"))
    padding, align = c.attr("padding_mode", "zeros"), bool(c.attr("align_corners", 0))
    if mode not in ("nearest", "linear", "cubic") or padding not in ("zeros", "border", "reflection"):
        raise c.error(f"mode '{mode}' / padding_mode '{padding}' is not supported")
    n, channels, dims = xs[0], xs[1], xs[2:]
    out = list(gs[:-1])
    d = _Coords(c)
    g = c.b.convert(grid, F32)
    taps_per_dim = []
    for i, size in enumerate(dims):
        j = k - 1 - i  # the grid lists coordinates innermost dim first
        v = c.b.reshape(c.b.slice(g, [0] * (k + 1) + [j], [*gs[:-1], j + 1]), out)
        if align:
            v = d.op("multiply", d.op("add", v, d.k(1)), d.k((size - 1) / 2))
        else:
            v = d.op("divide", d.op("subtract", d.op("multiply", d.op("add", v, d.k(1)), d.k(size)), d.k(1)), d.k(2))
        taps_per_dim.append(taps(c, v, size, mode, padding, align))
    rows = c.b.reshape(c.b.transpose(x, [0, *range(2, k + 2), 1]), [n * math.prod(dims), channels])
    first = c.b.binary("multiply", c.b.iota(out, 0, np.int32), c.b.scalar(math.prod(dims), np.int32))
    total = gather_taps(c, rows, first, taps_per_dim, dims)
    return [c.b.transpose(total, [0, k + 1, *range(1, k + 1)])]


Tap = tuple[Tensor, Tensor | None, Tensor | None]
"""(index along a dim as float32, weight or None, in range or None) of one interpolation tap."""


def taps(c: Ctx, v: Tensor, size: int, mode: str, padding: str, align: bool) -> list[Tap]:
    """The taps along one dim of size `size` at positions `v` (float32, in pixels): 1 nearest,
    2 linear, 4 cubic, positions outside the borders clamped or reflected first, each tap's index
    mapped by the padding mode (zeros: flagged when out of range)."""
    d = _Coords(c)
    if mode == "nearest":
        v = c.b.unary("round_nearest_even", v)
    lo, hi = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
    if padding == "border":
        v = c.b.select(c.b.binary("or", c.b.compare("LT", v, d.k(lo)), c.b.compare("GT", v, d.k(hi))),
                       d.clamp(v, 0, size - 1), v)
    elif padding == "reflection":
        v = d.reflect(v, lo, hi)
    if mode == "nearest":
        raw = [(_trunc(c, v), None)]
    else:
        base = c.b.unary("floor", v)
        t = d.op("subtract", v, base)
        if mode == "linear":
            weights, offsets = [d.op("subtract", d.k(1), t), t], [0, 1]
        else:
            weights, offsets = _cubic(d, t), [-1, 0, 1, 2]
        raw = [(d.op("add", base, d.k(o)), w) for o, w in zip(offsets, weights)]
    mapped = []
    for tap, w in raw:
        valid = None
        if padding == "zeros":
            valid = c.b.binary("and", c.b.compare("GE", tap, d.k(0)), c.b.compare("LT", tap, d.k(size)))
        elif padding == "reflection":
            tap = _trunc(c, d.reflect(tap, lo, hi))
        mapped.append((d.clamp(tap, 0, size - 1), w, valid))
    return mapped


def gather_taps(c: Ctx, rows: Tensor, first: Tensor, taps_per_dim: list[list[Tap]], dims: list[int]) -> Tensor:
    """sum over every combination of one tap per dim of weight * rows[first + flat index]:
    `rows` is [images * prod(dims), C] (an image's positions row-major), `first` (int32, the output
    points' shape) the row of each point's image; the result is [*points, C]."""
    d = _Coords(c)
    out = list(shape_of(first))
    dtype = dtype_of(rows)
    strides = [math.prod(dims[i + 1:]) for i in range(len(dims))]
    total = None
    for combo in itertools.product(*taps_per_dim):
        index = first
        weight, valid = None, None
        for (tap, w, ok), stride in zip(combo, strides):
            index = c.b.binary("add", index, c.b.binary("multiply", c.b.convert(tap, np.int32), c.b.scalar(stride, np.int32)))
            weight = w if weight is None else (weight if w is None else d.op("multiply", weight, w))
            valid = ok if valid is None else (valid if ok is None else c.b.binary("and", valid, ok))
        value = c.b.take(rows, index, 0)  # [*out, C]
        if weight is not None:
            value = c.b.binary("multiply", value, c.b.reshape(c.b.convert(weight, dtype), [*out, 1]))
        if valid is not None:
            value = c.b.select(c.b.reshape(valid, [*out, 1]), value, c.b.scalar(0, dtype))
        total = value if total is None else c.b.binary("add", total, value)
    return total


def _trunc(c: Ctx, v: Tensor) -> Tensor:
    """Rounded toward zero (C's float -> int), kept as float32."""
    return c.b.convert(c.b.convert(v, np.int32), F32)


HANDLERS = {"GridSample": _grid_sample}
