"""`fibergrid demo`: one command buffer with a saxpy dispatch, a barrier and a tiled matmul that
reads saxpy's output, run on the default device and checked against numpy."""

from __future__ import annotations

import time

import numpy as np

import fibergrid as fg

TILE = 16


@fg.kernel(workgroup_size=256, bindings=(np.float32, np.float32), constants=(np.float32,), boundscheck=False)
def saxpy(wg, x, y, a):
    first = wg.id[0] * wg.size[0]
    for i in range(first, min(first + wg.size[0], y.shape[0])):
        y[i] += a * x[i]


@fg.kernel(workgroup_size=(TILE, TILE, 1), bindings=(np.float32, np.float32, np.float32), constants=(np.uint32, np.uint32, np.uint32), boundscheck=False)
def matmul(wg, a, b, c, m, n, k):
    """C[m,n] = A[m,k] @ B[k,n]; one TILE x TILE block of C per workgroup."""
    row0 = wg.id[1] * TILE
    col0 = wg.id[0] * TILE
    for i in range(row0, min(row0 + TILE, m)):
        for j in range(col0, min(col0 + TILE, n)):
            c[i * n + j] = 0.0
        for p in range(k):
            aip = a[i * k + p]
            for j in range(col0, min(col0 + TILE, n)):
                c[i * n + j] += aip * b[p * n + j]


def run(driver: str | None = None, workers: int | None = None, m: int = 256, n: int = 256, k: int = 256) -> int:
    options = {} if workers is None else {"workers": workers}
    rng = np.random.default_rng(0)
    x = rng.standard_normal(m * k, dtype=np.float32)
    y = rng.standard_normal(m * k, dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    alpha = 2.0
    with fg.create_device(driver, **options) as device:
        xv, yv = device.allocator.import_array(x), device.allocator.import_array(y)
        bv = device.allocator.import_array(b)
        cv = device.allocator.allocate_view((m, n), np.float32)
        start = time.perf_counter()
        cb = device.create_command_buffer("reusable")
        cb.dispatch(saxpy, "saxpy", -(-(m * k) // 256), [alpha], [xv, yv])  # y = alpha x + y
        cb.execution_barrier()
        cb.dispatch(matmul, "matmul", (-(-n // TILE), -(-m // TILE)), [m, n, k], [yv, bv, cv])  # C = y @ B
        cb.end()
        done = device.create_semaphore(0)
        # The first run compiles what is not in numba's cache yet (the kernels, the scheduler's
        # entry points): reported apart from the run itself.
        device.queue_execute([cb], signal=[(done, 1)])
        done.wait(1, timeout=600)
        first = time.perf_counter() - start
        got = cv.to_numpy()
        runs = []
        for i in range(2, 7):
            yv.buffer.write(y)  # saxpy updates y in place: start each run from the same data
            t0 = time.perf_counter()
            device.queue_execute([cb], signal=[(done, i)])
            done.wait(i, timeout=60)
            runs.append(time.perf_counter() - t0)
        elapsed = float(np.median(runs))
    expected = (alpha * x + y).reshape(m, k) @ b
    err = float(np.max(np.abs(got - expected)) / max(1.0, float(np.max(np.abs(expected)))))
    ok = err < 1e-4
    print(f"device {device!r}")
    print(f"saxpy over {m * k} elements -> barrier -> matmul {m}x{k} @ {k}x{n}: {elapsed * 1e3:.2f} ms a run "
          f"(median of {len(runs)}; the first run, compiling what numba had not cached, took {first * 1e3:.0f} ms)")
    print(f"C[0, :4] = {np.array2string(got[0, :4], precision=4)}")
    print(f"max relative error vs numpy: {err:.2e} -> {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1
