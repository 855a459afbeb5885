"""Buffers for every usage: one GPUBuffer each, usable as storage, copy source and target and
indirect-count source (as the Vulkan driver's, a usage never has to be predicted); MAPPING adds
the host copy that stands in for mapped memory (buffer.py)."""

from __future__ import annotations

from common.errors import ResourceExhausted
from hal.allocator import Allocator
from hal.buffer import Buffer, BufferUsage, MemoryType
from hal_gpu.webgpu.buffer import WebGPUBuffer


class WebGPUAllocator(Allocator):
    def __init__(self, device) -> None:
        super().__init__(device, max_allocation_size=device.max_buffer_size)

    def _create_buffer(self, size: int, usage: BufferUsage, memory_type: MemoryType) -> Buffer:
        dev = self.device
        dev._check_open()
        flags = dev.wgpu.BufferUsage
        padded = max(4, -(-int(size) // 4) * 4)  # WebGPU copies and binds whole 4-byte words
        try:
            with dev._lock:
                handle = dev.handle.create_buffer(size=padded, usage=flags.STORAGE | flags.COPY_SRC | flags.COPY_DST | flags.INDIRECT)
        except Exception as e:  # noqa: BLE001 - wgpu reports out-of-memory and limits as its own errors
            raise ResourceExhausted(f"webgpu: allocate_buffer: {size} bytes: {type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}") from None
        host = bool(usage & BufferUsage.MAPPING)
        kind = MemoryType.DEVICE_LOCAL | (MemoryType.HOST_VISIBLE | MemoryType.HOST_COHERENT if host else 0)
        return WebGPUBuffer(dev, int(size), usage, MemoryType(kind), handle, padded, host)
