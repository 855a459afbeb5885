"""Device memory for buffers: the memory type follows the usage.

- MAPPING usage: host-visible, host-coherent memory, persistently mapped: host-cached memory
  first (the host reads results from it at memory speed), then device-local host-visible
  memory (a resizable BAR: fast for the GPU, uncached and slow for host reads).
- No MAPPING usage: device-local memory; the host reaches it through copies (staging).

Every buffer may be a storage buffer, a transfer source/target and an indirect-count source, as
in IREE's Vulkan allocator, so a usage never has to be predicted at allocation.
"""

from __future__ import annotations

from hal.allocator import Allocator
from hal.buffer import Buffer, BufferUsage, MemoryType
from common.errors import ResourceExhausted
from hal_gpu.vulkan.buffer import VulkanBuffer


class VulkanAllocator(Allocator):
    def __init__(self, device) -> None:
        super().__init__(device, max_allocation_size=device.max_allocation_size)

    def _memory_type(self, bits: int, host: bool) -> list[tuple[int, MemoryType]]:
        """Candidate memory types (index, what it is), best first."""
        v = self.device.vk
        props = self.device.memory_properties
        want = []
        for i in range(props.memoryTypeCount):
            if not bits & (1 << i):
                continue
            flags = props.memoryTypes[i].propertyFlags
            local = bool(flags & v.VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT)
            visible = bool(flags & v.VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)
            coherent = bool(flags & v.VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)
            kind = (MemoryType.DEVICE_LOCAL if local else 0) | (MemoryType.HOST_VISIBLE if visible else 0) | (MemoryType.HOST_COHERENT if coherent else 0)
            cached = bool(flags & v.VK_MEMORY_PROPERTY_HOST_CACHED_BIT)
            if host and not (visible and coherent):
                continue
            # Host-visible: cached memory first. Device-local host-visible memory (a BAR) is
            # uncached for the CPU: reading a result back from it ran at ~30 MB/s on the H200
            # (a 4 MB matmul result took 130 ms); the GPU reads cached host memory over the bus
            # and keeps what it reuses in its L2.
            rank = (0 if cached else 1 if local else 2) if host else (0 if local and not visible else 1 if local else 2)
            want.append((rank, i, MemoryType(kind)))
        return [(i, kind) for _, i, kind in sorted(want, key=lambda t: t[:2])]

    def _create_buffer(self, size: int, usage: BufferUsage, memory_type: MemoryType) -> Buffer:
        dev = self.device
        dev._check_open()
        v = dev.vk
        host = bool(usage & BufferUsage.MAPPING)
        # Whole 4-byte words: kernels address byte tensors through the words that hold them
        # (compiler/codegen/spirv/bytes.py), the last one included.
        info = v.VkBufferCreateInfo(
            sType=v.VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, size=max(-(-int(size) // 4) * 4, 4), sharingMode=v.VK_SHARING_MODE_EXCLUSIVE,
            usage=v.VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | v.VK_BUFFER_USAGE_TRANSFER_SRC_BIT | v.VK_BUFFER_USAGE_TRANSFER_DST_BIT | v.VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT)
        try:
            handle = v.vkCreateBuffer(dev.handle, info, None)
        except (v.VkErrorOutOfHostMemory, v.VkErrorOutOfDeviceMemory) as e:
            raise ResourceExhausted(f"vulkan: allocate_buffer: {size} bytes: {type(e).__name__}") from None
        req = v.vkGetBufferMemoryRequirements(dev.handle, handle)
        last = None
        for index, kind in self._memory_type(req.memoryTypeBits, host):
            try:
                memory = v.vkAllocateMemory(dev.handle, v.VkMemoryAllocateInfo(sType=v.VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, allocationSize=req.size, memoryTypeIndex=index), None)
            except (v.VkErrorOutOfHostMemory, v.VkErrorOutOfDeviceMemory, v.VkErrorTooManyObjects) as e:
                last = e
                continue
            v.vkBindBufferMemory(dev.handle, handle, memory, 0)
            mapping = v.vkMapMemory(dev.handle, memory, 0, req.size, 0) if host else None
            return VulkanBuffer(dev, int(size), usage, kind, handle, memory, mapping)
        v.vkDestroyBuffer(dev.handle, handle, None)
        why = type(last).__name__ if last is not None else "no suitable memory type"
        raise ResourceExhausted(f"vulkan: allocate_buffer: {size} bytes ({'host-visible' if host else 'device-local'}): {why}")
