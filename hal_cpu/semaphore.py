"""Timeline semaphores backed by the scheduler's native semaphore table, so workers signal and
check them without Python, and host waits sleep on a futex with the GIL released."""

from __future__ import annotations

from hal.command_buffer import Dispatch, lookup
from common.errors import Aborted, DeadlineExceeded, InvalidArgument
from hal.semaphore import Semaphore, payload
from scheduler import SemaphoreFailure
from scheduler import layout as L


class CpuSemaphore(Semaphore):
    def __init__(self, device, initial_value: int = 0) -> None:
        initial_value = payload(initial_value, "semaphore initial value")
        self.device = device
        self._scheduler = device.scheduler
        self.index = self._scheduler.create_semaphore(initial_value)

    def __repr__(self) -> str:
        return f"Semaphore(#{self.index})"

    def __del__(self) -> None:
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is not None and hasattr(self, "index"):
            scheduler.release_semaphore(self.index)

    def _raise_if_failed(self) -> None:
        failure = self._scheduler.semaphore_failure(self.index)
        if failure is not None:
            error = DeadlineExceeded if failure.status == L.STATUS_DEADLINE and failure.program >= 0 else Aborted
            raise error(f"{self!r} failed: {describe(failure, self._scheduler.host_errors)}")

    def query(self) -> int:
        self._raise_if_failed()
        return self._scheduler.semaphore_value(self.index)

    def signal(self, value: int) -> None:
        self._raise_if_failed()
        value = payload(value, f"{self!r}: cannot signal")
        current = self._scheduler.semaphore_value(self.index)
        if value < current:
            raise InvalidArgument(f"{self!r}: cannot signal {value!r}, the payload is already {current} (timelines only move forward)")
        self._scheduler.signal_semaphore(self.index, value)

    def wait(self, value: int, timeout: float | None = None) -> None:
        if not self._scheduler.wait_semaphore(self.index, payload(value, f"{self!r}: cannot wait for"), timeout):
            self._raise_if_failed()

    def fail(self, error: BaseException | str) -> None:
        self._scheduler.fail_semaphore(self.index, error if isinstance(error, BaseException) else Aborted(str(error)))


def describe(failure: SemaphoreFailure, host_errors: dict[int, BaseException]) -> str:
    """One line naming what failed: the kernel and workgroup, or the host's error."""
    # Host failures and shutdown carry no command buffer (program -1); a kernel may return any
    # int32, including the values of these statuses, so the program tells them apart.
    if failure.program < 0 and failure.status == L.STATUS_HOST_FAILED:
        error = host_errors.get(failure.command)
        return f"failed from the host: {error}" if error is not None else "failed from the host"
    if failure.program < 0 and failure.status == L.STATUS_ABORTED:
        return "the device shut down with the submission in flight"
    cb = lookup(failure.program)
    cmd = cb.command(failure.command) if cb is not None else None
    where = f"command {failure.command} of command buffer #{failure.program}"
    if failure.status == L.STATUS_DEADLINE:
        return f"a loop in it (the jump at {where}) was still going round when the call's timeout passed"
    if failure.status == L.STATUS_CANCELLED:
        return f"a loop in it (the jump at {where}) was stopped: the device shuts down or a semaphore it signals failed"
    if failure.status == L.STATUS_INDIRECT_RANGE and (cmd is None or (isinstance(cmd, Dispatch) and cmd.indirect is not None)):
        name = cmd.entry.name if isinstance(cmd, Dispatch) else "?"
        # The count was recorded in the packed workgroup word, whose x field is narrower than a
        # count over the limit: put the three fields back together.
        x, y, z = failure.workgroup
        count = x | (y << L.WG_PACK_BITS) | (z << (2 * L.WG_PACK_BITS))
        return f"dispatch_indirect '{name}' ({where}): workgroup count {count} read from its buffer is out of range"
    name = cmd.entry.name if isinstance(cmd, Dispatch) else "?"
    return f"kernel '{name}' returned status {failure.status} at workgroup {failure.workgroup} ({where})"
