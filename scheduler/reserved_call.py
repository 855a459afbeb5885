"""Repeated calls of one program, each signalling one semaphore, on a submission slot reserved
for them: a model call's fast path.

The slot's program and signal list are written once (`Scheduler.reserve`), so a call is one
native call (`host_call`) and this object looks everything else up once: right after a kernel
has swept the caches, each Python attribute or dict lookup on the way costs ~1 us.
"""

from __future__ import annotations

import weakref

from common.errors import DeadlineExceeded
from scheduler.scheduler import GridProgram, Scheduler
from scheduler.worker import BUSY, host_call


def timeout_ns(timeout: float | None) -> int:
    """A call's timeout in seconds (None: none) as `ReservedCall` takes it (0: none)."""
    return 0 if timeout is None else max(1, int(timeout * 1e9))


class ReservedCall:
    """`call(value, timeout_ns)` runs the program and signals semaphore `m` to `value`; it
    returns True when done, False when the semaphore failed, None having done nothing while the
    program is still in flight from another submission (the caller takes the general path).
    Calls must not overlap: the caller serializes them (hal_cpu with a lock per command buffer,
    a model's lane by owning it). The slot is given back when this object goes."""

    def __init__(self, scheduler: Scheduler, program: GridProgram, m: int) -> None:
        self.m = m
        self.slot = scheduler.reserve(program, m)
        self._scheduler = scheduler
        self._program = program
        self._a = scheduler.a
        self._value_addr = scheduler._reserved[self.slot]
        self._serials = scheduler._serials
        self._drain_lock = scheduler._drain_lock if scheduler.inline else None
        self._holds = False  # the slot keeps a timed-out call's keepalive
        weakref.finalize(self, scheduler.unreserve, self.slot)

    def __call__(self, value: int, timeout_ns: int, keepalive: object = None) -> bool | None:
        """`timeout_ns`: 0 for none. A call that times out still in flight keeps `keepalive`
        (what the program points into) until the slot is reused or shut down; between calls the
        slot holds nothing of its caller's (that would keep the caller, and through this
        object's finalizer the scheduler, alive forever)."""
        program, s, m = self._program, self.slot, self.m
        serial = next(self._serials)
        last_slot, last_serial = program.in_flight
        program.in_flight = (s, serial)
        if self._drain_lock is not None:
            with self._drain_lock:
                r = host_call(self._a, s, self._value_addr, value, serial, m, timeout_ns, last_slot, last_serial)
        else:
            r = host_call(self._a, s, self._value_addr, value, serial, m, timeout_ns, last_slot, last_serial)
        if r == BUSY:
            program.in_flight = (last_slot, last_serial)
            return None
        scheduler = self._scheduler
        if self._holds:  # the call that timed out has completed since
            scheduler.keep_reserved(s, None)
            self._holds = False
        if r == 1:
            return True
        timeout = timeout_ns / 1e9 if timeout_ns else None
        try:
            return scheduler.wait_semaphore(m, value, timeout)
        except DeadlineExceeded:
            scheduler.keep_reserved(s, keepalive)
            self._holds = True
            raise
