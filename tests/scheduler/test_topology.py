"""Worker count and placement: one worker per physical core within the process's affinity."""

from __future__ import annotations

import os

import numpy as np
import psutil
import pytest

import fibergrid as fg
from scheduler import Scheduler, detect
from tests.scheduler.kernels import dispatch_ids, run


def test_detect_matches_affinity_and_physical_cores():
    topo = detect()
    affinity = tuple(sorted(os.sched_getaffinity(0)))
    assert topo.cpus == affinity
    physical = psutil.cpu_count(logical=False) or len(affinity)
    assert topo.physical_cores == min(physical, len(affinity))
    assert topo.default_workers == max(1, min(len(affinity), physical))
    assert 1 <= topo.default_workers <= len(affinity)


def test_default_worker_count_is_one_per_core():
    with fg.create_device("local-task") as dev:
        assert dev.scheduler.workers == detect().default_workers
        assert len(dev.scheduler.threads) == detect().default_workers
        assert dev.workers == detect().default_workers
        cb, ids, hits, _ = dispatch_ids(dev, (100,))
        run(dev, [cb])
        assert (hits.to_numpy() == 1).all()


def test_default_driver_follows_topology():
    assert fg.default_driver() == ("local-task" if detect().default_workers > 1 else "local-sync")


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_pinned_workers_run_and_are_pinned(workers):
    topo = detect()
    with fg.create_device("local-task", workers=workers, pin=True) as dev:
        cb, ids, hits, who = dispatch_ids(dev, (257,))
        run(dev, [cb])
        assert (hits.to_numpy() == 1).all()
        assert (ids.to_numpy() == np.arange(257)).all()
        assert set(who.to_numpy().tolist()) <= set(range(dev.participants))
        # Each worker thread is pinned to one CPU of the affinity, round-robin.
        for w, t in enumerate(dev.scheduler.threads):
            assert os.sched_getaffinity(t.native_id) == {topo.cpus[w % len(topo.cpus)]}
    # Pinning a worker must not narrow the caller's own affinity.
    assert tuple(sorted(os.sched_getaffinity(0))) == topo.cpus


def test_worker_count_is_validated():
    for bad in (-1, 1025, 2.5, "2"):
        with pytest.raises(fg.InvalidArgument):
            Scheduler(bad)
