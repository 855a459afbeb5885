"""Native primitives for code compiled with numba: atomics, spin hints, a clock, futexes,
raw pointer access and calls through function pointers.

Every shared word the scheduler touches is an int64 at a raw address; these intrinsics emit the
LLVM instructions directly (`atomicrmw`, `cmpxchg`, `load atomic`), sequentially consistent so
that the reasoning in `scheduler/executor.py` needs no weaker-ordering arguments. On x86-64 a
seq_cst load is a plain load and a seq_cst RMW is one locked instruction, so this costs nothing.
"""

from __future__ import annotations

import ctypes
import platform

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_i8p = ir.IntType(8).as_pointer()
_i32 = ir.IntType(32)
_i64 = ir.IntType(64)
_X86 = platform.machine() in ("x86_64", "AMD64")
_CLOCK_MONOTONIC = 1


def _ptr(builder: ir.IRBuilder, addr: ir.Value, ty: ir.Type) -> ir.Value:
    return builder.inttoptr(addr, ty.as_pointer())


@intrinsic
def load(typingctx, addr):
    """Atomic (seq_cst) load of the int64 at `addr`."""

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_ptr(builder, args[0], _i64), "seq_cst", 8)

    return types.int64(types.int64), codegen


@intrinsic
def store(typingctx, addr, value):
    """Atomic (seq_cst) store of an int64 to `addr`."""

    def codegen(context, builder, sig, args):
        builder.store_atomic(args[1], _ptr(builder, args[0], _i64), "seq_cst", 8)
        return context.get_dummy_value()

    return types.void(types.int64, types.int64), codegen


@intrinsic
def fetch_add(typingctx, addr, value):
    """Atomically adds `value` to the int64 at `addr`; returns the previous value."""

    def codegen(context, builder, sig, args):
        return builder.atomic_rmw("add", _ptr(builder, args[0], _i64), args[1], "seq_cst")

    return types.int64(types.int64, types.int64), codegen


@intrinsic
def cas(typingctx, addr, expected, desired):
    """Compare-and-swap on the int64 at `addr`; returns the value found (== expected on success)."""

    def codegen(context, builder, sig, args):
        pair = builder.cmpxchg(_ptr(builder, args[0], _i64), args[1], args[2], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return types.int64(types.int64, types.int64, types.int64), codegen


@intrinsic
def cpu_relax(typingctx):
    """The spin-wait hint (x86 `pause`); a no-op on targets without one."""

    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def now_ns(typingctx):
    """CLOCK_MONOTONIC in ns through libc's clock_gettime (the vDSO: ~20 ns, no syscall).
    Not the cycle counter: on this project's VMs `rdtsc` does not tick at a fixed rate."""

    def codegen(context, builder, sig, args):
        ts_type = ir.LiteralStructType([_i64, _i64])
        ts = cgutils.alloca_once(builder, ts_type)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_i32, [_i32, ts_type.as_pointer()]), "clock_gettime")
        builder.call(fn, [ir.Constant(_i32, _CLOCK_MONOTONIC), ts])
        seconds = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        nanoseconds = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.add(builder.mul(seconds, ir.Constant(_i64, 1_000_000_000)), nanoseconds)

    return types.int64(), codegen


@intrinsic
def call_kernel(typingctx, fn, dispatch_state, workgroup_state):
    """Calls the native `int32 fn(const void *dispatch_state, const void *workgroup_state)`."""

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(_i32, [_i8p, _i8p])
        target = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(target, [builder.inttoptr(args[1], _i8p), builder.inttoptr(args[2], _i8p)])

    return types.int32(types.int64, types.int64, types.int64), codegen


@intrinsic
def voidptr(typingctx, addr):
    """An int64 address as a `void*`, for `numba.carray(voidptr(a), n, dtype)`."""

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], _i8p)

    return types.voidptr(types.int64), codegen


@intrinsic
def load_u32(typingctx, addr):
    """Plain load of the uint32 at `addr`, zero-extended (read-only ABI structs)."""

    def codegen(context, builder, sig, args):
        return builder.zext(builder.load(_ptr(builder, args[0], _i32), align=4), _i64)

    return types.int64(types.int64), codegen


@intrinsic
def load_i64(typingctx, addr):
    """Plain load of the int64 at `addr` (read-only ABI structs, pointers)."""

    def codegen(context, builder, sig, args):
        return builder.load(_ptr(builder, args[0], _i64), align=8)

    return types.int64(types.int64), codegen


@intrinsic
def store_u32(typingctx, addr, value):
    """Plain store of the low 32 bits of `value` to `addr`."""

    def codegen(context, builder, sig, args):
        builder.store(builder.trunc(args[1], _i32), _ptr(builder, args[0], _i32), align=4)
        return context.get_dummy_value()

    return types.void(types.int64, types.int64), codegen


# --- futexes -------------------------------------------------------------------------------------
# Parking uses the raw futex syscall on the low 32 bits of an int64 word, through libc's variadic
# `syscall` declared as an external symbol: no inline asm (which would need the asm parser) and
# no ctypes pointer baked into the code (which would stop numba caching the worker loop).
_SYS_FUTEX = 202  # x86-64
_FUTEX_WAIT_PRIVATE = 128 | 0
_FUTEX_WAKE_PRIVATE = 128 | 1


@intrinsic
def _syscall5(typingctx, nr, a, b, c, d):
    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(_i64, [_i64], var_arg=True)
        fn = cgutils.get_or_insert_function(builder.module, fnty, "syscall")
        return builder.call(fn, list(args))

    return types.int64(types.int64, types.int64, types.int64, types.int64, types.int64), codegen


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


@njit(nogil=True, cache=True)
def futex_wait(addr: int, expected: int, timespec_addr: int) -> int:
    """Sleeps while the 32-bit word at `addr` equals `expected` (low 32 bits), until woken or the
    relative timeout at `timespec_addr` (0: none) passes. Spurious returns are allowed."""
    return _syscall5(_SYS_FUTEX, addr, _FUTEX_WAIT_PRIVATE, expected & 0xFFFFFFFF, timespec_addr)


@njit(nogil=True, cache=True)
def futex_wake(addr: int, count: int) -> int:
    """Wakes up to `count` threads sleeping on the word at `addr`."""
    return _syscall5(_SYS_FUTEX, addr, _FUTEX_WAKE_PRIVATE, count, 0)


def make_timespec(seconds: float) -> _Timespec:
    ns = max(0, int(seconds * 1e9))
    return _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)


@intrinsic
def store_i64(typingctx, addr, value):
    """Plain store of an int64 to `addr` (memory owned by the storing worker)."""

    def codegen(context, builder, sig, args):
        builder.store(args[1], _ptr(builder, args[0], _i64), align=1)
        return context.get_dummy_value()

    return types.void(types.int64, types.int64), codegen


@intrinsic
def store_u8(typingctx, addr, value):
    def codegen(context, builder, sig, args):
        builder.store(builder.trunc(args[1], ir.IntType(8)), _ptr(builder, args[0], ir.IntType(8)))
        return context.get_dummy_value()

    return types.void(types.int64, types.int64), codegen


@intrinsic
def memcpy(typingctx, dst, src, n):
    """`llvm.memcpy` between raw addresses (ranges validated at record time, never overlapping)."""

    def codegen(context, builder, sig, args):
        cgutils.raw_memcpy(builder, builder.inttoptr(args[0], _i8p), builder.inttoptr(args[1], _i8p), args[2], 1)
        return context.get_dummy_value()

    return types.void(types.int64, types.int64, types.int64), codegen


@intrinsic
def address_of(typingctx, ptr):
    """A `void*` as an int64 address (the inverse of `voidptr`)."""

    def codegen(context, builder, sig, args):
        return builder.ptrtoint(args[0], _i64)

    return types.int64(types.voidptr), codegen


@intrinsic
def f32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the low 32 bits of `bits` (kernel constants)."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.trunc(args[0], _i32), ir.FloatType())

    return types.float32(types.int64), codegen
