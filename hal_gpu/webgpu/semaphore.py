"""Timeline semaphores on the host (hal_gpu/host_semaphore.py): WebGPU has no semaphores at all.

The device signals one when it sees a submission finish (device.py: its kernels' status read,
MAPPING buffers copied back). Nothing on the GPU ever waits on a semaphore: the device holds a
submission on the host until its waits are reached (hal_gpu/host_queue.py). A host waiter sleeps
on the device's condition variable, which the completion thread notifies.
"""

from __future__ import annotations

import time

from common.errors import Aborted, DeadlineExceeded
from hal.semaphore import payload
from hal_gpu.host_semaphore import HostSemaphore


class WebGPUSemaphore(HostSemaphore):
    def _raise_if_failed(self) -> None:
        super()._raise_if_failed()
        if self.device.closed:
            raise Aborted(f"{self!r}: {self.device!r} is closed")

    def query(self) -> int:
        self._raise_if_failed()
        return self.value

    def wait(self, value: int, timeout: float | None = None) -> None:
        value = payload(value, f"{self!r}: cannot wait for")
        dev = self.device
        deadline = None if timeout is None else time.monotonic() + timeout
        with dev._lock:
            while self.failure is None and self.value < value and not dev.closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise DeadlineExceeded(f"{self!r}: payload {self.value} did not reach {value} within {timeout} s")
                dev._changed.wait(left)
            if self.failure is not None or self.value < value:  # a value reached before the device closed stays reached
                self._raise_if_failed()
