"""local-sync: the same native executor, run inline on the submitting thread; no worker threads."""

from __future__ import annotations


import numpy as np
import pytest

import fibergrid as fg
from tests.scheduler.kernels import WAIT, chain_step, dispatch_ids, fail_at, fibergrid_threads, run


@pytest.fixture
def dev():
    d = fg.create_device("local-sync")
    yield d
    d.close()


def test_no_threads_and_worker_id_zero(dev):
    baseline = fibergrid_threads()
    assert dev.scheduler.threads == [] and dev.scheduler.inline
    assert dev.workers == 0 and dev.participants == 1
    for shape in [(1,), (100,), (7, 11), (3, 4, 5)]:
        cb, ids, hits, who = dispatch_ids(dev, shape)
        s = dev.create_semaphore(0)
        dev.queue_execute([cb], signal=[(s, 1)])
        assert s.query() == 1, "local-sync runs ready work before queue_execute returns"
        n = int(np.prod(shape))
        assert (ids.to_numpy() == np.arange(n)).all()
        assert (hits.to_numpy() == 1).all()
        assert (who.to_numpy() == 0).all()
    assert fibergrid_threads() == baseline
    c = dev.scheduler.counters()
    assert c["workgroups"] == 1 + 100 + 77 + 60 and c["steals"] == 0 and c["parks"] == 0


def test_regions_and_transfers(dev):
    steps, width = 20, 16
    data = np.zeros((steps + 1) * width, np.int64)
    data[:width] = 5
    data = dev.allocator.import_array(data)
    tickets = dev.allocator.import_array(np.zeros(steps + 1, np.int64))
    buf = dev.allocate_buffer(3 * 65536 + 12)
    cb = dev.create_command_buffer()
    for k in range(1, steps + 1):
        cb.dispatch(chain_step, "chain_step", (3,), [np.uint32(k), np.uint32(width)], [data, tickets])
        cb.execution_barrier()
    cb.fill(buf, 4, None, 0xABCD1234, 4)
    cb.end()
    run(dev, [cb])
    assert (data.to_numpy().reshape(steps + 1, width)[-1] == 5 + steps).all()
    got = buf.view(np.uint32, offset=4)
    assert (got == 0xABCD1234).all()


def test_host_signal_releases_parked_work(dev):
    gate, s = dev.create_semaphore(0), dev.create_semaphore(0)
    cb, _, hits, _ = dispatch_ids(dev, (10,))
    dev.queue_execute([cb], wait=[(gate, 1)], signal=[(s, 1)])
    assert s.query() == 0 and (hits.to_numpy() == 0).all()
    gate.signal(1)  # runs the released submission inline
    s.wait(1, timeout=WAIT)
    assert (hits.to_numpy() == 1).all()


def test_chain_released_by_device_signals(dev):
    """Submitted last-first, then started by the first step: each step's completion (inside the
    inline executor) releases the next one, which must run too."""
    steps, width = 4, 8
    data = np.zeros((steps + 1) * width, np.int64)
    data[:width] = 5
    data = dev.allocator.import_array(data)
    tickets = dev.allocator.import_array(np.zeros(steps + 1, np.int64))
    s = dev.create_semaphore(0)
    cbs = []
    for k in range(1, steps + 1):
        cb = dev.create_command_buffer()
        cb.dispatch(chain_step, "chain_step", (16,), [np.uint32(k), np.uint32(width)], [data, tickets])
        cb.end()
        cbs.append(cb)
    for k in range(steps, 1, -1):
        dev.queue_execute([cbs[k - 1]], wait=[(s, k - 1)], signal=[(s, k)])
    dev.queue_execute([cbs[0]], signal=[(s, 1)])
    s.wait(steps, timeout=WAIT)
    assert (data.to_numpy().reshape(steps + 1, width)[-1] == 5 + steps).all()


def test_failure(dev):
    out = dev.allocator.import_array(np.zeros(8, np.int32))
    cb = dev.create_command_buffer()
    cb.dispatch(fail_at, "fail_at", (8,), [np.uint32(3)], [out])
    cb.end()
    s, s2 = dev.create_semaphore(0), dev.create_semaphore(0)
    dev.queue_execute([cb], signal=[(s, 1)])
    with pytest.raises(fg.Aborted, match="fail_at"):
        s.wait(1, timeout=WAIT)
    cb2, _, hits, _ = dispatch_ids(dev, (4,))
    dev.queue_execute([cb2], wait=[(s, 1)], signal=[(s2, 1)])
    with pytest.raises(fg.Aborted):
        s2.wait(1, timeout=WAIT)
    assert (hits.to_numpy() == 0).all()
    cb3, _, hits3, _ = dispatch_ids(dev, (4,))
    run(dev, [cb3])
    assert (hits3.to_numpy() == 1).all()


def test_tracing_records_worker_zero(dev):
    dev.scheduler.enable_tracing(capacity=256)
    cb, *_ = dispatch_ids(dev, (50,))
    run(dev, [cb])
    ev = dev.scheduler.trace_events()
    assert len(ev) > 0 and (ev["worker"] == 0).all()
    assert ev["end"].sum() - ev["first"].sum() == 50
