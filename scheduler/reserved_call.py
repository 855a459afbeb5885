"""Repeated calls of one program, each signalling one semaphore, on a submission slot reserved
for them: a model call's fast path.

The slot's program and signal list are written once (`Scheduler.reserve`), so a call is one
native call (`host_call`) and this object looks everything else up once: right after a kernel
has swept the caches, each Python frame, attribute or dict lookup on the way costs ~1 us, so
a call that completes is this one frame.
"""

from __future__ import annotations

import weakref

from common.errors import DeadlineExceeded
from scheduler.scheduler import GridProgram, Scheduler
from scheduler.worker import BUSY, host_call


def timeout_ns(timeout: float | None) -> int:
    """A timeout in seconds (None: none) as the native call takes it (0: none)."""
    return 0 if timeout is None else max(1, int(timeout * 1e9))


class ReservedCall:
    """`call(value)` runs the program and signals semaphore `m` to `value`: True once done,
    False when the semaphore failed, None having done nothing while the program is still in
    flight from another submission or the scheduler is shut down (the caller takes the general
    path). Calls must not overlap: the caller serializes them (hal_cpu with a lock per command
    buffer, a model's lane by owning it). A loop in the program stops going round `timeout`
    seconds into a call; a call that times out still in flight has the slot keep `keepalive`
    (what the program points into) until the next call or shutdown. The slot is given back
    when this object goes."""

    def __init__(self, scheduler: Scheduler, program: GridProgram, m: int, timeout: float | None, keepalive: object) -> None:
        self.m = m
        self.timeout = timeout
        self.slot, self._value_addr = scheduler.reserve(program, m)
        self._scheduler = scheduler
        self._program = program
        self._keepalive = keepalive
        self._timeout_ns = timeout_ns(timeout)
        self._a = scheduler.a
        self._serials = scheduler._serials
        self._drain_lock = scheduler._drain_lock if scheduler.inline else None
        self._holds = False  # the slot keeps a timed-out call's keepalive
        weakref.finalize(self, scheduler.unreserve, self.slot)

    def __call__(self, value: int) -> bool | None:
        program, s = self._program, self.slot
        serial = next(self._serials)
        last_slot, last_serial = program.in_flight
        program.in_flight = (s, serial)
        if self._drain_lock is None:
            r = host_call(self._a, s, self._value_addr, value, serial, self.m, self._timeout_ns, last_slot, last_serial)
        else:
            with self._drain_lock:
                r = host_call(self._a, s, self._value_addr, value, serial, self.m, self._timeout_ns, last_slot, last_serial)
        if r == 1 and not self._holds:
            return True
        return self._finish(r, value, (last_slot, last_serial))

    def _finish(self, r: int, value: int, last: tuple[int, int]) -> bool | None:
        """What a call that did not simply complete needs: the general path's turn, a wait,
        a failure, a timed-out call's keepalive let go."""
        if r == BUSY:
            self._program.in_flight = last
            return None
        scheduler = self._scheduler
        if self._holds:  # the call that timed out has completed since
            scheduler.keep_reserved(self.slot, None)
            self._holds = False
        if r == 1:
            return True
        try:
            return scheduler.wait_semaphore(self.m, value, self.timeout)
        except DeadlineExceeded:
            scheduler.keep_reserved(self.slot, self._keepalive)
            self._holds = True
            raise
