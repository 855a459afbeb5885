"""Streaming (non-temporal) stores for outputs far larger than the caches.

A plain store reads the line it writes first (read for ownership), so a kernel writing a large
output moves every output byte over the memory bus twice; bench/roofline.py's copy probe shows
the cost (11.9 GB/s with plain stores, 18.4 GB/s with streaming ones on one core of the dev VM).
A streaming store writes whole lines without reading them and keeps them out of the caches: a
win only when nothing reads the output soon from cache, i.e. when it is much larger than the
share of the last-level cache a core can count on, whatever sysfs says the L3 is (a VM sees
its host's whole L3, shared with every other tenant).

x86 streaming stores need addresses aligned to the vector (movntps faults otherwise) and outputs
are mostly the caller's arrays, bound in place and aligned as numpy aligns them (16 bytes past a
64-byte boundary, for large ones). So a kernel reads its output pointers' offset from a vector
boundary at run time (`alignment`): where every output has the same one, each row stores its
first few points plainly (`peel`) and the rest with whole aligned vectors; elsewhere it takes a
copy of the loop with plain stores (`both`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llvmlite import ir

from compiler import kernel_ir as kir

from .abi_builder import I64, i64

NONTEMPORAL_BYTES = 32 << 20  # per dispatch: past a core's share of any L3 the project runs on


def wanted(region: kir.KernelRegion, slots: Sequence[int]) -> bool:
    """Whether the outputs in `slots` are large enough for streaming stores (and of one element
    size, so that one peel aligns them all)."""
    sizes = {region.bindings[s].dtype.itemsize for s in slots}
    return len(sizes) == 1 and sum(region.bindings[s].size * region.bindings[s].dtype.itemsize for s in slots) >= NONTEMPORAL_BYTES


def alignment(b: ir.IRBuilder, region: kir.KernelRegion, ptrs: Sequence[ir.Value], slots: Sequence[int],
              lanes: int) -> tuple[ir.Value, ir.Value]:
    """(i1: every output in `slots` lies the same whole number of elements past a vector
    boundary; i64: the elements from its start to the next boundary, the peel). Rows whose
    length is a multiple of `lanes` all start at that offset."""
    itemsize = region.bindings[slots[0]].dtype.itemsize
    mask = i64(lanes * itemsize - 1)
    lows = [b.and_(b.ptrtoint(ptrs[s], I64), mask) for s in slots]
    ok = b.icmp_unsigned("==", b.and_(lows[0], i64(itemsize - 1)), i64(0))
    for low in lows[1:]:
        ok = b.and_(ok, b.icmp_unsigned("==", low, lows[0]))
    peel = b.udiv(b.and_(b.sub(i64(lanes * itemsize), lows[0]), mask), i64(itemsize))
    return ok, peel


def both(b: ir.IRBuilder, condition: ir.Value, emit: Callable[[bool], None]) -> None:
    """emit(True) where `condition` holds (streaming stores allowed), emit(False) elsewhere."""
    with b.if_else(condition) as (then, otherwise):
        with then:
            emit(True)
        with otherwise:
            emit(False)
