"""Aligned host memory: the scheduler's arena tables and the CPU drivers' buffers both need it."""

from __future__ import annotations

import numpy as np

ALIGNMENT = 64  # a cache line, and the widest vector a kernel loads


def aligned_bytes(nbytes: int, alignment: int = ALIGNMENT) -> np.ndarray:
    """Zeroed uint8 storage whose first byte is `alignment`-aligned."""
    raw = np.zeros(nbytes + alignment, dtype=np.uint8)
    start = (-raw.ctypes.data) % alignment
    return raw[start : start + nbytes]
