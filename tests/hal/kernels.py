"""Kernels the HAL conformance suite dispatches, each defined once with `@fg.kernel`.

They are small on purpose: the suite checks the model (grids, bindings, constants, ordering,
failures), not kernel speed.
"""

from __future__ import annotations

import numpy as np

import fibergrid as fg

TILE = 4  # matmul tile edge (workgroup_size (TILE, TILE))


@fg.kernel(workgroup_size=64, bindings=(np.float32, np.float32), constants=(np.float32,))
def saxpy(wg, x, y, a):
    """y += a * x over the workgroup's 64 elements."""
    first = wg.id[0] * wg.size[0]
    for i in range(first, min(first + wg.size[0], y.shape[0])):
        y[i] += a * x[i]


@fg.kernel(workgroup_size=(2, 3, 4), bindings=(np.int32,))
def write_ids(wg, out):
    """Slot `linear` (x-fastest) of out, 8 int32 each: id, count, size, and a run counter."""
    lin = wg.id[0] + wg.count[0] * (wg.id[1] + wg.count[1] * wg.id[2])
    base = 8 * lin
    for d in range(3):
        out[base + d] = wg.id[d]
    out[base + 3] = wg.count[0] * wg.count[1] * wg.count[2]
    out[base + 4] = wg.size[0]
    out[base + 5] = wg.size[1]
    out[base + 6] = wg.size[2]
    out[base + 7] += 1


@fg.kernel(workgroup_size=(TILE, TILE), bindings=(np.float32, np.float32, np.float32), constants=(np.uint32, np.uint32, np.uint32))
def matmul(wg, a, b, c, m, n, k):
    """c[m, n] = a[m, k] @ b[k, n]; workgroup (x, y) computes the TILE x TILE tile at column
    block x, row block y."""
    row0 = wg.id[1] * wg.size[1]
    col0 = wg.id[0] * wg.size[0]
    for i in range(row0, min(row0 + wg.size[1], m)):
        for j in range(col0, min(col0 + wg.size[0], n)):
            acc = np.float32(0)
            for p in range(k):
                acc += a[i * k + p] * b[p * n + j]
            c[i * n + j] = acc


@fg.kernel(workgroup_size=1, bindings=(np.int32,), constants=(np.uint32,))
def increment(wg, buf, index):
    """buf[index] += 1 (one workgroup: a read-modify-write that races without a barrier)."""
    buf[index] += 1


@fg.kernel(workgroup_size=1, bindings=(np.int32,))
def increment_all(wg, buf):
    """buf[wg.id[0]] += 1."""
    buf[wg.id[0]] += 1


@fg.kernel(workgroup_size=16, bindings=(np.int32,))
def iota(wg, out):
    """out[i] = i over the workgroup's 16 elements."""
    first = wg.id[0] * wg.size[0]
    for i in range(first, min(first + wg.size[0], out.shape[0])):
        out[i] = i


@fg.kernel(workgroup_size=16, bindings=(np.int32, np.int32))
def reverse_double(wg, src, dst):
    """dst[i] = 2 * src[n - 1 - i]: reads elements other workgroups of the previous dispatch wrote."""
    n = src.shape[0]
    first = wg.id[0] * wg.size[0]
    for i in range(first, min(first + wg.size[0], dst.shape[0])):
        dst[i] = 2 * src[n - 1 - i]


@fg.kernel(workgroup_size=1, bindings=(np.uint32,), constants=(np.uint32, np.uint32, np.uint32))
def write_count(wg, counts, x, y, z):
    """Writes an indirect workgroup count (x, y, z)."""
    counts[0] = x
    counts[1] = y
    counts[2] = z


@fg.kernel(workgroup_size=1, bindings=(np.int32, np.uint32, np.float32), constants=(np.int32, np.uint32, np.float32))
def store_constants(wg, i, u, f, ci, cu, cf):
    """Echoes the three constants, one per binding."""
    i[0] = ci
    u[0] = cu
    f[0] = cf


@fg.kernel(workgroup_size=1, bindings=(np.int32,), constants=(np.uint32, np.uint32, np.uint32))
def fail_at(wg, out, x, y, status):
    """Returns `status` at workgroup (x, y, 0); elsewhere marks out[linear id] and returns 0."""
    if wg.id[0] == x and wg.id[1] == y:
        return status
    out[wg.id[0] + wg.count[0] * wg.id[1]] = 1
    return 0


@fg.kernel(workgroup_size=1, bindings=(np.float32,), constants=(np.uint32,))
def oob_at(wg, x, at):
    """Indexes past the end of its binding at workgroup `at` (numba's boundscheck raises)."""
    i = wg.id[0]
    if i == at:
        i += x.shape[0]
    x[i] = 1.0


@fg.kernel(workgroup_size=1, bindings=(np.float64,), constants=(np.uint32,))
def busy(wg, out, iters):
    """Burns `iters` steps of a serial floating-point chain (a few ns each, not foldable);
    stores the result in out[wg.id[0]]."""
    acc = np.float64(wg.id[0])
    for _ in range(iters):
        acc = acc * 0.999999 + 1.0
    out[wg.id[0]] = acc


@fg.kernel(workgroup_size=1, bindings=(np.int32,), local_memory=256)
def use_local(wg, out):
    """Sums 0..63 through the worker's local scratch."""
    scratch = wg.local[:256].view(np.int32)
    for i in range(64):
        scratch[i] = i
    s = 0
    for i in range(64):
        s += scratch[i]
    out[wg.id[0]] = s
