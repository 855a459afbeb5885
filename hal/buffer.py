"""Buffers: byte ranges with a usage and a memory type, bounds-checked on every access.

`Buffer` is the driver-neutral part: size, usage, memory type, range checks and typed host views
built on one hook, `_host_bytes()` (the mapped bytes, as uint8). Each driver's allocator makes its
own subclass: CPU drivers keep buffers in host memory, 64-byte aligned (a cache line, and the
widest vector a kernel loads), so mapping is free (`HostBuffer`); a GPU driver backs a buffer
with device memory, persistently mapped where it is host-visible. Memory that is host-visible
but not coherent needs `flush()` after host writes and `invalidate()` before host reads (Vulkan's
vkFlushMappedMemoryRanges / vkInvalidateMappedMemoryRanges); on coherent memory both are no-ops,
so callers may always call them.
"""

from __future__ import annotations

import enum
from typing import Sequence

import numpy as np

from common.errors import FailedPrecondition, InvalidArgument, OutOfRange
from common.memory import aligned_bytes



class BufferUsage(enum.IntFlag):
    TRANSFER = 1  # source or target of fill / copy / update
    DISPATCH_STORAGE = 2  # bound to a dispatch
    MAPPING = 4  # mapped for host access
    DEFAULT = TRANSFER | DISPATCH_STORAGE | MAPPING


class MemoryType(enum.IntFlag):
    DEVICE_LOCAL = 1
    HOST_VISIBLE = 2
    HOST_COHERENT = 4
    DEFAULT = DEVICE_LOCAL | HOST_VISIBLE | HOST_COHERENT  # what CPU memory is


class Buffer:
    """A device allocation. Drivers subclass it and supply `_host_bytes` (and, where memory is
    not coherent, `flush` / `invalidate`)."""

    def __init__(self, size: int, usage: BufferUsage = BufferUsage.DEFAULT, memory_type: MemoryType = MemoryType.DEFAULT, *, device=None) -> None:
        if not isinstance(size, (int, np.integer)) or size < 0:
            raise InvalidArgument(f"buffer size {size!r} must be a non-negative int")
        self.size = int(size)
        self.usage = BufferUsage(usage)
        self.memory_type = MemoryType(memory_type)
        self.device = device

    def _host_bytes(self) -> np.ndarray:
        """All `size` bytes as a writable uint8 array over host-visible memory."""
        raise FailedPrecondition(f"{self!r} is not host-visible (memory type {self.memory_type!r}); copy it to a MAPPING buffer")

    def flush(self, offset: int = 0, length: int | None = None) -> None:
        """Makes host writes to [offset, offset+length) visible to the device (no-op when coherent)."""

    def invalidate(self, offset: int = 0, length: int | None = None) -> None:
        """Makes device writes to [offset, offset+length) visible to the host (no-op when coherent)."""

    def __repr__(self) -> str:
        return f"Buffer(size={self.size}, usage={self.usage!r})"

    def check_range(self, offset: int, length: int | None, what: str) -> tuple[int, int]:
        """Resolves (offset, length) — length None means 'to the end' — or raises OutOfRange
        naming `what`, the range and the buffer size."""
        offset = int(offset)
        length = self.size - offset if length is None else int(length)
        if offset < 0 or length < 0 or offset + length > self.size:
            raise OutOfRange(f"{what}: range [{offset}, {offset + length}) is outside {self!r} of {self.size} bytes")
        return offset, length

    def require(self, usage: BufferUsage, what: str) -> None:
        if usage & ~self.usage:
            raise InvalidArgument(f"{what}: {self!r} lacks usage {BufferUsage(usage & ~self.usage)!r}")

    def map(self, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Host view (uint8) of [offset, offset+length); writes go straight to the buffer."""
        self.require(BufferUsage.MAPPING, "map")
        offset, length = self.check_range(offset, length, "map")
        return self._host_bytes()[offset : offset + length]

    def view(self, dtype, shape: Sequence[int] | int | None = None, offset: int = 0) -> np.ndarray:
        """Typed host view; shape None means as many elements as fit."""
        dtype = np.dtype(dtype)
        if shape is None:
            shape = ((self.size - offset) // dtype.itemsize,)
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset % dtype.itemsize:
            raise InvalidArgument(f"view: offset {offset} is not a multiple of {dtype} size {dtype.itemsize}")
        return self.map(offset, nbytes).view(dtype).reshape(shape)

    def write(self, data, offset: int = 0) -> None:
        src = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        self.map(offset, src.nbytes)[:] = src
        self.flush(offset, src.nbytes)

    def read(self, dtype=np.uint8, shape=None, offset: int = 0) -> np.ndarray:
        view = self.view(dtype, shape, offset)
        self.invalidate(offset, view.nbytes)
        return view.copy()


class HostBuffer(Buffer):
    """A buffer in host memory (what CPU drivers use): `address` is the base pointer kernels see."""

    def __init__(self, size: int, usage: BufferUsage = BufferUsage.DEFAULT, memory_type: MemoryType = MemoryType.DEFAULT, *, device=None) -> None:
        super().__init__(size, usage, memory_type, device=device)
        self._storage = aligned_bytes(max(1, self.size))[: self.size]
        self.address = self._storage.ctypes.data

    def _host_bytes(self) -> np.ndarray:
        return self._storage


class BufferView:
    """A buffer range seen as a tensor: shape and element type (IREE's buffer view)."""

    def __init__(self, buffer: Buffer, shape: Sequence[int], dtype, offset: int = 0) -> None:
        self.buffer = buffer
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.offset = int(offset)
        if any(d < 0 for d in self.shape):
            raise InvalidArgument(f"buffer view shape {self.shape} has a negative dimension")
        buffer.check_range(self.offset, self.nbytes, f"buffer view {self.shape}x{self.dtype}")

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def to_numpy(self) -> np.ndarray:
        return self.buffer.read(self.dtype, self.shape, self.offset)

    def __repr__(self) -> str:
        return f"BufferView({'x'.join(map(str, self.shape)) or 'scalar'}x{self.dtype})"
