"""Kernel IR sort regions -> LLVM IR kernels with the CPU ABI.

Each workgroup sorts a block of rows (all dims but the sorted one). A row is copied from the
input bindings into workgroup-local scratch (one contiguous array per operand, whatever the
row's stride), sorted there, and copied out to the output bindings. Sorting: insertion sort on
runs of `RUN` elements (few compares, no scratch), then bottom-up merge passes ping-ponging
between two scratch halves; both are stable (an element moves before another only when the
comparator says it is strictly less), as XLA's sort is. Merge passes are unrolled at generation
time (the row length is static), so which half holds the result is known. The comparator DAG is
emitted inline wherever two elements are compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from llvmlite import ir

from compiler import kernel_ir as kir
from compiler.errors import CompileError
from hal.device import DeviceLimits

from .abi_builder import I8, I64, entry_alloca, for_range, i32, i64
from .expr import ExprEmitter, scalar_type, strides, widen_bits
from .grid_loops import kernel_entry
from .matmul import ERROR_LOCAL_MEMORY, GeneratedKernel

RUN = 16  # elements per insertion-sorted run: below this, insertion sort beats merging


class _Rows:
    """Scratch arrays of one row per operand: `half` 0 or 1 of the local memory."""

    def __init__(self, b: ir.IRBuilder, local: ir.Value, dtypes: Sequence[np.dtype], length: int) -> None:
        self.b, self.dtypes, self.length = b, list(dtypes), length
        self.row_bytes = sum(length * d.itemsize for d in dtypes)
        self.bases: list[list[ir.Value]] = []
        for half in range(2):
            offset, arrays = half * self.row_bytes, []
            for d in dtypes:
                ptr = b.gep(local, [i64(offset)], inbounds=True)
                arrays.append(b.bitcast(ptr, scalar_type(d, in_memory=True).as_pointer()))
                offset += length * d.itemsize
            self.bases.append(arrays)

    def load(self, half: int, i: ir.Value) -> list[ir.Value]:
        return [self.b.load(self.b.gep(p, [i], inbounds=True)) for p in self.bases[half]]

    def store(self, half: int, i: ir.Value, values: Sequence[ir.Value]) -> None:
        for p, v in zip(self.bases[half], values):
            self.b.store(v, self.b.gep(p, [i], inbounds=True))


def _while(b: ir.IRBuilder, name: str):
    """Blocks of a while loop: (header, body, after); the builder is left in the header."""
    header, body, after = (b.append_basic_block(f"{name}.{s}") for s in ("header", "body", "end"))
    b.branch(header)
    b.position_at_end(header)
    return header, body, after


def generate_sort(region: kir.KernelRegion) -> GeneratedKernel:
    """LLVM IR for a sort `region`; dispatch it with `kernel.workgroup_count`."""
    body = region.body
    assert isinstance(body, kir.SortBody)
    shape, dim, n_ops = body.shape, body.dimension, body.operands
    length = shape[dim]
    dtypes = [region.bindings[k].dtype for k in range(n_ops)]
    others = [d for d in range(len(shape)) if d != dim]
    rows = math.prod(shape[d] for d in others)
    rows_per_group = max(1, min(rows, 4096 // max(length, 1)))
    grid = (-(-rows // rows_per_group), 1, 1)
    halves = 2 if length > RUN else 1
    local_size = halves * sum(length * d.itemsize for d in dtypes)
    if local_size > DeviceLimits.local_memory_size:
        raise CompileError(f"{region.name}: sorting rows of {length} elements needs {local_size} bytes of "
                           f"workgroup memory, more than the {DeviceLimits.local_memory_size} a device gives")

    module = ir.Module()
    kb, ptrs = kernel_entry(module, region)
    b = kb.builder
    with b.if_then(b.icmp_unsigned("<", kb.local_memory_size(), i32(local_size)), likely=False):
        b.ret(i32(ERROR_LOCAL_MEMORY))
    scratch = _Rows(b, kb.local_memory(I8), dtypes, length)
    stride = strides(shape)

    def less(x: Sequence[ir.Value], y: Sequence[ir.Value]) -> ir.Value:
        args = []
        for d, xv, yv in zip(dtypes, x, y):
            if d == np.bool_:
                xv, yv = (b.icmp_unsigned("!=", v, ir.Constant(v.type, 0)) for v in (xv, yv))
            elif d in kir.NARROW_FLOATS:  # scratch holds f16/bf16 bits, the comparator f32
                xv, yv = (widen_bits(b, v, d) for v in (xv, yv))
            args += [xv, yv]
        return ExprEmitter(b, region.bindings, ptrs, [], args=args).value(body.less)

    def insertion_sort(lo: ir.Value, hi: ir.Value) -> None:
        with for_range(b, b.add(lo, i64(1)), hi, name="ins") as i:
            key = scratch.load(0, i)
            j = entry_alloca(b, I64, "j")
            b.store(i, j)
            header, loop, after = _while(b, "shift")
            jv = b.load(j)
            check = b.append_basic_block("shift.cmp")
            b.cbranch(b.icmp_signed(">", jv, lo), check, after)
            b.position_at_end(check)
            prev = b.sub(jv, i64(1))
            prev_values = scratch.load(0, prev)
            b.cbranch(less(key, prev_values), loop, after)
            b.position_at_end(loop)
            scratch.store(0, jv, prev_values)
            b.store(prev, j)
            b.branch(header)
            b.position_at_end(after)
            scratch.store(0, b.load(j), key)

    def merge_pass(src: int, width: int) -> None:
        """Merge neighbouring sorted runs of `width` from half `src` into the other half."""
        with for_range(b, 0, length, step=2 * width, name=f"merge{width}") as lo:
            mid = b.select(b.icmp_signed("<", b.add(lo, i64(width)), i64(length)), b.add(lo, i64(width)), i64(length))
            hi = b.select(b.icmp_signed("<", b.add(lo, i64(2 * width)), i64(length)), b.add(lo, i64(2 * width)), i64(length))
            i, j = entry_alloca(b, I64, "i"), entry_alloca(b, I64, "j")
            b.store(lo, i)
            b.store(mid, j)
            with for_range(b, lo, hi, name="k") as k:
                iv, jv = b.load(i), b.load(j)
                # Branch-free and in bounds: an exhausted side reads its last element, unused.
                left = scratch.load(src, b.select(b.icmp_signed("<", iv, mid), iv, b.sub(mid, i64(1))))
                right = scratch.load(src, b.select(b.icmp_signed("<", jv, hi), jv, b.sub(hi, i64(1))))
                right_left = b.and_(b.icmp_signed("<", jv, hi),
                                    b.or_(b.icmp_signed(">=", iv, mid), less(right, left)))
                scratch.store(1 - src, k, [b.select(right_left, r, l) for r, l in zip(right, left)])
                b.store(b.select(right_left, b.add(jv, i64(1)), jv), j)
                b.store(b.select(right_left, iv, b.add(iv, i64(1))), i)

    wx = b.zext(kb.workgroup_id(0), I64)
    start = b.mul(wx, i64(rows_per_group))
    end = b.add(start, i64(rows_per_group))
    end = b.select(b.icmp_unsigned("<", end, i64(rows)), end, i64(rows))
    with for_range(b, start, end, name="row") as row:
        base = i64(0)
        other_shape = [shape[d] for d in others]
        for d, s, n in zip(others, strides(other_shape), other_shape):
            base = b.add(base, b.mul(b.urem(b.udiv(row, i64(s)), i64(n)), i64(stride[d])))
        with for_range(b, 0, length, name="copy_in") as e:
            at = b.add(base, b.mul(e, i64(stride[dim])))
            scratch.store(0, e, [b.load(b.gep(ptrs[k], [at], inbounds=True)) for k in range(n_ops)])
        with for_range(b, 0, length, step=RUN, name="runs") as lo:
            hi = b.add(lo, i64(RUN))
            insertion_sort(lo, b.select(b.icmp_signed("<", hi, i64(length)), hi, i64(length)))
        src, width = 0, RUN
        while width < length:
            merge_pass(src, width)
            src, width = 1 - src, 2 * width
        with for_range(b, 0, length, name="copy_out") as e:
            at = b.add(base, b.mul(e, i64(stride[dim])))
            for k, v in enumerate(scratch.load(src, e)):
                b.store(v, b.gep(ptrs[n_ops + k], [at], inbounds=True))
    b.ret(i32(0))
    return GeneratedKernel(region.name, str(module), grid, local_size, len(region.bindings), None)
