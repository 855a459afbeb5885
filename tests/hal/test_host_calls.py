"""queue_host_call: a host step ordered between device work through semaphores."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fibergrid as fg
from tests.hal import kernels as K
from tests.hal.helpers import TIMEOUT


def _increment(device, buf):
    cb = device.create_command_buffer()
    cb.dispatch(K.increment, "increment", 1, [0], [buf])
    cb.end()
    return cb


def test_host_step_between_two_submissions(device):
    """device work -> host step that reads its result and writes the buffer -> device work."""
    buf = device.allocator.allocate_view((4,), np.int32)
    a, b, c = device.create_semaphore(0), device.create_semaphore(0), device.create_semaphore(0)
    seen = []

    def host_step():
        seen.append(int(buf.to_numpy()[0]))
        buf.buffer.view(np.int32)[0] = 10

    # Submitted last-first: the device submission and the host step both park until released.
    device.queue_execute([_increment(device, buf)], wait=[(b, 1)], signal=[(c, 1)])
    device.queue_host_call(host_step, wait=[(a, 1)], signal=[(b, 1)])
    device.queue_execute([_increment(device, buf)], signal=[(a, 1)])
    c.wait(1, timeout=TIMEOUT)
    assert seen == [1]
    assert int(buf.to_numpy()[0]) == 11


def test_host_step_waits_for_its_semaphores(device):
    gate, done = device.create_semaphore(0), device.create_semaphore(0)
    ran = threading.Event()
    device.queue_host_call(ran.set, wait=[(gate, 1)], signal=[(done, 1)])
    assert not ran.wait(0.05)
    gate.signal(1)
    done.wait(1, timeout=TIMEOUT)
    assert ran.is_set()


def test_host_step_that_raises_fails_its_signals_and_dependents(device):
    done, after = device.create_semaphore(0), device.create_semaphore(0)
    buf = device.allocator.allocate_view((4,), np.int32)

    def broken():
        raise RuntimeError("host step broke")

    device.queue_host_call(broken, signal=[(done, 1)])
    device.queue_execute([_increment(device, buf)], wait=[(done, 1)], signal=[(after, 1)])
    with pytest.raises(fg.Aborted, match="host step broke"):
        after.wait(1, timeout=TIMEOUT)
    assert int(buf.to_numpy()[0]) == 0


def test_failed_wait_skips_the_host_step(device):
    gate, done = device.create_semaphore(0), device.create_semaphore(0)
    ran = []
    device.queue_host_call(lambda: ran.append(1), wait=[(gate, 1)], signal=[(done, 1)])
    gate.fail("upstream failed")
    with pytest.raises(fg.Aborted, match="upstream failed"):
        done.wait(1, timeout=TIMEOUT)
    assert ran == []


def test_not_callable_is_invalid_argument(device):
    with pytest.raises(fg.InvalidArgument, match="not callable"):
        device.queue_host_call(42)
