"""Kernels the HAL conformance suite dispatches, each written once as a portable kernel
(compiler/portable.py) and built for every driver's format: CPU native code for local-sync and
local-task, SPIR-V for vulkan.

They are small on purpose: the suite checks the model (grids, bindings, constants, ordering,
failures), not kernel speed. A body runs once per invocation (GPU style); `k.b` is the llvmlite
builder, ids and indices are i32.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from compiler.portable import F32, F64, I32, kernel

TILE = 4  # matmul tile edge (workgroup_size (TILE, TILE))


def _lt(k, a, b):
    return k.b.icmp_unsigned("<", a, b)


def _eq(k, a, b):
    return k.b.icmp_unsigned("==", a, b)


@kernel(workgroup_size=64, bindings=(np.float32, np.float32), constants=(np.float32,))
def saxpy(k):
    """y[i] += a * x[i], one element per invocation."""
    b = k.b
    i = k.global_id(0)
    with b.if_then(_lt(k, i, k.length(1))):
        k.store(1, i, b.fadd(k.load(1, i), b.fmul(k.constant(0), k.load(0, i))))


@kernel(workgroup_size=(2, 3, 4), bindings=(np.int32,))
def write_ids(k):
    """Slot `linear` (x-fastest) of out, 8 int32 each: id, count, size, and a run counter;
    written by the workgroup's first invocation."""
    b = k.b
    wid = [k.workgroup_id(d) for d in range(3)]
    cnt = [k.workgroup_count(d) for d in range(3)]
    with b.if_then(_eq(k, k.local_index(), k.i32(0))):
        lin = b.add(wid[0], b.mul(cnt[0], b.add(wid[1], b.mul(cnt[1], wid[2]))))
        base = b.mul(lin, k.i32(8))
        at = lambda j: b.add(base, k.i32(j))  # noqa: E731
        for d in range(3):
            k.store(0, at(d), wid[d])
        k.store(0, at(3), b.mul(b.mul(cnt[0], cnt[1]), cnt[2]))
        for d in range(3):
            k.store(0, at(4 + d), k.i32(k.workgroup_size[d]))
        k.store(0, at(7), b.add(k.load(0, at(7)), k.i32(1)))


@kernel(workgroup_size=(TILE, TILE), bindings=(np.float32, np.float32, np.float32), constants=(np.uint32, np.uint32, np.uint32))
def matmul(k):
    """c[m, n] = a[m, k] @ b[k, n]; invocation (x, y) computes c[y, x]."""
    b = k.b
    m, n, kk = (k.constant(j) for j in range(3))
    row, col = k.global_id(1), k.global_id(0)
    with b.if_then(b.and_(_lt(k, row, m), _lt(k, col, n))):
        acc = b.alloca(F32)
        b.store(ir.Constant(F32, 0.0), acc)
        with k.loop(0, kk, name="p") as p:
            prod = b.fmul(k.load(0, b.add(b.mul(row, kk), p)), k.load(1, b.add(b.mul(p, n), col)))
            b.store(b.fadd(b.load(acc), prod), acc)
        k.store(2, b.add(b.mul(row, n), col), b.load(acc))


@kernel(workgroup_size=1, bindings=(np.int32,), constants=(np.uint32,))
def increment(k):
    """buf[index] += 1 (one workgroup: a read-modify-write that races without a barrier)."""
    i = k.constant(0)
    k.store(0, i, k.b.add(k.load(0, i), k.i32(1)))


@kernel(workgroup_size=1, bindings=(np.int32,))
def increment_all(k):
    """buf[wg.id[0]] += 1."""
    i = k.workgroup_id(0)
    k.store(0, i, k.b.add(k.load(0, i), k.i32(1)))


@kernel(workgroup_size=16, bindings=(np.int32,))
def iota(k):
    """out[i] = i."""
    i = k.global_id(0)
    with k.b.if_then(_lt(k, i, k.length(0))):
        k.store(0, i, i)


@kernel(workgroup_size=16, bindings=(np.int32, np.int32))
def reverse_double(k):
    """dst[i] = 2 * src[n - 1 - i]: reads elements other workgroups of the previous dispatch wrote."""
    b = k.b
    i = k.global_id(0)
    with b.if_then(_lt(k, i, k.length(1))):
        src = b.sub(b.sub(k.length(0), k.i32(1)), i)
        k.store(1, i, b.mul(k.i32(2), k.load(0, src)))


@kernel(workgroup_size=1, bindings=(np.uint32,), constants=(np.uint32, np.uint32, np.uint32))
def write_count(k):
    """Writes an indirect workgroup count (x, y, z)."""
    for d in range(3):
        k.store(0, k.i32(d), k.constant(d))


@kernel(workgroup_size=1, bindings=(np.int32, np.uint32, np.float32), constants=(np.int32, np.uint32, np.float32))
def store_constants(k):
    """Echoes the three constants, one per binding."""
    for j in range(3):
        k.store(j, k.i32(0), k.constant(j))


@kernel(workgroup_size=1, bindings=(np.int32,), constants=(np.uint32, np.uint32, np.uint32))
def fail_at(k):
    """Fails with `status` at workgroup (x, y, 0); elsewhere marks out[linear id]."""
    b = k.b
    here = b.and_(_eq(k, k.workgroup_id(0), k.constant(0)), _eq(k, k.workgroup_id(1), k.constant(1)))
    k.fail_if(here, k.constant(2))
    with b.if_then(b.not_(here)):
        k.store(0, b.add(k.workgroup_id(0), b.mul(k.workgroup_count(0), k.workgroup_id(1))), k.i32(1))


@kernel(workgroup_size=1, bindings=(np.float32,), constants=(np.uint32,))
def oob_at(k):
    """Indexes past the end of its binding at workgroup `at` (boundscheck fails the kernel)."""
    b = k.b
    i = k.workgroup_id(0)
    i = b.select(_eq(k, i, k.constant(0)), b.add(i, k.length(0)), i)
    k.store(0, i, ir.Constant(F32, 1.0))


@kernel(workgroup_size=1, bindings=(np.float64,), constants=(np.uint32,))
def busy(k):
    """Burns `iters` steps of a serial floating-point chain (a few ns each, not foldable);
    stores the result in out[wg.id[0]]."""
    b = k.b
    acc = b.alloca(F64)
    b.store(b.uitofp(k.workgroup_id(0), F64), acc)
    with k.loop(0, k.constant(0), name="it"):
        b.store(b.fadd(b.fmul(b.load(acc), ir.Constant(F64, 0.999999)), ir.Constant(F64, 1.0)), acc)
    k.store(0, k.workgroup_id(0), b.load(acc))


@kernel(workgroup_size=1, bindings=(np.int32,), local_memory=256)
def use_local(k):
    """Sums 0..63 through a workgroup-local array."""
    b = k.b
    scratch = k.local_array("scratch", np.int32, 64)
    with k.loop(0, 64, name="w") as i:
        b.store(i, k.local_pointer(scratch, i))
    s = b.alloca(I32)
    b.store(k.i32(0), s)
    with k.loop(0, 64, name="r") as i:
        b.store(b.add(b.load(s), b.load(k.local_pointer(scratch, i))), s)
    k.store(0, k.workgroup_id(0), b.load(s))


@kernel(workgroup_size=16, bindings=(np.int8, np.int8, np.int8, np.uint8, np.bool_))
def byte_ops(k):
    """From v = src[n - 1 - i] (int8), one element per invocation into each of four byte outputs:
    3 * v - 7 (wrapping), v / -5 (truncating), uint8(v) >> 1 ^ 0x5A, v < 0. Neighbouring
    invocations store neighbouring bytes, so a driver that packs bytes into words must not lose
    a concurrent neighbour's store."""
    b = k.b
    i8 = lambda v: ir.Constant(ir.IntType(8), v)  # noqa: E731
    i = k.global_id(0)
    with b.if_then(_lt(k, i, k.length(1))):
        v = k.load(0, b.sub(b.sub(k.length(0), k.i32(1)), i))
        k.store(1, i, b.sub(b.mul(v, i8(3)), i8(7)))
        k.store(2, i, b.sdiv(v, i8(-5)))
        k.store(3, i, b.xor(b.lshr(v, i8(1)), i8(0x5A)))
        k.store(4, i, b.zext(b.icmp_signed("<", v, i8(0)), ir.IntType(8)))
