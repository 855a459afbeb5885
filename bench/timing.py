"""Latency medians in interleaved rounds, each runtime in its own steady state (medians_us).

Shared by every bench that compares runtimes in one process: a runtime's threads may spin on
after its calls (ONNX Runtime's worker, OpenBLAS's, numba's OpenMP pool) and would take the
cores from whatever ran next.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np

# medians_us: a runtime's calls run untimed for SETTLE_S before its timed ones. ONNX Runtime's
# worker spins on for 40-50 ms after its last call, holding a whole core (process CPU read over
# 20 ms windows after a ResNet call: 0.98 cores up to 20 ms later, 0.0 from 50 ms); OpenBLAS's
# threads busy-wait after a call too. On a 2-core machine, the next runtime's calls in that time
# ran ResNet 1.4-1.8x slower than alone, so the settle time is twice the longest tail seen.
SETTLE_S = 0.1
TIMED_S = 0.05  # per runtime and round, at least MIN_TIMED calls
MIN_TIMED = 2


def _rounds(calls: dict[str, Callable[[], object]], settle_s: float) -> Iterator[dict[str, list[float]]]:
    """Rounds of timed calls, per round each call's samples (seconds): in a round each call
    first runs untimed for `settle_s` (what the runtime before it leaves behind, threads still
    spinning and caches full of its data, wears off there), then timed for TIMED_S; the calls
    go in a fresh random order each round."""
    for call in calls.values():
        call()
    order = np.random.default_rng(1)
    names = list(calls)
    while True:
        samples: dict[str, list[float]] = {}
        for name in order.permutation(names):
            call = calls[name]
            settled = time.perf_counter() + settle_s
            call()
            while time.perf_counter() < settled:
                call()
            window, timed = 0.0, []
            while len(timed) < MIN_TIMED or window < TIMED_S:
                t0 = time.perf_counter()
                call()
                timed.append(time.perf_counter() - t0)
                window += timed[-1]
            samples[name] = timed
        yield samples


def medians_us(calls: dict[str, Callable[[], object]], repeats: int, min_seconds: float = 0.3,
               settle_s: float = SETTLE_S) -> dict[str, float]:
    """Median latency of each call over rounds (`_rounds`), with at least `repeats` samples and
    `min_seconds` per call. The timed calls are each runtime's steady state, as a server calling
    one model sees it, and noise that drifts over the run still hits every runtime alike."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _, round_samples in zip(range(max(1, repeats) * 50), _rounds(calls, settle_s)):
        for name, timed in round_samples.items():
            samples[name] += timed
        if min(map(len, samples.values())) >= repeats and min(map(sum, samples.values())) >= min_seconds:
            break
    return {name: statistics.median(s) * 1e6 for name, s in samples.items()}


def round_medians_us(calls: dict[str, Callable[[], object]], rounds: int,
                     settle_s: float = SETTLE_S) -> list[dict[str, float]]:
    """Per round, each call's median latency: a ratio of two calls taken within each round and
    then its median over rounds does not move when the machine's speed drifts between rounds
    (on the 2-core VM one kernel's median ran 12.2 and 14.7 ms in one run, 8 calls apart)."""
    return [{name: statistics.median(t) * 1e6 for name, t in r.items()}
            for _, r in zip(range(rounds), _rounds(calls, settle_s))]
