"""Stress and soak runs, shared by tests/reliability/test_stress.py (small sizes, and the `slow`
profile at full size) and bench/reliability.py (the counts as JSON).

- `semaphore_chains`: T Python threads each submit K executions of one reusable command buffer;
  submission k of thread t waits for its own k-th and its neighbour's k-th signal (a chain that
  crosses threads at every step) and the first ones for a host semaphore signalled late. The
  kernel counts its runs and logs what it saw of the neighbour, so a lost signal, a lost or
  doubled run and a dependency run too early are all visible afterwards.
- `soak_calls`: N calls of a small model, RSS and thread count sampled throughout.
- `load_close_cycles`: N cycles of create device, load module, call, close both; threads, file
  handles and RSS after against before.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import numpy as np
import psutil

import fibergrid as fg

WAIT = 120.0  # a wait this long is a deadlock
WINDOW = 1024  # submissions a thread keeps in flight


@fg.kernel(workgroup_size=1, bindings=(np.int64,), constants=(np.uint32, np.uint32, np.uint32))
def chain_link(wg, state, t, threads, per_thread):
    """state[t] counts thread t's runs; state[threads + t * per_thread + k] records, at run k,
    the neighbour's count (>= k: the neighbour's k-th run happened before)."""
    k = state[t]
    if k < per_thread:
        state[threads + t * per_thread + k] = state[(t + 1) % threads]
    state[t] = k + 1


def semaphore_chains(threads: int = 8, per_thread: int = 10_000, driver: str = "local-task", workers: int = 4) -> dict[str, Any]:
    """Runs the chains; the counts of what went wrong (all 0 on success) and of what ran."""
    options = {"workers": workers} if driver == "local-task" else {}
    with fg.create_device(driver, **options) as dev:
        state = dev.allocator.import_array(np.zeros(threads + threads * per_thread, np.int64))
        sems = [dev.create_semaphore(0) for _ in range(threads)]
        gate = dev.create_semaphore(0)
        cbs = []
        for t in range(threads):
            cb = dev.create_command_buffer("reusable")
            cb.dispatch(chain_link, "chain_link", 1, [np.uint32(t), np.uint32(threads), np.uint32(per_thread)], [state])
            cb.end()
            cbs.append(cb)
        errors: list[str] = []
        deadlocks = [0]

        def submitter(t: int) -> None:
            try:
                for k in range(per_thread):
                    if k >= WINDOW and k % 64 == 0:
                        sems[t].wait(k - WINDOW, timeout=WAIT)
                    waits = [(sems[t], k), (sems[(t + 1) % threads], k)] + ([(gate, 1)] if k == 0 else [])
                    dev.queue_execute([cbs[t]], wait=waits, signal=[(sems[t], k + 1)])
                sems[t].wait(per_thread, timeout=WAIT)
            except fg.DeadlineExceeded as e:
                deadlocks[0] += 1
                errors.append(f"thread {t}: {e}")
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(f"thread {t}: {type(e).__name__}: {e}")

        pool = [threading.Thread(target=submitter, args=(t,), name=f"stress-{t}") for t in range(threads)]
        t0 = time.monotonic()
        for p in pool:
            p.start()
        time.sleep(0.01)  # the host signal arrives after submissions queued behind it (any delay will do)
        gate.signal(1)
        for p in pool:
            p.join(WAIT * 2)
        hung = sum(p.is_alive() for p in pool)
        elapsed = time.monotonic() - t0
        dev.wait_idle(timeout=WAIT)
        data = state.to_numpy()
        counts, log = data[:threads], data[threads:].reshape(threads, per_thread)
        values = [s.query() for s in sems]
    return {
        "threads": threads, "per_thread": per_thread, "submissions": threads * per_thread, "driver": driver,
        "deadlocks": deadlocks[0] + hung,
        "lost_signals": sum(v != per_thread for v in values),
        "payloads_unaccounted": int(np.abs(counts - per_thread).sum()),
        "dependencies_violated": int((log < np.arange(per_thread)).sum()),
        "errors": errors[:5],
        "submissions_per_s": round(threads * per_thread / elapsed),
    }


def small_model() -> bytes:
    """An ONNX MLP with a dynamic batch: x[n, 8] -> softmax(relu(x @ w + b))[n, 4]."""
    from tests.reliability.fuzz import onnx_seeds
    return onnx_seeds()["mlp"]


def _reference(model: bytes, x: np.ndarray) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


def _sample(proc: psutil.Process) -> tuple[int, int]:
    return proc.memory_info().rss, threading.active_count()


def _drift(samples: list[int]) -> float:
    """Percent change from the mean of the first tenth of `samples` to the mean of the last tenth."""
    tenth = max(1, len(samples) // 10)
    first, last = np.mean(samples[:tenth]), np.mean(samples[-tenth:])
    return round(100.0 * (last - first) / first, 3)


def soak_calls(calls: int = 100_000, driver: str = "local-task", samples: int = 100) -> dict[str, Any]:
    """`calls` calls of the small model (results checked against ONNX's reference on every
    sample), RSS and Python thread count sampled `samples` times after a warm-up."""
    model = small_model()
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    want = _reference(model, x)
    proc = psutil.Process()
    options = {"workers": 2} if driver == "local-task" else {}
    mismatches = 0
    rss, nthreads = [], []
    with fg.create_device(driver, **options) as dev:
        module = fg.load(model, device=dev)
        for _ in range(max(100, calls // 100)):  # warm-up: lanes, caches, allocator pools
            module(x)
        every = max(1, calls // samples)
        for i in range(calls):
            y = module(x)
            if i % every == 0:
                mismatches += not np.allclose(y, want, rtol=1e-5, atol=1e-6)
                r, n = _sample(proc)
                rss.append(r)
                nthreads.append(n)
        module.close()
    return {"calls": calls, "driver": driver, "mismatches": mismatches, "rss_start_mb": round(rss[0] / 2**20, 1),
            "rss_end_mb": round(rss[-1] / 2**20, 1), "rss_drift_pct": _drift(rss), "threads_start": nthreads[0],
            "threads_end": nthreads[-1], "thread_drift_pct": _drift(nthreads)}


def load_close_cycles(cycles: int = 1_000, warmup: int = 20) -> dict[str, Any]:
    """Device, module, call, close; threads, open files and RSS after the warm-up and at the end."""
    model = small_model()
    x = np.ones((2, 8), np.float32)
    proc = psutil.Process()

    def cycle() -> None:
        with fg.create_device("local-task", workers=2) as dev:
            with fg.load(model, device=dev) as module:
                module(x)

    for _ in range(warmup):
        cycle()
    gc.collect()
    before = (threading.active_count(), proc.num_fds(), proc.memory_info().rss)
    rss = []
    for i in range(cycles):
        cycle()
        if i % max(1, cycles // 50) == 0:
            gc.collect()  # devices and modules in reference cycles go at a collection
            rss.append(proc.memory_info().rss)
    gc.collect()
    after = (threading.active_count(), proc.num_fds(), proc.memory_info().rss)
    rss.append(after[2])
    return {"cycles": cycles, "threads_before": before[0], "threads_after": after[0], "fds_before": before[1],
            "fds_after": after[1], "rss_before_mb": round(before[2] / 2**20, 1), "rss_after_mb": round(after[2] / 2**20, 1),
            "rss_drift_pct": _drift(rss)}
