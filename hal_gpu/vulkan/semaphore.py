"""Timeline semaphores: a Vulkan 1.2 timeline VkSemaphore, plus what Vulkan has no word for.

Vulkan semaphores cannot fail, and a kernel cannot fail a submission. The driver keeps both on
the host: `fail()` marks the semaphore failed (no GPU work waits on it: the device hands the GPU
only submissions whose waits are known to have succeeded, hal_gpu/host_queue.py), and a kernel's status (hal/spirv_abi.py) is read when a host waiter
sees the value a submission signalled; a non-zero status fails that submission's semaphores.
Failures then travel down the submissions that waited on them, as on the CPU drivers.
"""

from __future__ import annotations

import time


from common.errors import Aborted, DeadlineExceeded, InvalidArgument
from hal.semaphore import Semaphore, payload

_SLICE_NS = 5_000_000  # host waits wake every 5 ms to notice a failure from another thread




class VulkanSemaphore(Semaphore):
    def __init__(self, device, initial_value: int = 0) -> None:
        initial_value = payload(initial_value, "semaphore initial value")
        self.device = device
        v = device.vk
        info = v.VkSemaphoreTypeCreateInfo(sType=v.VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO,
                                           semaphoreType=v.VK_SEMAPHORE_TYPE_TIMELINE, initialValue=int(initial_value))
        self.handle = v.vkCreateSemaphore(device.handle, v.VkSemaphoreCreateInfo(sType=v.VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, pNext=info), None)
        self.failure: BaseException | None = None
        device._semaphores.add(self)

    def __repr__(self) -> str:
        return f"VulkanSemaphore(#{id(self) & 0xFFFF:04x})"

    def __del__(self) -> None:
        dev = getattr(self, "device", None)
        if dev is not None and not dev.closed and dev.handle is not None and getattr(self, "handle", None) is not None:
            dev.vk.vkDestroySemaphore(dev.handle, self.handle, None)

    def _raw(self) -> int:
        with self.device.using() as handle:
            return self.device.vk.vkGetSemaphoreCounterValue(handle, self.handle)

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise Aborted(f"{self!r} failed: {self.failure}")

    def query(self) -> int:
        self._raise_if_failed()
        if self.device.closed:
            raise Aborted(f"{self!r}: {self.device!r} is closed")
        value = self._raw()
        self.device._check_completed()
        self._raise_if_failed()
        return value

    def signal(self, value: int) -> None:
        self._raise_if_failed()
        value = payload(value, f"{self!r}: cannot signal")
        current = self._raw()
        if value < current:
            raise InvalidArgument(f"{self!r}: cannot signal {value!r}, the payload is already {current} (timelines only move forward)")
        if value > current:
            v = self.device.vk
            with self.device.using() as handle:
                v.vkSignalSemaphore(handle, v.VkSemaphoreSignalInfo(sType=v.VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO, semaphore=self.handle, value=value))
            with self.device._lock:
                self.device._held.pump()  # held submissions this releases go to the GPU now

    def wait(self, value: int, timeout: float | None = None) -> None:
        """Waits for `value`. While the device holds submissions on the host (hal_gpu/host_queue.py),
        the waiter also wakes when any GPU work signals, retires it and hands the GPU what that
        releases, so a chain of submissions advances without another thread."""
        value = payload(value, f"{self!r}: cannot wait for")
        dev, v = self.device, self.device.vk
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._raise_if_failed()
            left = None if deadline is None else deadline - time.monotonic()
            step = _SLICE_NS if left is None else max(0, min(_SLICE_NS, int(left * 1e9)))
            with dev._lock:
                others = [(s, x) for sub in dev._pending for s, x in sub.signals] if dev._held else []
            # This semaphore once (the lowest value that wakes us), then the other GPU signals.
            first = min([value] + [x for s, x in others if s is self])
            others = [(s, x) for s, x in others if s is not self] + ([(self, first)] if first < value else [])
            sems = [self.handle] + [s.handle for s, _ in others if s is not self]
            values = [first] + [x for s, x in others if s is not self]
            info = v.VkSemaphoreWaitInfo(sType=v.VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO,
                                         flags=v.VK_SEMAPHORE_WAIT_ANY_BIT if others else 0,
                                         semaphoreCount=len(sems), pSemaphores=sems, pValues=values)
            try:
                with dev.using() as handle:
                    v.vkWaitSemaphores(handle, info, step)
                if not others or self._raw() >= value:
                    break
                dev._check_completed()  # other work finished: retire it, release what it held
            except v.VkTimeout:
                if others:
                    dev._check_completed()
                if left is not None and left <= 0:
                    self._raise_if_failed()
                    raise DeadlineExceeded(f"{self!r}: payload {self._raw()} did not reach {value} within {timeout} s") from None
            except v.VkErrorDeviceLost:
                dev._lost("vkWaitSemaphores")
        dev._check_completed(seen=(self, value))
        self._raise_if_failed()

    def fail(self, error: BaseException | str) -> None:
        if self.failure is None:
            self.failure = error if isinstance(error, BaseException) else Aborted(str(error))
        self.device._semaphore_failed(self)
