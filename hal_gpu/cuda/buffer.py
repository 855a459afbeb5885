"""CUDA buffers: device memory (cuMemAlloc), which kernels, copies and fills use, and for
host-visible buffers a pinned host mirror (cuMemHostAlloc), which the host maps.

Why a mirror rather than kernels reading pinned memory in place (zero-copy): a kernel's reads
of host memory cross the bus every time, uncached in the GPU's L2. Measured on the H200, a
tiled 4096 matmul on pinned inputs ran at 1 TFLOP/s, bound by the bus, and a batch-1 MLP spent
0.3 ms re-reading its 3 KB input. So a command buffer's graph copies the mirrors of the
host-visible buffers it uses into device memory first and the ranges it may write back last
(command_buffer.py): the host sees its writes at submission and the device's once the
submission's semaphore is reached, the coherence the model promises, for two DMA copies.
"""

from __future__ import annotations

import ctypes
import weakref

import numpy as np

from hal.buffer import Buffer, BufferUsage, MemoryType


def _release(device, device_address: int | None, host_address: int | None) -> None:
    """Frees the memory (the primary context outlives every device, so this is safe after the
    device closed; cuMemFree waits for work that uses it)."""
    from hal_gpu.cuda.driver import cu, make_current

    d = cu()
    try:
        make_current(device.context)
        if device_address is not None:
            d.cuMemFree(device_address)
        if host_address is not None:
            d.cuMemFreeHost(host_address)
    except Exception:  # noqa: BLE001 - a finalizer never raises (at exit the driver may be gone)
        pass


class CudaBuffer(Buffer):
    def __init__(self, device, size: int, usage: BufferUsage, memory_type: MemoryType, device_address: int | None,
                 host_address: int | None) -> None:
        super().__init__(size, usage, memory_type, device=device)
        self.device_address = device_address  # what a kernel parameter, a copy or a fill takes
        self.address = host_address  # the pinned mirror the host maps (None: device memory only)
        self._bytes = None
        if host_address is not None:
            self._bytes = np.ctypeslib.as_array((ctypes.c_uint8 * max(size, 1)).from_address(host_address))[:size]
        self._finalizer = weakref.finalize(self, _release, device, device_address, host_address)
        self._finalizer.atexit = False  # at exit the process takes its memory with it

    def __repr__(self) -> str:
        return f"CudaBuffer(size={self.size}, usage={self.usage!r})"

    @property
    def mirrored(self) -> bool:
        """Whether the host maps a mirror that submissions copy in and out."""
        return self.address is not None and self.device_address is not None

    def _host_bytes(self) -> np.ndarray:
        if self._bytes is None:
            return super()._host_bytes()
        return self._bytes
