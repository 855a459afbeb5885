"""Memory for buffers: the memory follows the usage, as in the Vulkan driver.

- MAPPING usage: pinned host memory, mapped into the device's address space (the host reads and
  writes it at memory speed; kernels reach it over the bus, as IREE's CUDA driver does for
  host-visible buffers).
- No MAPPING usage: device memory; the host reaches it through copies (staging).

New buffers are zeroed, as on every other driver.
"""

from __future__ import annotations

from hal.allocator import Allocator
from hal.buffer import Buffer, BufferUsage, MemoryType
from hal_gpu.cuda.buffer import CudaBuffer
from hal_gpu.cuda.driver import check, cu

_HOST_FLAGS = 0x1 | 0x2  # CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP


class CudaAllocator(Allocator):
    def __init__(self, device) -> None:
        super().__init__(device, max_allocation_size=device.total_memory)

    def _create_buffer(self, size: int, usage: BufferUsage, memory_type: MemoryType) -> Buffer:
        dev = self.device
        dev.enter()
        d = cu()
        host = bool(usage & BufferUsage.MAPPING)
        nbytes = max(int(size), 4)
        if host:
            address = int(check(d.cuMemHostAlloc(nbytes, _HOST_FLAGS), f"allocate_buffer: {size} bytes of pinned host memory"))
            kind = MemoryType.HOST_VISIBLE | MemoryType.HOST_COHERENT
        else:
            address = int(check(d.cuMemAlloc(nbytes), f"allocate_buffer: {size} bytes of device memory"))
            check(d.cuMemsetD8(address, 0, nbytes), "zeroing a new buffer")
            kind = MemoryType.DEVICE_LOCAL
        buffer = CudaBuffer(dev, int(size), usage, kind, address, host)
        if host:
            buffer._bytes[:] = 0
        return buffer
