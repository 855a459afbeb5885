"""WebGPU buffers: a GPUBuffer, plus a host copy for MAPPING buffers.

WebGPU maps a buffer only while no GPU work may use it, asynchronously, and never a storage
buffer; hal's model has persistently mapped, coherent host-visible memory. The host copy is
that memory as the host sees it: the device uploads it (queue.writeBuffer) into the GPUBuffer
when it hands the GPU a submission that uses the buffer, and copies the GPUBuffer back into it
when a submission that may write the buffer finishes, before its semaphores are signalled. So
`view()` stays valid for the buffer's life, and ordering with the device comes from semaphores
alone, as on the Vulkan driver.
"""

from __future__ import annotations

import numpy as np

from common.memory import aligned_bytes
from hal.buffer import Buffer, BufferUsage, MemoryType


class WebGPUBuffer(Buffer):
    def __init__(self, device, size: int, usage: BufferUsage, memory_type: MemoryType, handle, padded: int, host: bool) -> None:
        super().__init__(size, usage, memory_type, device=device)
        self.handle = handle
        self.padded = padded  # the GPUBuffer's size: `size` rounded up to whole words
        self.host: np.ndarray | None = aligned_bytes(padded) if host else None  # zeroed, as the GPUBuffer
        self.writers = 0  # submissions on the GPU that may write it: until they finish, the GPU's copy is the newer
        self.address = None if self.host is None else self.host.ctypes.data  # what the host maps (64-byte aligned)

    def __repr__(self) -> str:
        return f"WebGPUBuffer(size={self.size}, usage={self.usage!r})"

    def _host_bytes(self) -> np.ndarray:
        if self.host is None:
            return super()._host_bytes()
        return self.host[: self.size]
