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


class Rounds:
    """What `measure` timed: per round, each call's samples (seconds)."""

    def __init__(self, rounds: list[dict[str, list[float]]]) -> None:
        self.rounds = rounds

    def median_us(self, name: str) -> float:
        """The call's median latency over every sample of every round."""
        return statistics.median(t for r in self.rounds for t in r[name]) * 1e6

    def medians_us(self) -> dict[str, float]:
        """Every call's median latency (`median_us`)."""
        return {name: self.median_us(name) for name in self.rounds[0]}

    def ratio(self, a: str, b: str) -> float:
        """Call a's latency over call b's: the median over rounds of the ratio of the two
        calls' medians in that round. It does not move when the machine's speed drifts between
        rounds, as a ratio of two medians over all rounds does (on the 2-core VM one kernel's
        median ran 12.2 and 14.7 ms in one run, 8 calls apart)."""
        return statistics.median(statistics.median(r[a]) / statistics.median(r[b]) for r in self.rounds)


def measure(calls: dict[str, Callable[[], object]], repeats: int, min_seconds: float = 0.3,
            settle_s: float = SETTLE_S, min_rounds: int = 1) -> Rounds:
    """Rounds (`_rounds`) until every call has at least `repeats` samples and `min_seconds`, and
    there are at least `min_rounds`. The timed calls are each runtime's steady state, as a
    server calling one model sees it, and noise that drifts over the run still hits every
    runtime alike."""
    rounds: list[dict[str, list[float]]] = []
    count = dict.fromkeys(calls, 0)
    spent = dict.fromkeys(calls, 0.0)
    for round_samples in _rounds(calls, settle_s):
        rounds.append(round_samples)
        for name, timed in round_samples.items():
            count[name] += len(timed)
            spent[name] += sum(timed)
        if len(rounds) >= max(1, repeats) * 50 or (
                len(rounds) >= min_rounds and min(count.values()) >= repeats and min(spent.values()) >= min_seconds):
            return Rounds(rounds)
    raise AssertionError("unreachable: _rounds is endless")


def medians_us(calls: dict[str, Callable[[], object]], repeats: int, min_seconds: float = 0.3,
               settle_s: float = SETTLE_S) -> dict[str, float]:
    """Median latency of each call (`measure`)."""
    return measure(calls, repeats, min_seconds, settle_s).medians_us()
