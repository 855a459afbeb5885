"""No lost work: a kernel submission that releases any number of dependents releases every one
of them (the ready queue never refuses), submissions beyond a slot chunk get a new chunk, and a
reusable command buffer submitted while its previous submission is in flight runs correctly."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fibergrid as fg
from scheduler import layout as L
from tests.scheduler.kernels import WAIT, spin


@fg.kernel(workgroup_size=1, bindings=(np.int32,), constants=(np.uint32,))
def bump_slot(wg, out, index):
    """out[index] += 1: each dependent owns one slot, so a lost or doubled run shows."""
    out[index] += 1


@pytest.fixture(params=[1, 2, 4], ids=lambda w: f"{w}w")
def dev(request):
    d = fg.create_device("local-task", workers=request.param)
    yield d
    d.close()


def gate_submission(dev, gate):
    """A kernel submission (long enough that the dependents park first) that signals `gate`."""
    n = 64
    out = dev.allocator.import_array(np.zeros(n, np.int64))
    who = dev.allocator.import_array(np.zeros(n, np.int32))
    cb = dev.create_command_buffer()
    cb.dispatch(spin, "spin", (n,), [np.uint32(1), np.uint32(20_000)], [out, who])
    cb.end()
    dev.queue_execute([cb], signal=[(gate, 1)])
    return out, who


@pytest.mark.parametrize("dependents", [300, 10_000])
def test_every_dependent_of_a_kernel_submission_runs(dev, dependents):
    """Regression: released dependents went as shards onto one worker's bounded deque, and a
    push that found it full was dropped (44 of 300 lost; 10,000 refused at the 1,024th)."""
    counts = dev.allocator.import_array(np.zeros(dependents, np.int32))
    gate, done = dev.create_semaphore(0), dev.create_semaphore(0)
    for i in range(dependents):
        cb = dev.create_command_buffer()
        cb.dispatch(bump_slot, "bump_slot", 1, [np.uint32(i)], [counts])
        cb.end()
        dev.queue_execute([cb], wait=[(gate, 1)], signal=[(done, i + 1)] if i == dependents - 1 else [])
    keep = gate_submission(dev, gate)
    dev.wait_idle(timeout=120)
    assert dev.scheduler.in_flight() == 0
    got = counts.to_numpy()
    assert (got == 1).all(), f"{int((got == 0).sum())} dependents never ran, {int((got > 1).sum())} ran twice"
    done.wait(dependents, timeout=WAIT)
    del keep


def test_more_submissions_in_flight_than_a_slot_chunk(dev):
    """Submissions parked on a host semaphore beyond one chunk of slots are accepted (a new
    chunk), and all run once the semaphore is signalled."""
    n = L.SLOT_CHUNK + 37
    counts = dev.allocator.import_array(np.zeros(n, np.int32))
    gate = dev.create_semaphore(0)
    for i in range(n):
        cb = dev.create_command_buffer()
        cb.dispatch(bump_slot, "bump_slot", 1, [np.uint32(i)], [counts])
        cb.end()
        dev.queue_execute([cb], wait=[(gate, 1)])
    assert dev.scheduler.in_flight() == n
    gate.signal(1)
    dev.wait_idle(timeout=60)
    assert (counts.to_numpy() == 1).all()


def test_max_submissions_is_a_clear_error():
    with fg.create_device("local-task", workers=1, max_submissions=8) as dev:
        gate = dev.create_semaphore(0)
        for _ in range(8):
            dev.queue_barrier(wait=[(gate, 1)])
        with pytest.raises(fg.ResourceExhausted, match="max_submissions"):
            dev.queue_barrier(wait=[(gate, 1)])
        gate.signal(1)
        dev.wait_idle(timeout=WAIT)
        dev.queue_barrier()  # slots are reused once their submissions complete


@fg.kernel(workgroup_size=1, bindings=(np.int32, np.uint32))
def count_runs(wg, hits, indirect_count):
    lin = wg.id[0] + wg.count[0] * wg.id[1]
    hits[lin] += 1


def indirect_then_direct(dev, kernel, n: int):
    """A reusable command buffer: `kernel` over n workgroups through dispatch_indirect, a
    barrier, then directly; returns it and the int32[n] buffer the kernel writes."""
    out = dev.allocator.import_array(np.zeros(n, np.int32))
    count = dev.allocator.import_array(np.array([n, 1, 1], np.uint32))
    cb = dev.create_command_buffer("reusable")
    cb.dispatch_indirect(kernel, kernel.entry_points[0].name, count, [], [out, count])
    cb.execution_barrier()
    cb.dispatch(kernel, kernel.entry_points[0].name, (n,), [], [out, count])
    cb.end()
    return cb, out


def test_reusable_command_buffer_submitted_twice_concurrently(dev):
    """A submission of a reusable command buffer whose previous submission is still in flight
    gets its own scratch (and its own state for indirect dispatches): both run every workgroup
    exactly once."""
    n = 500
    cb, hits = indirect_then_direct(dev, count_runs, n)
    gate, a, b = dev.create_semaphore(0), dev.create_semaphore(0), dev.create_semaphore(0)
    dev.queue_execute([cb], wait=[(gate, 1)], signal=[(a, 1)])
    # Submitted while the first is in flight (parked on the gate); it waits for the first only
    # because both add to the same `hits` (a plain += would race), not to share scratch.
    dev.queue_execute([cb], wait=[(gate, 1), (a, 1)], signal=[(b, 1)])
    gate.signal(1)
    a.wait(1, timeout=WAIT)
    b.wait(1, timeout=WAIT)
    assert (hits.to_numpy() == 4).all()


def test_concurrent_submitters_and_waiters_lose_nothing(dev):
    """Several Python threads submit and wait at once (each wait may make its thread the host
    participant); every workgroup runs exactly once."""
    threads, rounds, n = 4, 50, 64
    hits = dev.allocator.import_array(np.zeros(threads * n, np.int32))
    errors: list[BaseException] = []

    def client(t: int) -> None:
        try:
            sem = dev.create_semaphore(0)
            for r in range(rounds):
                cb = dev.create_command_buffer()
                for i in range(n):
                    cb.dispatch(bump_slot, "bump_slot", 1, [np.uint32(t * n + i)], [hits])
                cb.end()
                dev.queue_execute([cb], signal=[(sem, r + 1)])
                sem.wait(r + 1, timeout=WAIT)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    pool = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert not errors, errors
    assert (hits.to_numpy() == rounds).all()


@fg.kernel(workgroup_size=1, bindings=(np.int32, np.uint32))
def mark(wg, out, indirect_count):
    lin = wg.id[0] + wg.count[0] * wg.id[1]
    out[lin] = lin + 1


def test_reusable_command_buffer_running_twice_at_once(dev):
    """Two submissions of one reusable command buffer (an indirect dispatch, a barrier, a
    dispatch) run at the same time, each on its own scratch: both complete every region (the
    kernel's writes are idempotent, so running at once is a valid program)."""
    n = 3000
    cb, out = indirect_then_direct(dev, mark, n)
    for _ in range(5):
        gate, a, b = dev.create_semaphore(0), dev.create_semaphore(0), dev.create_semaphore(0)
        dev.queue_execute([cb], wait=[(gate, 1)], signal=[(a, 1)])
        dev.queue_execute([cb], wait=[(gate, 1)], signal=[(b, 1)])
        gate.signal(1)
        a.wait(1, timeout=WAIT)
        b.wait(1, timeout=WAIT)
    assert (out.to_numpy() == np.arange(1, n + 1)).all()
