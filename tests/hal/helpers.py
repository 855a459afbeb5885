"""Small helpers shared by the conformance tests (public API only)."""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from tests.hal import kernels as K

TIMEOUT = 10.0  # every wait in the suite is bounded, so a bug fails a test instead of hanging it


def submit(device, command_buffers, wait=(), value: int = 1):
    """Submits and returns the (fresh) semaphore it signals to `value`."""
    sem = device.create_semaphore(0)
    device.queue_execute(command_buffers, wait=list(wait), signal=[(sem, value)])
    return sem


def run(device, *command_buffers) -> None:
    """Submits the command buffers and waits for them (re-raising a failure)."""
    submit(device, list(command_buffers)).wait(1, timeout=TIMEOUT)


def run_one(device, build) -> None:
    """Records one command buffer with `build(cb)`, ends, runs and waits for it."""
    cb = device.create_command_buffer()
    build(cb)
    cb.end()
    run(device, cb)


def assert_device_works(device) -> None:
    """A saxpy dispatch, a fill and a copy still run correctly on the device."""
    n = 200
    x = device.allocator.import_array(np.arange(n, dtype=np.float32))
    y = device.allocator.import_array(np.ones(n, np.float32))
    z = device.allocator.allocate_view((n,), np.float32)

    def build(cb):
        cb.dispatch(K.saxpy, "saxpy", (-(-n // 64),), [3.0], [x, y])
        cb.execution_barrier()
        cb.copy(y.buffer, 0, z.buffer, 0, 4 * n)
        cb.fill(x.buffer, 0, None, np.float32(0.5))

    run_one(device, build)
    np.testing.assert_array_equal(z.to_numpy(), 1 + 3 * np.arange(n, dtype=np.float32))
    np.testing.assert_array_equal(x.to_numpy(), np.full(n, 0.5, np.float32))


def run_threads(worker: Callable[[int], None], count: int) -> None:
    """Runs worker(0..count-1) on as many threads and re-raises the first error any of them
    hit; a thread still alive after the bounded join fails the test instead of hanging it."""
    errors: list[BaseException] = []

    def guarded(t: int) -> None:
        try:
            worker(t)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(4 * TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
