"""CUDA buffers: device memory (cuMemAlloc) or pinned, device-mapped host memory
(cuMemHostAlloc), each a base address kernels take as a pointer (unified addressing: a pinned
buffer's device address is its host address). Pinned memory is coherent, so `flush` and
`invalidate` stay no-ops and ordering with the device comes from semaphores alone."""

from __future__ import annotations

import ctypes
import weakref

import numpy as np

from hal.buffer import Buffer, BufferUsage, MemoryType


def _release(device, address: int, host: bool) -> None:
    """Frees the memory (the primary context outlives every device, so this is safe after the
    device closed; cuMemFree waits for work that uses it)."""
    from hal_gpu.cuda.driver import cu, make_current

    d = cu()
    try:
        make_current(device.context)
        d.cuMemFreeHost(address) if host else d.cuMemFree(address)
    except Exception:  # noqa: BLE001 - a finalizer never raises (at exit the driver may be gone)
        pass


class CudaBuffer(Buffer):
    def __init__(self, device, size: int, usage: BufferUsage, memory_type: MemoryType, address: int, host: bool) -> None:
        super().__init__(size, usage, memory_type, device=device)
        self.device_address = address  # what a kernel parameter or a copy takes
        self.address = address if host else None  # host-visible address (None: device memory)
        self._bytes = None
        if host:
            self._bytes = np.ctypeslib.as_array((ctypes.c_uint8 * max(size, 1)).from_address(address))[:size]
        self._finalizer = weakref.finalize(self, _release, device, address, host)
        self._finalizer.atexit = False  # at exit the process takes its memory with it

    def __repr__(self) -> str:
        return f"CudaBuffer(size={self.size}, usage={self.usage!r})"

    def _host_bytes(self) -> np.ndarray:
        if self._bytes is None:
            return super()._host_bytes()
        return self._bytes
