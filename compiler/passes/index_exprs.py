"""Lazy tensor values as kernel-IR expressions, and the data-movement ops as rewrites of them.

Fusion keeps a value that need not exist in memory as an expression over the coordinates of
its own shape (`kir.Coord(d)`): constants, `Compute`s and `Leaf` loads of buffers. An op that
only moves data (broadcast, transpose, slice, reverse, pad, concatenate, dynamic_slice, gather,
...) never computes anything: it says, for each coordinate of its operand, which expression of
its *result's* coordinates gives it, and `substitute` rewrites the operand's expression with
that. A chain of such ops therefore folds into the index expressions of the loads at the bottom,
and costs index arithmetic only. Where a result point has no operand point (pad, concatenate,
dynamic_update_slice), a `select` picks the right value and the operand's coordinates are
clamped so its loads stay in bounds when not selected.

Every function here builds expressions only; none emits a dispatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from compiler import kernel_ir as kir
from compiler.ir import Op, Region

INDEX = kir.INDEX
BOOL = np.dtype(np.bool_)


@dataclass(eq=False, frozen=True)
class Leaf:
    """A load of buffer `tensor`, seen with `shape` (a reshape view of its bytes), at one index
    expression per dim (as kir.Load). Becomes a kir.Load once the region's bindings are known."""

    tensor: int
    shape: tuple[int, ...]
    index: tuple[object, ...]
    dtype: np.dtype

    @property
    def is_dense(self) -> bool:
        """True when point c of the value is element c of the buffer (the value may still be
        smaller than the buffer: a leading slice)."""
        return all(isinstance(x, kir.Coord) and x.dim == d for d, x in enumerate(self.index))


def coords(rank: int) -> tuple[kir.Coord, ...]:
    return tuple(kir.Coord(d) for d in range(rank))


def index(value: int) -> kir.Const:
    return kir.Const(int(value), INDEX)


def _value(node) -> int | None:
    return int(node.value) if isinstance(node, kir.Const) else None


def add(a, b):
    """a + b on index expressions, folding constants (keeps index arithmetic small)."""
    if _value(b) == 0:
        return a
    if _value(a) == 0:
        return b
    if _value(a) is not None and _value(b) is not None:
        return index(_value(a) + _value(b))
    return kir.Compute("add", (a, b), INDEX)


def mul(a, c: int):
    """a * c for an index expression and a constant."""
    if c == 1:
        return a
    if _value(a) is not None:
        return index(_value(a) * c)
    return kir.Compute("multiply", (a, index(c)), INDEX)


def clamp(x, lo: int, hi):
    """min(max(x, lo), hi); `hi` an int or an index expression."""
    hi = index(hi) if isinstance(hi, int) else hi
    return kir.Compute("clamp", (index(lo), x, hi), INDEX)


def compare(a, direction: str, b):
    return kir.Compute("compare", (a, b), BOOL, direction)


def all_of(conditions: list):
    """The conjunction of bool expressions (None when there are none)."""
    out = None
    for c in conditions:
        out = c if out is None else kir.Compute("and", (out, c), BOOL)
    return out


def select(condition, a, b):
    return a if condition is None else kir.Compute("select", (condition, a, b), a.dtype)


def as_index(node):
    """An integer expression converted to INDEX (data read as an index: gather, dynamic_slice)."""
    return node if node.dtype == INDEX else kir.Compute("convert", (node,), INDEX)


def substitute(node, new_coords: Sequence, memo: dict[int, object] | None = None):
    """`node` with every Coord(d) replaced by `new_coords[d]`, shared nodes kept shared."""
    memo = {} if memo is None else memo
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, kir.Coord):
        out = new_coords[node.dim]
    elif isinstance(node, Leaf):
        out = Leaf(node.tensor, node.shape, tuple(substitute(x, new_coords, memo) for x in node.index), node.dtype)
    elif isinstance(node, kir.Compute):
        out = kir.Compute(node.op, tuple(substitute(x, new_coords, memo) for x in node.operands), node.dtype, node.attr)
    else:
        out = node
    memo[id(node)] = out
    return out


def nonunit(shape: Sequence[int]) -> list[int]:
    """The dims of `shape` of size above 1."""
    return [d for d, n in enumerate(shape) if n > 1]


def space_coords(shape: tuple[int, ...], space: tuple[int, ...]) -> list[kir.Expr] | None:
    """Coords of `space` for each dim of `shape`, the same dims but for unit ones (which are 0);
    None when the two differ in more than unit dims."""
    mine, theirs = nonunit(shape), nonunit(space)
    if [shape[e] for e in mine] != [space[k] for k in theirs]:
        return None
    coords: list[kir.Expr] = [kir.Const(0, kir.INDEX)] * len(shape)
    for e, k in zip(mine, theirs):
        coords[e] = kir.Coord(k)
    return coords


def reads_point(shape: tuple[int, ...], index: tuple[kir.Expr, ...] | list[kir.Expr], space: tuple[int, ...]) -> bool:
    """Whether a load at `index` (Coords of `space`) from a tensor of `shape` (`space`'s, unit
    dims aside) reads the current point of `space` (at a unit dim an index, always in bounds, is 0)."""
    mine, theirs = nonunit(shape), nonunit(space)
    if [shape[e] for e in mine] != [space[k] for k in theirs]:
        return False
    return all(isinstance(index[e], kir.Coord) and index[e].dim == k for e, k in zip(mine, theirs))


# ---------------------------------------------------------------------------------------------
# Data-movement ops: (op, operand expressions) -> result expression


def broadcast_in_dim(op: Op, node):
    src, dst = op.operands[0].type.shape, op.results[0].type.shape
    dims = op.attrs["broadcast_dimensions"]
    return substitute(node, [index(0) if src[i] == 1 and dst[d] != 1 else kir.Coord(d) for i, d in enumerate(dims)])


def reshape_split_dims(op: Op, node):
    """A reshape that only splits dims (each operand dim, size-1 dims aside, becomes consecutive
    result dims: (32, 256) -> (32, 4, 64) splits a transformer's heads) or adds or drops size-1
    dims, as a coordinate rewrite: operand coordinate = the row-major offset of its result dims'
    (affine, so a vector stays a vector); None for any other reshape (merging dims would need a
    divide)."""
    src, dst = op.operands[0].type.shape, op.results[0].type.shape
    targets = iter(d for d, n in enumerate(dst) if n != 1)
    new = []
    for n in src:
        coordinate, size = index(0), 1
        while size < n:
            d = next(targets, None)
            if d is None:
                return None
            coordinate, size = add(mul(coordinate, dst[d]), kir.Coord(d)), size * dst[d]
        if size != n:
            return None
        new.append(coordinate)
    if next(targets, None) is not None:
        return None
    return substitute(node, new)


class _NotAView(Exception):
    """A load reads merged dims other than as whole consecutive dims of its buffer."""


def reshape_merging_views(op: Op, node):
    """A reshape that only merges dims (consecutive operand dims, size-1 dims aside, become one
    result dim: a ViT's (1, 192, 8, 8) -> (1, 192, 64)) of an expression whose loads read the
    merged dims as whole consecutive dims of their buffers, in order (the NCHW view of a patch
    matmul's NHWC output): each such load sees its buffer with those dims merged too, so its
    index stays affine; None for any other reshape or expression (it would need a divide), or
    when every such load is dense."""
    src, dst = op.operands[0].type.shape, op.results[0].type.shape
    sources = iter(d for d, n in enumerate(src) if n != 1)
    groups: list[tuple[int, list[int]]] = []
    for d, n in enumerate(dst):
        members, size = [], 1
        while size < n:
            s = next(sources, None)
            if s is None:
                return None
            members.append(s)
            size *= src[s]
        if n != 1 and size != n:
            return None
        if members:
            groups.append((d, members))
    if next(sources, None) is not None or all(len(m) == 1 for _, m in groups):
        return None
    single = {m[0]: kir.Coord(d) for d, m in groups if len(m) == 1}
    merged = {s: (d, m) for d, m in groups if len(m) > 1 for s in m}
    memo: dict[int, object] = {}
    strided: list[bool] = []  # per load seen with merged dims: whether it is not dense

    def go(x):
        if id(x) not in memo:
            if isinstance(x, kir.Coord):
                if x.dim in merged:
                    raise _NotAView
                memo[id(x)] = single.get(x.dim, index(0))
            elif isinstance(x, Leaf):
                memo[id(x)] = view(x)
            elif isinstance(x, kir.Compute):
                memo[id(x)] = kir.Compute(x.op, tuple(go(o) for o in x.operands), x.dtype, x.attr)
            else:
                memo[id(x)] = x
        return memo[id(x)]

    def view(leaf: Leaf) -> Leaf:
        shape, new_index, e = [], [], 0
        while e < len(leaf.index):
            x = leaf.index[e]
            if isinstance(x, kir.Coord) and x.dim in merged:
                d, members = merged[x.dim]
                run = leaf.index[e:e + len(members)]
                if [getattr(y, "dim", None) for y in run] != members or \
                        list(leaf.shape[e:e + len(members)]) != [src[s] for s in members]:
                    raise _NotAView
                shape.append(dst[d])
                new_index.append(kir.Coord(d))
                strided.append(not leaf.is_dense)
                e += len(members)
                continue
            shape.append(leaf.shape[e])
            new_index.append(go(x))
            e += 1
        return Leaf(leaf.tensor, tuple(shape), tuple(new_index), leaf.dtype)

    try:
        out = go(node)
    except _NotAView:
        return None
    # Only where a load is strided: a value over dense loads is as cheap to write once, and its
    # buffer is then dense for what reads it next (an activation joining its matmul).
    return out if any(strided) else None


def transpose(op: Op, node):
    perm = op.attrs["permutation"]
    new = [None] * len(perm)
    for i, p in enumerate(perm):
        new[p] = kir.Coord(i)
    return substitute(node, new)


def iota(op: Op):
    dtype = op.results[0].type.dtype
    coord = kir.Coord(op.attrs["iota_dimension"])
    return coord if dtype == INDEX else kir.Compute("convert", (coord,), dtype)


def slice_(op: Op, node):
    a = op.attrs
    return substitute(node, [add(mul(kir.Coord(d), s), index(lo)) for d, (lo, s) in
                             enumerate(zip(a["start_indices"], a["strides"]))])


def reverse(op: Op, node):
    shape, dims = op.operands[0].type.shape, op.attrs["dimensions"]
    return substitute(node, [kir.Compute("subtract", (index(n - 1), kir.Coord(d)), INDEX) if d in dims
                             else kir.Coord(d) for d, n in enumerate(shape)])


def window_position(position, size: int, low: int, dilation: int, span: int):
    """Where `position` (an index expression over the padded, dilated axis, whose values lie in
    [0, span)) falls in an operand axis of `size` padded with `low` before and dilated by
    `dilation`: (the operand coordinate, clamped into range; the condition that it is a real
    element, None when always)."""
    shifted = add(position, index(-low))
    coordinate = shifted if dilation == 1 else kir.Compute("divide", (shifted, index(dilation)), INDEX)
    conditions = []
    if low > 0:
        conditions.append(compare(shifted, "GE", index(0)))
    if span - 1 - low > (size - 1) * dilation:
        conditions.append(compare(shifted, "LE", index((size - 1) * dilation)))
    if dilation > 1:
        conditions.append(compare(kir.Compute("remainder", (shifted, index(dilation)), INDEX), "EQ", index(0)))
    if conditions:
        coordinate = clamp(coordinate, 0, size - 1)
    return coordinate, all_of(conditions)


def window_coords(shape: Sequence[int], strides: Sequence[int], window_dilations: Sequence[int],
                  padding: Sequence[tuple[int, int]], base_dilations: Sequence[int]):
    """A reduce_window's operand element at the window point (Coords: the output's dims, then the
    window's): its coordinates, clamped into range, and the condition that it is a real element,
    not padding or a dilation hole (None: always)."""
    rank = len(shape)
    coordinates, conditions = [], []
    for d in range(rank):
        position = add(mul(kir.Coord(d), strides[d]), mul(kir.Coord(rank + d), window_dilations[d]))
        lo, hi = padding[d]
        span = (shape[d] - 1) * base_dilations[d] + 1 + lo + hi
        coordinate, condition = window_position(position, shape[d], lo, base_dilations[d], span)
        coordinates.append(coordinate)
        conditions += [condition] if condition is not None else []
    return coordinates, all_of(conditions)


def pad(op: Op, node, value):
    a = op.attrs
    shape, out = op.operands[0].type.shape, op.results[0].type.shape
    new, conditions = [], []
    for d, (n, lo, interior) in enumerate(zip(shape, a["edge_padding_low"], a["interior_padding"])):
        coordinate, condition = window_position(kir.Coord(d), n, lo, interior + 1, out[d])
        new.append(coordinate)
        conditions += [condition] if condition is not None else []
    return select(all_of(conditions), substitute(node, new), value)


def concatenate(op: Op, nodes: list):
    dim = op.attrs["dimension"]
    rank = op.results[0].type.rank
    pieces, offset = [], 0
    for v, node in zip(op.operands, nodes):
        n = v.type.shape[dim]
        if n:
            local = add(kir.Coord(dim), index(-offset))
            new = [clamp(local, 0, n - 1) if d == dim and len(op.operands) > 1 else kir.Coord(d) for d in range(rank)]
            pieces.append((offset + n, substitute(node, new)))
        offset += n
    out = pieces[-1][1]
    for end, piece in reversed(pieces[:-1]):
        out = select(compare(kir.Coord(dim), "LT", index(end)), piece, out)
    return out


def clamped_start(start, size: int, slice_size: int):
    """A dynamic start index clamped as XLA does, so the slice lies inside the operand."""
    return clamp(as_index(start), 0, size - slice_size)


def dynamic_slice(op: Op, node, starts: list):
    shape, sizes = op.operands[0].type.shape, op.attrs["slice_sizes"]
    return substitute(node, [add(kir.Coord(d), clamped_start(s, n, k))
                             for d, (s, n, k) in enumerate(zip(starts, shape, sizes))])


def dynamic_update_slice(op: Op, node, update, starts: list):
    shape, sizes = op.operands[0].type.shape, op.operands[1].type.shape
    local, conditions = [], []
    for d, (s, n, k) in enumerate(zip(starts, shape, sizes)):
        start = clamped_start(s, n, k)
        offset = kir.Compute("subtract", (kir.Coord(d), start), INDEX)
        conditions += [compare(offset, "GE", index(0)), compare(offset, "LT", index(k))]
        local.append(clamp(offset, 0, k - 1))
    return select(all_of(conditions), substitute(update, local), node)


def gather(op: Op, node, indices):
    """XLA gather: result point = operand at (clamped start from `indices`) + offset."""
    a = op.attrs
    shape, sizes = op.operands[0].type.shape, a["slice_sizes"]
    index_rank, ivd = op.operands[1].type.rank, a["index_vector_dim"]
    out_rank = op.results[0].type.rank
    batch = [kir.Coord(p) for p in range(out_rank) if p not in a["offset_dims"]]

    def index_at(k: int):
        at = list(batch)
        if ivd < index_rank:
            at.insert(ivd, index(k))
        return substitute(indices, at)

    starts: list = [index(0)] * len(shape)
    for k, d in enumerate(a["start_index_map"]):
        starts[d] = clamped_start(index_at(k), shape[d], sizes[d])
    for d, i in zip(a["operand_batching_dims"], a["start_indices_batching_dims"]):
        starts[d] = batch[i if i < ivd else i - 1]
    dropped = set(a["collapsed_slice_dims"]) | set(a["operand_batching_dims"])
    offsets = iter(a["offset_dims"])
    new = [starts[d] if d in dropped else add(starts[d], kir.Coord(next(offsets))) for d in range(len(shape))]
    return substitute(node, new)


# ---------------------------------------------------------------------------------------------
# Nested bodies (reducers, comparators)


def region_exprs(region: Region, args: Sequence) -> list:
    """The values `region` returns, as expressions of `args` (e.g. kir.Arg leaves): its ops are
    elementwise on scalars, so each becomes a Compute. Returns None for an op with no scalar
    form (the caller reports the enclosing op as unsupported)."""
    env = dict(zip(region.args, args))
    for op in region.ops:
        operands = [env[v] for v in op.operands]
        result = op.results[0]
        if op.name == "constant":
            node = kir.Const(np.asarray(op.attrs["value"]).reshape(()).item(), result.type.dtype)
        elif op.name in ("broadcast_in_dim", "reshape", "convert") and result.type.dtype == operands[0].dtype:
            node = operands[0]
        elif op.name in kir.SCALAR_OPS:
            node = kir.Compute(op.name, tuple(operands), result.type.dtype, compare_attr(op))
        else:
            return None
        env[result] = node
    return [env[v] for v in region.results]


def compare_attr(op: Op) -> str:
    """The `Compute.attr` of a compare op: its direction, "TOTALORDER:" first where asked."""
    if op.name != "compare":
        return ""
    direction = op.attrs.get("comparison_direction", "")
    return f"TOTALORDER:{direction}" if op.attrs.get("compare_type") == "TOTALORDER" else direction
