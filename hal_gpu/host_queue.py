"""Submissions held on the host until every semaphore they wait on is known to have succeeded:
the queue in front of every GPU driver's hardware queue (vulkan, cuda, webgpu).

Why hold on the host rather than let the GPU wait: a kernel's failure is a status word only the
host reads, and GPU semaphores (Vulkan's, CUDA events; WebGPU has none) cannot fail, so a
dependent already on the GPU would run its kernels after its producer failed; and a GPU queue
runs its submissions in order, so one parked on a host signal would block every later one.
Held here, a submission goes to the GPU once each (semaphore, value) it waits on is reached and
the work that signalled it retired without failure, and one that waits on a failed semaphore
fails its own signals without ever running. The cost is one host round trip per link of a
chain; whoever drives the device (a host wait, query, signal, a completion thread) pumps it.

A driver supplies what differs: when a wait is known (`known`), how a submission goes to the GPU
(`launch`) and how finished GPU work is retired (`retire`). Semaphores need a `failure`
attribute, and `internal = True` on the private ones that link the steps of one submission (their
failure is the step's own and passes on unwrapped).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from common.errors import Aborted

Waits = list  # [(semaphore, value)]


@dataclass(slots=True)
class Held:
    """One submission (or one step of one) waiting for its waits."""

    work: Any  # what the driver hands its GPU queue
    waits: Waits
    signals: Waits


def fail_signals(signals: Waits, error: BaseException) -> None:
    """Fails every semaphore in `signals` not failed already (the first failure stays)."""
    for s, _ in signals:
        if s.failure is None:
            s.failure = error


def wait_failure(sem) -> BaseException:
    """The error a submission fails with when `sem`, which it waited on, failed."""
    return sem.failure if getattr(sem, "internal", False) else Aborted(f"a submission waited on {sem!r}, which failed: {sem.failure}")


class HostQueue:
    """The held submissions of one device; every method is called with the device's lock held."""

    def __init__(self, known: Callable[[Any, int], bool], launch: Callable[[Held], bool | None],
                 retire: Callable[[], bool] = lambda: False, changed: threading.Condition | None = None) -> None:
        self.known, self.launch, self.retire, self.changed = known, launch, retire, changed
        self.held: list[Held] = []
        self._pumping = False

    def __len__(self) -> int:
        return len(self.held)

    def hold(self, work, waits: Waits, signals: Waits) -> None:
        self.held.append(Held(work, list(waits), list(signals)))

    def fail(self, signals: Waits, error: BaseException) -> None:
        fail_signals(signals, error)
        if self.changed is not None:
            self.changed.notify_all()

    def pump(self) -> None:
        """Retires finished GPU work, then launches every held submission whose waits are known
        and fails every one that waits on a failed semaphore, until nothing more moves (a launch
        that finished at once, `launch` returning True, or a failure may release others)."""
        if self._pumping:
            return  # re-entered (a failure found while pumping): the running pump sees it
        self._pumping = True
        try:
            progress = True
            while progress:  # (plain loops: this runs on every submission, a model call's hot path)
                progress = self.retire()
                pending, self.held = self.held, []
                for sub in pending:
                    failed, waiting = None, False
                    for s, x in sub.waits:
                        if s.failure is not None:
                            failed = s
                            break
                        waiting = waiting or not self.known(s, x)
                    if failed is not None:
                        self.fail(sub.signals, wait_failure(failed))
                        progress = True
                    elif not waiting:
                        if self.launch(sub):
                            progress = True
                    else:
                        self.held.append(sub)
        finally:
            self._pumping = False

    def fail_all(self, error: BaseException) -> None:
        """Fails every held submission's signals and drops them (the device is closing)."""
        for sub in self.held:
            self.fail(sub.signals, error)
        self.held = []
