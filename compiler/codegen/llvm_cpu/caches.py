"""Data cache sizes of the machine the kernels are compiled on, read from the OS.

Tiling is sized from them (matmul's K block from L1, its row block from L2): kernels are
compiled for the host (the executable's format tag names its CPU), so its caches are the right
ones. Linux publishes them under /sys/devices/system/cpu/cpu0/cache/index*/ (level, type,
size); elsewhere, or when that is unreadable, FALLBACK (a common x86 server core) is used.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

SYSFS = Path("/sys/devices/system/cpu/cpu0/cache")


@dataclass(frozen=True)
class Caches:
    l1d: int  # bytes of L1 data cache per core
    l2: int  # bytes of L2 per core (unified)


FALLBACK = Caches(l1d=32 << 10, l2=1 << 20)


def _size(text: str) -> int:
    """'48K' / '2048K' / '1M' / '32768' -> bytes."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def read(root: Path = SYSFS) -> Caches:
    """The L1d and L2 sizes under `root` (sysfs layout); FALLBACK for any level not found."""
    found: dict[int, int] = {}
    try:
        for index in sorted(root.glob("index*")):
            kind = (index / "type").read_text().strip()
            if kind in ("Data", "Unified"):
                found.setdefault(int((index / "level").read_text()), _size((index / "size").read_text()))
    except (OSError, ValueError):
        found = {}
    return Caches(l1d=found.get(1, FALLBACK.l1d), l2=found.get(2, FALLBACK.l2))


@functools.cache
def host() -> Caches:
    return read()
