"""The device: drivers, queue operations, wait_idle, close, interpreter exit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import fibergrid as fg
from tests.hal import kernels as K
from tests.hal.conftest import DRIVERS, make_device
from tests.hal.helpers import TIMEOUT, assert_device_works

REPO = Path(__file__).resolve().parents[2]


def test_available_drivers():
    drivers = fg.available_drivers()
    assert {"local-sync", "local-task"} <= set(drivers)
    assert len(set(drivers)) == len(drivers)


def test_unknown_driver():
    with pytest.raises(fg.Unavailable, match="no-such-driver"):
        fg.create_device("no-such-driver")
    with pytest.raises(fg.Unavailable, match="vulkan-on-a-toaster"):
        fg.create_device("vulkan-on-a-toaster", workers=2)


def test_registered_but_unavailable_driver():
    fg.register_driver("conformance-never-available", lambda **kw: None, available=lambda: False)
    assert "conformance-never-available" not in fg.available_drivers()
    with pytest.raises(fg.Unavailable, match="conformance-never-available"):
        fg.create_device("conformance-never-available")


def test_device_basics(device, driver):
    assert device.driver == driver
    assert device.limits.max_workgroup_count >= 65535
    assert device.allocator.device is device
    assert driver in repr(device)
    with make_device(driver) as other:
        assert_device_works(other)
    assert other.closed


def test_queue_fill_copy_barrier(device):
    a = device.allocator.allocate_buffer(64)
    b = device.allocator.allocate_buffer(64)
    gate, s1, s2, s3 = (device.create_semaphore(0) for _ in range(4))
    device.queue_fill(a, 0, 32, 0xAB, 1, wait=[(gate, 1)], signal=[(s1, 1)])
    time.sleep(0.05)
    assert s1.query() == 0 and not a.read().any(), "queue_fill ran before its wait was met"
    gate.signal(1)
    s1.wait(1, timeout=TIMEOUT)
    device.queue_copy(a, 0, b, 16, 32, wait=[(s1, 1)], signal=[(s2, 1)])
    s2.wait(1, timeout=TIMEOUT)
    want = np.zeros(64, np.uint8)
    want[16:48] = 0xAB
    np.testing.assert_array_equal(b.read(), want)
    device.queue_barrier(wait=[(s2, 1)], signal=[(s3, 7)])
    s3.wait(7, timeout=TIMEOUT)
    device.queue_barrier(wait=[(gate, 2)], signal=[(s3, 8)])
    time.sleep(0.05)
    assert s3.query() == 7, "queue_barrier signalled before its wait was met"
    gate.signal(2)
    s3.wait(8, timeout=TIMEOUT)
    # defaults: no waits, no signals, numpy scalar patterns, length None
    device.queue_fill(b, 0, None, np.uint16(0x0102))
    device.wait_idle(timeout=TIMEOUT)
    np.testing.assert_array_equal(b.read(np.uint16), np.full(32, 0x0102, np.uint16))


def test_queue_operations_chained_on_the_device(device):
    """fill -> copy -> barrier, each waiting on the previous one's signal, all queued at once.
    (The fill is large so that it is still running when the host's own release scan ends.)"""
    a = device.allocator.allocate_buffer(8 << 20)
    b = device.allocator.allocate_buffer(64)
    gate, s1, s2, s3 = (device.create_semaphore(0) for _ in range(4))
    device.queue_fill(a, 0, None, 0xAB, 1, wait=[(gate, 1)], signal=[(s1, 1)])
    device.queue_copy(a, 0, b, 16, 32, wait=[(s1, 1)], signal=[(s2, 1)])
    device.queue_barrier(wait=[(s2, 1)], signal=[(s3, 7)])
    time.sleep(0.05)
    assert (s1.query(), s2.query(), s3.query()) == (0, 0, 0)
    gate.signal(1)
    s3.wait(7, timeout=TIMEOUT)
    want = np.zeros(64, np.uint8)
    want[16:48] = 0xAB
    np.testing.assert_array_equal(b.read(), want)


def test_queue_fill_copy_validate(device):
    a = device.allocator.allocate_buffer(16)
    with pytest.raises(fg.OutOfRange, match=r"\[8, 24\)"):
        device.queue_fill(a, 8, 16, 0)
    with pytest.raises(fg.OutOfRange, match=r"\[0, 16\).* 8 bytes"):
        device.queue_copy(a, 0, device.allocator.allocate_buffer(8), 0, 16)
    with pytest.raises(fg.InvalidArgument, match="overlap"):
        device.queue_copy(a, 0, a, 4, 8)
    assert_device_works(device)


@pytest.mark.parametrize("points", [[1], [(None, 1)], [("s", 1, 2)]])
def test_bad_timepoints(device, points):
    with pytest.raises(fg.InvalidArgument):
        device.queue_barrier(signal=points)
    with pytest.raises(fg.InvalidArgument):
        device.queue_barrier(wait=points)


@pytest.mark.parametrize("value", [-1, 1 << 63, 2.0])
def test_bad_timepoint_values(device, value):
    s = device.create_semaphore(0)
    with pytest.raises(fg.InvalidArgument, match=str(value)):
        device.queue_barrier(signal=[(s, value)])
    assert s.query() == 0


def test_wait_idle(device):
    buf = device.allocator.allocate_view((1,), np.int32)
    for _ in range(10):
        cb = device.create_command_buffer()
        cb.dispatch(K.increment, "increment", 1, [0], [buf])
        cb.end()
        device.queue_execute([cb])
    device.wait_idle(timeout=TIMEOUT)
    assert int(buf.to_numpy()[0]) == 10
    device.wait_idle()  # idle already: returns at once


def test_wait_idle_times_out_on_parked_work(device):
    gate, done = device.create_semaphore(0), device.create_semaphore(0)
    device.queue_barrier(wait=[(gate, 1)], signal=[(done, 1)])
    t0 = time.monotonic()
    with pytest.raises(fg.DeadlineExceeded):
        device.wait_idle(timeout=0.05)
    assert time.monotonic() - t0 < 5.0
    gate.signal(1)
    device.wait_idle(timeout=TIMEOUT)
    assert done.query() == 1


def test_close_then_use(driver):
    dev = make_device(driver)
    cb = dev.create_command_buffer()
    cb.end()
    buf = dev.allocator.allocate_buffer(16)
    dev.close()
    dev.close()  # idempotent
    assert dev.closed
    for call in (
        lambda: dev.create_command_buffer(),
        lambda: dev.create_semaphore(0),
        lambda: dev.queue_execute([cb]),
        lambda: dev.queue_barrier(),
        lambda: dev.queue_fill(buf, 0, 16, 0),
    ):
        with pytest.raises(fg.FailedPrecondition, match="closed"):
            call()


def test_close_fails_parked_submissions(driver):
    dev = make_device(driver)
    marks = dev.allocator.allocate_view((1,), np.int32)
    gate, done = dev.create_semaphore(0), dev.create_semaphore(0)
    cb = dev.create_command_buffer()
    cb.dispatch(K.increment, "increment", 1, [0], [marks])
    cb.end()
    dev.queue_execute([cb], wait=[(gate, 1)], signal=[(done, 1)])
    dev.close()
    with pytest.raises(fg.Aborted):
        done.wait(1, timeout=TIMEOUT)
    assert int(marks.to_numpy()[0]) == 0


def test_close_with_work_running(driver):
    """Closing while a long dispatch runs returns promptly; its semaphore then either reached
    its value or failed, and a waiter never hangs."""
    dev = make_device(driver)
    out = dev.allocator.allocate_view((64,), np.float64)
    s = dev.create_semaphore(0)
    cb = dev.create_command_buffer()
    cb.dispatch(K.busy, "busy", 64, [2_000_000], [out])  # ~5 ms a workgroup
    cb.end()
    dev.queue_execute([cb], signal=[(s, 1)])
    t0 = time.monotonic()
    dev.close()
    assert time.monotonic() - t0 < TIMEOUT
    try:
        s.wait(1, timeout=TIMEOUT)
    except fg.Aborted as e:
        assert "shut down" in str(e), str(e)


_EXIT_SCRIPT = """
import sys
import numpy as np
from tests.hal import kernels as K
from tests.hal.conftest import make_device

dev = make_device(sys.argv[1])
out = dev.allocator.allocate_view((64,), np.float64)
gate, s, parked = dev.create_semaphore(0), dev.create_semaphore(0), dev.create_semaphore(0)
long_cb = dev.create_command_buffer()
long_cb.dispatch(K.busy, "busy", 32, [5_000_000], [out])  # ~10 ms a workgroup
long_cb.end()
waiting_cb = dev.create_command_buffer()
waiting_cb.dispatch(K.busy, "busy", 4, [10], [out])
waiting_cb.end()
dev.queue_execute([waiting_cb], wait=[(gate, 1)], signal=[(parked, 1)])  # never released
dev.queue_execute([long_cb], signal=[(s, 1)])
print("submitted", flush=True)
# exits without waiting or closing: work is in flight (or parked) at interpreter exit
"""


@pytest.fixture(scope="module")
def exit_runs():
    """Runs the exit script once per driver, all at once (each spends most of its time
    compiling the suite's kernels): driver -> (returncode, stdout, stderr, seconds)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    t0 = time.monotonic()
    procs = {
        d: subprocess.Popen([sys.executable, "-c", textwrap.dedent(_EXIT_SCRIPT), d], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for d in DRIVERS
    }
    results = {}
    for d, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=max(1.0, 90 - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            results[d] = (None, out, err, time.monotonic() - t0)
            continue
        results[d] = (proc.returncode, out, err, time.monotonic() - t0)
    return results


@pytest.mark.parametrize("driver_name", DRIVERS)
def test_interpreter_exit_with_work_in_flight(exit_runs, driver_name):
    code, out, err, seconds = exit_runs[driver_name]
    assert code is not None, f"the interpreter hung at exit (killed after {seconds:.0f} s)\nstdout:\n{out}\nstderr:\n{err}"
    assert code == 0, f"exit code {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert "submitted" in out
    assert "Traceback" not in err, err
