"""A failing kernel fails its own submission's semaphores and, through them, its dependents';
never an independent submission's; the device keeps working afterwards."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

import fibergrid as fg
from fibergrid.kernel import KERNEL_RAISED
from scheduler import layout as L
from tests.scheduler.kernels import WAIT, blocked_waiter, chain_step, dispatch_ids, fail_at, out_of_bounds, run


@pytest.fixture(scope="module", params=[1, 2], ids=lambda w: f"{w}w")
def dev(request):
    d = fg.create_device("local-task", workers=request.param)
    yield d
    d.close()


def fail_cb(dev, shape, bad):
    out = dev.allocator.import_array(np.zeros(int(np.prod(shape)), np.int32))
    cb = dev.create_command_buffer()
    cb.dispatch(fail_at, "fail_at", shape, [np.uint32(bad)], [out])
    cb.end()
    return cb, out


def assert_healthy(dev):
    """A new submission runs normally and the counters move by exactly its work."""
    before = dev.scheduler.counters()
    cb, ids, hits, _ = dispatch_ids(dev, (300,))
    run(dev, [cb])
    assert (hits.to_numpy() == 1).all()
    after = dev.scheduler.counters()
    assert after["workgroups"] - before["workgroups"] == 300
    assert after["regions"] - before["regions"] == 1
    assert after["submissions"] - before["submissions"] == 1


@pytest.mark.parametrize("shape,bad,where", [((200,), 137, (137, 0, 0)), ((16, 13), 137, (9, 8, 0)), ((3, 4, 5), 59, (2, 3, 4)), ((1,), 0, (0, 0, 0))])
def test_failure_reaches_exactly_the_right_semaphores(dev, shape, bad, where):
    s_a, s_a2 = dev.create_semaphore(0), dev.create_semaphore(3)
    s_b, s_c, s_d, s_e, s_host = (dev.create_semaphore(0) for _ in range(5))
    # B depends on A and is parked before A runs; C depends on B and is submitted later.
    cb_b, _, hits_b, _ = dispatch_ids(dev, (50,))
    dev.queue_execute([cb_b], wait=[(s_a, 1)], signal=[(s_b, 1)])
    # E waits on an unrelated host semaphore.
    cb_e, _, hits_e, _ = dispatch_ids(dev, (20,))
    dev.queue_execute([cb_e], wait=[(s_host, 1)], signal=[(s_e, 1)])
    cb_a, out_a = fail_cb(dev, shape, bad)
    dev.queue_execute([cb_a], signal=[(s_a, 1), (s_a2, 5)])
    # D is independent and in flight at the same time.
    cb_d, _, hits_d, _ = dispatch_ids(dev, (400,))
    dev.queue_execute([cb_d], signal=[(s_d, 1)])

    with pytest.raises(fg.Aborted, match=r"kernel 'fail_at' returned status 7 at workgroup " + re.escape(str(where))):
        s_a.wait(1, timeout=WAIT)
    with pytest.raises(fg.Aborted):
        s_a2.wait(5, timeout=WAIT)
    with pytest.raises(fg.Aborted):
        s_a.query()
    failure = dev.scheduler.semaphore_failure(s_a.index)
    assert failure.status == 7 and failure.workgroup == where and failure.command == 0 and failure.program == cb_a.id
    assert dev.scheduler.semaphore_failure(s_a2.index) == failure

    with pytest.raises(fg.Aborted, match="fail_at"):  # the dependent names the root cause
        s_b.wait(1, timeout=WAIT)
    assert (hits_b.to_numpy() == 0).all(), "a submission ran after the one it waited on failed"
    cb_c, _, hits_c, _ = dispatch_ids(dev, (10,))
    dev.queue_execute([cb_c], wait=[(s_b, 1)], signal=[(s_c, 1)])
    with pytest.raises(fg.Aborted, match="fail_at"):
        s_c.wait(1, timeout=WAIT)
    assert (hits_c.to_numpy() == 0).all()

    s_d.wait(1, timeout=WAIT)  # independent: unaffected
    assert (hits_d.to_numpy() == 1).all()
    assert dev.scheduler.semaphore_failure(s_d.index) is None
    assert s_e.query() == 0 and dev.scheduler.semaphore_failure(s_e.index) is None
    s_host.signal(1)
    s_e.wait(1, timeout=WAIT)
    assert (hits_e.to_numpy() == 1).all()
    assert_healthy(dev)
    dev.wait_idle(timeout=WAIT)
    assert dev.scheduler.in_flight() == 0


def test_failure_stops_later_regions(dev):
    """Region 1 ran, region 2 failed, region 3 never runs."""
    width = 8
    data = dev.allocator.import_array(np.zeros(4 * width, np.int64))
    tickets = dev.allocator.import_array(np.zeros(4, np.int64))
    out = dev.allocator.import_array(np.zeros(10, np.int32))
    cb = dev.create_command_buffer()
    cb.dispatch(chain_step, "chain_step", (2,), [np.uint32(1), np.uint32(width)], [data, tickets])
    cb.execution_barrier()
    cb.dispatch(fail_at, "fail_at", (10,), [np.uint32(4)], [out])
    cb.execution_barrier()
    cb.dispatch(chain_step, "chain_step", (2,), [np.uint32(2), np.uint32(width)], [data, tickets])
    cb.end()
    s = dev.create_semaphore(0)
    dev.queue_execute([cb], signal=[(s, 1)])
    with pytest.raises(fg.Aborted, match=r"command 1 of command buffer"):
        s.wait(1, timeout=WAIT)
    rows = data.to_numpy().reshape(4, width)
    assert (rows[1] == 1).all() and (rows[2] == 0).all()
    assert tickets.to_numpy()[2] == 0
    assert dev.scheduler.semaphore_failure(s.index).command == 1
    assert_healthy(dev)


def test_raising_kernel_fails_its_submission(dev):
    out = dev.allocator.import_array(np.zeros(4, np.int32))
    cb = dev.create_command_buffer()
    cb.dispatch(out_of_bounds, "out_of_bounds", (6,), [], [out])
    cb.end()
    s = dev.create_semaphore(0)
    dev.queue_execute([cb], signal=[(s, 1)])
    with pytest.raises(fg.Aborted, match="out_of_bounds"):
        s.wait(1, timeout=WAIT)
    assert dev.scheduler.semaphore_failure(s.index).status == KERNEL_RAISED
    assert (out.to_numpy() == 0).all()
    assert_healthy(dev)


def test_host_failure_propagates_to_dependents(dev):
    gate, s_b, s_c, s_other = (dev.create_semaphore(0) for _ in range(4))
    cb_b, _, hits_b, _ = dispatch_ids(dev, (30,))
    cb_c, _, hits_c, _ = dispatch_ids(dev, (30,))
    cb_o, _, hits_o, _ = dispatch_ids(dev, (30,))
    dev.queue_execute([cb_b], wait=[(gate, 1)], signal=[(s_b, 1)])
    dev.queue_execute([cb_c], wait=[(s_b, 1)], signal=[(s_c, 1)])
    dev.queue_execute([cb_o], signal=[(s_other, 1)])
    gate.fail("boom")
    for s in (gate, s_b, s_c):
        with pytest.raises(fg.Aborted, match="failed from the host: boom"):
            s.wait(1, timeout=WAIT)
    assert dev.scheduler.semaphore_failure(s_c.index).status == L.STATUS_HOST_FAILED
    assert (hits_b.to_numpy() == 0).all() and (hits_c.to_numpy() == 0).all()
    s_other.wait(1, timeout=WAIT)
    assert (hits_o.to_numpy() == 1).all()
    assert_healthy(dev)


def test_blocked_waiter_is_woken_by_a_failure(dev):
    """A thread asleep in wait() gets Aborted when the submission it waits for fails."""
    gate, s = dev.create_semaphore(0), dev.create_semaphore(0)
    cb, _ = fail_cb(dev, (40,), 39)
    dev.queue_execute([cb], wait=[(gate, 1)], signal=[(s, 1)])
    t, got = blocked_waiter(s, 1)
    time.sleep(0.05)
    assert not got
    gate.signal(1)
    t.join(timeout=WAIT)
    assert not t.is_alive()
    assert len(got) == 1 and isinstance(got[0], fg.Aborted), got
    assert_healthy(dev)

