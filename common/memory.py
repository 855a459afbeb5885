"""Aligned host memory: the scheduler's arena tables and the CPU drivers' buffers both need it.

Sizes are checked before anything is allocated: a shape with a negative dim is InvalidArgument,
and a request larger than the memory the machine can give now is ResourceExhausted. Without the
second check an allocation of more than the machine has succeeds (Linux overcommits) and the
process is killed by the kernel's OOM killer when the memory is first written; a wrapped int64
product of huge dims would allocate a small buffer that kernels then overrun."""

from __future__ import annotations

import math
import mmap
from typing import Sequence

import numpy as np
import psutil

from common.errors import InvalidArgument, ResourceExhausted

ALIGNMENT = 64  # a cache line, and the widest vector a kernel loads


def nbytes_of(shape: Sequence[int], dtype: np.dtype, what: str) -> int:
    """Bytes an array of `shape` and `dtype` takes, as an exact int (no int64 wraparound);
    InvalidArgument naming `what` for a negative or non-integer dim."""
    dims = []
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise InvalidArgument(f"{what}: shape {tuple(shape)} has a dim that is not a non-negative int: {d!r}")
        dims.append(int(d))
    return math.prod(dims) * np.dtype(dtype).itemsize


def check_available(nbytes: int, what: str) -> None:
    """ResourceExhausted unless the machine can give `nbytes` now (free memory and swap)."""
    if nbytes > 1 << 30:  # small requests never need the (costly) question
        available = psutil.virtual_memory().available + psutil.swap_memory().free
        if nbytes > available:
            raise ResourceExhausted(f"{what}: {nbytes} bytes requested; the machine has {available} available")


MMAP_MIN = 1 << 17  # from this size up, memory comes straight from the OS


def aligned_bytes(nbytes: int, alignment: int = ALIGNMENT) -> np.ndarray:
    """Zeroed uint8 storage whose first byte is `alignment`-aligned.

    Large blocks are anonymous mmaps (page-aligned, zeroed, unmapped when the array goes): from
    malloc, glibc raises its mmap threshold after each large free and serves the next ones from
    the heap, which it rarely returns, so creating and closing devices grew RSS by ~370 KiB a
    cycle (scheduler slot chunks, local memory, buffers)."""
    check_available(nbytes, "host allocation")
    try:
        if nbytes + alignment >= MMAP_MIN and alignment <= mmap.PAGESIZE:
            return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.uint8)
        raw = np.zeros(nbytes + alignment, dtype=np.uint8)
    except (MemoryError, OSError) as e:
        raise ResourceExhausted(f"host allocation: {nbytes} bytes: out of host memory ({e})") from None
    start = (-raw.ctypes.data) % alignment
    return raw[start : start + nbytes]
