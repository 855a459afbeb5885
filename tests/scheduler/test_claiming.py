"""Every workgroup of a dispatch runs exactly once, whatever the grid's shape, the reservation
size and the number of workers (more workers than cores included)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import fibergrid as fg
from tests.scheduler.kernels import WAIT, dispatch_ids, record_ids, run

SHAPES = [
    (1,), (2,), (7,), (63,), (64,), (65,), (513,), (1000,), (4099,),
    (3, 5), (17, 33), (1, 129), (2, 3, 4), (5, 7, 9), (1, 1, 300), (129, 1, 3), (31, 17, 5),
]


@pytest.fixture(scope="module", params=[1, 2, 3, 4], ids=lambda w: f"{w}w")
def dev(request):
    d = fg.create_device("local-task", workers=request.param)
    yield d
    d.close()


def check_exactly_once(shape, ids, hits, who, workers):
    n = int(np.prod(shape))
    assert (hits.to_numpy() == 1).all(), f"{shape}: workgroups run {np.bincount(hits.to_numpy())} times"
    assert (ids.to_numpy() == np.arange(n)).all()
    w = who.to_numpy()
    assert ((w >= 0) & (w < workers)).all()



def settled_counters(dev, workgroups: int) -> dict[str, int]:
    """The scheduler's statistics once they count `workgroups`: a participant adds its counts
    after the submission's semaphore moved, so they are promised eventually, not when the waiter
    wakes (waits at most WAIT, then returns what is there for the assertion to report)."""
    deadline = time.monotonic() + WAIT
    while dev.scheduler.counters()["workgroups"] < workgroups and time.monotonic() < deadline:
        time.sleep(0.001)
    return dev.scheduler.counters()

@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_workgroup_runs_exactly_once(dev, shape):
    before = dev.scheduler.counters()
    cb, ids, hits, who = dispatch_ids(dev, shape)
    run(dev, [cb])
    check_exactly_once(shape, ids, hits, who, dev.participants)
    after = settled_counters(dev, before["workgroups"] + int(np.prod(shape)))
    assert after["workgroups"] - before["workgroups"] == int(np.prod(shape))
    assert after["regions"] - before["regions"] == 1
    assert after["submissions"] - before["submissions"] == 1


def test_one_region_of_many_dispatches(dev):
    """Tiles of one region span several commands: claims cross dispatch boundaries."""
    shapes = [(5,), (64, 3), (1,), (7, 7, 7), (130,), (2, 65)]
    outs = []
    cb = dev.create_command_buffer()
    for shape in shapes:
        n = int(np.prod(shape))
        views = [dev.allocator.import_array(np.full(n, -1, np.int32)), dev.allocator.import_array(np.zeros(n, np.int32)), dev.allocator.import_array(np.full(n, -1, np.int32))]
        cb.dispatch(record_ids, "record_ids", shape, [], views)
        outs.append((shape, views))
    cb.end()
    before = dev.scheduler.counters()
    run(dev, [cb])
    for shape, (ids, hits, who) in outs:
        check_exactly_once(shape, ids, hits, who, dev.participants)
    after = settled_counters(dev, before["workgroups"] + sum(int(np.prod(s)) for s, _ in outs))
    assert after["workgroups"] - before["workgroups"] == sum(int(np.prod(s)) for s, _ in outs)
    assert after["regions"] - before["regions"] == 1


def test_reusable_command_buffer_replays(dev):
    """A reusable command buffer submitted many times (one after another) runs every workgroup
    once per submission."""
    n = 333
    ids = dev.allocator.import_array(np.full(n, -1, np.int32))
    hits = dev.allocator.import_array(np.zeros(n, np.int32))
    who = dev.allocator.import_array(np.full(n, -1, np.int32))
    cb = dev.create_command_buffer("reusable")
    cb.dispatch(record_ids, "record_ids", (n,), [], [ids, hits, who])
    cb.end()
    before = dev.scheduler.counters()["workgroups"]
    s = dev.create_semaphore(0)
    reps = 40
    for i in range(reps):
        dev.queue_execute([cb], signal=[(s, i + 1)])
        s.wait(i + 1, timeout=WAIT)
    assert (hits.to_numpy() == reps).all()
    assert dev.scheduler.counters()["workgroups"] - before == reps * n


def test_many_independent_submissions_at_once(dev):
    """Independent submissions in flight together (sharing the workers) each run exactly once:
    half signal nothing (wait_idle covers them), half signal their own semaphore."""
    shapes = [(1,), (40,), (3, 9), (257,), (2, 2, 2), (1000,)] * 4
    quiet = [dispatch_ids(dev, shape) for shape in shapes]
    loud = [dispatch_ids(dev, shape) for shape in shapes]
    before = dev.scheduler.counters()
    sems = []
    for (cb_q, *_), (cb_l, *_) in zip(quiet, loud):
        dev.queue_execute([cb_q])
        sem = dev.create_semaphore(0)
        dev.queue_execute([cb_l], signal=[(sem, 1)])
        sems.append(sem)
    for sem in sems:
        sem.wait(1, timeout=WAIT)
    dev.wait_idle(timeout=WAIT)
    for shape, (_, ids, hits, who) in zip(shapes + shapes, quiet + loud):
        check_exactly_once(shape, ids, hits, who, dev.participants)
    after = settled_counters(dev, before["workgroups"] + 2 * sum(int(np.prod(s)) for s in shapes))
    assert after["workgroups"] - before["workgroups"] == 2 * sum(int(np.prod(s)) for s in shapes)
    assert after["submissions"] - before["submissions"] == 2 * len(shapes)
