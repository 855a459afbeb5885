"""Kernels that fail while running: the error names the kernel and workgroup; the device lives on."""

from __future__ import annotations

import re

import numpy as np
import pytest

import fibergrid as fg
from tests.hal import kernels as K
from tests.hal.helpers import TIMEOUT, assert_device_works


def _run_expecting_abort(device, cb, **kwargs) -> str:
    s = device.create_semaphore(0)
    device.queue_execute([cb], signal=[(s, 1)], **kwargs)
    with pytest.raises(fg.Aborted) as e:
        s.wait(1, timeout=TIMEOUT)
    with pytest.raises(fg.Aborted):
        s.query()
    return str(e.value)


@pytest.mark.parametrize("grid, at, status", [((8,), (3, 0), 7), ((4, 3), (2, 1), 1), ((1,), (0, 0), 255)])
def test_kernel_status_fails_the_submission(device, grid, at, status):
    out = device.allocator.allocate_view((16,), np.int32)
    cb = device.create_command_buffer()
    cb.dispatch(K.fail_at, "fail_at", grid, [at[0], at[1], status], [out])
    cb.end()
    msg = _run_expecting_abort(device, cb)
    assert f"kernel 'fail_at' returned status {status} at workgroup ({at[0]}, {at[1]}, 0)" in msg, msg
    assert_device_works(device)


def test_out_of_bounds_index_fails_the_submission(device):
    x = device.allocator.allocate_view((8,), np.float32)
    cb = device.create_command_buffer()
    cb.dispatch(K.oob_at, "oob_at", 8, [5], [x])
    cb.end()
    msg = _run_expecting_abort(device, cb)
    assert "kernel 'oob_at'" in msg and "workgroup (5, 0, 0)" in msg, msg
    assert re.search(r"status -?\d+", msg), msg
    assert_device_works(device)


def test_out_of_bounds_respects_the_binding_range(device):
    """A binding covering part of a buffer is all the kernel may touch."""
    buf = device.allocator.allocate_buffer(64)
    cb = device.create_command_buffer()
    cb.dispatch(K.oob_at, "oob_at", 4, [2], [(buf, 0, 16)])  # 4 floats bound of 16 in the buffer
    cb.end()
    msg = _run_expecting_abort(device, cb)
    assert "kernel 'oob_at'" in msg and "workgroup (2, 0, 0)" in msg, msg
    assert not buf.read(np.float32)[4:].any(), "wrote outside its binding"


def test_failure_names_the_right_command(device):
    """The failing kernel is named even when other kernels precede it in the command buffer."""
    n = 128
    x = device.allocator.import_array(np.ones(n, np.float32))
    y = device.allocator.allocate_view((n,), np.float32)
    out = device.allocator.allocate_view((16,), np.int32)
    after = device.allocator.allocate_view((4,), np.int32)
    cb = device.create_command_buffer()
    cb.dispatch(K.saxpy, "saxpy", 2, [1.0], [x, y])
    cb.execution_barrier()
    cb.fill(after.buffer, 0, None, 0)
    cb.dispatch(K.fail_at, "fail_at", (5,), [4, 0, 3], [out])
    cb.execution_barrier()
    cb.fill(after.buffer, 0, None, np.int32(9))  # must not run: the submission failed before it
    cb.end()
    msg = _run_expecting_abort(device, cb)
    assert "kernel 'fail_at' returned status 3 at workgroup (4, 0, 0)" in msg, msg
    np.testing.assert_array_equal(y.to_numpy(), np.ones(n, np.float32))  # the region before it ran
    assert not after.to_numpy().any()
    assert_device_works(device)


def test_failure_travels_to_dependent_submissions(device):
    out = device.allocator.allocate_view((8,), np.int32)
    marks = device.allocator.allocate_view((1,), np.int32)
    s, t = device.create_semaphore(0), device.create_semaphore(0)
    failing = device.create_command_buffer()
    failing.dispatch(K.fail_at, "fail_at", 8, [6, 0, 11], [out])
    failing.end()
    dependent = device.create_command_buffer()
    dependent.dispatch(K.increment, "increment", 1, [0], [marks])
    dependent.end()
    device.queue_execute([dependent], wait=[(s, 1)], signal=[(t, 1)])
    device.queue_execute([failing], signal=[(s, 1)])
    for sem in (s, t):
        with pytest.raises(fg.Aborted) as e:
            sem.wait(1, timeout=TIMEOUT)
        assert "kernel 'fail_at' returned status 11 at workgroup (6, 0, 0)" in str(e.value), str(e.value)
    assert int(marks.to_numpy()[0]) == 0
    assert_device_works(device)


def test_failure_in_one_of_several_command_buffers(device):
    out = device.allocator.allocate_view((8,), np.int32)
    marks = device.allocator.allocate_view((2,), np.int32)
    first = device.create_command_buffer()
    first.dispatch(K.increment, "increment", 1, [0], [marks])
    first.end()
    failing = device.create_command_buffer()
    failing.dispatch(K.fail_at, "fail_at", 2, [1, 0, 5], [out])
    failing.end()
    last = device.create_command_buffer()
    last.dispatch(K.increment, "increment", 1, [1], [marks])
    last.end()
    s = device.create_semaphore(0)
    device.queue_execute([first, failing, last], signal=[(s, 1)])
    with pytest.raises(fg.Aborted, match=re.escape("kernel 'fail_at' returned status 5 at workgroup (1, 0, 0)")):
        s.wait(1, timeout=TIMEOUT)
    np.testing.assert_array_equal(marks.to_numpy(), [1, 0])
    assert_device_works(device)


def test_reusable_command_buffer_runs_again_after_a_failure(device):
    out = device.allocator.allocate_view((8,), np.int32)
    cb = device.create_command_buffer("reusable")
    cb.dispatch(K.fail_at, "fail_at", 4, [2, 0, 9], [out])
    cb.end()
    for _ in range(3):
        msg = _run_expecting_abort(device, cb)
        assert "kernel 'fail_at' returned status 9 at workgroup (2, 0, 0)" in msg
    ok = device.create_command_buffer("reusable")
    ok.dispatch(K.fail_at, "fail_at", 4, [100, 0, 9], [out])  # never fails
    ok.end()
    s = device.create_semaphore(0)
    device.queue_execute([ok], signal=[(s, 1)])
    s.wait(1, timeout=TIMEOUT)
    np.testing.assert_array_equal(out.to_numpy()[:4], 1)


@pytest.mark.parametrize("status", [-1, -1000, -1001, -1002, -(1 << 31)])
def test_any_nonzero_status_is_reported_as_the_kernels(device, status):
    """Statuses the driver uses internally (host failure, shutdown, ...) are still reported as
    what the kernel returned when a kernel returns them."""
    out = device.allocator.allocate_view((8,), np.int32)
    cb = device.create_command_buffer()
    cb.dispatch(K.fail_at, "fail_at", 4, [1, 0, status & 0xFFFFFFFF], [out])
    cb.end()
    msg = _run_expecting_abort(device, cb)
    assert f"kernel 'fail_at' returned status {status} at workgroup (1, 0, 0)" in msg, msg
    assert_device_works(device)
