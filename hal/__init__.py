"""The shared model every driver implements (Vulkan's and IREE's HAL): buffers, executables,
command buffers, semaphores, the queue. It imports no driver and no compiler."""

from hal.allocator import Allocator, HostAllocator
from hal.buffer import Buffer, BufferUsage, BufferView, HostBuffer, MemoryType
from hal.command_buffer import CommandBuffer, CommandBufferMode
from hal.device import Device, DeviceLimits
from hal.driver import available_drivers, create_device, register_driver
from common.errors import Aborted, DeadlineExceeded, Error, FailedPrecondition, InvalidArgument, OutOfRange, ResourceExhausted, Unavailable, Unimplemented
from hal.executable import CPU_NATIVE_FORMAT, EntryPoint, Executable, ExecutableCache
from hal.semaphore import Fence, Semaphore

__all__ = [
    "Aborted", "Allocator", "Buffer", "HostAllocator", "HostBuffer", "BufferUsage", "BufferView", "CPU_NATIVE_FORMAT", "CommandBuffer", "CommandBufferMode",
    "DeadlineExceeded", "Device", "DeviceLimits", "EntryPoint", "Error", "Executable", "ExecutableCache", "FailedPrecondition",
    "Fence", "InvalidArgument", "MemoryType", "OutOfRange", "ResourceExhausted", "Semaphore", "Unavailable", "Unimplemented",
    "available_drivers", "create_device", "register_driver",
]
