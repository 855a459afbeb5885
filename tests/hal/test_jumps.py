"""Jumps inside a command buffer (devices with `branches`: the CPU drivers), checked by counting
how often the commands between them ran; elsewhere `jump` is refused at record time."""

from __future__ import annotations

import time

import numpy as np
import pytest

import fibergrid as fg
from tests.hal import kernels as K
from tests.hal.helpers import TIMEOUT, run, submit


def _skip_without_branches(device) -> None:
    if not device.branches:
        pytest.skip(f"{device.driver} evaluates control flow on the host")


def _counting_loop(device, counter, trips: int):
    """top: jump end if counter[0] == trips; counter[0] += 1; jump top; end: counter[1] += 1."""
    cb = device.create_command_buffer("reusable")
    top, end = cb.label(), cb.label()
    cb.bind_label(top)
    cb.jump(end, (counter.buffer, 0, 4), trips)
    cb.dispatch(K.increment, "increment", 1, [0], [counter])
    cb.jump(top)
    cb.bind_label(end)
    cb.dispatch(K.increment, "increment", 1, [1], [counter])
    cb.end()
    return cb


@pytest.mark.parametrize("trips", [0, 1, 37])
def test_loop_runs_its_body_until_the_predicate_matches(device, trips):
    _skip_without_branches(device)
    counter = device.allocator.import_array(np.zeros(2, np.int32))
    cb = _counting_loop(device, counter, trips)
    run(device, cb)
    np.testing.assert_array_equal(counter.to_numpy(), [trips, 1])
    run(device, cb)  # replayed: the predicate already matches, the body is skipped
    np.testing.assert_array_equal(counter.to_numpy(), [trips, 2])


def test_jumps_survive_concatenation(device):
    """Jump targets are relative to the jump, so two command buffers in one submission (their
    programs concatenated) both loop right."""
    _skip_without_branches(device)
    a = device.allocator.import_array(np.zeros(2, np.int32))
    b = device.allocator.import_array(np.zeros(2, np.int32))
    run(device, _counting_loop(device, a, 3), _counting_loop(device, b, 5))
    np.testing.assert_array_equal(a.to_numpy(), [3, 1])
    np.testing.assert_array_equal(b.to_numpy(), [5, 1])


@pytest.mark.parametrize("selector", [0, 1, 2, 255])
def test_branch_on_a_byte(device, selector):
    """A case of three: jump to B_k when the u8 selector equals k (the last one otherwise)."""
    _skip_without_branches(device)
    sel = device.allocator.import_array(np.array([selector, 0, 0, 0], np.uint8))
    out = device.allocator.import_array(np.zeros(3, np.int32))
    cb = device.create_command_buffer()
    labels = [cb.label() for _ in range(3)]
    end = cb.label()
    cb.jump(labels[0], (sel.buffer, 0, 1), 0)
    cb.jump(labels[1], (sel.buffer, 0, 1), 1)
    cb.jump(labels[2])
    for k, label in enumerate(labels):
        cb.bind_label(label)
        cb.dispatch(K.increment, "increment", 1, [k], [out])
        cb.jump(end)
    cb.bind_label(end)
    cb.end()
    run(device, cb)
    want = np.zeros(3, np.int32)
    want[min(selector, 2)] = 1
    np.testing.assert_array_equal(out.to_numpy(), want)


def test_a_loop_that_never_ends_fails_its_call_at_the_timeout(device):
    """The predicate never matches: execute_and_wait's timeout becomes the submission's deadline,
    which the loop's backward jump checks; the device keeps working after."""
    _skip_without_branches(device)
    counter = device.allocator.import_array(np.zeros(2, np.int32))
    cb = _counting_loop(device, counter, -1)
    sem = device.create_semaphore(0)
    with pytest.raises(fg.DeadlineExceeded, match="timeout passed"):
        device.execute_and_wait(cb, sem, 1, timeout=0.2)
    assert counter.to_numpy()[0] > 0 and counter.to_numpy()[1] == 0
    counter.buffer.map()[:] = 0  # the predicate now matches at once: the same loop ends
    cb2 = _counting_loop(device, counter, 0)
    run(device, cb2)
    np.testing.assert_array_equal(counter.to_numpy(), [0, 1])


def test_a_loop_stops_when_its_semaphore_is_failed(device):
    """A submission without a deadline stops at its loop's next iteration once the host fails
    the semaphore it signals (fibergrid.Module does this for a call it abandons)."""
    _skip_without_branches(device)
    if device.workers == 0:
        pytest.skip("local-sync runs a submission on the submitting thread")
    counter = device.allocator.import_array(np.zeros(2, np.int32))
    sem = submit(device, [_counting_loop(device, counter, -1)])
    deadline = time.monotonic() + TIMEOUT
    while counter.to_numpy()[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    sem.fail("given up")
    device.wait_idle(TIMEOUT)
    with pytest.raises(fg.Aborted, match="given up"):
        sem.wait(1, timeout=TIMEOUT)
    assert counter.to_numpy()[1] == 0


def test_jump_validation(device):
    cb = device.create_command_buffer()
    other = device.create_command_buffer()
    label = cb.label()
    if not device.branches:
        with pytest.raises(fg.Unimplemented, match="cannot branch"):
            cb.jump(label)
        return
    with pytest.raises(fg.InvalidArgument, match="not a label of"):
        cb.jump(other.label())
    buf = device.allocator.allocate_buffer(16)
    with pytest.raises(fg.InvalidArgument, match="1, 2, 4 or 8 bytes"):
        cb.jump(label, (buf, 0, 3))
    with pytest.raises(fg.InvalidArgument, match="1, 2, 4 or 8 bytes"):
        cb.jump(label, (buf, 2, 4))
    cb.jump(label, (buf, 4, 4), 7)
    with pytest.raises(fg.InvalidArgument, match="never bound"):
        cb.end()
    cb.bind_label(label)
    with pytest.raises(fg.InvalidArgument, match="already bound"):
        cb.bind_label(label)
    cb.end()
