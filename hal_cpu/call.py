"""A prepared call on the CPU devices (`Device.prepare_call`): a command buffer signalling one
semaphore, run again and again with as little Python per call as the contract allows.

execute_and_wait looks up the command buffer's reserved slot, takes its call lock and checks
the device and the semaphore at every call; a prepared call is a ReservedCall of its own (one
Python frame when the call completes), and its caller guarantees what the lock was for (one
call at a time, the command buffer submitted nowhere else meanwhile): a model's lane does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hal.command_buffer import CommandBuffer
from hal.semaphore import Semaphore
from scheduler.reserved_call import ReservedCall

if TYPE_CHECKING:
    from hal_cpu.device import CpuDevice


class PreparedCall(ReservedCall):
    """`call(value)`: execute_and_wait(command_buffer, semaphore, value, timeout)."""

    def __init__(self, device: "CpuDevice", command_buffer: CommandBuffer, semaphore: Semaphore, timeout: float | None) -> None:
        device._check_open()
        lowered = command_buffer.lowered
        super().__init__(device.scheduler, lowered.program, semaphore.index, timeout, (lowered.keepalive, semaphore))
        self._device = device
        self._command_buffer = command_buffer
        self._semaphore = semaphore

    def _finish(self, r: int, value: int, last: tuple[int, int]) -> bool:
        # (None: in flight from queue_execute, or the device closed: the general path says which)
        self._device.conclude(super()._finish(r, value, last), self._command_buffer, self._semaphore, value, self.timeout)
        return True
