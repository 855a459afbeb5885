"""Idle workers steal shards under uneven work, and the steals are counted."""

from __future__ import annotations

import time

import numpy as np

import fibergrid as fg
from tests.scheduler.kernels import WAIT, spin


def test_uneven_work_is_stolen_and_counted():
    n = 512
    with fg.create_device("local-task", workers=2) as dev:
        out = dev.allocator.import_array(np.zeros(n, np.int64))
        who = dev.allocator.import_array(np.full(n, -1, np.int32))
        cb = dev.create_command_buffer("reusable")
        cb.dispatch(spin, "spin", (n,), [np.uint32(7), np.uint32(20000)], [out, who])
        cb.end()
        s = dev.create_semaphore(0)
        # Whether a steal happens is timing (a busy machine may leave the second worker asleep
        # for whole submissions): the model promises each workgroup runs exactly once and that
        # what happened is counted consistently, not that a steal happens. (bench.scheduling
        # measures the speed-up that stealing buys.)
        rounds_run = 5
        for attempt in range(1, rounds_run + 1):
            dev.queue_execute([cb], signal=[(s, attempt)])
            s.wait(attempt, timeout=WAIT)
        deadline = time.monotonic() + WAIT  # statistics are added after the semaphore moves
        while dev.scheduler.counters()["workgroups"] < rounds_run * n and time.monotonic() < deadline:
            time.sleep(0.001)
        totals = dev.scheduler.counters()
        per_worker = dev.scheduler.per_worker_counters()
        assert totals["workgroups"] == sum(c["workgroups"] for c in per_worker) == rounds_run * n
        assert totals["steals"] == sum(c["steals"] for c in per_worker) >= 0, (totals, per_worker)
        assert set(np.unique(who.to_numpy()).tolist()) <= set(range(dev.participants))
        # The results do not depend on who ran what.
        x = np.arange(1, n + 1, dtype=np.int64)
        rounds = np.where(np.arange(n) % 7 == 0, 20000, 4)
        want = x.copy()
        for i in range(n):
            v = int(x[i])
            for _ in range(int(rounds[i])):
                v = (v * 1103515245 + 12345) & 0x7FFFFFFF
            want[i] = v
        assert (out.to_numpy() == want).all()


def test_counters_are_per_worker_and_sum_up():
    with fg.create_device("local-task", workers=3) as dev:
        assert len(dev.scheduler.per_worker_counters()) == 4  # 3 workers, then the host participant
        n = 300
        out = dev.allocator.import_array(np.zeros(n, np.int64))
        who = dev.allocator.import_array(np.full(n, -1, np.int32))
        cb = dev.create_command_buffer()
        cb.dispatch(spin, "spin", (n,), [np.uint32(3), np.uint32(2000)], [out, who])
        cb.end()
        s = dev.create_semaphore(0)
        dev.queue_execute([cb], signal=[(s, 1)])
        s.wait(1, timeout=WAIT)
        per_worker = dev.scheduler.per_worker_counters()
        totals = dev.scheduler.counters()
        for name in ("workgroups", "regions", "submissions"):  # idle workers keep spinning/parking
            assert totals[name] == sum(c[name] for c in per_worker), name
        counts = np.bincount(who.to_numpy(), minlength=4)
        assert counts.sum() == n
        # A worker's workgroups counter is exactly what the kernel saw it run.
        assert [c["workgroups"] for c in per_worker] == counts.tolist()
