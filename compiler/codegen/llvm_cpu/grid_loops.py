"""The loop skeleton of kernels over a `kir.Grid`: entry checks, then every point of one
workgroup's tile, vector-wide along the last dim.

Workgroup (x, y) covers rows y*tile_rows.. and columns x*tile_cols.. of the output seen as
rows (all dims but the last) x columns (the last dim). Per row the leading coordinates are
worked out once; the column loop runs whole vectors of `lanes` points and finishes the row
with single points, so no load or store is ever masked. Elementwise and reduction generators
differ only in what they compute at a point (`PointBody`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from llvmlite import ir

from compiler import kernel_ir as kir

from . import vector_math
from .abi_builder import I1, I64, KernelBuilder, for_range, i32, i64
from .expr import binding_pointers, strides
from .matmul import ERROR_BINDING_TOO_SHORT

PointBody = Callable[[list[ir.Value], ir.Value, int], None]
"""(coordinates of the first point, i64 per output dim; its flat output offset; lanes) -> emit."""


def kernel_entry(module: ir.Module, region: kir.KernelRegion) -> tuple[KernelBuilder, list[ir.Value]]:
    """Declare the ABI entry of `region`, return ERROR_BINDING_TOO_SHORT when any binding is
    shorter than its declared shape, and give the bindings' typed base pointers."""
    kb = KernelBuilder(module, region.name)
    b = kb.builder
    b.target_math = functools.partial(vector_math.lower, b)  # expr.py's hook: inline vector exp
    dynamic = region.dynamic
    dim = kb.dynamic_dim() if dynamic is not None else None
    short = ir.Constant(I1, 0)
    for i, decl in enumerate(region.bindings):
        per_dim = dynamic.binding_elements(decl, i) if dynamic is not None else 0
        need = kb.extent(decl.size, per_dim, dim)
        short = b.or_(short, b.icmp_unsigned("<", kb.binding_length(i), b.mul(need, i64(decl.dtype.itemsize))))
    with b.if_then(short, likely=False):
        b.ret(i32(ERROR_BINDING_TOO_SHORT))
    return kb, binding_pointers(kb, region.bindings)


def clipped(b: ir.IRBuilder, w: ir.Value, tile: int, extent: ir.Value) -> tuple[ir.Value, ir.Value]:
    """[w * tile, min(w * tile + tile, extent)): workgroup w's share of `tile`-sized pieces."""
    start = b.mul(w, i64(tile))
    end = b.add(start, i64(tile))
    return start, b.select(b.icmp_unsigned("<", end, extent), end, extent)


def row_range(kb: KernelBuilder, grid: kir.Grid, dynamic: kir.DynamicExtents | None) -> tuple[ir.Value, ir.Value]:
    """[first, end) of the rows of workgroup y's tile (the rows a run-time multiple of the
    dynamic dim where `dynamic` says so)."""
    dim = kb.dynamic_dim() if dynamic is not None and dynamic.rows else None
    rows = kb.extent(grid.rows, dynamic.rows if dynamic else 0, dim)
    return clipped(kb.builder, kb.builder.zext(kb.workgroup_id(1), I64), grid.tile_rows, rows)


def row_coords(b: ir.IRBuilder, row: ir.Value, shape: Sequence[int], dynamic: kir.DynamicExtents | None) -> list[ir.Value]:
    """The coordinates along all dims but the last of `row` (rows: those dims flattened). A
    dynamic leading dim has no static extent: it needs no wrap (row < rows), and the unit dims
    before it (whose strides hold the compile-time size) are 0."""
    lead = list(shape[:-1])
    index = [b.urem(b.udiv(row, i64(s)), i64(n)) for s, n in zip(strides(lead), lead)]
    first = kir.leading_dim(shape)
    if dynamic is not None and dynamic.lead and first < len(lead):
        index[:first + 1] = [i64(0)] * first + [b.udiv(row, i64(strides(lead)[first]))]
    return index


def for_each_point(kb: KernelBuilder, grid: kir.Grid, shape: Sequence[int], lanes: int,
                   body: PointBody, dynamic: kir.DynamicExtents | None = None, peel: ir.Value | None = None) -> None:
    """Run `body` over this workgroup's tile of `shape` (`lanes` points at a time where a whole
    vector fits in the row, else one). With `dynamic`, the grid's rows/cols and shape[0] may be
    run-time multiples of the dynamic dim: only the bounds change (the strides of a row-major
    space do not involve its first extent). `peel`: single points first in each row's piece,
    so that its vectors start on a boundary (`streaming.alignment`)."""
    b = kb.builder
    wx = b.zext(kb.workgroup_id(0), I64)
    dim = kb.dynamic_dim() if dynamic is not None else None
    cols = kb.extent(grid.cols, dynamic.cols if dynamic else 0, dim)
    r0, r_end = row_range(kb, grid, dynamic)
    c0, c_end = clipped(b, wx, grid.tile_cols, cols)
    with for_range(b, r0, r_end, name="row") as row:
        index = row_coords(b, row, shape, dynamic)
        out_row = b.mul(row, cols)

        def columns(j: ir.Value, width: int) -> None:
            body(index + [j] if shape else [], b.add(out_row, j), width)

        tail_start = c0
        if lanes > 1 and grid.cols >= lanes:
            start = c0
            if peel is not None:
                start = b.add(c0, peel)
                start = b.select(b.icmp_unsigned("<", start, c_end), start, c_end)
                with for_range(b, c0, start, name="peel") as j:
                    columns(j, 1)
            with for_range(b, start, b.sub(c_end, i64(lanes - 1)), step=lanes, name="vec") as j:
                columns(j, lanes)
            tail_start = j  # the loop's index at exit: the first column no whole vector covers
        with for_range(b, tail_start, c_end, name="col") as j:
            columns(j, 1)
