"""Timeline semaphores, fences, queue ordering, failure propagation, submissions from threads."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest

import fibergrid as fg
from tests.hal import kernels as K
from tests.hal.helpers import TIMEOUT, assert_device_works, run_threads

SMALL = 0.05  # timeouts that are meant to expire
GENEROUS = 5.0  # bound on how long an expiring wait may take (the machine is shared and noisy)


def _increment_cb(device, buf, index=0):
    cb = device.create_command_buffer()
    cb.dispatch(K.increment, "increment", 1, [index], [buf])
    cb.end()
    return cb


def test_query_signal_wait(device):
    s = device.create_semaphore(5)
    assert s.query() == 5
    s.wait(0, timeout=TIMEOUT)
    s.wait(5, timeout=TIMEOUT)
    s.signal(7)
    assert s.query() == 7
    s.signal(7)  # same value: no change, no error
    s.signal(1 << 40)
    assert s.query() == 1 << 40
    s.wait(8, timeout=0)
    assert device.create_semaphore().query() == 0


def test_signal_backwards(device):
    s = device.create_semaphore(3)
    with pytest.raises(fg.InvalidArgument) as e:
        s.signal(2)
    assert "2" in str(e.value) and "3" in str(e.value)
    assert s.query() == 3


@pytest.mark.parametrize("value", [-1, 1 << 63, 1 << 64, 2.0, "3", None])
def test_signal_or_wait_bad_value(device, value):
    """Payloads are ints in [0, 2**63); anything else is rejected, never wrapped."""
    s = device.create_semaphore(1)
    with pytest.raises(fg.InvalidArgument, match=re.escape(repr(value))):
        s.signal(value)
    with pytest.raises(fg.InvalidArgument, match=re.escape(repr(value))):
        s.wait(value, timeout=SMALL)
    assert s.query() == 1
    s.signal(2)  # the timeline still works
    assert s.query() == 2


def test_numpy_integer_payloads(device):
    s = device.create_semaphore(np.uint32(2))
    assert s.query() == 2
    s.signal(np.int64(5))
    s.wait(np.uint64(5), timeout=TIMEOUT)
    device.queue_barrier(wait=[(s, np.int32(5))], signal=[(s, np.uint64(6))])
    s.wait(6, timeout=TIMEOUT)
    assert s.query() == 6


@pytest.mark.parametrize("value", [-1, 1 << 63, 1.5])
def test_bad_initial_value(device, value):
    with pytest.raises(fg.InvalidArgument):
        device.create_semaphore(value)


def test_wait_times_out(device):
    s = device.create_semaphore(1)
    for timeout in (SMALL, 0, 0.0):
        t0 = time.monotonic()
        with pytest.raises(fg.DeadlineExceeded):
            s.wait(2, timeout=timeout)
        assert time.monotonic() - t0 < GENEROUS
    assert isinstance(fg.DeadlineExceeded("x"), TimeoutError)
    assert s.query() == 1
    s.signal(2)
    s.wait(2, timeout=TIMEOUT)


def test_host_signal_wakes_waiting_thread(device):
    s = device.create_semaphore(0)
    seen = []

    def waiter():
        s.wait(3, timeout=TIMEOUT)
        seen.append(s.query())

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.02)
    s.signal(1)
    time.sleep(0.02)
    assert not seen
    s.signal(3)
    t.join(TIMEOUT)
    assert not t.is_alive() and seen == [3]


def test_timeline_ordering_between_submissions(device):
    """B waits on (s, 1) which A signals; B is submitted first and must run after A.
    (A is slow enough that only the device, never the host, can release B.)"""
    n = 256
    x = device.allocator.import_array(np.arange(n, dtype=np.float32))
    y = device.allocator.allocate_view((n,), np.float32)
    z = device.allocator.allocate_view((n,), np.float32)
    scratch = device.allocator.allocate_view((4,), np.int64)
    s = device.create_semaphore(0)
    done = device.create_semaphore(0)
    b = device.create_command_buffer()
    b.copy(y.buffer, 0, z.buffer, 0, 4 * n)  # reads what A wrote
    b.end()
    a = device.create_command_buffer()
    a.dispatch(K.busy, "busy", 4, [200_000], [scratch])
    a.execution_barrier()
    a.dispatch(K.saxpy, "saxpy", n // 64, [2.0], [x, y])
    a.end()
    device.queue_execute([b], wait=[(s, 1)], signal=[(done, 1)])
    time.sleep(SMALL)
    assert done.query() == 0
    device.queue_execute([a], wait=[], signal=[(s, 1)])
    s.wait(1, timeout=TIMEOUT)
    done.wait(1, timeout=TIMEOUT)
    np.testing.assert_array_equal(z.to_numpy(), 2 * np.arange(n, dtype=np.float32))


def test_submission_after_its_wait_was_signalled_by_a_submission(device):
    """A signals (s, 1); B, submitted once the host saw (s, 1), waits on it and runs."""
    n = 256
    x = device.allocator.import_array(np.arange(n, dtype=np.float32))
    y = device.allocator.allocate_view((n,), np.float32)
    z = device.allocator.allocate_view((n,), np.float32)
    s, done = device.create_semaphore(0), device.create_semaphore(0)
    a = device.create_command_buffer()
    a.dispatch(K.saxpy, "saxpy", n // 64, [2.0], [x, y])
    a.end()
    b = device.create_command_buffer()
    b.copy(y.buffer, 0, z.buffer, 0, 4 * n)
    b.end()
    device.queue_execute([a], signal=[(s, 1)])
    s.wait(1, timeout=TIMEOUT)
    device.queue_execute([b], wait=[(s, 1)], signal=[(done, 1)])
    done.wait(1, timeout=TIMEOUT)
    np.testing.assert_array_equal(z.to_numpy(), 2 * np.arange(n, dtype=np.float32))


def test_empty_submissions_chained_on_the_device(device):
    """queue_barrier chains released by earlier submissions' signals, queued in reverse."""
    s = device.create_semaphore(0)
    for v in range(20, 0, -1):
        device.queue_barrier(wait=[(s, v - 1)], signal=[(s, v)])
    s.wait(20, timeout=TIMEOUT)
    assert s.query() == 20


def test_submission_waits_for_host_signal(device):
    buf = device.allocator.allocate_view((1,), np.int32)
    gate = device.create_semaphore(0)
    done = device.create_semaphore(0)
    device.queue_execute([_increment_cb(device, buf)], wait=[(gate, 2)], signal=[(done, 1)])
    time.sleep(SMALL)
    assert done.query() == 0 and int(buf.to_numpy()[0]) == 0, "ran before its wait was met"
    gate.signal(1)  # not enough
    time.sleep(SMALL)
    assert done.query() == 0 and int(buf.to_numpy()[0]) == 0
    gate.signal(2)
    done.wait(1, timeout=TIMEOUT)
    assert int(buf.to_numpy()[0]) == 1


def test_multiple_waits_and_signals(device):
    buf = device.allocator.allocate_view((1,), np.int32)
    s1, s2 = device.create_semaphore(0), device.create_semaphore(0)
    o1, o2 = device.create_semaphore(0), device.create_semaphore(10)
    device.queue_execute([_increment_cb(device, buf)], wait=[(s1, 1), (s2, 5)], signal=[(o1, 1), (o2, 11)])
    s2.signal(5)
    time.sleep(SMALL)
    assert o1.query() == 0 and o2.query() == 10
    s1.signal(1)
    fg.Fence([(o1, 1), (o2, 11)]).wait(timeout=TIMEOUT)
    assert int(buf.to_numpy()[0]) == 1


def test_long_timeline_chain(device):
    """Submissions queued ahead of time, each waiting on the previous value of one timeline."""
    buf = device.allocator.allocate_view((1,), np.int32)
    s = device.create_semaphore(0)
    out = device.allocator.allocate_view((30,), np.int32)
    for i in range(30, 0, -1):  # submitted in reverse: each parks until its predecessor ran
        cb = device.create_command_buffer()
        cb.dispatch(K.increment, "increment", 1, [0], [buf])
        cb.execution_barrier()
        cb.copy(buf.buffer, 0, out.buffer, 4 * (i - 1), 4)
        cb.end()
        device.queue_execute([cb], wait=[(s, i - 1)] if i > 1 else [(s, 0)], signal=[(s, i)])
    s.wait(30, timeout=TIMEOUT)
    np.testing.assert_array_equal(out.to_numpy(), np.arange(1, 31))


def test_fence(device):
    a, b = device.create_semaphore(0), device.create_semaphore(0)
    f = fg.Fence([(a, 1)]).add(b, 2)
    assert list(f) == [(a, 1), (b, 2)]
    assert f.query() is False
    t0 = time.monotonic()
    with pytest.raises(fg.DeadlineExceeded):
        f.wait(timeout=SMALL)
    assert time.monotonic() - t0 < GENEROUS
    a.signal(1)
    assert not f.query()
    device.queue_barrier(signal=[(b, 2)])
    f.wait(timeout=TIMEOUT)
    assert f.query() is True
    assert fg.Fence().query() is True
    fg.Fence().wait(timeout=0)
    b.fail("fence-boom")
    with pytest.raises(fg.Aborted, match="fence-boom"):
        f.query()
    with pytest.raises(fg.Aborted, match="fence-boom"):
        f.wait(timeout=TIMEOUT)


# --- failure ----------------------------------------------------------------------------------------


def test_fail_reaches_every_host_waiter(device):
    s = device.create_semaphore(0)
    results: list[BaseException | None] = [None] * 6
    started = threading.Barrier(len(results) + 1)

    def waiter(i):
        started.wait(TIMEOUT)
        try:
            s.wait(1, timeout=TIMEOUT)
        except BaseException as e:  # noqa: BLE001 - recorded and checked below
            results[i] = e

    threads = [threading.Thread(target=waiter, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    started.wait(TIMEOUT)
    time.sleep(SMALL)  # let them block in wait()
    s.fail(RuntimeError("disk on fire"))
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    for e in results:
        assert type(e) is fg.Aborted, repr(e)
        assert "disk on fire" in str(e)
    # later waiters, query and signal see the failure too
    with pytest.raises(fg.Aborted, match="disk on fire"):
        s.wait(1, timeout=TIMEOUT)
    with pytest.raises(fg.Aborted, match="disk on fire"):
        s.wait(0, timeout=TIMEOUT)
    with pytest.raises(fg.Aborted, match="disk on fire"):
        s.query()
    with pytest.raises(fg.Aborted, match="disk on fire"):
        s.signal(5)
    assert_device_works(device)


def test_fail_with_string(device):
    s = device.create_semaphore(0)
    s.fail("plain text reason")
    with pytest.raises(fg.Aborted, match="plain text reason"):
        s.wait(1, timeout=TIMEOUT)


def test_fail_propagates_down_a_chain(device):
    """A -> B -> C through semaphores; failing A's wait fails all their signals, runs nothing."""
    marks = device.allocator.allocate_view((3,), np.int32)
    s0, s1, s2, s3 = (device.create_semaphore(0) for _ in range(4))
    extra = device.create_semaphore(0)
    device.queue_execute([_increment_cb(device, marks, 0)], wait=[(s0, 1)], signal=[(s1, 1), (extra, 1)])
    device.queue_execute([_increment_cb(device, marks, 1)], wait=[(s1, 1)], signal=[(s2, 1)])
    device.queue_execute([_increment_cb(device, marks, 2)], wait=[(s2, 1)], signal=[(s3, 1)])
    time.sleep(SMALL)
    assert not marks.to_numpy().any()
    s0.fail(fg.Aborted("upstream-broke"))
    for s in (s1, s2, s3, extra):
        with pytest.raises(fg.Aborted, match="upstream-broke"):
            s.wait(1, timeout=TIMEOUT)
    # a submission made after the failure fails at once, too
    late = device.create_semaphore(0)
    device.queue_execute([_increment_cb(device, marks, 0)], wait=[(s3, 1)], signal=[(late, 1)])
    with pytest.raises(fg.Aborted, match="upstream-broke"):
        late.wait(1, timeout=TIMEOUT)
    assert not marks.to_numpy().any(), "kernels of failed submissions must not run"
    assert_device_works(device)


def test_failure_of_one_wait_among_several(device):
    marks = device.allocator.allocate_view((1,), np.int32)
    ok, bad, out = device.create_semaphore(0), device.create_semaphore(0), device.create_semaphore(0)
    device.queue_execute([_increment_cb(device, marks)], wait=[(ok, 1), (bad, 1)], signal=[(out, 1)])
    ok.signal(1)
    bad.fail("second-wait-failed")
    with pytest.raises(fg.Aborted, match="second-wait-failed"):
        out.wait(1, timeout=TIMEOUT)
    assert int(marks.to_numpy()[0]) == 0


# --- threads ----------------------------------------------------------------------------------------


def test_submissions_from_many_threads(device):
    """8 threads x 20 submissions at once, each signalling its own semaphore."""
    threads_n, per_thread = 8, 20
    bufs = [device.allocator.allocate_view((per_thread,), np.int32) for _ in range(threads_n)]
    sems = [[device.create_semaphore(0) for _ in range(per_thread)] for _ in range(threads_n)]
    timeline = [device.create_semaphore(0) for _ in range(threads_n)]
    go = threading.Barrier(threads_n)

    def worker(t):
        go.wait(TIMEOUT)
        for i in range(per_thread):
            cb = device.create_command_buffer()
            cb.dispatch(K.increment, "increment", 1, [i], [bufs[t]])
            cb.execution_barrier()
            cb.dispatch(K.increment, "increment", 1, [i], [bufs[t]])
            cb.end()
            device.queue_execute([cb], signal=[(sems[t][i], 1), (timeline[t], i + 1)])
        fg.Fence((sem, 1) for sem in sems[t]).wait(timeout=TIMEOUT)

    run_threads(worker, threads_n)
    for t in range(threads_n):
        assert all(sem.query() == 1 for sem in sems[t])
        assert timeline[t].query() == per_thread  # signals only raise a timeline: the max wins
        np.testing.assert_array_equal(bufs[t].to_numpy(), np.full(per_thread, 2))


def test_chained_submissions_from_many_threads(device):
    """8 threads x 20 submissions, each waiting on its predecessor in the thread's timeline."""
    threads_n, per_thread = 8, 20
    bufs = [device.allocator.allocate_view((2,), np.int32) for _ in range(threads_n)]
    sems = [device.create_semaphore(0) for _ in range(threads_n)]
    go = threading.Barrier(threads_n)

    def worker(t):
        go.wait(TIMEOUT)
        for i in range(1, per_thread + 1):
            cb = device.create_command_buffer()
            cb.dispatch(K.increment, "increment", 1, [0], [bufs[t]])
            cb.execution_barrier()
            cb.dispatch(K.increment, "increment", 1, [1], [bufs[t]])
            cb.end()
            device.queue_execute([cb], wait=[(sems[t], i - 1)], signal=[(sems[t], i)])
        sems[t].wait(per_thread, timeout=TIMEOUT)

    run_threads(worker, threads_n)
    for t in range(threads_n):
        np.testing.assert_array_equal(bufs[t].to_numpy(), [per_thread, per_thread])


def test_host_waits_from_many_threads_on_one_timeline(device):
    s = device.create_semaphore(0)
    reached = []
    lock = threading.Lock()

    def waiter(v):
        s.wait(v, timeout=TIMEOUT)
        with lock:
            reached.append(v)

    threads = [threading.Thread(target=waiter, args=(v,)) for v in range(1, 9)]
    for t in threads:
        t.start()
    for v in range(1, 9):
        device.queue_barrier(signal=[(s, v)])
    for t in threads:
        t.join(TIMEOUT)
    assert sorted(reached) == list(range(1, 9))
