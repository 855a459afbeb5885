"""Timeline semaphores on the host, advanced by CUDA events (IREE's CUDA event semaphores).

The payload lives on the host: a submission's signals are applied when the device retires its
last step, i.e. when the event recorded after its graphs has completed and the kernels' status
words were read clear (device.py). So a reached value always means "succeeded", and `fail()` is a
host flag that travels down the submissions that wait on it. Waiting on a value that GPU work
will signal synchronises with that work's event; waiting on one only the host will signal sleeps
on the device's condition variable.
"""

from __future__ import annotations

from common.errors import Aborted, InvalidArgument
from hal.semaphore import Semaphore, payload




class CudaSemaphore(Semaphore):
    def __init__(self, device, initial_value: int = 0) -> None:
        initial_value = payload(initial_value, "semaphore initial value")
        self.device = device
        self.value = int(initial_value)
        self.failure: BaseException | None = None
        device._semaphores.add(self)

    def __repr__(self) -> str:
        return f"CudaSemaphore(#{id(self) & 0xFFFF:04x})"

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise Aborted(f"{self!r} failed: {self.failure}")

    def query(self) -> int:
        self._raise_if_failed()
        self.device.poll()
        self._raise_if_failed()
        return self.value

    def signal(self, value: int) -> None:
        self._raise_if_failed()
        value = payload(value, f"{self!r}: cannot signal")
        with self.device._lock:
            if value < self.value:
                raise InvalidArgument(f"{self!r}: cannot signal {value!r}, the payload is already {self.value} (timelines only move forward)")
            self.value = value
            self.device._pump()  # held submissions this releases go to the GPU now
            self.device._changed.notify_all()

    def wait(self, value: int, timeout: float | None = None) -> None:
        self.device.wait_for(self, payload(value, f"{self!r}: cannot wait for"), timeout)

    def fail(self, error: BaseException | str) -> None:
        with self.device._lock:
            if self.failure is None:
                self.failure = error if isinstance(error, BaseException) else Aborted(str(error))
            self.device._pump()
            self.device._changed.notify_all()
