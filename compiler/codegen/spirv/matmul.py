"""The SPIR-V target's library matmul: C[b] = A[b] @ B[b] (+ bias, relu), f32, tiled through
workgroup memory.

A workgroup of 16 x 16 invocations computes 64 x 64 tiles of C; per step of 16 along k it stages
a 64 x 16 slice of A (transposed) and a 16 x 64 slice of B in workgroup memory (each invocation
loads 4 elements of each, consecutive invocations consecutive addresses), then every invocation
accumulates its 4 x 4 outputs (rows y + 16 i, columns x + 16 j: tile reads without bank
conflicts) in registers. Edges are handled by zero-filling out-of-range loads and skipping
out-of-range stores, so any M, N, K work. One workgroup per tile (all batches): unlike the
grid-stride kernels it needs exactly `grid`'s workgroup count, and fails (WRONG_GRID) on another.
(A version whose workgroups strode over tiles in an outer loop was right on lavapipe and wrong on
the H200; the one-tile form matches the benchmark kernel that is right on both.)
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from compiler import kernel_ir as kir
from compiler.codegen.spirv.invocations import SpirvContext
from compiler.codegen.spirv.module import SpirvModule
from compiler.passes.library_lowering import matmul_slots
from compiler.portable import F32, PortableKernel

TILE, STEP = 64, 16
WORKGROUP_SIZE = (16, 16, 1)
MAX_WORKGROUPS = 65535
MIN_OUTPUTS = 64 * 64  # below this, one invocation per output (the portable reduction) does as well
WRONG_GRID = -2  # kernel status when dispatched on a grid other than `grid`'s


def applies(body: object) -> bool:
    """Whether a region body takes this kernel (a matmul big enough to fill tiles, with a tile
    per workgroup within the dispatch limit, and no activation: those take the portable
    reduction, whose outputs expand special math)."""
    return (isinstance(body, kir.MatmulBody) and body.m * body.n >= MIN_OUTPUTS and body.activation is None
            and body.batch * math.ceil(body.m / TILE) * math.ceil(body.n / TILE) <= MAX_WORKGROUPS)


def grid(body: kir.MatmulBody) -> tuple[int, int, int]:
    tiles = body.batch * math.ceil(body.m / TILE) * math.ceil(body.n / TILE)
    return (tiles, 1, 1)


def generate(module: SpirvModule, region: kir.KernelRegion) -> None:
    """Adds `region`'s tiled matmul entry point to `module`."""
    body = region.body
    assert isinstance(body, kir.MatmulBody)
    a_slot, b_slot, c_slot, bias_slot = matmul_slots(region, "bias_add" in body.epilogue)
    m, n, depth = body.m, body.n, body.k
    tiles_m, tiles_n = math.ceil(m / TILE), math.ceil(n / TILE)
    total = body.batch * tiles_m * tiles_n

    def kernel(k: SpirvContext) -> None:
        b, c = k.b, k.i32
        zero = ir.Constant(F32, 0.0)
        tx, ty = k.local_id(0), k.local_id(1)
        t = b.add(tx, b.mul(ty, c(16)))
        a_tile = k.local_array("a", np.float32, STEP * TILE)
        b_tile = k.local_array("b", np.float32, STEP * TILE)
        acc = [[b.alloca(F32) for _ in range(4)] for _ in range(4)]
        count = [k.workgroup_count(d) for d in range(3)]
        linear = b.add(k.workgroup_id(0), b.mul(count[0], b.add(k.workgroup_id(1), b.mul(count[1], k.workgroup_id(2)))))
        groups = b.mul(b.mul(count[0], count[1]), count[2])

        def load_or_zero(slot: int, index: ir.Value, inside: ir.Value) -> ir.Value:
            return b.select(inside, k.load(slot, b.select(inside, index, c(0))), zero)

        def lt(x: ir.Value, limit: int) -> ir.Value:
            return b.icmp_unsigned("<", x, c(limit))

        # One tile per workgroup: a grid of any other size would leave tiles out, so it fails the
        # kernel instead (hosts take the grid from `grid`, as CompiledFunction.program_for does).
        k.fail_if(b.icmp_unsigned("!=", groups, c(total)), WRONG_GRID)
        tile = b.select(b.icmp_unsigned("<", linear, c(total)), linear, c(0))
        batch = b.udiv(tile, c(tiles_m * tiles_n))
        within = b.urem(tile, c(tiles_m * tiles_n))
        row0 = b.mul(b.udiv(within, c(tiles_n)), c(TILE))
        col0 = b.mul(b.urem(within, c(tiles_n)), c(TILE))
        a_base, b_base, c_base = b.mul(batch, c(m * depth)), b.mul(batch, c(depth * n)), b.mul(batch, c(m * n))
        for row in acc:
            for slot in row:
                b.store(zero, slot)
        with k.loop(0, depth, step=STEP, name="k0") as k0:
            for part in range(4):  # 1024 elements of each slice, 4 per invocation
                idx = b.add(t, c(256 * part))
                r, col = b.udiv(idx, c(STEP)), b.urem(idx, c(STEP))
                gr, gk = b.add(row0, r), b.add(k0, col)
                value = load_or_zero(a_slot, b.add(a_base, b.add(b.mul(gr, c(depth)), gk)), b.and_(lt(gr, m), lt(gk, depth)))
                b.store(value, k.local_pointer(a_tile, b.add(b.mul(col, c(TILE)), r)))
                r, col = b.udiv(idx, c(TILE)), b.urem(idx, c(TILE))
                gk, gc = b.add(k0, r), b.add(col0, col)
                if body.b_panel:  # weights pre-packed (compiler/passes/packing.py): panel gc / NR, row gk
                    nr = c(body.b_panel)
                    b_at = b.add(b.mul(b.add(b.mul(b.udiv(gc, nr), c(depth)), gk), nr), b.urem(gc, nr))
                else:
                    b_at = b.add(b_base, b.add(b.mul(gk, c(n)), gc))
                value = load_or_zero(b_slot, b_at, b.and_(lt(gk, depth), lt(gc, n)))
                b.store(value, k.local_pointer(b_tile, b.add(b.mul(r, c(TILE)), col)))
            k.barrier()
            for s in range(STEP):
                av = [b.load(k.local_pointer(a_tile, b.add(ty, c(s * TILE + 16 * i)))) for i in range(4)]
                bv = [b.load(k.local_pointer(b_tile, b.add(tx, c(s * TILE + 16 * j)))) for j in range(4)]
                for i in range(4):
                    for j in range(4):
                        b.store(b.fadd(b.load(acc[i][j]), b.fmul(av[i], bv[j])), acc[i][j])
            k.barrier()
        for i in range(4):
            gr = b.add(row0, b.add(ty, c(16 * i)))
            for j in range(4):
                gc = b.add(col0, b.add(tx, c(16 * j)))
                value = b.load(acc[i][j])
                for step in body.epilogue:
                    if step == "bias_add":
                        value = b.fadd(value, load_or_zero(bias_slot, gc, lt(gc, n)))
                    elif step == "relu":
                        value = b.select(b.fcmp_ordered(">", value, zero), value, zero)
                with b.if_then(b.and_(lt(gr, m), lt(gc, n))):
                    k.store(c_slot, b.add(c_base, b.add(b.mul(gr, c(n)), gc)), value)


    kernel_decl = PortableKernel(kernel, WORKGROUP_SIZE, [d.dtype for d in region.bindings], (), 4 * 2 * STEP * TILE,
                                 boundscheck=False, name=region.name)
    entry = module.entry(region.name, kernel_decl.binding_dtypes, kernel_decl.workgroup_size)
    kernel(SpirvContext(entry, kernel_decl))
    if not entry.builder.block.is_terminated:
        entry.builder.ret_void()
