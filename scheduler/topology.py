"""Which cores the workers run on: the process's CPU affinity (what the OS lets us use, e.g.
under taskset or a container's cpuset), narrowed to physical cores where psutil can tell."""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Topology:
    cpus: tuple[int, ...]  # logical CPUs this process may run on
    physical_cores: int

    @property
    def default_workers(self) -> int:
        """One worker per core: hyperthread siblings share the FPUs the kernels need."""
        return max(1, min(len(self.cpus), self.physical_cores))


def detect() -> Topology:
    cpus = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else tuple(range(os.cpu_count() or 1))
    physical = psutil.cpu_count(logical=False) or len(cpus)
    return Topology(cpus, min(physical, len(cpus)))


def pin_current_thread(cpu: int) -> None:
    """Pins the calling thread (Linux: affinity is per thread when pid 0 is given from it)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
