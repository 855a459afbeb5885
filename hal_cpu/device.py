"""The CPU devices: `local-task` (the scheduler's worker threads) and `local-sync` (the same
native executor, run inline on the submitting thread, as IREE's local-sync does)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from hal.buffer import Buffer
from hal.command_buffer import CommandBuffer
from hal.device import Device, DeviceLimits
from common.errors import DeadlineExceeded, FailedPrecondition
from hal.executable import CPU_NATIVE_FORMAT
from hal.semaphore import Semaphore
from hal_cpu.call import PreparedCall
from hal_cpu.command_buffer import lower
from hal_cpu.semaphore import CpuSemaphore
from scheduler import GridProgram, Scheduler
from scheduler.reserved_call import ReservedCall


# Local memory per participant: the compiler's packed GEMM panels take up to 384 KiB on AVX-512
# hosts (a core's L2 is 1-2 MiB on the machines we run on).
CPU_LOCAL_MEMORY = 1 << 20
REBIND_ALIGNMENT = 16
  # what numpy's allocations guarantee on x86-64 and AArch64


class CpuDevice(Device):
    formats = (CPU_NATIVE_FORMAT,)
    branches = True  # the scheduler evaluates jumps between regions (scheduler/executor.py)

    def __init__(self, driver: str, workers: int | None, *, pin: bool = False, local_memory_size: int = CPU_LOCAL_MEMORY, spin_us: float = 20.0, busy_spin_us: float = 100.0, host_spin_us: float | None = None, max_submissions: int | None = None, wake_cost_us: float | None = None) -> None:
        super().__init__(DeviceLimits(local_memory_size=local_memory_size))
        self.driver = driver
        options = {k: v for k, v in (("host_spin_us", host_spin_us), ("max_submissions", max_submissions)) if v is not None}
        self.scheduler = Scheduler(workers, pin=pin, local_memory_size=local_memory_size, spin_us=spin_us, busy_spin_us=busy_spin_us, wake_cost_us=wake_cost_us, **options)

    def __repr__(self) -> str:
        return f"<Device {self.driver} workers={self.scheduler.workers}>"

    @property
    def workers(self) -> int:
        """Worker threads (0 on local-sync)."""
        return self.scheduler.workers

    @property
    def participants(self) -> int:
        """Worker ids a kernel may see: the workers, then the host thread that helps."""
        return self.scheduler.participants

    def create_semaphore(self, initial_value: int = 0) -> Semaphore:
        self._check_open()
        return CpuSemaphore(self, initial_value)

    def lower_command_buffer(self, command_buffer: CommandBuffer):
        return lower(command_buffer, self.limits.max_workgroup_count)

    def _submit(self, command_buffers, wait, signal) -> None:
        program = GridProgram.concatenate([cb.lowered.program for cb in command_buffers])
        keepalive = ([cb.lowered for cb in command_buffers], [s for s, _ in wait], [s for s, _ in signal])
        self.scheduler.submit(program, [(s.index, v) for s, v in wait], [(s.index, v) for s, v in signal], keepalive)

    def execute_and_wait(self, command_buffer: CommandBuffer, semaphore: Semaphore, value: int, timeout: float | None = None) -> None:
        """One native call: the command buffer keeps a reserved submission slot for the
        semaphore it signals (a ReservedCall, made on first use), so a call writes no program or
        timepoints; on local-task the calling thread joins as the host participant and runs it,
        workers joining where the wake policy says they pay for their wake (scheduler/worker.py).
        A command buffer in flight, or called from two threads at once, takes the general path."""
        self._check_open()
        command_buffer.submitted += 1
        lowered = command_buffer.lowered
        ok = None
        if lowered.call_lock.acquire(False):
            try:
                call = lowered.reserved
                if call is None or call.m != semaphore.index or call.timeout != timeout:
                    call = lowered.reserved = ReservedCall(self.scheduler, lowered.program, semaphore.index, timeout,
                                                           (lowered.keepalive, semaphore))
                ok = call(value)
            finally:
                lowered.call_lock.release()
        self.conclude(ok, command_buffer, semaphore, value, timeout)

    def conclude(self, ok: bool | None, command_buffer: CommandBuffer, semaphore: Semaphore, value: int, timeout: float | None) -> None:
        """What a ReservedCall's result asks for: None (it did nothing) the general path,
        False the semaphore's failure raised."""
        if ok is None:
            self.execute_in_general(command_buffer, semaphore, value, timeout)
        elif not ok:
            semaphore.wait(value, 0)  # raises the failure

    def execute_in_general(self, command_buffer: CommandBuffer, semaphore: Semaphore, value: int, timeout: float | None) -> None:
        """execute_and_wait through a submission of its own: while the command buffer is in
        flight elsewhere, or called from two threads at once."""
        self._check_open()
        lowered = command_buffer.lowered
        if not self.scheduler.submit_and_wait(lowered.program, (semaphore.index, value), (lowered, semaphore), timeout):
            semaphore.wait(value, 0)  # raises the failure

    def prepare_call(self, command_buffer: CommandBuffer, semaphore: Semaphore, timeout: float | None = None) -> Callable[[int], object]:
        return PreparedCall(self, command_buffer, semaphore, timeout)

    def rebind(self, command_buffer: CommandBuffer, buffer: Buffer, array: np.ndarray | None) -> bool:
        """Host arrays are used in place when 16-byte aligned (every element type's alignment,
        which is all that kernels assume: generated code loads with element alignment) and
        C-contiguous; None points the bindings back at the buffer's own memory."""
        if array is None:
            address = buffer.address
        else:
            address = array.ctypes.data
            if address % REBIND_ALIGNMENT or not array.flags.c_contiguous or array.nbytes < buffer.size:
                return False
        if not self.scheduler.settle(command_buffer.lowered.program):
            raise FailedPrecondition(f"rebind: {command_buffer!r} is in flight")
        return command_buffer.lowered.rebind(buffer, address)

    def wait_idle(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.scheduler.in_flight():
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded(f"{self!r}: {self.scheduler.in_flight()} submissions still in flight after {timeout} s")
            time.sleep(0.0005)

    def close(self) -> None:
        if not self.closed:
            self.scheduler.shutdown()
        super().close()
