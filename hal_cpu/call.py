"""A prepared call on the CPU devices (`Device.prepare_call`): a command buffer signalling one
semaphore, run again and again with as little Python per call as the contract allows.

execute_and_wait looks up the command buffer's reserved slot, takes its call lock and checks
the signal's semaphore at every call; a prepared call owns a ReservedCall of its own, and its
caller guarantees what the lock and the checks were for (one call at a time, the command
buffer submitted nowhere else meanwhile): a model's lane does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hal.command_buffer import CommandBuffer
from hal.semaphore import Semaphore
from scheduler.reserved_call import ReservedCall, timeout_ns

if TYPE_CHECKING:
    from hal_cpu.device import CpuDevice


class PreparedCall:
    """`call(value)`: execute_and_wait(command_buffer, semaphore, value, timeout)."""

    def __init__(self, device: "CpuDevice", command_buffer: CommandBuffer, semaphore: Semaphore, timeout: float | None) -> None:
        device._check_open()
        self._device = device
        self._command_buffer = command_buffer
        self._semaphore = semaphore
        self._timeout = timeout
        self._timeout_ns = timeout_ns(timeout)
        self._reserved = ReservedCall(device.scheduler, command_buffer.lowered.program, semaphore.index)
        self._keepalive = (command_buffer.lowered, semaphore)

    def __call__(self, value: int) -> None:
        if self._device.closed:
            self._device._check_open()
        ok = self._reserved(value, self._timeout_ns, self._keepalive)
        if ok is None:  # still in flight from queue_execute
            self._device.execute_and_wait(self._command_buffer, self._semaphore, value, self._timeout)
        elif not ok:
            self._semaphore.wait(value, 0)  # raises the failure
