"""Timeline semaphores on the host: WebGPU has no semaphores at all.

A semaphore is a payload, a failure and the device's condition variable. The host signals it;
the device signals it when it sees a submission finish (device.py: its kernels' status read,
MAPPING buffers copied back), so a value once reached is known to have succeeded, and a
submission waiting on it can go to the GPU at once. Nothing on the GPU ever waits on a
semaphore: the device holds a submission on the host until its waits are reached, as the
Vulkan driver does (hal_gpu/vulkan/device.py `_pump`).
"""

from __future__ import annotations

import time


from common.errors import Aborted, DeadlineExceeded, InvalidArgument
from hal.semaphore import Semaphore, payload




class WebGPUSemaphore(Semaphore):
    def __init__(self, device, initial_value: int = 0) -> None:
        initial_value = payload(initial_value, "semaphore initial value")
        self.device = device
        self.value = int(initial_value)
        self.failure: BaseException | None = None
        self.internal = False  # links the steps of one submission (device.py `_submit`)

    def __repr__(self) -> str:
        return f"WebGPUSemaphore(#{id(self) & 0xFFFF:04x})"

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise Aborted(f"{self!r} failed: {self.failure}")
        if self.device.closed:
            raise Aborted(f"{self!r}: {self.device!r} is closed")

    def query(self) -> int:
        self._raise_if_failed()
        return self.value

    def signal(self, value: int) -> None:
        value = payload(value, f"{self!r}: cannot signal")
        dev = self.device
        with dev._lock:
            self._raise_if_failed()
            if value < self.value:
                raise InvalidArgument(f"{self!r}: cannot signal {value!r}, the payload is already {self.value} (timelines only move forward)")
            self.value = value
            dev._changed.notify_all()
            dev._pump()  # held submissions this releases go to the GPU now

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

    def fail(self, error: BaseException | str) -> None:
        with self.device._lock:
            if self.failure is None:
                self.failure = error if isinstance(error, BaseException) else Aborted(str(error))
            self.device._changed.notify_all()
            self.device._pump()  # held submissions waiting on it fail their signals
