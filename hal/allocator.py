"""The allocator: where buffers come from. One per device; the device's limits apply.

`Allocator` holds what every driver shares (size checks, views, importing arrays); a driver
supplies `_create_buffer`, which picks the memory for a usage: CPU drivers always hand out host
memory (`HostAllocator`), a GPU driver device-local memory for buffers the host never maps and
host-visible memory for those it does.
"""

from __future__ import annotations

import numpy as np

from hal.buffer import Buffer, BufferUsage, BufferView, HostBuffer, MemoryType
from common.errors import InvalidArgument, ResourceExhausted
from common.memory import nbytes_of


class Allocator:
    def __init__(self, device, max_allocation_size: int = 1 << 40) -> None:
        self.device = device
        self.max_allocation_size = max_allocation_size

    def _create_buffer(self, size: int, usage: BufferUsage, memory_type: MemoryType) -> Buffer:
        """The driver's buffer of `size` bytes; raises ResourceExhausted when out of memory."""
        raise NotImplementedError

    def allocate_buffer(self, size: int, usage: BufferUsage = BufferUsage.DEFAULT, memory_type: MemoryType = MemoryType.DEFAULT) -> Buffer:
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 0:
            raise InvalidArgument(f"buffer size {size!r} must be a non-negative int")
        if isinstance(size, (int, np.integer)) and size > self.max_allocation_size:
            raise ResourceExhausted(f"allocate_buffer: {size} bytes exceeds the device limit of {self.max_allocation_size}")
        return self._create_buffer(size, BufferUsage(usage), MemoryType(memory_type))

    def allocate_view(self, shape, dtype, usage: BufferUsage = BufferUsage.DEFAULT) -> BufferView:
        shape = tuple(int(d) for d in shape)
        nbytes = nbytes_of(shape, dtype, "allocate_view")  # exact: an int64 product of huge dims wraps
        return BufferView(self.allocate_buffer(nbytes, usage), shape, dtype)

    def import_array(self, array, usage: BufferUsage = BufferUsage.DEFAULT) -> BufferView:
        """A new buffer holding a copy of `array` (C order). Without MAPPING in `usage` the
        buffer may be one the host cannot map (a GPU's device-local memory: where weights
        belong): the data then goes through a staging buffer and a queue copy."""
        array = np.ascontiguousarray(array)
        view = self.allocate_view(array.shape, array.dtype, usage)
        if usage & BufferUsage.MAPPING or not array.nbytes:
            view.buffer.write(array)
            return view
        staging = self.allocate_buffer(array.nbytes, BufferUsage.TRANSFER | BufferUsage.MAPPING)
        staging.write(array)
        done = self.device.create_semaphore(0)
        self.device.queue_copy(staging, 0, view.buffer, 0, array.nbytes, signal=[(done, 1)])
        done.wait(1, 60.0)
        return view


class HostAllocator(Allocator):
    """Host memory for every usage: what CPU drivers (and the default Device) allocate."""

    def import_array(self, array, usage: BufferUsage = BufferUsage.DEFAULT) -> BufferView:
        """Host memory is the device's memory: the copy goes straight in, whatever the usage
        (no staging buffer and queue copy as for a GPU's device-local memory)."""
        array = np.ascontiguousarray(array)
        view = self.allocate_view(array.shape, array.dtype, usage)
        src = array.reshape(-1).view(np.uint8)
        view.buffer._host_bytes()[: src.nbytes] = src
        return view

    def _create_buffer(self, size: int, usage: BufferUsage, memory_type: MemoryType) -> Buffer:
        try:
            return HostBuffer(size, usage, memory_type, device=self.device)
        except MemoryError as e:
            raise ResourceExhausted(f"allocate_buffer: {size} bytes: out of host memory") from e
