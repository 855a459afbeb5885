"""Per-worker trace rings: every workgroup of traced work appears in exactly one event."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

import fibergrid as fg
from tests.scheduler.kernels import WAIT, dispatch_ids, record_ids, spin


def traced_program(dev):
    """One submission of three regions: two dispatches side by side, a fill, a 3-D dispatch."""
    grids = [(1000,), (7, 9), None, (3, 4, 5)]
    cb = dev.create_command_buffer()
    keep = []
    for i, grid in enumerate(grids):
        if grid is None:
            buf = dev.allocate_buffer(5 * 65536 + 8)
            cb.fill(buf, 0, None, 0x01020304, 4)
            keep.append(buf)
        else:
            n = int(np.prod(grid))
            views = [dev.allocator.import_array(np.zeros(n, np.int32)) for _ in range(3)]
            cb.dispatch(record_ids, "record_ids", grid, [], views)
            keep.append(views)
        if i in (1, 2):
            cb.execution_barrier()
    cb.end()
    expected = {c: (int(np.prod(g)) if g is not None else 6) for c, g in enumerate(grids)}
    return cb, expected, keep


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_events_cover_every_workgroup_exactly_once(workers):
    with fg.create_device("local-task", workers=workers) as dev:
        dev.scheduler.enable_tracing()
        s = dev.create_semaphore(0)
        expected = {}
        keep = []
        subs = 4
        for i in range(subs):
            cb, exp, k = traced_program(dev)
            keep.append((cb, k))
            dev.queue_execute([cb], signal=[(s, i + 1)] if i == subs - 1 else [])
            expected.update({(i, c): n for c, n in exp.items()})
        s.wait(subs, timeout=WAIT)
        dev.wait_idle(timeout=WAIT)
        ev = dev.scheduler.trace_events()
        assert len(ev) == dev.scheduler.counters()["trace_events"]
        assert ((ev["worker"] >= 0) & (ev["worker"] < dev.participants)).all()
        assert (ev["start_ns"] <= ev["end_ns"]).all()
        assert (ev["first"] < ev["end"]).all()
        serials = sorted(set(ev["serial"].tolist()))
        assert len(serials) == subs  # one serial per submission, all traced
        cover = defaultdict(lambda: None)
        for e in ev:
            key = (serials.index(int(e["serial"])), int(e["command"]))
            assert key in expected, key
            if cover[key] is None:
                cover[key] = np.zeros(expected[key], np.int32)
            cover[key][e["first"] : e["end"]] += 1
        assert set(cover) == set(expected)
        for key, c in cover.items():
            assert (c == 1).all(), f"submission/command {key}: tiles covered {np.bincount(c)} times"
        # Events of one worker are in time order.
        for w in range(dev.participants):
            mine = ev[ev["worker"] == w]
            assert (np.diff(mine["start_ns"]) >= 0).all()


def test_tracing_off_by_default_records_nothing():
    with fg.create_device("local-task", workers=2) as dev:
        cb, _, hits, _ = dispatch_ids(dev, (500,))
        s = dev.create_semaphore(0)
        dev.queue_execute([cb], signal=[(s, 1)])
        s.wait(1, timeout=WAIT)
        assert len(dev.scheduler.trace_events()) == 0
        assert dev.scheduler.counters()["trace_events"] == 0


def test_disable_tracing_stops_recording():
    with fg.create_device("local-task", workers=2) as dev:
        dev.scheduler.enable_tracing(capacity=1024)
        cb, *_ = dispatch_ids(dev, (100,))
        s = dev.create_semaphore(0)
        dev.queue_execute([cb], signal=[(s, 1)])
        s.wait(1, timeout=WAIT)
        n = len(dev.scheduler.trace_events())
        assert n > 0
        dev.scheduler.disable_tracing()
        cb, *_ = dispatch_ids(dev, (100,))
        dev.queue_execute([cb], signal=[(s, 2)])
        s.wait(2, timeout=WAIT)
        assert len(dev.scheduler.trace_events()) == n


def test_ring_keeps_the_newest_events_when_full():
    """A small ring overwrites its oldest events; what it returns is the newest, in order."""
    with fg.create_device("local-task", workers=1) as dev:
        dev.scheduler.enable_tracing(capacity=8)
        s = dev.create_semaphore(0)
        for i in range(20):
            cb, *_ = dispatch_ids(dev, (1,))
            dev.queue_execute([cb], signal=[(s, i + 1)])
            s.wait(i + 1, timeout=WAIT)
        ev = dev.scheduler.trace_events()
        assert dev.scheduler.counters()["trace_events"] == 20
        # The worker and the helping host each have a ring; each keeps its newest 8, in order.
        counts = [c["trace_events"] for c in dev.scheduler.per_worker_counters()]
        for w, count in enumerate(counts):
            mine = ev[ev["worker"] == w]
            assert len(mine) == min(8, count)
            assert (np.diff(mine["serial"]) > 0).all()
        assert ev["serial"].max() == 20


def test_trace_of_long_workgroups():
    """A dispatch of long workgroups on one worker: its events cover it and take time."""
    with fg.create_device("local-task", workers=1) as dev:
        n = 64
        out = dev.allocator.import_array(np.zeros(n, np.int64))
        who = dev.allocator.import_array(np.zeros(n, np.int32))
        dev.scheduler.enable_tracing()
        cb = dev.create_command_buffer()
        cb.dispatch(spin, "spin", (n,), [np.uint32(1), np.uint32(200_000)], [out, who])
        cb.end()
        s = dev.create_semaphore(0)
        dev.queue_execute([cb], signal=[(s, 1)])
        s.wait(1, timeout=WAIT)
        ev = dev.scheduler.trace_events()
        assert ev["end"].sum() - ev["first"].sum() == n
        assert (ev["end_ns"] - ev["start_ns"]).sum() > 0
