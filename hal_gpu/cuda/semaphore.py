"""Timeline semaphores on the host, advanced by CUDA events (IREE's CUDA event semaphores;
hal_gpu/host_semaphore.py).

The payload is applied when the device retires a submission's last step, i.e. when the event
recorded after its graphs has completed and the kernels' status words were read clear
(device.py). Waiting on a value that GPU work will signal synchronises with that work's event;
waiting on one only the host will signal sleeps on the device's condition variable.
"""

from __future__ import annotations

from hal.semaphore import payload
from hal_gpu.host_semaphore import HostSemaphore


class CudaSemaphore(HostSemaphore):
    def __init__(self, device, initial_value: int = 0) -> None:
        super().__init__(device, initial_value)
        device._semaphores.add(self)  # failed when the device closes

    def query(self) -> int:
        self._raise_if_failed()
        self.device.poll()
        self._raise_if_failed()
        return self.value

    def wait(self, value: int, timeout: float | None = None) -> None:
        self.device.wait_for(self, payload(value, f"{self!r}: cannot wait for"), timeout)
