"""Submissions linked through semaphores run in dependency order, whatever order and thread
they were submitted from; waits are met by device signals and by host signals made later."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import fibergrid as fg
from tests.scheduler.kernels import WAIT, chain_step

WIDTH = 64


def make_step(dev, data, tickets, k, groups):
    cb = dev.create_command_buffer()
    cb.dispatch(chain_step, "chain_step", (groups,), [np.uint32(k), np.uint32(WIDTH)], [data, tickets])
    cb.end()
    return cb


def chain_buffers(dev, steps):
    data = np.zeros((steps + 1) * WIDTH, np.int64)
    data[:WIDTH] = 1000
    return dev.allocator.import_array(data), dev.allocator.import_array(np.zeros(steps + 1, np.int64))


def check_chain(data, tickets, steps):
    rows = data.to_numpy().reshape(steps + 1, WIDTH)
    assert (rows == 1000 + np.arange(steps + 1)[:, None]).all()
    t = tickets.to_numpy()
    assert t[0] == steps and (t[1:] == np.arange(1, steps + 1)).all(), t  # tickets taken in step order


@pytest.mark.parametrize("workers,groups", [(2, 64), (4, 64), (2, 1)], ids=["2w-64wg", "4w-64wg", "2w-1wg"])
def test_reverse_order_chains_from_threads_with_host_gates(workers, groups):
    """6 chains of 8 steps; every step waits on its predecessor's semaphore; step 1 waits on a
    host gate, the middle step on a second host gate. 4 Python threads submit everything at once,
    last step first. Nothing may run before the gate; the chains stop at the second gate; then
    all complete in order, and a join submission waiting on every chain completes last."""
    chains, steps, threads = 6, 8, 4
    mid = steps // 2
    with fg.create_device("local-task", workers=workers) as dev:
        gate, mid_gate, join = dev.create_semaphore(0), dev.create_semaphore(0), dev.create_semaphore(0)
        sems = [dev.create_semaphore(0) for _ in range(chains)]
        bufs = [chain_buffers(dev, steps) for _ in range(chains)]
        work = []  # (cb, waits, signals), last steps first
        for k in range(steps, 0, -1):
            for c in range(chains):
                waits = [(gate, 1)] if k == 1 else [(sems[c], k - 1)]
                if k == mid:
                    waits.append((mid_gate, 1))
                work.append((make_step(dev, *bufs[c], k, groups), waits, [(sems[c], k)]))
        start = threading.Barrier(threads)
        errors = []

        def submit(part):
            try:
                start.wait(timeout=WAIT)
                for cb, waits, signals in part:
                    dev.queue_execute([cb], wait=waits, signal=signals)
            except BaseException as e:  # noqa: BLE001 -- reported below
                errors.append(e)

        ts = [threading.Thread(target=submit, args=(work[t::threads],)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=WAIT)
        assert not errors, errors
        assert not any(t.is_alive() for t in ts)
        dev.queue_barrier(wait=[(s, steps) for s in sems], signal=[(join, 1)])

        time.sleep(0.05)
        assert [s.query() for s in sems] == [0] * chains, "a step ran before the host gate"
        assert join.query() == 0
        assert dev.scheduler.in_flight() == chains * steps + 1

        gate.signal(1)
        for s in sems:
            s.wait(mid - 1, timeout=WAIT)
        time.sleep(0.05)
        assert [s.query() for s in sems] == [mid - 1] * chains, "a step passed the second gate"
        assert join.query() == 0

        mid_gate.signal(1)
        join.wait(1, timeout=WAIT)
        assert [s.query() for s in sems] == [steps] * chains
        for data, tickets in bufs:
            check_chain(data, tickets, steps)
        dev.wait_idle(timeout=WAIT)
        assert dev.scheduler.in_flight() == 0


def test_single_worker_device_chain():
    """A chain completed on the device (each step released by its predecessor's signal, not the
    host's) on a one-worker device."""
    steps = 5
    with fg.create_device("local-task", workers=1) as dev:
        s = dev.create_semaphore(0)
        data, tickets = chain_buffers(dev, steps)
        cbs = [make_step(dev, data, tickets, k, 64) for k in range(1, steps + 1)]
        for k in range(steps, 1, -1):
            dev.queue_execute([cbs[k - 1]], wait=[(s, k - 1)], signal=[(s, k)])
        dev.queue_execute([cbs[0]], signal=[(s, 1)])
        s.wait(steps, timeout=WAIT)
        check_chain(data, tickets, steps)


def test_long_timeline_submitted_in_reverse():
    """200 submissions on one timeline, each waiting for the previous value: submitted last
    first, released by the host's first signal, run in order."""
    steps = 200
    with fg.create_device("local-task", workers=2) as dev:
        s = dev.create_semaphore(0)
        data, tickets = chain_buffers(dev, steps)
        cbs = [make_step(dev, data, tickets, k, 64) for k in range(1, steps + 1)]
        for k in range(steps, 0, -1):
            dev.queue_execute([cbs[k - 1]], wait=[(s, k)], signal=[(s, k + 1)])
        assert s.query() == 0
        s.signal(1)
        s.wait(steps + 1, timeout=WAIT)
        check_chain(data, tickets, steps)


def test_multiple_waits_all_required():
    """A submission waiting on a device-signalled and a host-signalled semaphore runs only when
    both are reached."""
    with fg.create_device("local-task", workers=2) as dev:
        device_sem, host_sem, done = dev.create_semaphore(0), dev.create_semaphore(0), dev.create_semaphore(0)
        data, tickets = chain_buffers(dev, 2)
        dev.queue_execute([make_step(dev, data, tickets, 2, 64)], wait=[(device_sem, 1), (host_sem, 3)], signal=[(done, 1)])
        dev.queue_execute([make_step(dev, data, tickets, 1, 64)], signal=[(device_sem, 1)])
        device_sem.wait(1, timeout=WAIT)
        host_sem.signal(2)  # not enough
        time.sleep(0.05)
        assert done.query() == 0
        assert tickets.to_numpy()[2] == 0
        host_sem.signal(5)  # past the wait value
        done.wait(1, timeout=WAIT)
        check_chain(data, tickets, 2)


def test_host_waiters_in_threads_woken_by_host_signals():
    """Several threads block in wait() on values the host signals later, one step at a time;
    each returns once its value is reached, none early."""
    with fg.create_device("local-task", workers=2) as dev:
        s = dev.create_semaphore(0)
        woke = {}
        errors = []

        def waiter(v):
            try:
                s.wait(v, timeout=WAIT)
                woke[v] = s.query()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        ts = [threading.Thread(target=waiter, args=(v,)) for v in (1, 2, 3, 5, 5)]
        for t in ts:
            t.start()
        time.sleep(0.05)
        assert not woke
        for v in range(1, 6):
            s.signal(v)
            time.sleep(0.01)
        for t in ts:
            t.join(timeout=WAIT)
        assert not errors, errors
        assert not any(t.is_alive() for t in ts)
        assert all(got >= v for v, got in woke.items()) and set(woke) == {1, 2, 3, 5}


def test_wait_timeouts_and_reached_values():
    with fg.create_device("local-task", workers=2) as dev:
        s = dev.create_semaphore(7)
        s.wait(7, timeout=0)  # already reached: returns at once
        s.wait(3, timeout=WAIT)
        with pytest.raises(fg.DeadlineExceeded):
            s.wait(8, timeout=0.05)
        with pytest.raises(fg.DeadlineExceeded):
            s.wait(8, timeout=0)
        s.signal(9)
        s.wait(8, timeout=WAIT)
        with pytest.raises(fg.InvalidArgument):
            s.signal(2)  # timelines only move forward
        assert s.query() == 9


def test_semaphores_are_recycled():
    """More semaphores than the table holds, over time: released ones are reused."""
    with fg.create_device("local-task", workers=2) as dev:
        for i in range(3 * 4096 // 64):
            batch = [dev.create_semaphore(i) for _ in range(64)]
            for s in batch:
                assert s.query() == i
            del batch
