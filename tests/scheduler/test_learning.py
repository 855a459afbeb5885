"""A reusable program times its first runs (LEARN_SAMPLES) to learn each region's work, which the
wake policy weighs against a wake's cost; the estimate is the least of those runs, so one run
slowed by something else does not make every later call of a small region pay for wakes."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from scheduler import layout as L
from tests.scheduler.kernels import run

WORKGROUPS = 8
FAST, SLOW = 2_000, 200_000  # rounds per workgroup: the slow run is 100x the work


@fg.kernel(workgroup_size=1, bindings=(np.int64, np.int64))
def rounds(wg, count, out):
    """count[0] rounds of an LCG: the work of a run is set through a buffer, not a recording."""
    x = wg.id[0] + 1
    for _ in range(count[0]):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    out[wg.id[0]] = x


@pytest.mark.parametrize("order", [(FAST, FAST, SLOW), (SLOW, FAST, FAST)], ids=["slow-last", "slow-first"])
def test_learned_work_is_the_least_timed_run(order):
    with fg.create_device("local-task", workers=2) as dev:
        count = dev.allocator.import_array(np.zeros(1, np.int64))
        out = dev.allocator.import_array(np.zeros(WORKGROUPS, np.int64))
        cb = dev.create_command_buffer("reusable")
        cb.dispatch(rounds, "rounds", (WORKGROUPS,), [], [count, out])
        cb.end()
        region = cb.lowered.program.regions[0]
        samples = []
        for rounds_per_workgroup in order:
            count.buffer.write(np.array([rounds_per_workgroup], np.int64))
            run(dev, [cb])
            samples.append(int(region[L.R_WORK_NS]))
        assert int(region[L.R_SAMPLES]) == L.LEARN_SAMPLES == len(order)
        assert samples == sorted(samples, reverse=True)  # the estimate never grows
        if order[0] == SLOW:  # the first sample is the slow run's own time; a fast one replaced it
            assert samples[-1] * 10 < samples[0]
        else:  # the slow run came last and left the estimate where the fast ones put it
            assert samples[-1] == samples[1] > 0
