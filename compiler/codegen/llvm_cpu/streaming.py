"""Streaming (non-temporal) stores for outputs far larger than the caches.

A plain store reads the line it writes first (read for ownership), so a kernel writing a large
output moves every output byte over the memory bus twice; bench/roofline.py's copy probe shows
the cost (11.9 GB/s with plain stores, 18.4 GB/s with streaming ones on one core of the dev VM).
A streaming store writes whole lines without reading them and keeps them out of the caches: a
win only when nothing reads the output soon from cache, i.e. when it is much larger than the
share of the last-level cache a core can count on, whatever sysfs says the L3 is (a VM sees
its host's whole L3, shared with every other tenant).

x86 streaming stores need addresses aligned to the vector (movntps faults otherwise) and outputs
may be the caller's arrays, bound in place and aligned as numpy aligned them, so a kernel checks
its output pointers at run time and has both loops (`both`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llvmlite import ir

from compiler import kernel_ir as kir

from .abi_builder import I1, I64, i64

NONTEMPORAL_BYTES = 32 << 20  # per dispatch: past a core's share of any L3 the project runs on


def wanted(region: kir.KernelRegion, slots: Sequence[int]) -> bool:
    """Whether the outputs in `slots` are large enough for streaming stores."""
    return sum(region.bindings[s].size * region.bindings[s].dtype.itemsize for s in slots) >= NONTEMPORAL_BYTES


def aligned(b: ir.IRBuilder, region: kir.KernelRegion, ptrs: Sequence[ir.Value], slots: Sequence[int],
            lanes: int) -> ir.Value:
    """i1: every output in `slots` starts at a multiple of its vector's size."""
    ok = ir.Constant(I1, 1)
    for s in slots:
        mask = i64(lanes * region.bindings[s].dtype.itemsize - 1)
        low = b.and_(b.ptrtoint(ptrs[s], I64), mask)
        ok = b.and_(ok, b.icmp_unsigned("==", low, i64(0)))
    return ok


def both(b: ir.IRBuilder, condition: ir.Value, emit: Callable[[bool], None]) -> None:
    """emit(True) where `condition` holds (streaming stores allowed), emit(False) elsewhere."""
    with b.if_else(condition) as (then, otherwise):
        with then:
            emit(True)
        with otherwise:
            emit(False)
