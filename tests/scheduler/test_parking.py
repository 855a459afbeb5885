"""Idle workers spin briefly, then park on a futex: an idle device burns ~no CPU, and parks are
counted."""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest

import fibergrid as fg
from scheduler import layout as L
from scheduler.executor import wake_workers
from scheduler.worker import keep_spinning
from tests.scheduler.kernels import WAIT, dispatch_ids, fail_at, run, spin

IDLE_S = 0.5
MAX_CORE_FRACTION = 0.2  # generous: a parked worker uses none; a spinning one uses a whole core


def idle_cpu_fraction(dev, seconds: float = IDLE_S, extra: tuple[threading.Thread, ...] = ()) -> float:
    """CPU time of the device's worker threads (and `extra` threads) over `seconds`, per wall
    second. Only those threads: the rest of the process (another test's thread pools, the
    garbage collector) may run meanwhile, and a parked thread uses none whatever the load."""
    ids = {t.native_id for t in (*dev.scheduler.threads, *extra)}

    def cpu() -> float:
        return sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id in ids)

    c0, w0 = cpu(), time.monotonic()
    time.sleep(seconds)
    return (cpu() - c0) / (time.monotonic() - w0)


def sleepers(dev) -> int:
    return int(dev.scheduler.arena[L.H_SLEEPERS])


def _parked_state(dev) -> tuple[int, int, int]:
    arena = dev.scheduler.arena
    return int(arena[L.H_SLEEPERS]), int(arena[L.H_WAKING]), int(arena[L.H_WAKE])


def wait_all_parked(dev, timeout: float = 5.0) -> None:
    """Workers register in H_SLEEPERS when they park, shortly after the spin window (20 us).

    A worker woken by the last round's publish stays counted in H_SLEEPERS until the OS runs it
    (H_WAKING counts it meanwhile), then spins and parks again: 'all parked' is all registered,
    none woken, and no publish between two reads 10 ms apart."""
    deadline = time.monotonic() + timeout
    state = _parked_state(dev)
    while time.monotonic() < deadline:
        time.sleep(0.01)
        previous, state = state, _parked_state(dev)
        if state == previous and state[0] == dev.workers and state[1] <= 0:
            return
    registered, waking, _ = state
    raise AssertionError(f"{registered} of {dev.workers} workers parked and {waking} woken after {timeout} s")


def do_work(dev, n=2000):
    cb, _, hits, _ = dispatch_ids(dev, (n,))
    run(dev, [cb])
    assert (hits.to_numpy() == 1).all()


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_idle_device_parks_and_uses_no_cpu(workers):
    with fg.create_device("local-task", workers=workers) as dev:
        do_work(dev)
        wait_all_parked(dev)
        fraction = idle_cpu_fraction(dev)
        assert fraction < MAX_CORE_FRACTION, f"idle device used {fraction:.0%} of a core: workers do not park"
        # A submission nobody waits for yet wakes a parked worker (the wake policy wakes at
        # least one when no participant is present); it completes, and the workers park again.
        parks = dev.scheduler.counters()["parks"]
        do_work(dev)
        wait_all_parked(dev)
        deadline = time.monotonic() + 5
        while dev.scheduler.counters()["parks"] <= parks and time.monotonic() < deadline:
            time.sleep(0.005)
        assert dev.scheduler.counters()["parks"] > parks
        assert dev.scheduler.counters()["spins"] > 0


def test_idle_device_from_the_start_uses_no_cpu():
    with fg.create_device("local-task", workers=2) as dev:
        wait_all_parked(dev)
        fraction = idle_cpu_fraction(dev)
        assert fraction < MAX_CORE_FRACTION, f"fresh idle device used {fraction:.0%} of a core"


def test_parks_counter_grows_when_workers_park_after_work():
    """After work, once the workers have parked again, every worker that took part has a
    larger parks count (a worker asleep in the futex has parked)."""
    with fg.create_device("local-task", workers=2) as dev:
        for _ in range(3):
            wait_all_parked(dev)
            before = dev.scheduler.per_worker_counters()
            do_work(dev)
            wait_all_parked(dev)
            parked = dev.scheduler.per_worker_counters()
            for w in range(dev.workers):
                # A worker that ran part of the work was woken, so it parked again since `before`
                # (possibly before the host's wait returned: snapshot before the work, not after).
                if parked[w]["workgroups"] > before[w]["workgroups"]:
                    assert parked[w]["parks"] > before[w]["parks"], (
                        f"worker {w} is parked (H_SLEEPERS={sleepers(dev)}) but its parks counter did not grow: {before} -> {parked}"
                    )


def test_parked_workers_wake_for_new_work_rounds():
    """Rounds of work separated by full parking: no wake-up is lost, every round completes."""
    with fg.create_device("local-task", workers=2) as dev:
        for n in (1, 2, 64, 500, 3):
            do_work(dev, n)
            wait_all_parked(dev)
        assert idle_cpu_fraction(dev, 0.3) < MAX_CORE_FRACTION


def test_publish_with_nothing_to_wake_leaves_parked_workers_parked():
    """A publish whose work spinners already cover asks for 0 wakes: FUTEX_WAKE with a count of
    0 still wakes one sleeper, so the scheduler must not make the call (a synchronous call on a
    2-worker device woke the idle worker every time, to find no token and park again)."""
    with fg.create_device("local-task", workers=2) as dev:
        wait_all_parked(dev)
        a, wakes = dev.scheduler.a, dev.scheduler.counters()["wakes"]
        for _ in range(100):
            wake_workers(a, 0)
        time.sleep(0.05)
        assert int(dev.scheduler.arena[L.H_WAKING]) <= 0 and sleepers(dev) == dev.workers
        assert dev.scheduler.counters()["wakes"] == wakes
        wake_workers(a, 1)  # a count of 1 still wakes one
        deadline = time.monotonic() + WAIT
        while dev.scheduler.counters()["wakes"] == wakes and time.monotonic() < deadline:
            time.sleep(0.001)
        assert dev.scheduler.counters()["wakes"] == wakes + 1


def test_host_waiter_sleeps_instead_of_spinning():
    """A host thread blocked in wait() on a semaphore nobody signals for a while sleeps too."""
    with fg.create_device("local-task", workers=2) as dev:
        s = dev.create_semaphore(0)
        t = threading.Thread(target=lambda: s.wait(1, timeout=WAIT))
        t.start()
        wait_all_parked(dev)
        fraction = idle_cpu_fraction(dev, extra=(t,))
        s.signal(1)
        t.join(timeout=WAIT)
        assert not t.is_alive()
        assert fraction < MAX_CORE_FRACTION, f"a blocked waiter used {fraction:.0%} of a core"


def test_running_count_follows_submissions():
    """H_RUNNING (what stretches an idle participant's spin to H_BUSY_SPIN_NS) counts a
    submission from its release to its completion, whether it ran, failed in a kernel or was
    failed through a semaphore it waited on, and is back at 0 once nothing runs: an idle
    device spins only H_SPIN_NS before parking."""
    with fg.create_device("local-task", workers=2) as dev:
        running = lambda: int(dev.scheduler.arena[L.H_RUNNING])  # noqa: E731
        assert running() == 0
        out = dev.allocator.import_array(np.zeros(4, np.int64))
        who = dev.allocator.import_array(np.zeros(4, np.int32))
        long_cb = dev.create_command_buffer()
        long_cb.dispatch(spin, "spin", (1,), [np.uint32(1), np.uint32(400_000_000)], [out, who])
        long_cb.end()
        gate, done, failed = dev.create_semaphore(0), dev.create_semaphore(0), dev.create_semaphore(0)
        cb, _, hits, _ = dispatch_ids(dev, (64,))
        dev.queue_execute([cb], wait=[(gate, 1)], signal=[(failed, 1)])  # parked: not running
        dev.queue_execute([long_cb], signal=[(done, 1)])
        assert running() == 1
        done.wait(1, timeout=60)
        assert running() == 0
        gate.fail("stop")
        with pytest.raises(fg.Aborted):
            failed.wait(1, timeout=WAIT)
        assert running() == 0 and (hits.to_numpy() == 0).all()
        bad = dev.allocator.import_array(np.zeros(8, np.int32))
        fail = dev.create_command_buffer()
        fail.dispatch(fail_at, "fail_at", (8,), [np.uint32(3)], [bad])
        fail.end()
        with pytest.raises(fg.Aborted):
            run(dev, [fail])
        do_work(dev)
        assert running() == 0
        wait_all_parked(dev)  # and every spinner (H_SPINNING: the wake policy's invitees) left
        assert int(dev.scheduler.arena[L.H_SPINNING]) == 0


def test_spin_after_quiet_follows_how_calls_recur():
    """After the last submission completes an idle participant spins H_SPIN_NS, or
    H_BUSY_SPIN_NS while submissions come back to back (the average quiet spell,
    H_QUIET_GAP_NS, under half that), counted from the completion (H_QUIET_SINCE_NS)."""
    with fg.create_device("local-task", workers=1, spin_us=20.0, busy_spin_us=100.0) as dev:
        wait_all_parked(dev)
        arena, a = dev.scheduler.arena, dev.scheduler.a
        quiet = 10_000_000_000
        arena[L.H_QUIET_SINCE_NS] = quiet
        arena[L.H_QUIET_GAP_NS] = 1_000_000  # called now and then
        assert keep_spinning(a, quiet - 5_000, quiet + 15_000)  # (idle since before the completion)
        assert not keep_spinning(a, quiet, quiet + 25_000)
        arena[L.H_QUIET_GAP_NS] = 10_000  # back to back
        assert keep_spinning(a, quiet, quiet + 90_000)
        assert not keep_spinning(a, quiet, quiet + 110_000)
        assert not keep_spinning(a, quiet + 200_000, quiet + 310_000)  # (idle since after it)
        assert keep_spinning(a, quiet + 200_000, quiet + 290_000)


@fg.kernel(workgroup_size=1, bindings=(np.int32,))
def _mark(wg, out):
    out[wg.id[0]] = 1


def test_quiet_spells_are_learned_as_calls_come():
    """Synchronous calls back to back bring the average quiet spell (H_QUIET_GAP_NS) under
    what makes idle participants spin longer; a pause raises it again."""
    with fg.create_device("local-task", workers=2) as dev:
        out = dev.allocator.import_array(np.zeros(4, np.int32))
        cb = dev.create_command_buffer("reusable")
        cb.dispatch(_mark, "_mark", 4, [], [out])
        cb.end()
        sem = dev.create_semaphore(0)
        for value in range(1, 201):
            dev.execute_and_wait(cb, sem, value, timeout=WAIT)
        recurring = int(dev.scheduler.arena[L.H_QUIET_GAP_NS])
        assert recurring < int(dev.scheduler.arena[L.H_BUSY_SPIN_NS]) // 2
        time.sleep(0.05)
        dev.execute_and_wait(cb, sem, 201, timeout=WAIT)
        assert int(dev.scheduler.arena[L.H_QUIET_GAP_NS]) > recurring
