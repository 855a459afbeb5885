"""Timeline semaphores whose payload lives on the host: the CUDA and WebGPU drivers' (CUDA events
and WebGPU's queue say only that work finished; neither has a timeline, and no GPU semaphore
can fail).

The device applies a submission's signals only after retiring its work with every kernel's
status clear, so a value reached is known to have succeeded, and `fail()` is a host flag that
travels down the submissions that wait on it (hal_gpu/host_queue.py). Signalling or failing
pumps the device's held queue, since either may release a held submission. A device provides
`_lock`, `_changed` (a condition on that lock) and `_held` (its HostQueue); a driver's subclass
says how a host thread waits.
"""

from __future__ import annotations

from common.errors import Aborted, InvalidArgument
from hal.semaphore import Semaphore, payload


class HostSemaphore(Semaphore):
    def __init__(self, device, initial_value: int = 0) -> None:
        self.value = int(payload(initial_value, "semaphore initial value"))
        self.device = device
        self.failure: BaseException | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(#{id(self) & 0xFFFF:04x})"

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise Aborted(f"{self!r} failed: {self.failure}")

    def signal(self, value: int) -> None:
        value = payload(value, f"{self!r}: cannot signal")
        dev = self.device
        with dev._lock:
            self._raise_if_failed()
            if value < self.value:
                raise InvalidArgument(f"{self!r}: cannot signal {value!r}, the payload is already {self.value} (timelines only move forward)")
            self.value = value
            dev._held.pump()  # held submissions this releases go to the GPU now
            dev._changed.notify_all()

    def fail(self, error: BaseException | str) -> None:
        dev = self.device
        with dev._lock:
            if self.failure is None:
                self.failure = error if isinstance(error, BaseException) else Aborted(str(error))
            dev._held.pump()  # held submissions waiting on it fail their signals
            dev._changed.notify_all()
