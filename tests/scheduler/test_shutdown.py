"""Shutting down with work in flight: pending semaphores fail with Aborted instead of hanging,
interpreter exit is clean, and several devices live side by side."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import fibergrid as fg
from tests.scheduler.kernels import WAIT, blocked_waiter, dispatch_ids, fibergrid_threads, run, spin

REPO = Path(__file__).resolve().parents[2]


def close_bounded(dev, timeout: float = WAIT) -> None:
    """close() on a helper thread so that a hang fails the test instead of the run."""
    t = threading.Thread(target=dev.close, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"close() did not return within {timeout} s"


def long_dispatch(dev, n=4000, iters=300_000):
    out = dev.allocator.import_array(np.zeros(n, np.int64))
    who = dev.allocator.import_array(np.full(n, -1, np.int32))
    cb = dev.create_command_buffer()
    cb.dispatch(spin, "spin", (n,), [np.uint32(1), np.uint32(iters)], [out, who])
    cb.end()
    return cb


@pytest.mark.parametrize("workers", [1, 2])
def test_close_with_work_in_flight_fails_pending_semaphores(workers):
    baseline = fibergrid_threads()
    dev = fg.create_device("local-task", workers=workers)
    gate, s_run, s_parked, s_dep, s_done = (dev.create_semaphore(0) for _ in range(5))
    cb_done, _, hits_done, _ = dispatch_ids(dev, (10,))
    run(dev, [cb_done])
    dev.queue_execute([long_dispatch(dev)], signal=[(s_run, 1)])
    cb_parked, _, hits_parked, _ = dispatch_ids(dev, (10,))
    dev.queue_execute([cb_parked], wait=[(gate, 1)], signal=[(s_parked, 1)])
    cb_dep, _, hits_dep, _ = dispatch_ids(dev, (10,))
    dev.queue_execute([cb_dep], wait=[(s_run, 1)], signal=[(s_dep, 1)])
    time.sleep(0.05)
    assert s_run.query() == 0, "the long dispatch finished before close(): make it longer"
    close_bounded(dev)
    for s in (s_run, s_parked, s_dep):
        with pytest.raises(fg.Aborted, match="shut down"):
            s.wait(1, timeout=WAIT)
    assert (hits_parked.to_numpy() == 0).all() and (hits_dep.to_numpy() == 0).all()
    assert not any(t.is_alive() for t in dev.scheduler.threads)
    assert fibergrid_threads() == baseline
    with pytest.raises(fg.FailedPrecondition):
        dev.queue_execute([long_dispatch(dev, 1, 1)])
    dev.close()  # idempotent


def test_blocked_host_waiter_is_released_by_close():
    dev = fg.create_device("local-task", workers=2)
    gate, s = dev.create_semaphore(0), dev.create_semaphore(0)
    cb, *_ = dispatch_ids(dev, (5,))
    dev.queue_execute([cb], wait=[(gate, 1)], signal=[(s, 1)])
    t, got = blocked_waiter(s, 1)
    time.sleep(0.05)
    close_bounded(dev)
    t.join(WAIT)
    assert not t.is_alive()
    assert len(got) == 1 and isinstance(got[0], fg.Aborted), got


def test_close_idle_device_and_with_statement():
    baseline = fibergrid_threads()
    with fg.create_device("local-task", workers=3) as dev:
        cb, _, hits, _ = dispatch_ids(dev, (99,))
        run(dev, [cb])
    assert dev.closed
    assert not any(t.is_alive() for t in dev.scheduler.threads)
    assert fibergrid_threads() == baseline


EXIT_SCRIPT = textwrap.dedent(
    """
    import atexit, sys, threading
    import numpy as np
    import fibergrid as fg

    @fg.kernel(workgroup_size=1, bindings=(np.int64,), constants=(np.uint32,))
    def busy(wg, out, iters):
        x = wg.id[0] + 1
        for _ in range(iters):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[wg.id[0]] = x

    def report():  # atexit handlers run after threading's shutdown hooks
        alive = [t.name for t in threading.enumerate() if t.name.startswith("fibergrid-worker") and t.is_alive()]
        print("ALIVE", alive, flush=True)

    atexit.register(report)
    devs = [fg.create_device("local-task", workers=w) for w in (2, 1)]
    sems = []
    for dev in devs:
        out = dev.allocator.import_array(np.zeros(4000, np.int64))
        cb = dev.create_command_buffer()
        cb.dispatch(busy, "busy", (4000,), [np.uint32(300000)], [out])
        cb.end()
        s = dev.create_semaphore(0)
        gate = dev.create_semaphore(0)
        dev.queue_execute([cb], signal=[(s, 1)])
        dev.queue_execute([], wait=[(gate, 1)], signal=[(s, 2)])
        sems.append(s)

    MODE = sys.argv[1]
    if MODE == "waiter":
        # A non-daemon thread blocked in wait(): interpreter exit must release it, not hang.
        def wait_forever():
            try:
                sems[0].wait(2, timeout=30)
                print("WAITER returned", flush=True)
            except fg.Aborted:
                print("WAITER aborted", flush=True)
        threading.Thread(target=wait_forever).start()
    print("SUBMITTED", flush=True)
    if MODE == "sys.exit":
        sys.exit(0)
    """
)


@pytest.mark.parametrize("mode", ["fall-off", "sys.exit", "waiter"])
def test_interpreter_exit_with_work_in_flight_is_clean(tmp_path, mode):
    script = tmp_path / "exit_in_flight.py"
    script.write_text(EXIT_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(script), mode], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, f"exit code {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "SUBMITTED" in proc.stdout
    assert "ALIVE []" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    if mode == "waiter":
        assert "WAITER aborted" in proc.stdout, proc.stdout
        assert elapsed < 25, "the blocked waiter was only released by its own 30 s timeout"


def test_several_devices_alive_at_once():
    devs = [fg.create_device("local-task", workers=w) for w in (2, 1, 3)] + [fg.create_device("local-sync")]
    try:
        runs = []
        for round_ in range(3):
            for dev in devs:
                cb, ids, hits, who = dispatch_ids(dev, (257 + round_,))
                s = dev.create_semaphore(0)
                dev.queue_execute([cb], signal=[(s, 1)])
                runs.append((dev, s, hits, who))
        for dev, s, hits, who in runs:
            s.wait(1, timeout=WAIT)
            assert (hits.to_numpy() == 1).all()
            assert (who.to_numpy() < dev.participants).all()
        for dev in devs:
            assert dev.scheduler.counters()["workgroups"] == 257 + 258 + 259
        # Closing one leaves the others working.
        close_bounded(devs[0])
        for dev in devs[1:]:
            cb, _, hits, _ = dispatch_ids(dev, (100,))
            run(dev, [cb])
            assert (hits.to_numpy() == 1).all()
    finally:
        for dev in devs:
            close_bounded(dev)
