"""Generated matmul/GEMV/conv kernels vs numpy (OpenBLAS), as one JSON object.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.matmul_kernels --json

(the two variables, set in the project's environment, slow OpenBLAS down; unset them for this
command only.) `--costs 128x256x256 128x1024x256 ...` prints instead, per shape and tiling,
thread CPU time with the data hot, cold and over two threads (`costs`).

Kernels run without the scheduler: a numba `nogil` loop calls the kernel's function pointer for
its workgroups, `reps` times over; with two threads each runs every other workgroup (as
one-at-a-time claims share them out). There is no barrier between repetitions, so the figures
are the kernels' own cost (the scheduler's per-dispatch overhead is benchmarked elsewhere).
numpy runs with OpenBLAS set to the same thread count. Every figure is the median of `--repeats`
runs.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from bench.timing import medians_us
from compiler.codegen.llvm_cpu import caches, conv, jit, matmul
from hal import abi


@intrinsic
def _call_kernel(typingctx, fn, dispatch_state, workgroup_state):  # noqa: ANN001 (numba typing)
    """Call the kernel at address `fn` (inttoptr + call: no ctypes cost per workgroup)."""
    sig = types.int32(types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):  # noqa: ANN001
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.IntType(32), [i8p, i8p])
        target = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(target, [builder.inttoptr(args[1], i8p), builder.inttoptr(args[2], i8p)])

    return sig, codegen


@njit(nogil=True, cache=True)
def _run_workgroups(fn: int, dispatch_state: int, states: int, count: int, reps: int) -> int:
    for _ in range(reps):
        for i in range(count):
            rc = _call_kernel(fn, dispatch_state, states + i * 32)
            if rc != 0:
                return rc
    return 0


class Dispatch:
    """One kernel, its bindings and per-thread WorkgroupStates (each thread has its own local
    memory), ready to run `reps` times on 1 or 2 threads."""

    def __init__(self, fn: int, grid: tuple[int, int, int], local_bytes: int,
                 arrays: Sequence[np.ndarray], threads: int) -> None:
        self.fn = fn
        self.arrays = arrays
        self._ptrs = np.array([a.ctypes.data for a in arrays], np.uint64)
        self._lens = np.array([a.nbytes for a in arrays], np.uint64)
        self.ds = np.zeros((), abi.DISPATCH_STATE_DTYPE)
        self.ds["workgroup_count"] = grid
        self.ds["binding_count"] = len(arrays)
        self.ds["binding_ptrs"] = self._ptrs.ctypes.data
        self.ds["binding_lengths"] = self._lens.ctypes.data
        ids = np.array([(x, y, z) for z in range(grid[2]) for y in range(grid[1]) for x in range(grid[0])])
        self.shards = []
        self._locals = []
        for part in (ids[w::threads] for w in range(threads)):
            local = np.zeros(local_bytes // 4 + 16, np.float32)
            states = np.zeros(len(part), abi.WORKGROUP_STATE_DTYPE)
            states["workgroup_id"] = part
            states["worker_id"] = len(self.shards)
            states["local_memory"] = (local.ctypes.data + 63) // 64 * 64
            states["local_memory_size"] = local_bytes
            self._locals.append(local)
            self.shards.append(states)

    def run(self, reps: int = 1) -> float:
        """Runs the grid `reps` times; returns the threads' summed CPU time (seconds)."""
        spent = [0.0] * len(self.shards)

        def shard(w: int) -> None:
            start = time.thread_time()
            rc = _run_workgroups(self.fn, self.ds.ctypes.data, self.shards[w].ctypes.data, len(self.shards[w]), reps)
            spent[w] = time.thread_time() - start
            if rc:
                raise RuntimeError(f"kernel returned {rc}")

        if len(self.shards) == 1:
            shard(0)
            return spent[0]
        workers = [threading.Thread(target=shard, args=(w,)) for w in range(len(self.shards))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return sum(spent)


def _openblas_threads(n: int) -> None:
    """Set numpy's OpenBLAS thread count in-process (numpy wheels bundle scipy-openblas; other
    builds through threadpoolctl where it is installed)."""
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "libscipy_openblas*.so"))
    if libs:
        ctypes.CDLL(libs[0]).scipy_openblas_set_num_threads64_(n)
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise RuntimeError("numpy's OpenBLAS library not found: cannot match its thread count") from None
    threadpool_limits(limits=n, user_api="blas")


def _median_seconds(fn: Callable[[], None], repeats: int, reps: int = 1) -> float:
    fn()  # warm caches (and numba/JIT paths)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) / reps)
    return statistics.median(times)


def _case(name: str, flops: float, kernel_fn: int, grid: tuple[int, int, int], local_bytes: int,
          arrays: Sequence[np.ndarray], reference: Callable[[], np.ndarray], out: np.ndarray,
          repeats: int, reps: int) -> dict:
    """Check the kernel against numpy, then time both at 1 and 2 threads."""
    Dispatch(kernel_fn, grid, local_bytes, arrays, 1).run()
    expected = reference()
    err = float(np.abs(out - expected).max() / max(1.0, float(np.abs(expected).max())))
    row: dict = {"case": name, "max_rel_err": err}
    for threads in (1, 2):
        dispatch = Dispatch(kernel_fn, grid, local_bytes, arrays, threads)
        _openblas_threads(threads)
        ours = _median_seconds(lambda: dispatch.run(reps), repeats, reps)
        theirs = _median_seconds(lambda: [reference() for _ in range(reps)], repeats, reps)
        row[f"t{threads}"] = {
            "us": round(ours * 1e6, 1), "gflops": round(flops / ours / 1e9, 1),
            "numpy_us": round(theirs * 1e6, 1), "numpy_gflops": round(flops / theirs / 1e9, 1),
            "vs_numpy": round(theirs / ours, 2),
        }
    return row


def bench_matmul(m: int, n: int, k: int, repeats: int, reps: int, **gen: object) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), np.float32)
    b = rng.standard_normal((k, n), np.float32)
    c = np.zeros((m, n), np.float32)
    start = time.perf_counter()
    kernel = matmul.generate_matmul(m, n, k, **gen)
    module = jit.compile_ir(kernel.ir)
    compile_ms = (time.perf_counter() - start) * 1e3
    row = _case(f"matmul {m}x{k}@{k}x{n}", 2.0 * m * n * k, module.address(kernel.name),
                kernel.workgroup_count, kernel.local_memory_size, [a, b, c], lambda: a @ b, c,
                repeats, reps)
    row["config"] = kernel.config.__dict__
    row["workgroups"] = kernel.workgroup_count
    row["compile_ms"] = round(compile_ms, 1)
    return row


def bench_conv(repeats: int, reps: int) -> dict:
    """conv2d 1x56x56x64 * 3x3x64x64, SAME; numpy does im2col (sliding_window_view) + matmul."""
    xs, ws = (1, 56, 56, 64), (3, 3, 64, 64)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(xs, np.float32), rng.standard_normal(ws, np.float32)
    out = np.zeros((1, 56, 56, 64), np.float32)
    start = time.perf_counter()
    kernel = conv.generate_conv2d(xs, ws, padding="SAME")
    module = jit.compile_ir(kernel.ir)
    compile_ms = (time.perf_counter() - start) * 1e3
    w2 = w.reshape(-1, 64)

    def reference() -> np.ndarray:
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        cols = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))  # 1,56,56,64,3,3
        return (cols.transpose(0, 1, 2, 4, 5, 3).reshape(56 * 56, -1) @ w2).reshape(out.shape)

    row = _case("conv2d 1x56x56x64 * 3x3x64x64 SAME", 2.0 * 56 * 56 * 64 * 64 * 9,
                module.address(kernel.name), kernel.workgroup_count, kernel.local_memory_size,
                [x, w, out], reference, out, repeats, reps)
    row["config"] = kernel.config.__dict__
    row["workgroups"] = kernel.workgroup_count
    row["compile_ms"] = round(compile_ms, 1)
    return row


def sweep(sizes: Sequence[int], repeats: int) -> list[dict]:
    """The blocked GEMM (B pre-packed, as constant weights are) under tilings around
    `choose_config`'s, in interleaved rounds (numpy apart: OpenBLAS's threads spin after a
    call), at 1 and all workers: where the tiling rules should move on this host."""
    workers = len(os.sched_getaffinity(0))
    rows = []
    for size in sizes:
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((size, size), np.float32), rng.standard_normal((size, size), np.float32)
        c = np.zeros((size, size), np.float32)
        base = matmul.choose_config(size, size, size, packed=True)
        variants = {"chosen": base}
        for kc in (128, 192, 256, 384, 512):
            variants[f"kc{kc}"] = replace(base, kc=kc)
        for tile_m in (64, 256, 512):
            variants[f"tile_m{tile_m}"] = replace(base, tile_m=tile_m)
        variants["tile_n2panels"] = replace(base, tile_n=2 * base.nr)
        variants["no_panel_prefetch"] = replace(base, prefetch_next=0)
        variants["no_local_c"] = replace(base, c_local=False)
        for mr, nv in matmul.TILES_32_REGISTERS if base.lanes >= 16 else matmul.TILES_16_REGISTERS:
            variants[f"{mr}x{nv}"] = replace(base, mr=mr, nv=nv, tile_m=min(size, 16 * mr), tile_n=min(size, 8 * nv * base.lanes))
        dispatches: dict[str, Callable[[], object]] = {}
        keep = []
        for name, cfg in variants.items():
            kernel = matmul.generate_matmul(size, size, size, config=cfg, b_panel=cfg.nr)
            module = jit.compile_ir(kernel.ir)
            keep.append(module)
            packed = matmul.pack_weights(b, cfg.nr)
            for threads in (1, workers):
                d = Dispatch(module.address(kernel.name), kernel.workgroup_count, kernel.local_memory_size,
                             [a, packed, c], threads)
                dispatches[f"{name}@{threads}"] = d.run
        for threads in (1, workers):
            _openblas_threads(threads)
            numpy_us = medians_us({"numpy": lambda: a @ b}, repeats, min_seconds=0.1)["numpy"]
            times = medians_us({name: dispatches[f"{name}@{threads}"] for name in variants}, repeats, min_seconds=0.1)
            for name, us in times.items():
                rows.append({"size": size, "threads": threads, "variant": name, "config": variants[name].__dict__,
                             "gflops": round(2.0 * size ** 3 / us / 1e3, 1), "vs_numpy": round(us / numpy_us, 3)})
    return rows


def cost_variants(m: int, n: int, k: int) -> dict[str, matmul.MatmulConfig]:
    """`choose_config`'s tiling (B pre-packed) and the alternatives a small-M GEMM could take."""
    base = matmul.choose_config(m, n, k, packed=True)
    row_tiles = -(-m // base.tile_m)
    return {
        "chosen": base,
        "balanced_rows": replace(base, tile_m=min(m, matmul.round_up(-(-m // row_tiles), base.mr))),
        "one_row_tile": replace(base, tile_m=m),
        "one_k_block": replace(base, kc=k, c_local=False),
        "no_panel_prefetch": replace(base, prefetch_next=0),
        "no_local_c": replace(base, c_local=False),
    }


def costs(shapes: Sequence[tuple[int, int, int]], rounds: int) -> list[dict]:
    """Where a GEMM's time goes apart from the scheduler (the matmuls of a small transformer:
    128x256x256, 128x1024x256, ...), per tiling in interleaved rounds, medians of thread CPU
    time: `hot_us`, one thread calling it again and again (data in L1/L2); `cold_us`, one
    call after L2 was overwritten (a model whose weights outgrow L2 reads them from L3 on
    every call); `two_threads_us`, the two threads' summed CPU time, each running every other
    workgroup (hot): above `hot_us` when the cores contend for something they share. CPU time,
    not wall time, so that a machine shared with other work still ranks the tilings; and
    `two_threads_wall_us`, the same runs' wall time (half of `hot_us` on an idle machine: the
    2-core speed-up without a scheduler, to hold fibergrid's local-task figure against; it
    includes starting the two threads, once per ~1 ms of work)."""
    evict = np.zeros(4 * caches.host().l2 // 4, np.float32)
    rows = []
    for m, n, k in shapes:
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        expected = a @ b + bias
        runs: dict[str, tuple[Dispatch, Dispatch]] = {}
        keep = []
        for name, cfg in cost_variants(m, n, k).items():
            kernel = matmul.generate_matmul(m, n, k, config=cfg, b_panel=cfg.nr, extra_bindings=(n,),
                                            epilogue=matmul.bias_add())
            module = jit.compile_ir(kernel.ir)
            keep.append(module)
            c = np.zeros((m, n), np.float32)
            arrays = [a, matmul.pack_weights(b, cfg.nr), c, bias]
            one, two = (Dispatch(module.address(kernel.name), kernel.workgroup_count, kernel.local_memory_size,
                                 arrays, threads) for threads in (1, 2))
            one.run()
            err = float(np.abs(c - expected).max() / max(1.0, float(np.abs(expected).max())))
            if err > 1e-4:
                raise RuntimeError(f"{name} tiling of {m}x{n}x{k}: max relative error {err}")
            runs[name] = (one, two)
        reps = max(1, int(2e-3 / max(1e-7, runs["chosen"][0].run(3) / 3)))  # ~2 ms per hot sample
        samples: dict[str, dict[str, list[float]]] = {name: {"hot_us": [], "cold_us": [], "two_threads_us": [],
                                                             "two_threads_wall_us": []}
                                                      for name in runs}
        for _ in range(rounds):
            for name, (one, two) in runs.items():
                samples[name]["hot_us"].append(one.run(reps) / reps)
                np.add(evict, 1.0, out=evict)
                samples[name]["cold_us"].append(one.run(1))
                start = time.perf_counter()
                samples[name]["two_threads_us"].append(two.run(reps) / reps)
                samples[name]["two_threads_wall_us"].append((time.perf_counter() - start) / reps)
        for name, measured in samples.items():
            cfg = runs[name][0]
            row = {"shape": f"{m}x{n}x{k}", "variant": name, "workgroups": int(np.prod(cfg.ds["workgroup_count"]))}
            for key, values in measured.items():
                row[key] = round(statistics.median(values) * 1e6, 1)
            row["hot_gflops"] = round(2.0 * m * n * k / row["hot_us"] / 1e3, 1)
            row["cold_gflops"] = round(2.0 * m * n * k / row["cold_us"] / 1e3, 1)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default is a table)")
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per figure (median)")
    parser.add_argument("--sweep", type=int, nargs="*", help="matmul sizes to sweep tilings over instead")
    parser.add_argument("--costs", nargs="*", metavar="MxNxK",
                        help="per shape and tiling: CPU time hot, cold and summed over two threads instead")
    args = parser.parse_args()
    if args.sweep:
        for row in sweep(args.sweep, args.repeats):
            print(json.dumps(row))
        return
    if args.costs:
        shapes = [tuple(int(d) for d in text.lower().split("x")) for text in args.costs]
        if any(len(s) != 3 or min(s) < 1 for s in shapes):
            parser.error(f"--costs takes shapes as MxNxK, got {args.costs}")
        for row in costs(shapes, max(args.repeats, 31)):
            print(json.dumps(row))
        return
    rows = [
        bench_matmul(1024, 1024, 1024, args.repeats, reps=1),
        bench_matmul(1, 1024, 784, args.repeats, reps=200),
        bench_conv(args.repeats, reps=5),
    ]
    result = {
        "host": jit.format_tag(), "vector_lanes": jit.vector_width_f32(),
        "openblas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ},
        "cases": rows,
    }
    if args.json:
        print(json.dumps(result))
        return
    for row in rows:
        for t in ("t1", "t2"):
            r = row[t]
            print(f"{row['case']:<40} {t}: {r['gflops']:7.1f} GFLOP/s  numpy {r['numpy_gflops']:7.1f}"
                  f"  ratio {r['vs_numpy']:.2f}")


if __name__ == "__main__":
    main()
