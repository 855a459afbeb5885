"""execute_and_wait and prepare_call (a model call's fast path) on every driver: each call runs
the command buffer once and signals its value; a kernel that fails raises from the call and the
device lives on; a closed device refuses; a call behind a queued run of the same command buffer
waits its turn."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fibergrid as fg
from tests.hal import kernels as K
from tests.hal.helpers import TIMEOUT, assert_device_works


def _counter(device):
    out = device.allocator.import_array(np.zeros(1, np.int32))
    cb = device.create_command_buffer("reusable")
    cb.dispatch(K.increment_all, "increment_all", 1, [], [out])
    cb.end()
    return cb, out


@pytest.mark.parametrize("how", ["execute_and_wait", "prepare_call"])
def test_each_call_runs_once_and_signals_its_value(device, how):
    cb, out = _counter(device)
    sem = device.create_semaphore(0)
    call = device.prepare_call(cb, sem, TIMEOUT) if how == "prepare_call" else \
        (lambda value: device.execute_and_wait(cb, sem, value, TIMEOUT))
    for value in range(1, 41):
        call(value)
        assert sem.query() == value
        assert int(out.to_numpy()[0]) == value


def test_a_failing_kernel_raises_from_the_call_and_the_device_lives_on(device):
    out = device.allocator.allocate_view((8,), np.int32)
    cb = device.create_command_buffer("reusable")
    cb.dispatch(K.fail_at, "fail_at", 8, [5, 0, 9], [out])
    cb.end()
    call = device.prepare_call(cb, device.create_semaphore(0), TIMEOUT)
    with pytest.raises(fg.Aborted, match=r"kernel 'fail_at' returned status 9 at workgroup \(5, 0, 0\)"):
        call(1)
    assert_device_works(device)
    good, counter = _counter(device)
    device.prepare_call(good, device.create_semaphore(0), TIMEOUT)(1)
    assert int(counter.to_numpy()[0]) == 1


def test_a_closed_device_refuses_a_prepared_call(driver):
    device = fg.create_device(driver)
    cb, _ = _counter(device)
    call = device.prepare_call(cb, device.create_semaphore(0), TIMEOUT)
    call(1)
    device.close()
    with pytest.raises(fg.FailedPrecondition, match="closed"):
        call(2)


def test_a_prepared_call_behind_a_queued_run_waits_its_turn(device):
    """The command buffer queued behind a gate, then called: the call must not run the program
    beside the queued run (CPU: the native call sees it in flight and takes the general path);
    both runs happen."""
    cb, out = _counter(device)
    sem = device.create_semaphore(0)
    call = device.prepare_call(cb, sem, TIMEOUT)
    call(1)
    gate, queued = device.create_semaphore(0), device.create_semaphore(0)
    device.queue_execute([cb], wait=[(gate, 1)], signal=[(queued, 1)])
    opener = threading.Timer(0.2, gate.signal, (1,))
    opener.start()
    call(2)
    opener.join()
    queued.wait(1, timeout=TIMEOUT)
    assert int(out.to_numpy()[0]) == 3
    call(3)
    assert int(out.to_numpy()[0]) == 4
