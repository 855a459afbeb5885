"""Aligned host memory: the scheduler's arena tables and the CPU drivers' buffers both need it.

Sizes are checked before anything is allocated: a shape with a negative dim is InvalidArgument,
and a request larger than the memory the machine can give now is ResourceExhausted. Without the
second check an allocation of more than the machine has succeeds (Linux overcommits) and the
process is killed by the kernel's OOM killer when the memory is first written; a wrapped int64
product of huge dims would allocate a small buffer that kernels then overrun."""

from __future__ import annotations

import math
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


def aligned_bytes(nbytes: int, alignment: int = ALIGNMENT) -> np.ndarray:
    """Zeroed uint8 storage whose first byte is `alignment`-aligned."""
    check_available(nbytes, "host allocation")
    try:
        raw = np.zeros(nbytes + alignment, dtype=np.uint8)
    except MemoryError:
        raise ResourceExhausted(f"host allocation: {nbytes} bytes: out of host memory") from None
    start = (-raw.ctypes.data) % alignment
    return raw[start : start + nbytes]
