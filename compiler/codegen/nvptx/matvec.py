"""The CUDA target's matmul for skinny products (few rows, or too few 64 x 64 tiles to fill the
GPU): C[b] = A[b] @ B[b] (+ bias, relu), f32, the reduction over k split across a workgroup.

A workgroup of 32 x 16 invocations computes 32 consecutive outputs of one row of C: invocation
(x, y) sums A[row, k] * B[k, col0 + x] over k = y, y + 16, ... (consecutive invocations read
consecutive columns of B; A's element is the same for the whole row of invocations), then the
16 partial sums of each output meet in workgroup memory and the first row of invocations adds
them, applies the epilogue and stores. Workgroups stride over the (row, column tile) pairs, so
any grid computes all of C and the kernel never fails.

Why the CUDA target has it: the portable lowering gives such a matmul one invocation per output,
a serial loop over k (a batch-1 MLP: 16 workgroups each walking 1024 products one load at a
time), and the tiled kernel (spirv/matmul.py) has one 64 x 64 tile per workgroup, 16 workgroups
for a 64 x 1024 output on a GPU of 132 multiprocessors.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from compiler import kernel_ir as kir
from compiler.codegen.nvptx.module import NvptxModule
from compiler.codegen.spirv import matmul as tiled
from compiler.codegen.spirv.invocations import SpirvContext
from compiler.passes.library_lowering import matmul_slots
from compiler.portable import F32, PortableKernel

COLS, SLICES = 32, 16
WORKGROUP_SIZE = (COLS, SLICES, 1)
MAX_WORKGROUPS = 65535
FILLS_THE_GPU = 132  # tiles the tiled kernel needs before it beats this one (the H200's multiprocessors)


def applies(body: object) -> bool:
    return isinstance(body, kir.MatmulBody) and body.activation is None and (
        not tiled.applies(body) or tiled.grid(body)[0] < FILLS_THE_GPU)


def grid(body: kir.MatmulBody) -> tuple[int, int, int]:
    return (min(body.batch * body.m * math.ceil(body.n / COLS), MAX_WORKGROUPS), 1, 1)


def generate(module: NvptxModule, region: kir.KernelRegion) -> None:
    """Adds `region`'s kernel to `module`."""
    body = region.body
    assert isinstance(body, kir.MatmulBody)
    a_slot, b_slot, c_slot, bias_slot = matmul_slots(region, "bias_add" in body.epilogue)
    m, n, depth = body.m, body.n, body.k
    tiles_n = math.ceil(n / COLS)
    total = body.batch * m * tiles_n

    def kernel(k: SpirvContext) -> None:
        b, c = k.b, k.i32
        zero = ir.Constant(F32, 0.0)
        x, y = k.local_id(0), k.local_id(1)
        partial = k.local_array("partial", np.float32, COLS * SLICES)
        acc = b.alloca(F32)
        count = [k.workgroup_count(d) for d in range(3)]
        linear = b.add(k.workgroup_id(0), b.mul(count[0], b.add(k.workgroup_id(1), b.mul(count[1], k.workgroup_id(2)))))
        groups = b.mul(b.mul(count[0], count[1]), count[2])
        with k.loop(linear, total, step=groups, name="tile") as tile:
            row = b.udiv(tile, c(tiles_n))  # over batch * m
            col = b.add(b.mul(b.urem(tile, c(tiles_n)), c(COLS)), x)
            inside = b.icmp_unsigned("<", col, c(n))
            safe_col = b.select(inside, col, c(0))
            a_base = b.mul(row, c(depth))
            b_base = b.mul(b.udiv(row, c(m)), c(depth * n))
            b.store(zero, acc)
            if body.b_panel:  # weights pre-packed (compiler/passes/packing.py): panel col / NR, row kk
                nr = c(body.b_panel)
                b_base, b_stride = b.add(b.mul(b.udiv(safe_col, nr), c(depth * body.b_panel)), b.urem(safe_col, nr)), nr
            else:
                b_base, b_stride = b.add(b_base, safe_col), c(n)
            with k.loop(y, depth, step=SLICES, name="kk") as kk:
                product = b.fmul(k.load(a_slot, b.add(a_base, kk)), k.load(b_slot, b.add(b_base, b.mul(kk, b_stride))))
                b.store(b.fadd(b.load(acc), product), acc)
            b.store(b.load(acc), k.local_pointer(partial, b.add(b.mul(y, c(COLS)), x)))
            k.barrier()
            with b.if_then(b.and_(b.icmp_unsigned("==", y, c(0)), inside)):
                value = b.load(k.local_pointer(partial, x))
                for s in range(1, SLICES):
                    value = b.fadd(value, b.load(k.local_pointer(partial, b.add(x, c(s * COLS)))))
                for step in body.epilogue:
                    if step == "bias_add":
                        value = b.fadd(value, k.load(bias_slot, col))
                    elif step == "relu":
                        value = b.select(b.fcmp_ordered(">", value, zero), value, zero)
                k.store(c_slot, b.add(b.mul(row, c(n)), col), value)
            k.barrier()  # the next tile reuses `partial`

    decl = PortableKernel(kernel, WORKGROUP_SIZE, [d.dtype for d in region.bindings], (), 4 * COLS * SLICES,
                          boundscheck=False, name=region.name)
    entry = module.entry(region.name, decl.binding_dtypes, decl.workgroup_size)
    kernel(SpirvContext(entry, decl))  # type: ignore[arg-type]
    if not entry.builder.block.is_terminated:
        entry.builder.ret_void()
