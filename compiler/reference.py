"""A plain numpy interpreter of the tensor IR: the TEST ORACLE and debugging aid.

It exists so that tests can check the frontend (IR from StableHLO == JAX's own results) and, later,
the compiled kernels (compiled == reference). It favours obviously-right code over speed: loops
over gather indices and window offsets, float math in float64 for dots and convolutions. Never put
it on a production path. Region bodies (reducers, comparators) are run on whole arrays at once,
which is valid because they are elementwise.

`evaluate(module, name, inputs)` runs a function; `evaluate_op(op, values)` runs one op (shape
specialization reuses it to fold small shape computations, so the two agree by construction).
"""

from __future__ import annotations

import functools
import itertools
from typing import Callable, Iterable, Sequence

import numpy as np

from compiler import rng_bits
from compiler.errors import CompileError, ShapeAssertionError, shape_assertion_message
from compiler.ir import ELEMENTWISE, Function, Module, Op, Region, Value, reduce_precision_format

# --------------------------------------------------------------------------------------------
# Running functions and regions


class _Context:
    """What an op needs beyond its operand values: the module (calls) and enclosing values."""

    def __init__(self, module: Module | None, env: dict[Value, np.ndarray]) -> None:
        self.module = module
        self.env = env

    def run_region(self, region: Region | Function, args: Sequence[np.ndarray],
                   vectorized: bool = True) -> list[np.ndarray]:
        env = {**self.env, **dict(zip(region.args, args))}
        return _run(region.ops, region.results, env, self.module, check_shapes=not vectorized)


def _run(ops: list[Op], results: list[Value], env: dict[Value, np.ndarray],
         module: Module | None, check_shapes: bool) -> list[np.ndarray]:
    for op in ops:
        outs = evaluate_op(op, [env[v] for v in op.operands], module, env)
        for value, out in zip(op.results, outs):
            if check_shapes and any(isinstance(d, int) and d != s for d, s in zip(value.type.shape, out.shape)):
                raise CompileError(f"{op.where()}: evaluated shape {out.shape} does not match {value.type}")
            env[value] = out
    return [env[v] for v in results]


def evaluate(module: Module, function_name: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run `function_name` on numpy inputs (dynamic dims take the inputs' sizes)."""
    fn = module.function(function_name)
    if len(inputs) != len(fn.args):
        raise CompileError(f"@{function_name} takes {len(fn.args)} inputs, got {len(inputs)}")
    args = []
    for i, (arg, x) in enumerate(zip(fn.args, inputs)):
        x = np.asarray(x)
        if x.ndim != arg.type.rank or any(isinstance(d, int) and d != s for d, s in zip(arg.type.shape, x.shape)):
            raise CompileError(f"@{function_name} input {i}: shape {x.shape} does not fit {arg.type}")
        args.append(x.astype(arg.type.dtype, copy=False))
    return _Context(module, {}).run_region(fn, args, vectorized=False)


def evaluate_op(op: Op, values: list[np.ndarray], module: Module | None = None,
                env: dict[Value, np.ndarray] | None = None) -> list[np.ndarray]:
    """Run one op on its operand values; results have the op's result dtypes."""
    if op.name not in _OPS:
        raise CompileError(f"reference evaluator has no implementation of {op.where()}")
    with np.errstate(all="ignore"):
        outs = _OPS[op.name](op, values, _Context(module, env or {}))
    return [np.asarray(out).astype(r.type.dtype, copy=False) for out, r in zip(outs, op.results)]


# --------------------------------------------------------------------------------------------
# Helpers


def _widen(x: np.ndarray) -> np.ndarray:
    """f16/bf16 -> f32 for the math (as XLA's CPU backend does)."""
    return x.astype(np.float32) if x.dtype.kind in "fV" and x.dtype.itemsize < 4 else x


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind in "fV"  # "V": ml_dtypes' bfloat16


def _shape_of(op: Op, i: int = 0) -> tuple[int, ...]:
    shape = op.results[i].type.shape
    if not all(isinstance(d, int) for d in shape):
        raise CompileError(f"{op.where()}: result type {op.results[i].type} is dynamic")
    return shape


def _pad(x: np.ndarray, value, low: Sequence[int], high: Sequence[int],
         interior: Sequence[int]) -> np.ndarray:
    """StableHLO pad: edge padding (negative crops) and interior padding."""
    inner = [d + max(d - 1, 0) * i for d, i in zip(x.shape, interior)]
    out = np.full([max(lo, 0) + n + max(hi, 0) for lo, n, hi in zip(low, inner, high)], value, x.dtype)
    out[tuple(slice(max(lo, 0), max(lo, 0) + n, i + 1) for lo, n, i in zip(low, inner, interior))] = x
    return out[tuple(slice(max(-lo, 0), out.shape[k] - max(-hi, 0)) for k, (lo, hi) in enumerate(zip(low, high)))]


_REDUCERS = {"add": np.add, "multiply": np.multiply, "maximum": np.maximum, "minimum": np.minimum,
             "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}


def _ufunc_of(region: Region) -> np.ufunc | None:
    """The numpy ufunc when a reducer body is a single `op(lhs, rhs)` of a known kind."""
    if len(region.ops) != 1 or len(region.args) != 2:
        return None
    op = region.ops[0]
    if op.name in _REDUCERS and set(op.operands) == set(region.args) and region.results == op.results:
        return _REDUCERS[op.name]
    return None


def _fold(region: Region, ctx: _Context, accs: list[np.ndarray],
          items: Callable[[], Iterable[list[np.ndarray]]]) -> list[np.ndarray]:
    """acc = body(acc..., item...) over all items (the generic reduce / reduce_window loop)."""
    ufunc = _ufunc_of(region)
    for item in items():
        accs = [ufunc(accs[0], item[0])] if ufunc else ctx.run_region(region, accs + item)
    return accs


# --------------------------------------------------------------------------------------------
# Op implementations: (op, operand values, context) -> result values

def _elementwise(op: Op, vals, ctx) -> list[np.ndarray]:
    return [ELEMENTWISE[op.name].fn(*[_widen(v) for v in vals])]


def _reduce_precision(op: Op, vals, ctx) -> list[np.ndarray]:
    exponent_bits, mantissa_bits = reduce_precision_format(op.attrs)
    return [ELEMENTWISE["reduce_precision"].fn(vals[0], exponent_bits, mantissa_bits)]


_COMPARISONS = {"EQ": np.equal, "NE": np.not_equal, "LT": np.less, "LE": np.less_equal,
                "GT": np.greater, "GE": np.greater_equal}


def _total_order_key(x: np.ndarray) -> np.ndarray:
    """Floats -> ints ordered like IEEE totalOrder (-NaN < -inf < ... < -0 < +0 < ... < NaN)."""
    bits = np.asarray(x, order="C").view(np.dtype(f"i{x.dtype.itemsize}"))
    return np.where(bits < 0, bits ^ np.iinfo(bits.dtype).max, bits)


def _compare(op: Op, vals, ctx) -> list[np.ndarray]:
    a, b = vals
    if op.attrs.get("compare_type") == "TOTALORDER" and _is_float(a.dtype):
        a, b = _total_order_key(a), _total_order_key(b)
    return [_COMPARISONS[op.attrs["comparison_direction"]](_widen(a), _widen(b))]


def _convert(op: Op, vals, ctx) -> list[np.ndarray]:
    x, dtype = vals[0], op.results[0].type.dtype
    if dtype == np.bool_:
        return [x != 0]
    if _is_float(x.dtype) and dtype.kind in "iu":  # truncate; NaN -> 0; saturate
        info = np.iinfo(dtype)
        y = np.trunc(x.astype(np.float64))
        return [np.where(np.isnan(y), 0, np.clip(y, info.min, info.max)).astype(dtype)]
    return [x.astype(dtype)]


def _bitcast_convert(op: Op, vals, ctx) -> list[np.ndarray]:
    x, dtype = np.asarray(vals[0], order="C"), op.results[0].type.dtype  # (ascontiguousarray makes 0-d 1-d)
    if x.dtype == np.bool_ and dtype != np.bool_:  # i1 is one bit: a trailing dim of bits, LSB first
        return [np.packbits(x, axis=-1, bitorder="little").view(dtype).reshape(x.shape[:-1])]
    if dtype == np.bool_ and x.dtype != np.bool_:
        bits = np.unpackbits(x.reshape(x.shape + (1,)).view(np.uint8), axis=-1, bitorder="little")
        return [bits.astype(np.bool_).reshape(x.shape + (8 * x.dtype.itemsize,))]
    if x.dtype.itemsize == dtype.itemsize:
        return [x.view(dtype)]
    if x.dtype.itemsize > dtype.itemsize:  # one element -> a trailing dim of smaller ones
        return [x.view(dtype).reshape(x.shape + (x.dtype.itemsize // dtype.itemsize,))]
    return [x.view(dtype).reshape(x.shape[:-1])]


def _iota(op: Op, vals, ctx, shape: tuple[int, ...] | None = None) -> list[np.ndarray]:
    shape = shape or _shape_of(op)
    d = op.attrs["iota_dimension"]
    ramp = np.arange(shape[d]).reshape([-1 if i == d else 1 for i in range(len(shape))])
    return [np.broadcast_to(ramp, shape)]


def _broadcast_in_dim(op: Op, vals, ctx, shape: Sequence[int] | None = None) -> list[np.ndarray]:
    x, dims = vals[0], op.attrs["broadcast_dimensions"]
    if shape is None:  # dynamic dims of the result come from the operand
        src = {d: x.shape[i] for i, d in enumerate(dims)}
        shape = [d if isinstance(d, int) else src[i] for i, d in enumerate(op.results[0].type.shape)]
    expanded = x.reshape([x.shape[dims.index(i)] if i in dims else 1 for i in range(len(shape))])
    return [np.broadcast_to(expanded, tuple(shape))]


def _reshape(op: Op, vals, ctx) -> list[np.ndarray]:
    return [vals[0].reshape([d if isinstance(d, int) else -1 for d in op.results[0].type.shape])]


def _slice(op: Op, vals, ctx) -> list[np.ndarray]:
    a = op.attrs
    return [vals[0][tuple(slice(*s) for s in zip(a["start_indices"], a["limit_indices"], a["strides"]))]]


def _clamped_starts(x: np.ndarray, starts: list[np.ndarray], sizes: Sequence[int]) -> list[int]:
    return [min(max(int(s), 0), d - n) for s, d, n in zip(starts, x.shape, sizes)]


def _dynamic_slice(op: Op, vals, ctx) -> list[np.ndarray]:
    x, sizes = vals[0], op.attrs["slice_sizes"]
    starts = _clamped_starts(x, vals[1:], sizes)
    return [x[tuple(slice(s, s + n) for s, n in zip(starts, sizes))]]


def _dynamic_update_slice(op: Op, vals, ctx) -> list[np.ndarray]:
    x, update = vals[0].copy(), vals[1]
    starts = _clamped_starts(x, vals[2:], update.shape)
    x[tuple(slice(s, s + n) for s, n in zip(starts, update.shape))] = update
    return [x]


def _pad_op(op: Op, vals, ctx) -> list[np.ndarray]:
    a = op.attrs
    return [_pad(vals[0], vals[1], a["edge_padding_low"], a["edge_padding_high"], a["interior_padding"])]


def _dot_general(op: Op, vals, ctx) -> list[np.ndarray]:
    a = op.attrs
    lhs, rhs = [v.astype(np.float64) if _is_float(v.dtype) else v for v in vals]
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    ls = [next(letters) for _ in range(lhs.ndim)]
    rs = [next(letters) for _ in range(rhs.ndim)]
    for l, r in zip(a["lhs_batching_dimensions"] + a["lhs_contracting_dimensions"],
                    a["rhs_batching_dimensions"] + a["rhs_contracting_dimensions"]):
        rs[r] = ls[l]
    batch = [ls[i] for i in a["lhs_batching_dimensions"]]
    free_l = [c for i, c in enumerate(ls) if i not in a["lhs_batching_dimensions"] + a["lhs_contracting_dimensions"]]
    free_r = [c for i, c in enumerate(rs) if i not in a["rhs_batching_dimensions"] + a["rhs_contracting_dimensions"]]
    spec = f"{''.join(ls)},{''.join(rs)}->{''.join(batch + free_l + free_r)}"
    return [np.einsum(spec, lhs, rhs)]


def _convolution(op: Op, vals, ctx) -> list[np.ndarray]:
    a = op.attrs
    n_sp = len(a["input_spatial_dimensions"])
    lhs = np.transpose(vals[0], [a["input_batch_dimension"], a["input_feature_dimension"],
                                 *a["input_spatial_dimensions"]]).astype(np.float64)
    rhs = np.transpose(vals[1], [a["kernel_output_feature_dimension"], a["kernel_input_feature_dimension"],
                                 *a["kernel_spatial_dimensions"]]).astype(np.float64)
    rhs = np.flip(rhs, [2 + k for k, r in enumerate(a["window_reversal"]) if r])
    lo, hi = zip(*a["padding"]) if n_sp else ((), ())
    lhs = _pad(lhs, 0, (0, 0, *lo), (0, 0, *hi), (0, 0, *(d - 1 for d in a["lhs_dilation"])))
    rhs = _pad(rhs, 0, (0,) * rhs.ndim, (0,) * rhs.ndim, (0, 0, *(d - 1 for d in a["rhs_dilation"])))
    strides = a["window_strides"]
    out_sp = [max(0, (lhs.shape[2 + k] - rhs.shape[2 + k]) // strides[k] + 1) for k in range(n_sp)]
    n, c = lhs.shape[:2]
    o = rhs.shape[0]
    b, g = a["batch_group_count"], a["feature_group_count"]
    out = np.zeros((n // b, b, g, o // (b * g), *out_sp))
    for kpos in itertools.product(*(range(k) for k in rhs.shape[2:])):
        window = lhs[(slice(None), slice(None)) + tuple(
            slice(p, p + s * (m - 1) + 1, s) for p, s, m in zip(kpos, strides, out_sp))]
        window = window.reshape(b, n // b, g, c // g, *out_sp)
        w = rhs[(slice(None), slice(None)) + kpos].reshape(b, g, o // (b * g), -1)
        out += np.einsum("bngc...,bgoc->nbgo...", window, w)
    out = out.reshape(n // b, o, *out_sp)
    layout = [a["output_batch_dimension"], a["output_feature_dimension"], *a["output_spatial_dimensions"]]
    return [np.transpose(out, np.argsort(layout))]


def _reduce(op: Op, vals, ctx) -> list[np.ndarray]:
    n = len(vals) // 2
    inputs, inits = vals[:n], vals[n:]
    dims = tuple(op.attrs["dimensions"])
    region = op.regions[0]
    ufunc = _ufunc_of(region)
    if ufunc is not None and n == 1:
        return [ufunc.reduce(inputs[0], axis=dims, initial=inits[0][()])]
    moved = [np.moveaxis(x, dims, range(x.ndim - len(dims), x.ndim)) for x in inputs]
    out_shape = moved[0].shape[:moved[0].ndim - len(dims)]
    flat = [x.reshape(out_shape + (-1,)) for x in moved]
    accs = [np.broadcast_to(init, out_shape) for init in inits]
    return _fold(region, ctx, accs, lambda: ([x[..., k] for x in flat] for k in range(flat[0].shape[-1])))


def _reduce_window(op: Op, vals, ctx) -> list[np.ndarray]:
    a = op.attrs
    n = len(vals) // 2
    inits = vals[n:]
    lo, hi = zip(*a["padding"])
    padded = [_pad(x, init, lo, hi, [d - 1 for d in a["base_dilations"]]) for x, init in zip(vals[:n], inits)]
    out_shape = tuple(max(0, (p - (w - 1) * wd - 1) // s + 1) for p, w, wd, s in zip(
        padded[0].shape, a["window_dimensions"], a["window_dilations"], a["window_strides"]))

    def windows():
        for offset in itertools.product(*(range(w) for w in a["window_dimensions"])):
            index = tuple(slice(o * d, o * d + s * (m - 1) + 1, s) for o, d, s, m in
                          zip(offset, a["window_dilations"], a["window_strides"], out_shape))
            yield [x[index] for x in padded]

    return _fold(op.regions[0], ctx, [np.broadcast_to(i, out_shape) for i in inits], windows)


def _gather(op: Op, vals, ctx) -> list[np.ndarray]:
    x, idx = vals
    a = op.attrs
    ivd = a["index_vector_dim"]
    batch_dims = [n for i, n in enumerate(idx.shape) if i != ivd]
    if ivd == idx.ndim:
        idx = idx[..., None]
    idx = np.moveaxis(idx, ivd, -1)
    sizes = a["slice_sizes"]
    dropped = set(a["collapsed_slice_dims"]) | set(a["operand_batching_dims"])
    offsets = [n for d, n in enumerate(sizes) if d not in dropped]
    out_shape = [offsets.pop(0) if i in a["offset_dims"] else batch_dims.pop(0)
                 for i in range(len(batch_dims) + len(offsets))]
    out = np.empty(out_shape, x.dtype)
    batch_positions = [i for i in range(out.ndim) if i not in a["offset_dims"]]
    for b in np.ndindex(*idx.shape[:-1]):
        starts = [0] * x.ndim
        for k, d in enumerate(a["start_index_map"]):
            starts[d] = idx[b][k]
        for d, i in zip(a["operand_batching_dims"], a["start_indices_batching_dims"]):
            starts[d] = b[i if i < ivd else i - 1]
        starts = _clamped_starts(x, starts, sizes)
        piece = x[tuple(slice(s, s + n) for s, n in zip(starts, sizes))]
        piece = piece.reshape([n for d, n in enumerate(sizes) if d not in dropped])
        where: list = [slice(None)] * out.ndim
        for pos, i in zip(batch_positions, b):
            where[pos] = i
        out[tuple(where)] = piece
    return [out]


def static_form(op: Op, values: Sequence[np.ndarray | None]) -> tuple[str, list[int], dict] | None:
    """For the ops whose attrs are operands (real_dynamic_slice, dynamic_gather,
    dynamic_reduce_window): (the static op's name, the indices of the operands it keeps, its
    attrs) once those operands' `values` are known; None while any is unknown."""
    def ints(v: np.ndarray) -> tuple:
        return tuple(int(x) for x in np.asarray(v).reshape(-1))

    if op.name == "real_dynamic_slice":
        if any(v is None for v in values[1:4]):
            return None
        starts, limits, strides = (ints(v) for v in values[1:4])
        return "slice", [0], {"start_indices": starts, "limit_indices": limits, "strides": strides}
    if op.name == "dynamic_gather":
        if values[2] is None:
            return None
        return "gather", [0, 1], {**op.attrs, "slice_sizes": ints(values[2])}
    if op.name == "dynamic_pad":
        if any(v is None for v in values[2:5]):
            return None
        low, high, interior = (ints(v) for v in values[2:5])
        return "pad", [0, 1], {"edge_padding_low": low, "edge_padding_high": high, "interior_padding": interior}
    if op.name == "dynamic_conv":
        if values[2] is None:
            return None
        padding = tuple(ints(row) for row in np.asarray(values[2]).reshape(-1, 2))
        return "convolution", [0, 1], {**op.attrs, "padding": padding}
    if op.name == "dynamic_reduce_window":
        n = len(values) - 5
        if any(v is None for v in values[n:]):
            return None
        dims, strides, base, window, padding = values[n:]
        return "reduce_window", list(range(n)), {
            "window_dimensions": ints(dims), "window_strides": ints(strides),
            "base_dilations": ints(base), "window_dilations": ints(window),
            "padding": tuple(ints(row) for row in np.asarray(padding).reshape(-1, 2))}
    return None


def _dynamic_form(op: Op, vals, ctx) -> list[np.ndarray]:
    name, keep, attrs = static_form(op, vals)
    static = Op(name, [op.operands[i] for i in keep], op.results, attrs, op.regions, op.loc)
    return _OPS[name](static, [vals[i] for i in keep], ctx)


def _triangular(a: np.ndarray, lower: bool, unit: bool) -> np.ndarray:
    t = np.tril(a) if lower else np.triu(a)
    if unit:
        idx = np.arange(a.shape[-1])
        t[..., idx, idx] = 1
    return t


def _triangular_solve(op: Op, vals, ctx) -> list[np.ndarray]:
    """op(A) X = B (left side) or X op(A) = B, with A's other triangle ignored, by a general
    solver (LU) in float64: an independent check of the substitution passes/decompose.py emits."""
    a, b = (v.astype(np.float64) for v in vals)
    at = op.attrs
    t = _triangular(a, at["lower"], at["unit_diagonal"])
    if at["transpose_a"] != "NO_TRANSPOSE":
        t = np.swapaxes(t, -1, -2)
    if at["left_side"]:
        return [np.linalg.solve(t, b)]
    return [np.swapaxes(np.linalg.solve(np.swapaxes(t, -1, -2), np.swapaxes(b, -1, -2)), -1, -2)]


def _cholesky(op: Op, vals, ctx) -> list[np.ndarray]:
    """Cholesky-Banachiewicz in float64 on the triangle `lower` names; a pivot that is not
    positive makes that factor NaN from there on and LAPACK's info its 1-based index."""
    a = vals[0].astype(np.float64)
    if not op.attrs["lower"]:
        a = np.swapaxes(a, -1, -2)
    n = a.shape[-1]
    out = np.zeros(a.shape)
    info = np.zeros(a.shape[:-2], np.int64)
    for batch in np.ndindex(*a.shape[:-2]):
        m, l = a[batch], out[batch]
        for j in range(n):
            d = m[j, j] - l[j, :j] @ l[j, :j]
            if not d > 0 and info[batch] == 0:
                info[batch] = j + 1
            l[j, j] = np.sqrt(d) if d > 0 else np.nan
            l[j + 1:, j] = (m[j + 1:, j] - l[j + 1:, :j] @ l[j, :j]) / l[j, j]
    if not op.attrs["lower"]:
        out = np.swapaxes(out, -1, -2)
    return [out, info][:len(op.results)]


def scatter_windows(op: Op, operand_shape: Sequence[int], indices: np.ndarray,
                    update_shape: Sequence[int]) -> Iterable[tuple[tuple, tuple[slice, ...] | None, list[int]]]:
    """Per update scatter index s (row-major): (s, the operand window it updates or None when
    the window is not wholly inside the operand (the update is skipped, as XLA), the window's
    sizes per operand dim)."""
    a = op.attrs
    rank, ivd = len(operand_shape), a["index_vector_dim"]
    scatter_dims = [d for d in range(len(update_shape)) if d not in a["update_window_dims"]]
    window_dims = [d for d in range(rank) if d not in a["inserted_window_dims"] and d not in a["input_batching_dims"]]
    sizes = [1] * rank
    for j, d in enumerate(window_dims):
        sizes[d] = update_shape[a["update_window_dims"][j]]
    if ivd == indices.ndim:
        indices = indices[..., None]
    indices = np.moveaxis(indices, ivd, -1)
    for s in np.ndindex(*[update_shape[d] for d in scatter_dims]):
        start = [0] * rank
        for k, d in enumerate(a["scatter_dims_to_operand_dims"]):
            start[d] = int(indices[s][k])
        for d, i in zip(a["input_batching_dims"], a["scatter_indices_batching_dims"]):
            start[d] = s[i if i < ivd else i - 1]
        inside = all(0 <= st and st + n <= dim for st, n, dim in zip(start, sizes, operand_shape))
        yield s, tuple(slice(st, st + n) for st, n in zip(start, sizes)) if inside else None, sizes


def _scatter(op: Op, vals, ctx) -> list[np.ndarray]:
    """Updates applied one scatter index at a time, in order, through the update computation
    (a whole window at once: its points are distinct)."""
    n = (len(vals) - 1) // 2
    outs = [v.copy() for v in vals[:n]]
    indices, updates = vals[n], vals[n + 1:]
    scatter_dims = [d for d in range(updates[0].ndim) if d not in op.attrs["update_window_dims"]]
    for s, where, sizes in scatter_windows(op, outs[0].shape, indices, updates[0].shape):
        if where is None:
            continue
        at: list = [slice(None)] * updates[0].ndim
        for d, i in zip(scatter_dims, s):
            at[d] = i
        windows = [u[tuple(at)].reshape(sizes) for u in updates]
        new = ctx.run_region(op.regions[0], [o[where] for o in outs] + windows)
        for o, value in zip(outs, new):
            o[where] = value
    return outs


def _scan(op: Op, vals, ctx) -> list[np.ndarray]:
    """chlo.scan: the region over the positions along `dimension` (last first if is_reverse),
    carrying values; per-position outputs stacked, then the final carries."""
    dim, n_carry = op.attrs["dimension"], op.attrs["carries"]
    inputs, carries = vals[:len(vals) - n_carry], list(vals[len(vals) - n_carry:])
    n_out = len(op.results) - n_carry
    outs: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    reverse = bool(op.attrs.get("is_reverse"))
    length = inputs[0].shape[dim]
    for t in range(length - 1, -1, -1) if reverse else range(length):
        results = ctx.run_region(op.regions[0], [np.take(x, t, axis=dim) for x in inputs] + carries, vectorized=False)
        for k in range(n_out):
            outs[k].append(results[k])
        carries = results[n_out:]
    return [np.stack(o[::-1] if reverse else o, axis=dim) for o in outs] + carries


def _select_and_scatter(op: Op, vals, ctx) -> list[np.ndarray]:
    """Per window (one per source element), the element the select region picks (padding is
    never picked); the source value is scattered onto it with the scatter region."""
    operand, source, init = vals
    a = op.attrs
    select, combine = op.regions
    out = np.full(operand.shape, init, operand.dtype)
    for w in np.ndindex(*source.shape):
        best, best_value = None, None
        for k in np.ndindex(*a["window_dimensions"]):
            pos = tuple(wd * s + kd - lo for wd, s, kd, (lo, _) in zip(w, a["window_strides"], k, a["padding"]))
            if any(not 0 <= p < n for p, n in zip(pos, operand.shape)):
                continue
            if best is None or not bool(ctx.run_region(select, [best_value, operand[pos]], vectorized=False)[0]):
                best, best_value = pos, operand[pos]
        if best is not None:
            out[best] = ctx.run_region(combine, [out[best], source[w]], vectorized=False)[0]
    return [out]


def _top_k(op: Op, vals, ctx) -> list[np.ndarray]:
    """The k largest along the last dim (IEEE total order for floats), ties to the lower index:
    a stable ascending sort of the reversed row, read backwards."""
    x = vals[0]
    key = _total_order_key(x) if _is_float(x.dtype) else x
    n, k = x.shape[-1], op.attrs["k"]
    order = (n - 1 - np.argsort(key[..., ::-1], axis=-1, kind="stable")[..., ::-1])[..., :k]
    return [np.take_along_axis(x, order, -1), order]


def _rng_bit_generator(op: Op, vals, ctx) -> list[np.ndarray]:
    state, value = op.results
    return list(rng_bits.generate(rng_bits.NumpyOps(), op.attrs["rng_algorithm"], vals[0], state.type.shape[0],
                                  value.type.shape, value.type.dtype))


def _rng(op: Op, vals, ctx) -> list[np.ndarray]:
    result = op.results[0].type
    return [rng_bits.distribution(rng_bits.NumpyOps(), op.attrs["rng_distribution"], vals[0], vals[1],
                                  _shape_of(op), result.dtype)]


def _batch_norm(op: Op, vals, ctx) -> list[np.ndarray]:
    """The batch_norm ops by the spec's formulas, in float64, statistics over every dim but
    `feature_index`."""
    f, eps = op.attrs["feature_index"], float(op.attrs["epsilon"])
    x = vals[0].astype(np.float64)
    axes = tuple(d for d in range(x.ndim) if d != f)
    shape = [-1 if d == f else 1 for d in range(x.ndim)]

    def per_feature(v: np.ndarray) -> np.ndarray:
        return v.astype(np.float64).reshape(shape)

    if op.name == "batch_norm_inference":
        scale, offset, mean, var = (per_feature(v) for v in vals[1:])
        return [(x - mean) / np.sqrt(var + eps) * scale + offset]
    if op.name == "batch_norm_training":
        scale, offset = (per_feature(v) for v in vals[1:])
        mean, var = x.mean(axes), x.var(axes)
        return [(x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * scale + offset, mean, var]
    scale, mean, var = (per_feature(v) for v in vals[1:4])
    dy = vals[4].astype(np.float64)
    n = x.size // x.shape[f]
    centered, std = x - mean, np.sqrt(var + eps)
    sum_dy, sum_dy_centered = dy.sum(axes).reshape(shape), (dy * centered).sum(axes).reshape(shape)
    grad = scale / std / n * (dy * n - sum_dy - sum_dy_centered * centered / (var + eps))
    return [grad, (dy * centered / std).sum(axes), dy.sum(axes)]


def _ragged_dot(op: Op, vals, ctx) -> list[np.ndarray]:
    """Per output position along lhs's ragged dim, the dot with the rhs group it falls in
    (groups consecutive, of group_sizes rows; rows past them are zero)."""
    lhs, rhs, sizes = vals
    a = op.attrs
    group_dim, ragged = a["rhs_group_dimensions"][0], a["lhs_ragged_dimensions"][0]
    ends = np.cumsum(sizes.astype(np.int64))
    free = [d for d in range(lhs.ndim) if d not in a["lhs_batching_dimensions"] + a["lhs_contracting_dimensions"]]
    position = len(a["lhs_batching_dimensions"]) + free.index(ragged)
    shift = lambda dims: tuple(d - (d > group_dim) for d in dims)  # noqa: E731
    dot = Op("dot_general", op.operands[:2], op.results, {
        "lhs_batching_dimensions": a["lhs_batching_dimensions"], "lhs_contracting_dimensions": a["lhs_contracting_dimensions"],
        "rhs_batching_dimensions": shift(a["rhs_batching_dimensions"]),
        "rhs_contracting_dimensions": shift(a["rhs_contracting_dimensions"])})
    out = None
    for j in range(rhs.shape[group_dim]):
        part = _dot_general(dot, [lhs, np.take(rhs, j, axis=group_dim)], ctx)[0]
        rows = np.arange(part.shape[position]).reshape([-1 if d == position else 1 for d in range(part.ndim)])
        part = np.where((rows >= (ends[j - 1] if j else 0)) & (rows < ends[j]), part, 0)
        out = part if out is None else out + part
    return [out]


def _map(op: Op, vals, ctx) -> list[np.ndarray]:
    """The region on whole arrays (its ops are elementwise on scalars)."""
    return ctx.run_region(op.regions[0], list(vals))


def _sort(op: Op, vals, ctx) -> list[np.ndarray]:
    """Stable sort along `dimension` with the comparator region (evaluated for all pairs at once)."""
    axis = op.attrs["dimension"] % vals[0].ndim
    moved = [np.moveaxis(v, axis, -1) for v in vals]
    length = moved[0].shape[-1]
    rows = [m.reshape(-1, length) for m in moved]
    pairs = [arg for r in rows for arg in (r[:, :, None], r[:, None, :])]
    less = np.broadcast_to(ctx.run_region(op.regions[0], pairs)[0], (rows[0].shape[0], length, length))
    order = np.empty(rows[0].shape, np.int64)
    for i, lt in enumerate(less):
        cmp = functools.cmp_to_key(lambda p, q, lt=lt: -1 if lt[p, q] else int(lt[q, p]))
        order[i] = sorted(range(length), key=cmp)
    return [np.moveaxis(np.take_along_axis(r, order, -1).reshape(m.shape), -1, axis)
            for r, m in zip(rows, moved)]


def _while(op: Op, vals, ctx) -> list[np.ndarray]:
    cond, body = op.regions
    while bool(ctx.run_region(cond, vals, vectorized=False)[0]):
        vals = ctx.run_region(body, vals, vectorized=False)
    return vals


def _case(op: Op, vals, ctx) -> list[np.ndarray]:
    """Run branch `index` (the last one when the index is out of range, as StableHLO says)."""
    index = int(vals[0])
    n = len(op.regions)
    return ctx.run_region(op.regions[index if 0 <= index < n else n - 1], [], vectorized=False)


def _if(op: Op, vals, ctx) -> list[np.ndarray]:
    return ctx.run_region(op.regions[0 if bool(vals[0]) else 1], [], vectorized=False)


def _call(op: Op, vals, ctx) -> list[np.ndarray]:
    if ctx.module is None:
        raise CompileError(f"{op.where()}: calls need the module")
    return _Context(ctx.module, {}).run_region(ctx.module.function(op.attrs["callee"]), vals, vectorized=False)


def _shape_assertion(op: Op, vals, ctx) -> list[np.ndarray]:
    if not bool(vals[0]):
        message = op.attrs.get("error_message", "shape assertion failed")
        raise ShapeAssertionError(shape_assertion_message(message, [int(v) for v in vals[1:]]))
    return []


_OPS: dict[str, Callable[[Op, list[np.ndarray], _Context], list[np.ndarray]]] = {
    name: _elementwise for name in ELEMENTWISE}
_OPS.update({
    "constant": lambda op, vals, ctx: [op.attrs["value"]],
    "iota": _iota,
    "compare": _compare,
    "convert": _convert,
    "reduce_precision": _reduce_precision,
    "bitcast_convert": _bitcast_convert,
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": _reshape,
    "transpose": lambda op, vals, ctx: [np.transpose(vals[0], op.attrs["permutation"])],
    "reverse": lambda op, vals, ctx: [np.flip(vals[0], op.attrs["dimensions"])],
    "slice": _slice,
    "dynamic_slice": _dynamic_slice,
    "dynamic_update_slice": _dynamic_update_slice,
    "pad": _pad_op,
    "concatenate": lambda op, vals, ctx: [np.concatenate(vals, axis=op.attrs["dimension"])],
    "dot_general": _dot_general,
    "convolution": _convolution,
    "reduce": _reduce,
    "reduce_window": _reduce_window,
    "gather": _gather,
    "sort": _sort,
    "while": _while,
    "case": _case,
    "if": _if,
    "call": _call,
    "custom_call": _shape_assertion,
    "get_dimension_size": lambda op, vals, ctx: [np.array(vals[0].shape[op.attrs["dimension"]])],
    "dynamic_broadcast_in_dim": lambda op, vals, ctx: _broadcast_in_dim(op, vals, ctx, [int(d) for d in vals[1]]),
    "dynamic_reshape": lambda op, vals, ctx: [vals[0].reshape([int(d) for d in vals[1]])],
    "dynamic_iota": lambda op, vals, ctx: _iota(op, vals, ctx, tuple(int(d) for d in vals[0])),
    "real_dynamic_slice": _dynamic_form,
    "dynamic_gather": _dynamic_form,
    "dynamic_reduce_window": _dynamic_form,
    "dynamic_pad": _dynamic_form,
    "dynamic_conv": _dynamic_form,
    "triangular_solve": _triangular_solve,
    "cholesky": _cholesky,
    "map": _map,
    "scatter": _scatter,
    "scan": _scan,
    "select_and_scatter": _select_and_scatter,
    "top_k": _top_k,
    "rng_bit_generator": _rng_bit_generator,
    "rng": _rng,
    "batch_norm_inference": _batch_norm,
    "batch_norm_training": _batch_norm,
    "batch_norm_grad": _batch_norm,
    "ragged_dot": _ragged_dot,
})
