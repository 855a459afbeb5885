"""Vulkan buffers: a VkBuffer bound to its own VkDeviceMemory.

Host-visible buffers are mapped once, for their lifetime (persistent mapping), so
`buffer.view()` is a numpy array over the mapping that stays valid, as on the CPU drivers. The
allocator only maps host-coherent memory, so `flush` / `invalidate` stay no-ops and ordering with
the device comes from semaphores alone (a queue submission makes earlier host writes visible;
every command buffer ends with a barrier that makes its writes visible to the host).
"""

from __future__ import annotations

import weakref

import numpy as np

from hal.buffer import Buffer, BufferUsage, MemoryType


def _release(device, handle, memory) -> None:
    if device.closed or device.handle is None:
        return  # the device freed everything when it closed
    v = device.vk
    v.vkDestroyBuffer(device.handle, handle, None)
    v.vkFreeMemory(device.handle, memory, None)


class VulkanBuffer(Buffer):
    def __init__(self, device, size: int, usage: BufferUsage, memory_type: MemoryType, handle, memory, mapping) -> None:
        super().__init__(size, usage, memory_type, device=device)
        self.handle = handle
        self.memory = memory
        self._mapping = mapping  # keeps the cffi buffer alive
        self._bytes = None if mapping is None else np.frombuffer(mapping, dtype=np.uint8, count=max(size, 1))[:size]
        # The host address of the mapping (vkMapMemory aligns it to minMemoryMapAlignment, 64
        # or more); None for device-local memory, which the host cannot address.
        self.address = None if self._bytes is None else self._bytes.ctypes.data
        if self._bytes is not None:
            self._bytes[:] = 0  # new buffers are zeroed, as on the CPU drivers
        self._finalizer = weakref.finalize(self, _release, device, handle, memory)
        self._finalizer.atexit = False  # at exit the driver closes the device instead

    def __repr__(self) -> str:
        return f"VulkanBuffer(size={self.size}, usage={self.usage!r})"

    def _host_bytes(self) -> np.ndarray:
        if self._bytes is None:
            return super()._host_bytes()
        return self._bytes
