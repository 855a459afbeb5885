"""Timeline semaphores and fences.

A semaphore is a 64-bit payload that only moves forward: `signal(v)` raises it, `wait(v)`
returns once it reaches v. `fail(error)` poisons it: every waiter, now or later, gets an
`Aborted` naming the failure, and every submission waiting on it fails in turn, so a failure
travels down a chain of submissions instead of leaving anything hanging.
"""

from __future__ import annotations

import abc
from typing import Iterable

import numpy as np

from common.errors import InvalidArgument

PAYLOAD_LIMIT = 1 << 63  # payloads are int64 in native tables and timeline semaphores


def payload(value: object, where: str) -> int:
    """`value` as a timeline payload, an int in [0, 2**63) (numpy integers too; bools, floats
    and anything else refused, never wrapped); InvalidArgument starting with `where`."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value < PAYLOAD_LIMIT:
        raise InvalidArgument(f"{where} {value!r}: a payload is an int in [0, 2**63)")
    return int(value)


class Semaphore(abc.ABC):
    device: object

    @abc.abstractmethod
    def query(self) -> int:
        """The current payload; raises Aborted if the semaphore failed."""

    @abc.abstractmethod
    def signal(self, value: int) -> None:
        """Raises the payload to `value` from the host."""

    @abc.abstractmethod
    def wait(self, value: int, timeout: float | None = None) -> None:
        """Blocks until the payload reaches `value`; DeadlineExceeded after `timeout` seconds,
        Aborted if the semaphore failed."""

    @abc.abstractmethod
    def fail(self, error: BaseException | str) -> None:
        """Fails the semaphore with `error`."""


class Fence:
    """A set of timepoints (semaphore, value), waited on together (IREE's fence)."""

    def __init__(self, timepoints: Iterable[tuple[Semaphore, int]] = ()) -> None:
        self.timepoints: list[tuple[Semaphore, int]] = []
        for sem, value in timepoints:
            self.add(sem, value)

    def add(self, semaphore: Semaphore, value: int) -> "Fence":
        self.timepoints.append((semaphore, int(value)))
        return self

    def query(self) -> bool:
        """True when every timepoint is reached; raises Aborted if one failed."""
        return all(sem.query() >= value for sem, value in self.timepoints)

    def wait(self, timeout: float | None = None) -> None:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        for sem, value in self.timepoints:
            sem.wait(value, None if deadline is None else max(0.0, deadline - time.monotonic()))

    def __iter__(self):
        return iter(self.timepoints)
