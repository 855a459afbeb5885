"""Memory for buffers: device memory for every buffer, plus a pinned host mirror for those with
MAPPING usage (buffer.py says why kernels never read host memory in place). New buffers are
zeroed, as on every other driver."""

from __future__ import annotations

from hal.allocator import Allocator
from hal.buffer import Buffer, BufferUsage, MemoryType
from hal_gpu.cuda.buffer import CudaBuffer
from hal_gpu.cuda.driver import check, cu

_PORTABLE = 0x1  # CU_MEMHOSTALLOC_PORTABLE: pinned for every context
_HOST = MemoryType.HOST_VISIBLE | MemoryType.HOST_COHERENT


class CudaAllocator(Allocator):
    def __init__(self, device) -> None:
        super().__init__(device, max_allocation_size=device.total_memory)

    def _host(self, size: int) -> int:
        return int(check(cu().cuMemHostAlloc(max(size, 4), _PORTABLE), f"allocate_buffer: {size} bytes of pinned host memory"))

    def _create_buffer(self, size: int, usage: BufferUsage, memory_type: MemoryType) -> Buffer:
        d = cu()
        self.device.enter()
        nbytes = max(int(size), 4)
        address = int(check(d.cuMemAlloc(nbytes), f"allocate_buffer: {size} bytes of device memory"))
        check(d.cuMemsetD8(address, 0, nbytes), "zeroing a new buffer")
        host = None
        if usage & BufferUsage.MAPPING:
            try:
                host = self._host(int(size))
            except BaseException:
                d.cuMemFree(address)
                raise
        buffer = CudaBuffer(self.device, int(size), usage, MemoryType.DEVICE_LOCAL | (_HOST if host else 0), address, host)
        if host:
            buffer._bytes[:] = 0
        return buffer

    def pinned(self, size: int) -> CudaBuffer:
        """Pinned host memory alone, zeroed: the driver's own staging (state mirrors, update data)."""
        self.device.enter()
        buffer = CudaBuffer(self.device, size, BufferUsage.TRANSFER | BufferUsage.MAPPING, _HOST, None, self._host(size))
        buffer._bytes[:] = 0
        return buffer
