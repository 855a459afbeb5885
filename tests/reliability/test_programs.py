"""Property-based command-buffer programs (hypothesis): random fills, copies, updates, dispatches
(one kernel fails), barriers, submissions chained through semaphores from several Python threads
and a host semaphore signalled late, run on every driver and on a numpy model of the HAL; final
buffers, semaphore values and failures must agree, and nothing may hang.

The default run tries a few dozen programs per driver; `-m slow` runs the long profile
(FIBERGRID_FUZZ_EXAMPLES programs per driver, 2,000 by default)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import fibergrid as fg
from tests.reliability.programs import BUFFERS, N, Program, add_const, fail_in, model, mul_add, programs

WAIT = 30.0
CONFIGS = [("local-sync", {}), ("local-task", {"workers": 1}), ("local-task", {"workers": 2}), ("local-task", {"workers": 4})]
if "vulkan" in fg.available_drivers():
    CONFIGS.append(("vulkan", {}))


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda c: c[0] + "".join(f"-{v}w" for v in c[1].values()))
def device(request):
    driver, options = request.param
    dev = fg.create_device(driver, **options)
    yield dev
    dev.close()


def record(device, sub, views):
    cb = device.create_command_buffer()
    for c in sub.commands:
        if c.op == "barrier":
            cb.execution_barrier()
        elif c.op == "fill":
            cb.fill(views[c.dst].buffer, 0, None, np.int32(c.value))
        elif c.op == "copy":
            cb.copy(views[c.src].buffer, 0, views[c.dst].buffer, 0, 4 * N)
        elif c.op == "update":
            cb.update(np.array(c.data, np.int32), views[c.dst].buffer, 4 * c.start)
        elif c.op == "add":
            cb.dispatch(add_const, "add_const", -(-N // 16), [c.value], [views[c.dst]])
        elif c.op == "mul_add":
            cb.dispatch(mul_add, "mul_add", -(-N // 16), [], [views[c.src], views[c.dst]])
        elif c.op == "fail":
            cb.dispatch(fail_in, "fail_in", -(-N // 16), [c.value], [views[c.dst]])
    cb.end()
    return cb


def execute(device, program: Program):
    """Runs the program: each thread submits its submissions in global order; the host gate is
    signalled after a short delay, once every thread submitted."""
    views = [device.allocator.import_array(program.initial[b]) for b in range(BUFFERS)]
    sems = [device.create_semaphore(0) for _ in program.submissions]
    gate = device.create_semaphore(0)
    cbs = [record(device, sub, views) for sub in program.submissions]
    errors: list[BaseException] = []

    def submit_from(thread: int) -> None:
        try:
            for k, sub in enumerate(program.submissions):
                if sub.thread == thread:
                    waits = [(gate if d < 0 else sems[d], v) for d, v in sub.waits]
                    device.queue_execute([cbs[k]], wait=waits, signal=[(sems[k], sub.value)])
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=submit_from, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors, errors[0]
    time.sleep(0.0005)
    gate.signal(1)
    failed = []
    for k, sub in enumerate(program.submissions):
        try:
            sems[k].wait(sub.value, timeout=WAIT)
            failed.append(False)
        except fg.Aborted:
            failed.append(True)
    device.wait_idle(timeout=WAIT)
    return np.stack([v.to_numpy() for v in views]), failed, [s.query() if not f else None for s, f in zip(sems, failed)]


def check(device, program: Program) -> None:
    want, defined, want_failed = model(program)
    got, failed, values = execute(device, program)
    assert failed == want_failed
    for k, sub in enumerate(program.submissions):
        if not failed[k]:
            assert values[k] == sub.value
    np.testing.assert_array_equal(got[defined], want[defined])


EXAMPLES = int(os.environ.get("FIBERGRID_FUZZ_EXAMPLES", "2000"))


# The default run is derandomized (the same programs every run: CI is deterministic); the long
# profile draws new ones each time.
@settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(program=programs())
def test_programs_match_the_model(device, program):
    check(device, program)


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(program=programs(max_submissions=10))
def test_programs_match_the_model_long(device, program):
    check(device, program)
