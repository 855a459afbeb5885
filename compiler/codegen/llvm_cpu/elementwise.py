"""Kernel IR elementwise regions -> LLVM IR kernels with the CPU ABI.

Every point of the output space evaluates the region's expressions (`expr.ExprEmitter`) and
stores them; `grid_loops` walks the workgroup's tile, vector-wide along the last dim. Outputs far
larger than the caches are written with streaming stores (`streaming`), each row's piece after
a few plain ones that bring its vectors onto a boundary (rows and tiles whole vectors long).
"""

from __future__ import annotations

from llvmlite import ir

from compiler import kernel_ir as kir

from . import jit, streaming
from .abi_builder import i32
from .expr import ExprEmitter, store
from .grid_loops import for_each_point, kernel_entry
from .matmul import GeneratedKernel


def generate_elementwise(region: kir.KernelRegion, lanes: int | None = None) -> GeneratedKernel:
    """LLVM IR for an elementwise `region`; dispatch it with `kernel.workgroup_count`."""
    body = region.body
    assert isinstance(body, kir.ElementwiseBody)
    module = ir.Module()
    kb, ptrs = kernel_entry(module, region)
    b = kb.builder
    vector_dim = len(body.shape) - 1 if body.shape else None

    lanes = lanes or jit.vector_width_f32()

    def points(peel: ir.Value | None) -> None:
        def point(coords: list[ir.Value], offset: ir.Value, width: int) -> None:
            e = ExprEmitter(b, region.bindings, ptrs, coords, vector_dim, width)
            for slot, expr in zip(body.output_bindings, body.outputs):
                store(b, ptrs, region.bindings[slot], slot, offset, e.value(expr), peel is not None)

        for_each_point(kb, body.grid, body.shape, lanes, point, region.dynamic, peel)

    grid = body.grid
    if region.dynamic is None and grid.cols % lanes == 0 and grid.tile_cols % lanes == 0 and streaming.wanted(region, body.output_bindings):
        same_offset, peel = streaming.alignment(b, region, ptrs, body.output_bindings, lanes)
        streaming.both(b, same_offset, lambda nontemporal: points(peel if nontemporal else None))
    else:
        points(None)
    b.ret(i32(0))
    return GeneratedKernel(region.name, str(module), body.grid.workgroup_count, 0, len(region.bindings), body.grid)
