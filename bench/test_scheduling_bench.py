"""The scheduling cases of bench/scheduling.py under pytest-benchmark (outside the default test
run: `python -m pytest bench --benchmark-only -p no:cacheprovider`)."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from bench.scheduling import COMPUTE_ITERATIONS, SPEEDUP_WORKGROUPS, WORKGROUPS, _reusable, _run, compute, counter, empty, record_chain


@pytest.fixture(scope="module")
def device():
    with fg.create_device("local-task", workers=2) as d:
        yield d


def test_empty_dispatch_1m_workgroups(benchmark, device):
    cb = _reusable(device, lambda cb: cb.dispatch(empty, "empty", WORKGROUPS))
    benchmark(_run, device, cb)


def test_dependent_dispatch_chain(benchmark, device):
    x = device.allocator.allocate_view((1,), np.float32)
    cb = _reusable(device, lambda cb: record_chain(cb, x))
    benchmark(_run, device, cb)


def test_submit_to_signal(benchmark, device):
    x = device.allocator.allocate_view((1,), np.float32)
    cb = _reusable(device, lambda cb: cb.dispatch(counter, "counter", 1, [], [x]))
    benchmark(_run, device, cb)


@pytest.mark.parametrize("workers", [1, 2])
def test_compute_bound(benchmark, workers):
    with fg.create_device("local-task", workers=workers) as device:
        y = device.allocator.allocate_view((SPEEDUP_WORKGROUPS,), np.float32)
        cb = _reusable(device, lambda cb: cb.dispatch(compute, "compute", SPEEDUP_WORKGROUPS, [COMPUTE_ITERATIONS], [y]))
        benchmark(_run, device, cb)
