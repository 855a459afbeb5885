"""Decomposition: ops with no kernel of their own, rewritten into ops fusion lowers.

Runs on a static function just before fusion. Each rule turns one op into plain StableHLO-level
ops (slices, dots, elementwise math, concatenates) computing the same thing, so every target
that lowers those gets the op too, correct before it is fast:

- `triangular_solve`: brought to "lower, A on the left, not transposed" by transposes and
  reversals, then forward substitution one row at a time (row i = (b_i - A[i, :i] X[:i]) / a_ii):
  n small dots for an n x n matrix, batch dims carried through as dot batch dims.
- `cholesky`: column by column (Cholesky-Crout), with LAPACK's info as a second result when
  potrf asked for one (1-based index of the first pivot that is not positive, else 0).
- `rng_bit_generator`: XLA's ThreeFry / Philox (compiler/rng_bits.py) on IR ops.
- `batch_norm_inference/training/grad`: the spec's formulas on reduces and broadcasts.
- `rng`: uniform or normal numbers from ThreeFry bits of a fixed state (rng_bits.distribution).
- `top_k` (chlo.top_k): a stable descending sort of (values, iota), then a slice.
- `scan` (chlo.scan): unrolled along its dimension, the region inlined per position.
- `ragged_dot` (chlo, mode 1): one dot per rhs group, masked to its rows, summed.
- `mulhi`: the high half of the double-width product: through a 64-bit product for narrow
  types, from 32-bit halves (schoolbook, with carries) for 64-bit ones.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from compiler import rng_bits
from compiler.errors import CompileError
from compiler.ir import Function, Op, Region, TensorType, Value

I1 = np.dtype(np.bool_)


class Builder:
    """Emits typed ops into a list (shapes are static here)."""

    def __init__(self, loc: tuple[int, int] | None) -> None:
        self.ops: list[Op] = []
        self.loc = loc

    def op(self, name: str, operands: Sequence[Value], shape: Sequence[int], dtype: np.dtype,
           regions: Sequence[Region] = (), **attrs) -> Value:
        v = Value(TensorType(tuple(int(d) for d in shape), np.dtype(dtype)))
        self.ops.append(Op(name, list(operands), [v], attrs, list(regions), self.loc))
        return v

    def const(self, value, shape: Sequence[int], dtype: np.dtype) -> Value:
        scalar = self.op("constant", [], (), dtype, value=np.array(value, dtype))
        return self.broadcast(scalar, shape, ())

    def broadcast(self, x: Value, shape: Sequence[int], dims: Sequence[int]) -> Value:
        if tuple(shape) == tuple(x.type.shape):
            return x
        return self.op("broadcast_in_dim", [x], shape, x.type.dtype, broadcast_dimensions=tuple(dims))

    def like(self, x: Value, value) -> Value:
        return self.const(value, x.type.shape, x.type.dtype)

    def binary(self, name: str, a: Value, b: Value) -> Value:
        return self.op(name, [a, b], a.type.shape, a.type.dtype)

    def compare(self, direction: str, a: Value, b: Value) -> Value:
        kind = "FLOAT" if a.type.dtype.kind == "f" else "UNSIGNED" if a.type.dtype.kind in "ub" else "SIGNED"
        return self.op("compare", [a, b], a.type.shape, I1, comparison_direction=direction, compare_type=kind)

    def select(self, p: Value, a: Value, b: Value) -> Value:
        return self.op("select", [p, a, b], a.type.shape, a.type.dtype)

    def convert(self, x: Value, dtype: np.dtype) -> Value:
        return x if x.type.dtype == dtype else self.op("convert", [x], x.type.shape, dtype)

    def slice(self, x: Value, starts: Sequence[int], limits: Sequence[int]) -> Value:
        shape = [hi - lo for lo, hi in zip(starts, limits)]
        return self.op("slice", [x], shape, x.type.dtype, start_indices=tuple(starts),
                       limit_indices=tuple(limits), strides=(1,) * len(starts))

    def matrix_slice(self, x: Value, rows: tuple[int, int], cols: tuple[int, int]) -> Value:
        batch = x.type.shape[:-2]
        return self.slice(x, [0] * len(batch) + [rows[0], cols[0]], list(batch) + [rows[1], cols[1]])

    def concat(self, xs: list[Value], dim: int) -> Value:
        if len(xs) == 1:
            return xs[0]
        shape = list(xs[0].type.shape)
        shape[dim] = sum(x.type.shape[dim] for x in xs)
        return self.op("concatenate", xs, shape, xs[0].type.dtype, dimension=dim % len(shape))

    def swap_last(self, x: Value) -> Value:
        rank = x.type.rank
        perm = tuple(range(rank - 2)) + (rank - 1, rank - 2)
        return self.op("transpose", [x], [x.type.shape[p] for p in perm], x.type.dtype, permutation=perm)

    def reverse(self, x: Value, dims: Sequence[int]) -> Value:
        return self.op("reverse", [x], x.type.shape, x.type.dtype, dimensions=tuple(d % x.type.rank for d in dims))

    def matmul(self, a: Value, b: Value, contract_b: int) -> Value:
        """Batched a[..., m, k] @ b: contracting b's dim `contract_b` (-2: b is [..., k, n];
        -1: b is [..., n, k])."""
        nb = a.type.rank - 2
        batch = tuple(range(nb))
        cb = b.type.rank + contract_b
        free_b = [d for d in range(nb, b.type.rank) if d != cb]
        shape = list(a.type.shape[:-1]) + [b.type.shape[d] for d in free_b]
        return self.op("dot_general", [a, b], shape, a.type.dtype, lhs_batching_dimensions=batch,
                       rhs_batching_dimensions=batch, lhs_contracting_dimensions=(a.type.rank - 1,),
                       rhs_contracting_dimensions=(cb,))

    def row_iota(self, shape: Sequence[int], dim: int) -> Value:
        return self.op("iota", [], shape, np.dtype(np.int64), iota_dimension=dim % len(shape))


def _forward_substitution(b_: Builder, a: Value, rhs: Value, unit: bool) -> Value:
    """X with A X = B, A lower triangular [..., n, n], B [..., n, k]."""
    n, k = a.type.shape[-1], rhs.type.shape[-1]
    rows: list[Value] = []
    for i in range(n):
        row = b_.matrix_slice(rhs, (i, i + 1), (0, k))
        if i:
            solved = b_.concat(rows, -2)
            row = b_.binary("subtract", row, b_.matmul(b_.matrix_slice(a, (i, i + 1), (0, i)), solved, -2))
        if not unit:
            pivot = b_.matrix_slice(a, (i, i + 1), (i, i + 1))
            rank = pivot.type.rank
            row = b_.binary("divide", row, b_.broadcast(pivot, row.type.shape, range(rank)))
        rows.append(row)
    return b_.concat(rows, -2)


def _triangular_solve(b_: Builder, op: Op) -> list[Value]:
    a, rhs = op.operands
    at = op.attrs
    lower, left = bool(at["lower"]), bool(at["left_side"])
    if at["transpose_a"] != "NO_TRANSPOSE":  # ADJOINT is the transpose for real types
        a, lower = b_.swap_last(a), not lower
    if not left:  # X A = B  <=>  A^T X^T = B^T
        a, lower, rhs = b_.swap_last(a), not lower, b_.swap_last(rhs)
    if not lower:  # reversing rows and columns makes an upper triangle a lower one
        a, rhs = b_.reverse(a, (-2, -1)), b_.reverse(rhs, (-2,))
    x = _forward_substitution(b_, a, rhs, bool(at["unit_diagonal"]))
    if not lower:
        x = b_.reverse(x, (-2,))
    return [x if left else b_.swap_last(x)]


def _cholesky(b_: Builder, op: Op) -> list[Value]:
    a = op.operands[0]
    lower = bool(op.attrs["lower"])
    if not lower:  # the upper triangle of A is the lower one of A^T; U = L^T
        a = b_.swap_last(a)
    n = a.type.shape[-1]
    batch = list(a.type.shape[:-2])
    columns: list[Value] = []
    bad: list[Value] = []
    rows = b_.row_iota(batch + [n, 1], -2)
    for j in range(n):
        column = b_.matrix_slice(a, (0, n), (j, j + 1))
        if j:
            done = b_.concat(columns, -1)  # [..., n, j]
            column = b_.binary("subtract", column, b_.matmul(done, b_.matrix_slice(done, (j, j + 1), (0, j)), -1))
        d = b_.matrix_slice(column, (j, j + 1), (0, 1))
        bad.append(b_.op("not", [b_.compare("GT", d, b_.like(d, 0))], d.type.shape, I1))
        pivot = b_.op("sqrt", [d], d.type.shape, d.type.dtype)
        wide = b_.broadcast(pivot, column.type.shape, range(pivot.type.rank))
        column = b_.binary("divide", column, wide)
        here = b_.compare("EQ", rows, b_.like(rows, j))
        below = b_.compare("GT", rows, b_.like(rows, j))
        column = b_.select(here, wide, b_.select(below, column, b_.like(column, 0)))
        columns.append(column)
    factor = b_.concat(columns, -1)
    results = [factor if lower else b_.swap_last(factor)]
    if len(op.results) > 1:
        results.append(_info(b_, bad, op.results[1].type.dtype))
    return results


def _info(b_: Builder, bad: list[Value], dtype: np.dtype) -> Value:
    """LAPACK's info: the 1-based index of the first failed pivot, 0 when none failed."""
    flags = b_.concat(bad, -1)  # [..., 1, n]
    n = flags.type.shape[-1]
    index = b_.binary("add", b_.row_iota(flags.type.shape, -1), b_.like(b_.row_iota(flags.type.shape, -1), 1))
    candidates = b_.select(flags, index, b_.like(index, n + 1))
    i64 = np.dtype(np.int64)
    lhs, rhs = Value(TensorType((), i64)), Value(TensorType((), i64))
    out = Value(TensorType((), i64))
    reducer = Region([lhs, rhs], [Op("minimum", [lhs, rhs], [out], {}, [], b_.loc)], [out])
    init = b_.op("constant", [], (), i64, value=np.array(n + 1, i64))
    batch = flags.type.shape[:-2]
    first = b_.op("reduce", [candidates, init], batch, i64, [reducer],
                  dimensions=(flags.type.rank - 2, flags.type.rank - 1))
    return b_.convert(b_.select(b_.compare("EQ", first, b_.like(first, n + 1)), b_.like(first, 0), first), dtype)


def _mulhi(b_: Builder, op: Op) -> list[Value]:
    x, y = op.operands
    dtype = x.type.dtype
    bits = 8 * dtype.itemsize
    signed = dtype.kind == "i"
    if bits <= 32:
        wide = np.dtype(np.int64 if signed else np.uint64)
        product = b_.binary("multiply", b_.convert(x, wide), b_.convert(y, wide))
        return [b_.convert(b_.binary("shift_right_arithmetic" if signed else "shift_right_logical", product,
                                     b_.like(product, bits)), dtype)]
    u64 = np.dtype(np.uint64)
    ux, uy = (b_.op("bitcast_convert", [v], v.type.shape, u64) if signed else v for v in (x, y))
    mask, half = b_.like(ux, 0xFFFFFFFF), b_.like(ux, 32)

    def lo(v: Value) -> Value:
        return b_.binary("and", v, mask)

    def hi(v: Value) -> Value:
        return b_.binary("shift_right_logical", v, half)

    ll = b_.binary("multiply", lo(ux), lo(uy))
    lh = b_.binary("multiply", lo(ux), hi(uy))
    hl = b_.binary("multiply", hi(ux), lo(uy))
    hh = b_.binary("multiply", hi(ux), hi(uy))
    middle = b_.binary("add", b_.binary("add", hi(ll), lo(lh)), lo(hl))
    high = b_.binary("add", b_.binary("add", hh, hi(lh)), b_.binary("add", hi(hl), hi(middle)))
    if not signed:
        return [high]
    # signed: subtract y where x < 0 and x where y < 0 (two's complement correction)
    zero = b_.like(x, 0)
    fix_x = b_.select(b_.compare("LT", x, zero), uy, b_.like(uy, 0))
    fix_y = b_.select(b_.compare("LT", y, zero), ux, b_.like(ux, 0))
    high = b_.binary("subtract", b_.binary("subtract", high, fix_x), fix_y)
    return [b_.op("bitcast_convert", [high], high.type.shape, dtype)]


def _inline(b_: Builder, region: Region, args: Sequence[Value]) -> list[Value]:
    """A copy of `region`'s ops on `args`; the values it returns."""
    vmap = dict(zip(region.args, args))
    for op in region.ops:
        results = [Value(r.type, r.name) for r in op.results]
        b_.ops.append(Op(op.name, [vmap.get(v, v) for v in op.operands], results, dict(op.attrs), op.regions, op.loc))
        vmap.update(zip(op.results, results))
    return [vmap.get(v, v) for v in region.results]


def _scan(b_: Builder, op: Op) -> list[Value]:
    dim, n_carry = op.attrs["dimension"], op.attrs["carries"]
    inputs, carries = op.operands[:len(op.operands) - n_carry], list(op.operands[len(op.operands) - n_carry:])
    n_out = len(op.results) - n_carry
    shape = list(inputs[0].type.shape)
    outs: list[list[Value]] = [[] for _ in range(n_out)]
    reverse = bool(op.attrs.get("is_reverse"))
    for t in range(shape[dim] - 1, -1, -1) if reverse else range(shape[dim]):
        elements = []
        for x in inputs:
            starts, limits = [0] * len(shape), list(x.type.shape)
            starts[dim], limits[dim] = t, t + 1
            row = b_.slice(x, starts, limits)
            elements.append(b_.op("reshape", [row], shape[:dim] + shape[dim + 1:], x.type.dtype))
        results = _inline(b_, op.regions[0], elements + carries)
        for k in range(n_out):
            r = results[k]
            outs[k].append(b_.op("reshape", [r], list(r.type.shape[:dim]) + [1] + list(r.type.shape[dim:]), r.type.dtype))
        carries = results[n_out:]
    return [b_.concat(o[::-1] if reverse else o, dim) for o in outs] + carries


def _top_k(b_: Builder, op: Op) -> list[Value]:
    """A stable descending sort of (values, iota) along the last dim, then the first k."""
    x = op.operands[0]
    shape, dtype = list(x.type.shape), x.type.dtype
    index_type = op.results[1].type.dtype
    iota = b_.op("iota", [], shape, index_type, iota_dimension=len(shape) - 1)
    scalar = [Value(TensorType((), t)) for t in (dtype, dtype, index_type, index_type)]
    greater = Value(TensorType((), I1))
    kind = "TOTALORDER" if dtype.kind in "fV" else "UNSIGNED" if dtype.kind == "u" else "SIGNED"
    comparator = Region(scalar, [Op("compare", scalar[:2], [greater], {"comparison_direction": "GT",
                                                                      "compare_type": kind}, [], b_.loc)], [greater])
    values, indices = (Value(TensorType(tuple(shape), t)) for t in (dtype, index_type))
    b_.ops.append(Op("sort", [x, iota], [values, indices], {"dimension": len(shape) - 1}, [comparator], b_.loc))
    k = op.attrs["k"]
    starts, limits = [0] * len(shape), shape[:-1] + [k]
    return [b_.slice(values, starts, limits), b_.slice(indices, starts, limits)]


class _IROps:
    """compiler.rng_bits.Ops on IR values (scalars broadcast to the other operand's shape)."""

    def __init__(self, b_: Builder) -> None:
        self.b = b_

    def _fit(self, a: Value, b: Value) -> tuple[Value, Value]:
        if a.type.rank < b.type.rank:
            a = self.b.broadcast(a, b.type.shape, ())
        elif b.type.rank < a.type.rank:
            b = self.b.broadcast(b, a.type.shape, ())
        return a, b

    def const(self, value: int, dtype: np.dtype) -> Value:
        return self.b.op("constant", [], (), dtype, value=np.array(value, dtype))

    def iota(self, n: int) -> Value:
        return self.b.op("iota", [], (n,), np.dtype(np.uint64), iota_dimension=0)

    def binary(self, name: str, a: Value, b: Value) -> Value:
        a, b = self._fit(a, b)
        return self.b.binary(name, a, self.b.convert(b, a.type.dtype))

    def less(self, a: Value, b: Value) -> Value:
        return self.b.compare("LT", *self._fit(a, b))

    def select(self, p: Value, a: Value, b: Value) -> Value:
        a, b = self._fit(a, b)
        p, a = self._fit(p, a)
        return self.b.select(p, *self._fit(a, b))

    def convert(self, x: Value, dtype: np.dtype) -> Value:
        return self.b.convert(x, np.dtype(dtype))

    def bitcast(self, x: Value, dtype: np.dtype) -> Value:
        return self.b.op("bitcast_convert", [x], x.type.shape, dtype)

    def reshape(self, x: Value, shape: Sequence[int]) -> Value:
        return x if tuple(shape) == x.type.shape else self.b.op("reshape", [x], shape, x.type.dtype)

    def concat(self, xs: list, dim: int) -> Value:
        return self.b.concat(xs, dim)

    def slice(self, x: Value, starts: Sequence[int], limits: Sequence[int]) -> Value:
        return self.b.slice(x, starts, limits)

    def element(self, x: Value, i: int) -> Value:
        return self.reshape(self.b.slice(x, [i], [i + 1]), ())

    def unary(self, name: str, x: Value) -> Value:
        return self.b.op(name, [x], x.type.shape, x.type.dtype)


def _rng_bit_generator(b_: Builder, op: Op) -> list[Value]:
    state, value = op.results
    return list(rng_bits.generate(_IROps(b_), op.attrs["rng_algorithm"], op.operands[0], state.type.shape[0],
                                  value.type.shape, value.type.dtype))


def _rng(b_: Builder, op: Op) -> list[Value]:
    result = op.results[0].type
    return [rng_bits.distribution(_IROps(b_), op.attrs["rng_distribution"], op.operands[0], op.operands[1],
                                  result.shape, result.dtype)]


def _batch_norm(b_: Builder, op: Op) -> list[Value]:
    """The spec's formulas: statistics are sums over every dim but feature_index."""
    x = op.operands[0]
    f, shape, dtype = op.attrs["feature_index"], x.type.shape, x.type.dtype
    n = math.prod(shape) // shape[f]

    def wide(v: Value) -> Value:  # a per-feature vector along the operand
        return b_.broadcast(v, shape, (f,))

    def total(v: Value) -> Value:  # the per-feature sum
        a, c, r = (Value(TensorType((), dtype)) for _ in range(3))
        body = Region([a, c], [Op("add", [a, c], [r], {}, [], b_.loc)], [r])
        zero = b_.op("constant", [], (), dtype, value=np.array(0, dtype))
        return b_.op("reduce", [v, zero], (shape[f],), dtype, [body],
                     dimensions=tuple(d for d in range(len(shape)) if d != f))

    def scalar(v: float, like: Value) -> Value:
        return b_.like(like, v)

    eps = float(op.attrs["epsilon"])
    if op.name == "batch_norm_training":
        scale, offset = op.operands[1:]
        mean = b_.binary("divide", total(x), scalar(n, scale))
        centered = b_.binary("subtract", x, wide(mean))
        var = b_.binary("divide", total(b_.binary("multiply", centered, centered)), scalar(n, scale))
    elif op.name == "batch_norm_inference":
        scale, offset, mean, var = op.operands[1:]
        centered = b_.binary("subtract", x, wide(mean))
    else:
        scale, mean, var, dy = op.operands[1:]
        centered = b_.binary("subtract", x, wide(mean))
    var_eps = b_.binary("add", var, scalar(eps, var))
    std = b_.op("sqrt", [var_eps], var_eps.type.shape, dtype)
    if op.name != "batch_norm_grad":
        out = b_.binary("add", b_.binary("multiply", b_.binary("divide", centered, wide(std)), wide(scale)), wide(offset))
        return [out] if op.name == "batch_norm_inference" else [out, mean, var]
    sum_dy = total(dy)
    sum_dy_centered = total(b_.binary("multiply", dy, centered))
    inner = b_.binary("subtract", b_.binary("subtract", b_.binary("multiply", dy, b_.like(dy, n)), wide(sum_dy)),
                      b_.binary("divide", b_.binary("multiply", wide(sum_dy_centered), centered), wide(var_eps)))
    factor = b_.binary("divide", b_.binary("divide", scale, std), scalar(n, scale))
    grad = b_.binary("multiply", wide(factor), inner)
    grad_scale = b_.binary("divide", sum_dy_centered, std)
    return [grad, grad_scale, sum_dy]


def _ragged_dot(b_: Builder, op: Op) -> list[Value]:
    """One dot per rhs group, masked to the group's rows along lhs's ragged dim, summed."""
    lhs, rhs, sizes = op.operands
    a = op.attrs
    group_dim, ragged = a["rhs_group_dimensions"][0], a["lhs_ragged_dimensions"][0]
    out = op.results[0].type
    free = [d for d in range(lhs.type.rank) if d not in a["lhs_batching_dimensions"] + a["lhs_contracting_dimensions"]]
    position = len(a["lhs_batching_dimensions"]) + free.index(ragged)
    shift = lambda dims: tuple(d - (d > group_dim) for d in dims)  # noqa: E731
    i64 = np.dtype(np.int64)
    rows = b_.row_iota(out.shape, position)
    start, total = b_.like(rows, 0), None
    for j in range(rhs.type.shape[group_dim]):
        starts, limits = [0] * rhs.type.rank, list(rhs.type.shape)
        starts[group_dim], limits[group_dim] = j, j + 1
        group = b_.slice(rhs, starts, limits)
        group = b_.op("reshape", [group], [n for d, n in enumerate(group.type.shape) if d != group_dim], rhs.type.dtype)
        part = b_.op("dot_general", [lhs, group], out.shape, out.dtype,
                     lhs_batching_dimensions=tuple(a["lhs_batching_dimensions"]),
                     rhs_batching_dimensions=shift(a["rhs_batching_dimensions"]),
                     lhs_contracting_dimensions=tuple(a["lhs_contracting_dimensions"]),
                     rhs_contracting_dimensions=shift(a["rhs_contracting_dimensions"]))
        size = b_.convert(b_.op("reshape", [b_.slice(sizes, [j], [j + 1])], (), sizes.type.dtype), i64)
        end = b_.binary("add", start, b_.broadcast(size, out.shape, ()))
        inside = b_.op("and", [b_.compare("GE", rows, start), b_.compare("LT", rows, end)], out.shape, I1)
        part = b_.select(inside, part, b_.like(part, 0))
        total = part if total is None else b_.binary("add", total, part)
        start = end
    return [total]


_RULES = {"ragged_dot": _ragged_dot, "rng": _rng, "rng_bit_generator": _rng_bit_generator, "top_k": _top_k, "scan": _scan,
          "triangular_solve": _triangular_solve, "cholesky": _cholesky, "mulhi": _mulhi,
          "batch_norm_inference": _batch_norm, "batch_norm_training": _batch_norm, "batch_norm_grad": _batch_norm}


def _rule(op: Op):
    return _RULES.get(op.name)


def decompose(fn: Function) -> Function:
    """`fn` with every op that has a rule replaced by the ops the rule emits."""
    if not any(_rule(op) for op in fn.ops):
        return fn
    ops: list[Op] = []
    vmap: dict[Value, Value] = {}
    for op in fn.ops:
        op.operands = [vmap.get(v, v) for v in op.operands]
        rule = _rule(op)
        if rule is None:
            ops.append(op)
            continue
        if not all(v.type.is_static for v in op.operands):
            raise CompileError(f"{op.where()}: needs static shapes")
        b_ = Builder(op.loc)
        results = rule(b_, op)
        ops.extend(b_.ops)
        for old, new in zip(op.results, results):
            if old.type != new.type:
                raise CompileError(f"{op.where()}: decomposed to {new.type}, expected {old.type}")
            vmap[old] = new
    return Function(fn.name, fn.args, [vmap.get(v, v) for v in fn.results], ops, fn.public)
