"""A reference rate for "% of peak": what one core reaches in this machine's BLAS f32 matmul.

A theoretical peak needs the clock and the vector width, which VMs hide or vary (some of the
project's machines are Zen 3, some Zen 5); a measured single-threaded BLAS matmul is a rate one
core demonstrably reaches, in the same run and the same noise, and a dispatch that ran on k
workers is compared with k times it. It runs in a child
process without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which this project's environment sets and
which slow OpenBLAS several-fold (DESIGN.md); measured once per process, in about a second.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

_PROBE = """
import time, numpy as np
n = {n}
rng = np.random.default_rng(0)
a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
a @ b
best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range({repeats}))
print(2 * n ** 3 / best / 1e9)
"""


@functools.cache
def matmul_gflops(n: int = 512, repeats: int = 9) -> float | None:
    """Best-of-`repeats` GFLOP/s of an n x n f32 matmul through numpy on one thread; None if it
    cannot run."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "FIBERGRID_PROFILE")}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE.format(n=n, repeats=repeats)], env=env,
                             capture_output=True, text=True, timeout=60, check=True)
        return float(out.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
