"""Reserved slots (a model call's fast path) come back when their command buffer is collected,
also when the garbage collector runs the finalizer on a thread that holds the scheduler's lock
(inside a submission): giving the slot back must neither deadlock nor be lost."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import fibergrid as fg


@fg.kernel(workgroup_size=1, bindings=(np.int32,))
def bump(wg, out):
    out[0] += 1


@pytest.fixture(params=["local-task", "local-sync"])
def dev(request):
    d = fg.create_device(request.param)
    yield d
    d.close()


def _reserved_call(dev, out) -> None:
    """One call through a fresh reusable command buffer's reserved slot, the buffer then dropped."""
    cb = dev.create_command_buffer("reusable")
    cb.dispatch(bump, "bump", 1, [], [out])
    cb.end()
    dev.execute_and_wait(cb, dev.create_semaphore(0), 1, timeout=10)


def test_a_finalizer_inside_the_lock_gives_the_slot_back(dev):
    out = dev.allocator.import_array(np.zeros(1, np.int32))
    scheduler = dev.scheduler
    _reserved_call(dev, out)  # the first reservation; its buffer is garbage now or at gc
    done = threading.Event()

    def collect_inside_the_lock() -> None:
        with scheduler._lock:  # as a submission in progress holds it
            gc.collect()  # runs the finalizer: scheduler.unreserve
        done.set()

    t = threading.Thread(target=collect_inside_the_lock, daemon=True)
    t.start()
    t.join(10)
    assert done.is_set(), "giving a reserved slot back from a finalizer inside the lock deadlocked"
    for i in range(50):  # each takes a slot and drops it: none may be lost
        _reserved_call(dev, out)
        if i % 10 == 9:
            gc.collect()
    gc.collect()
    assert out.to_numpy()[0] == 51
    _reserved_call(dev, out)
    assert len(scheduler._reserved) <= 2  # the live one, and at most one not yet taken back
    assert len(scheduler._chunks) == 1


def test_a_call_while_the_command_buffer_is_in_flight_waits_its_turn(dev):
    """execute_and_wait of a command buffer still queued (behind a gate) must not run its
    reserved slot's program concurrently: the native call sees the program in flight (BUSY) and
    the call takes the general path, after the queued run. Both runs happen, the second
    reusing the slot afterwards."""
    out = dev.allocator.import_array(np.zeros(1, np.int32))
    cb = dev.create_command_buffer("reusable")
    cb.dispatch(bump, "bump", 1, [], [out])
    cb.end()
    sem = dev.create_semaphore(0)
    dev.execute_and_wait(cb, sem, 1, timeout=10)  # reserves the slot
    gate, queued = dev.create_semaphore(0), dev.create_semaphore(0)
    dev.queue_execute([cb], wait=[(gate, 1)], signal=[(queued, 1)])
    opener = threading.Timer(0.2, gate.signal, (1,))
    opener.start()
    dev.execute_and_wait(cb, sem, 2, timeout=10)
    opener.join()
    queued.wait(1, timeout=10)
    assert out.to_numpy()[0] == 3
    dev.execute_and_wait(cb, sem, 3, timeout=10)
    assert out.to_numpy()[0] == 4
