"""Shape and data-movement ONNX ops: Reshape, Transpose, Squeeze/Unsqueeze, Flatten, Concat,
Split, Slice, Gather(Elements/ND), Compress, Expand, Tile, Pad, Shape/Size, ConstantOfShape, Range, Trilu,
Constant, Dropout, DepthToSpace/SpaceToDepth, OneHot.

Inputs that decide a result's shape (Reshape's shape, Slice's starts, Expand's shape, Pad's pads...)
must be known when the graph is instantiated at one shape signature; the shape subgraphs that
compute them from `Shape` are folded by then (graph.py), so a runtime `-1` is resolved here.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of, scalar_body, shape_of
from compiler.frontends.onnx.graph import Ctx


def _reshape(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    target = c.ints(1, "shape")
    src = shape_of(x)
    allowzero = c.attr("allowzero", 0)
    shape = [src[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
    if shape.count(-1) > 1:
        raise c.error(f"shape {target} has more than one -1")
    if -1 in shape:
        rest = math.prod(d for d in shape if d != -1)
        total = math.prod(src)
        if rest == 0 or total % rest:
            raise c.error(f"cannot reshape {src} to {target}")
        shape[shape.index(-1)] = total // rest
    if math.prod(shape) != math.prod(src) or any(d < 0 for d in shape):
        raise c.error(f"cannot reshape {src} to {target}")
    return [c.b.reshape(x, shape)]


def _transpose(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    rank = len(shape_of(x))
    perm = c.attr("perm", list(range(rank))[::-1])
    if sorted(perm) != list(range(rank)):
        raise c.error(f"perm {perm} is not a permutation of {rank} dims")
    return [c.b.transpose(x, perm)]


def _squeeze(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    src = shape_of(x)
    axes = c.ints(1, "axes", "axes")
    if axes is None:
        axes = [i for i, d in enumerate(src) if d == 1]
    axes = [c.axis(a, len(src)) for a in axes]
    if any(src[a] != 1 for a in axes):
        raise c.error(f"cannot squeeze axes {axes} of shape {src}")
    return [c.b.reshape(x, [d for i, d in enumerate(src) if i not in axes])]


def _unsqueeze(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    src = list(shape_of(x))
    axes = c.ints(1, "axes", "axes") or []
    rank = len(src) + len(axes)
    axes = sorted(c.axis(a, rank) for a in axes)
    if len(set(axes)) != len(axes):
        raise c.error(f"repeated axes {axes}")
    for a in axes:
        src.insert(a, 1)
    return [c.b.reshape(x, src)]


def _flatten(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    src = shape_of(x)
    axis = c.attr("axis", 1)
    axis = axis + len(src) if axis < 0 else axis
    if not 0 <= axis <= len(src):
        raise c.error(f"axis {c.attr('axis')} out of range for rank {len(src)}")
    return [c.b.reshape(x, [math.prod(src[:axis]), math.prod(src[axis:])])]


def _concat(c: Ctx) -> list[Tensor]:
    xs = [x for x in c.inputs if x is not None]
    rank = len(shape_of(xs[0]))
    axis = c.axis(c.attr("axis"), rank)
    xs = [x for x in xs if shape_of(x)[axis] != 0] or xs[:1]
    if all(isinstance(x, np.ndarray) for x in xs):
        return [np.concatenate(xs, axis)]
    return [c.b.concat(xs, axis)]


def _split(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    src = shape_of(x)
    axis = c.axis(c.attr("axis", 0), len(src))
    sizes = c.ints(1, "split", "split")
    n = len(c.node.output)
    if sizes is None:
        parts = c.attr("num_outputs", n)
        step = -(-src[axis] // parts)
        sizes = [min(step, src[axis] - i * step) for i in range(parts)]
    if sum(sizes) != src[axis] or len(sizes) != n:
        raise c.error(f"split {sizes} does not divide dim {src[axis]} into {n} outputs")
    outs, start = [], 0
    for size in sizes:
        lo = [0] * len(src)
        hi = list(src)
        lo[axis], hi[axis] = start, start + size
        outs.append(c.b.slice(x, lo, hi))
        start += size
    return outs


def _slice(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    src = shape_of(x)
    starts, ends = c.ints(1, "starts", "starts"), c.ints(2, "ends", "ends")  # attributes before opset 10
    axes = c.ints(3, "axes", "axes") or list(range(len(starts)))
    steps = c.ints(4, "steps") or [1] * len(starts)
    lo, hi, st = [0] * len(src), list(src), [1] * len(src)
    flip = []
    for s, e, a, step in zip(starts, ends, axes, steps):
        a = c.axis(a, len(src))
        if step == 0:
            raise c.error("a step is 0")
        # python slice semantics with clamping, as numpy does for these bounds
        begin, stop, stride = slice(s, e, step).indices(src[a])
        if step > 0:
            lo[a], hi[a], st[a] = begin, max(begin, stop), stride
        else:  # reversed: slice the mirror image then flip the axis
            count = len(range(begin, stop, stride))
            mirror_begin = src[a] - 1 - begin
            lo[a], hi[a], st[a] = mirror_begin, mirror_begin + max(count - 1, 0) * -stride + (1 if count else 0), -stride
            flip.append(a)
    if flip:
        x = c.b.emit("reverse", [x], src, dtype_of(x), {"dimensions": tuple(sorted(flip))})
    return [c.b.slice(x, lo, hi, st)]


def normalize_indices(c: Ctx, idx: Tensor, size: int) -> Tensor:
    """ONNX indices may be negative (counted from the end): i < 0 -> i + size."""
    if isinstance(idx, np.ndarray):
        if np.any((idx < -size) | (idx >= size)):
            raise c.error(f"an index is out of range for a dim of {size}")
        return np.where(idx < 0, idx + size, idx).astype(idx.dtype)
    zero = c.b.scalar(0, dtype_of(idx))
    return c.b.select(c.b.compare("LT", idx, zero), c.b.binary("add", idx, c.b.scalar(size, dtype_of(idx))), idx)


def _gather(c: Ctx) -> list[Tensor]:
    x, idx = c.input(0), c.input(1)
    axis = c.axis(c.attr("axis", 0), len(shape_of(x)))
    idx = normalize_indices(c, idx, shape_of(x)[axis])
    if isinstance(x, np.ndarray) and isinstance(idx, np.ndarray):
        return [np.take(x, idx, axis)]
    return [c.b.take(x, idx, axis)]


def _compress(c: Ctx) -> list[Tensor]:
    """The slices (or, without an axis, the flattened elements) whose condition is true: the
    condition decides the result's shape, so it must be known (compiled per distinct condition)."""
    x = c.input(0)
    condition = c.known(1, "condition")
    if condition is None:
        raise c.error("input 1 ('condition') is required")
    if c.attr("axis") is None:
        x, axis = c.b.reshape(x, [math.prod(shape_of(x))]), 0
    else:
        axis = c.axis(c.attr("axis"), len(shape_of(x)))
    keep = np.flatnonzero(condition.reshape(-1)[:shape_of(x)[axis]]).astype(np.int64)
    if isinstance(x, np.ndarray):
        return [np.take(x, keep, axis)]
    return [c.b.take(x, keep, axis)]


def _gather_elements(c: Ctx) -> list[Tensor]:
    x, idx = c.input(0), c.input(1)
    xs = shape_of(x)
    axis = c.axis(c.attr("axis", 0), len(xs))
    return [gather_elements(c, x, c.b.convert(normalize_indices(c, idx, xs[axis]), np.int64), axis)]


def gather_elements(c: Ctx, x: Tensor, idx: Tensor, axis: int) -> Tensor:
    """out[i...] = x[i... with i[axis] = idx[i...]] (in-range int64 indices): one `gather`."""
    xs, ish = shape_of(x), shape_of(idx)
    # a full index vector per output element: iotas for the other dims, the given index on `axis`
    parts = [c.b.reshape(idx, [*ish, 1]) if d == axis else c.b.iota([*ish, 1], d) for d in range(len(xs))]
    vec = c.b.concat(parts, len(ish))
    return c.b.emit("gather", [x, vec], ish, dtype_of(x), {
        "offset_dims": (), "collapsed_slice_dims": tuple(range(len(xs))), "operand_batching_dims": (),
        "start_indices_batching_dims": (), "start_index_map": tuple(range(len(xs))),
        "index_vector_dim": len(ish), "slice_sizes": (1,) * len(xs)})


def _reverse_sequence(c: Ctx) -> list[Tensor]:
    x, lens = c.input(0), c.b.convert(c.input(1), np.int64)
    xs = shape_of(x)
    batch, time = c.attr("batch_axis", 1), c.attr("time_axis", 0)
    t = c.b.iota(xs, time)
    n = c.b.emit("broadcast_in_dim", [lens], xs, np.int64, {"broadcast_dimensions": (batch,)})
    rev = c.b.binary("subtract", c.b.binary("subtract", n, c.b.scalar(1, np.int64)), t)
    return [gather_elements(c, x, c.b.select(c.b.compare("LT", t, n), rev, t), time)]


def _eye_like(c: Ctx) -> list[Tensor]:
    from compiler.frontends.onnx.model import element_type
    x = c.input(0)
    xs = shape_of(x)
    dtype = element_type(c.attr("dtype"), c.where) if "dtype" in c.attrs else dtype_of(x)
    if len(xs) != 2:
        raise c.error(f"the input must be 2-D, got shape {xs}")
    diagonal = c.b.compare("EQ", c.b.binary("subtract", c.b.iota(xs, 1), c.b.iota(xs, 0)), c.b.scalar(c.attr("k", 0), np.int64))
    return [c.b.convert(diagonal, dtype)]


def _gather_nd(c: Ctx) -> list[Tensor]:
    x, idx = c.input(0), c.input(1)
    xs, ish = shape_of(x), shape_of(idx)
    bd = c.attr("batch_dims", 0)
    k = ish[-1]
    if bd + k > len(xs):
        raise c.error(f"index depth {k} with {bd} batch dims exceeds rank {len(xs)}")
    idx = c.b.convert(idx, np.int64)
    cols = []
    for j in range(k):
        col = c.b.slice(idx, [0] * (len(ish) - 1) + [j], [*ish[:-1], j + 1])
        cols.append(normalize_indices(c, col, xs[bd + j]))
    idx = c.b.concat(cols, len(ish) - 1)
    out = [*ish[:-1], *xs[bd + k:]]
    return [c.b.emit("gather", [x, idx], out, dtype_of(x), {
        "offset_dims": tuple(range(len(ish) - 1, len(out))), "collapsed_slice_dims": tuple(range(bd, bd + k)),
        "operand_batching_dims": tuple(range(bd)), "start_indices_batching_dims": tuple(range(bd)),
        "start_index_map": tuple(range(bd, bd + k)), "index_vector_dim": len(ish) - 1,
        "slice_sizes": (1,) * (bd + k) + tuple(xs[bd + k:])})]


def _expand(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    shape = np.broadcast_shapes(shape_of(x), tuple(c.ints(1, "shape")))
    return [c.b.broadcast(x, shape)]


def _tile(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    src = shape_of(x)
    reps = c.ints(1, "repeats")
    if len(reps) != len(src) or any(r < 0 for r in reps):
        raise c.error(f"repeats {reps} do not fit rank {len(src)}")
    inter = [v for r, d in zip(reps, src) for v in (r, d)]
    y = c.b.emit("broadcast_in_dim", [x], inter, dtype_of(x),
                 {"broadcast_dimensions": tuple(2 * i + 1 for i in range(len(src)))})
    return [c.b.reshape(y, [r * d for r, d in zip(reps, src)])]


def _pad(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    src = shape_of(x)
    rank = len(src)
    pads = c.ints(1, "pads", "pads")
    value = c.optional(2)
    if "value" in c.attrs:  # an attribute before opset 11
        value = c.b.scalar(c.attr("value"), dtype_of(x))
    axes = c.ints(3, "axes") or list(range(rank))
    axes = [c.axis(a, rank) for a in axes]
    lo, hi = [0] * rank, [0] * rank
    for k, a in enumerate(axes):
        lo[a], hi[a] = pads[k], pads[k + len(axes)]
    mode = c.attr("mode", "constant")
    if mode == "constant":
        fill = c.b.scalar(0, dtype_of(x)) if value is None else c.b.reshape(value, [])
        return [c.b.emit("pad", [x, fill], [d + l + h for d, l, h in zip(src, lo, hi)], dtype_of(x), {
            "edge_padding_low": tuple(lo), "edge_padding_high": tuple(hi), "interior_padding": (0,) * rank})]
    if mode not in ("edge", "reflect", "wrap"):
        raise c.error(f"unknown mode '{mode}'")
    for a in range(rank):  # one gather per padded axis with a constant index table
        if not lo[a] and not hi[a]:
            continue
        n = src[a]
        i = np.arange(-lo[a], n + hi[a])
        if mode == "edge":
            i = np.clip(i, 0, n - 1)
        elif mode == "wrap":
            i = np.mod(i, n)
        else:
            period = 2 * (n - 1) if n > 1 else 1
            i = np.mod(i, period)
            i = np.where(i >= n, period - i, i)
        x = c.b.take(x, i.astype(np.int64), a)
        src = shape_of(x)
    return [x]


def _shape(c: Ctx) -> list[Tensor]:
    shape = np.array(shape_of(c.input(0)), np.int64)
    start, end = c.attr("start", 0), c.attr("end", None)
    return [shape[slice(start, end)].copy()]


def _constant_of_shape(c: Ctx) -> list[Tensor]:
    shape = c.ints(0, "input")
    value = c.attr("value")
    if value is None:
        fill = np.zeros((), np.float32)
    else:
        from compiler.frontends.onnx.model import tensor_value
        fill = tensor_value(value, c.where).reshape(())
    if math.prod(shape) <= 1 << 16:
        return [np.full(shape, fill, fill.dtype)]
    return [c.b.full(fill, shape, fill.dtype)]


def _range(c: Ctx) -> list[Tensor]:
    start, limit, delta = (c.known(i, n) for i, n in enumerate(("start", "limit", "delta")))
    if start is None or limit is None or delta is None:
        raise c.error("start, limit and delta are required")
    n = max(int(np.ceil((limit.item() - start.item()) / delta.item())), 0)
    return [(start.reshape(()) + np.arange(n).astype(start.dtype) * delta.reshape(())).astype(start.dtype)]


def _trilu(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    src = shape_of(x)
    k = c.optional(1)  # a runtime value is fine: it does not change the shape
    k = c.b.scalar(0, np.int64) if k is None else c.b.reshape(c.b.convert(k, np.int64), [])
    rows = c.b.iota(src, len(src) - 2)
    cols = c.b.iota(src, len(src) - 1)
    diff = c.b.binary("subtract", cols, rows)  # col - row
    keep = c.b.compare("GE" if c.attr("upper", 1) else "LE", diff, k)
    return [c.b.select(keep, x, c.b.scalar(0, dtype_of(x)))]


def _constant(c: Ctx) -> list[Tensor]:
    from compiler.frontends.onnx.model import tensor_value
    attrs = c.attrs
    if "value" in attrs:
        return [tensor_value(attrs["value"], c.where)]
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        if key in attrs:
            return [np.array(attrs[key], dtype)]
    for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in attrs:
            return [np.array(list(attrs[key]), dtype)]
    raise c.error(f"unsupported Constant attribute {sorted(attrs)}")


def _dropout(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    training = c.known(2, "training_mode")
    if training is not None and bool(training.reshape(-1)[0]):
        ratio = c.known(1, "ratio")  # (opset 12+: the ratio is an input; 0.5 when omitted)
        if ratio is None or float(ratio.reshape(-1)[0]) != 0.0:
            raise c.error("training_mode=True with a non-zero ratio draws a random mask (the reference: numpy's "
                          "RandomState(seed)), which fibergrid cannot reproduce: not supported")
    return [x, c.b.full(True, shape_of(x), np.bool_)]


def _depth_to_space(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    n, ch, h, w = shape_of(x)
    b = c.attr("blocksize")
    if c.attr("mode", "DCR") == "DCR":
        y = c.b.transpose(c.b.reshape(x, [n, b, b, ch // (b * b), h, w]), [0, 3, 4, 1, 5, 2])
    else:
        y = c.b.transpose(c.b.reshape(x, [n, ch // (b * b), b, b, h, w]), [0, 1, 4, 2, 5, 3])
    return [c.b.reshape(y, [n, ch // (b * b), h * b, w * b])]


def _space_to_depth(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    n, ch, h, w = shape_of(x)
    b = c.attr("blocksize")
    perm = [0, 1, 3, 5, 2, 4] if c.attr("mode", "DCR") == "CRD" else [0, 3, 5, 1, 2, 4]  # mode: opset 25 on
    y = c.b.transpose(c.b.reshape(x, [n, ch, h // b, b, w // b, b]), perm)
    return [c.b.reshape(y, [n, ch * b * b, h // b, w // b])]


def _one_hot(c: Ctx) -> list[Tensor]:
    idx, values = c.input(0), c.input(2)
    depth = c.known(1, "depth")
    d = int(depth.reshape(-1)[0])
    ish = shape_of(idx)
    axis = c.attr("axis", -1)
    axis = axis + len(ish) + 1 if axis < 0 else axis
    out = [*ish[:axis], d, *ish[axis:]]
    idx = c.b.convert(idx, np.int64)
    idx = c.b.select(c.b.compare("LT", idx, c.b.scalar(0, np.int64)), c.b.binary("add", idx, c.b.scalar(d, np.int64)), idx)
    expanded = c.b.emit("broadcast_in_dim", [idx], out, np.int64,
                        {"broadcast_dimensions": tuple(i if i < axis else i + 1 for i in range(len(ish)))})
    hot = c.b.compare("EQ", expanded, c.b.iota(out, axis))
    off = c.b.reshape(c.b.slice(values, [0], [1]), [])
    on = c.b.reshape(c.b.slice(values, [1], [2]), [])
    return [c.b.select(hot, on, off)]


def _size(c: Ctx) -> list[Tensor]:
    return [np.array(math.prod(shape_of(c.input(0))), np.int64)]


HANDLERS = {
    "Reshape": _reshape, "Transpose": _transpose, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Flatten": _flatten, "Concat": _concat, "Split": _split, "Slice": _slice, "Gather": _gather,
    "GatherElements": _gather_elements, "Compress": _compress, "GatherND": _gather_nd, "Expand": _expand, "Tile": _tile,
    "Pad": _pad, "Shape": _shape, "Size": _size, "ConstantOfShape": _constant_of_shape, "Range": _range,
    "Trilu": _trilu, "Constant": _constant, "Dropout": _dropout, "DepthToSpace": _depth_to_space,
    "SpaceToDepth": _space_to_depth, "OneHot": _one_hot, "ReverseSequence": _reverse_sequence, "EyeLike": _eye_like,
}


# --------------------------------------------------------------------------------------------
# Scatter with indices known at compile time (torch exports slice assignment so)

_SCATTER_REDUCTIONS = {"add": "add", "mul": "multiply", "max": "maximum", "min": "minimum"}


def _scatter(c: Ctx, data: Tensor, positions: np.ndarray) -> Tensor:
    """data with element `positions[k]` (flat index into data) replaced by the k-th element of the
    flattened updates (input 2); later updates win, as ONNX's reduction='none' leaves unspecified
    and every runtime does. A gather from the updates with a constant table and a select. With a
    reduction (add, mul, max, min), each update combines with the element instead: an IR scatter
    over the flattened data, whose reducer applies repeated indices one after another."""
    reduction = c.attr("reduction", "none")
    if reduction != "none" and reduction not in _SCATTER_REDUCTIONS:
        raise c.error(f"reduction '{reduction}' is not supported (none, add, mul, max and min are)")
    updates = c.input(2)
    shape = shape_of(data)
    size = int(np.prod(shape))
    if reduction != "none":
        dtype = dtype_of(data)
        flat = c.b.emit("scatter", [c.b.reshape(data, [size]), positions.reshape(-1, 1).astype(np.int64),
                                    c.b.reshape(updates, [int(positions.size)])], [size], dtype, {
            "update_window_dims": (), "inserted_window_dims": (0,), "input_batching_dims": (),
            "scatter_indices_batching_dims": (), "scatter_dims_to_operand_dims": (0,), "index_vector_dim": 1,
            "indices_are_sorted": False, "unique_indices": False}, [scalar_body(_SCATTER_REDUCTIONS[reduction], dtype)])
        return c.b.reshape(flat, shape)
    table = np.full(size, -1, np.int64)
    table[positions.reshape(-1)] = np.arange(positions.size)
    flat_updates = c.b.reshape(updates, [int(np.prod(shape_of(updates)))])
    picked = c.b.take(flat_updates, np.maximum(table, 0), 0)
    out = c.b.select(table >= 0, picked, c.b.reshape(data, [size]))
    return c.b.reshape(out, shape)


def _scatter_indices(c: Ctx, bounds_of) -> np.ndarray:
    """The scatter's indices (input 1, known at compile time), negatives wrapped by the dim
    sizes `bounds_of(indices)` gives (broadcast against them), each checked to be in range."""
    idx = c.known(1, "indices")
    if idx is None:
        raise c.error("indices are required")
    bounds = np.asarray(bounds_of(idx))
    idx = np.where(idx < 0, idx + bounds, idx)
    if np.any(idx < 0) or np.any(idx >= bounds):
        raise c.error("an index is out of range")
    return idx


def _scatter_nd(c: Ctx) -> list[Tensor]:
    data = c.input(0)
    shape = shape_of(data)
    idx = _scatter_indices(c, lambda idx: shape[:idx.shape[-1]])
    k = idx.shape[-1]
    tail = int(np.prod(shape[k:]))
    starts = np.ravel_multi_index(tuple(idx.reshape(-1, k).T), shape[:k]) * tail if k else np.zeros(1, np.int64)
    positions = (starts[:, None] + np.arange(tail)[None, :]).reshape(-1)
    return [_scatter(c, data, positions)]


def _scatter_elements(c: Ctx) -> list[Tensor]:
    data = c.input(0)
    shape = shape_of(data)
    axis = c.axis(c.attr("axis", 0), len(shape))
    idx = _scatter_indices(c, lambda idx: shape[axis])
    coords = list(np.indices(idx.shape))
    coords[axis] = idx
    return [_scatter(c, data, np.ravel_multi_index(tuple(coords), shape))]


HANDLERS.update({"ScatterND": _scatter_nd, "ScatterElements": _scatter_elements, "Scatter": _scatter_elements})
