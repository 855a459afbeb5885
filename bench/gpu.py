"""GPU benchmarks on the `vulkan` or `cuda` driver (issues 8, 13): submit-to-signal for one tiny
dispatch, a 256 MiB device-local copy's GB/s, a 4096x4096 f32 matmul's GFLOP/s from portable
kernels (naive and tiled through workgroup memory), and the per-call latency of bench.models' JAX
models compiled for the device, next to IREE's own Vulkan or CUDA driver in the same run where
IREE is installed.

    python -m bench.gpu --json                  # full sizes (an NVIDIA H200 in the issue)
    python -m bench.gpu --json --quick          # small sizes (lavapipe on a CPU)
    python -m bench.gpu --json --driver cuda    # the same figures on the CUDA driver
    python -m bench.gpu --driver cuda --iree-export DIR   # IREE's CUDA modules, compiled here,
    python -m bench.gpu --json --driver cuda --iree-modules DIR   # timed where only its runtime is

On cuda the floor is also measured raw, in the same run: the same kernel launched with
cuLaunchKernel and a stream synchronise from Python, no HAL (issue 13's 10.8 us).

Every figure is a median over repeated runs. The raw floor is an empty submission signalling a
semaphore (what the driver cannot go below); the tiny dispatch is one workgroup of one
invocation incrementing one word.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
from llvmlite import ir

import fibergrid as fg
from compiler.portable import F32, kernel
from hal.buffer import BufferUsage

DEVICE_LOCAL = BufferUsage.TRANSFER | BufferUsage.DISPATCH_STORAGE
TILE = 16


@kernel(workgroup_size=1, bindings=(np.int32,), boundscheck=False)
def tiny(k):
    k.store(0, k.i32(0), k.b.add(k.load(0, k.i32(0)), k.i32(1)))


@kernel(workgroup_size=(TILE, TILE), bindings=(np.float32, np.float32, np.float32), constants=(np.uint32,), boundscheck=False)
def matmul(k):
    """c = a @ b, all n x n row-major (n a multiple of TILE); one output per invocation, the
    k loop unrolled by 4 (the portable lowering: no workgroup memory)."""
    b = k.b
    n = k.constant(0)
    row, col = k.global_id(1), k.global_id(0)
    acc = b.alloca(F32)
    b.store(ir.Constant(F32, 0.0), acc)
    arow = b.mul(row, n)
    with k.loop(0, n, step=4, name="p") as p:
        total = b.load(acc)
        for u in range(4):
            pu = b.add(p, k.i32(u))
            total = b.fadd(total, b.fmul(k.load(0, b.add(arow, pu)), k.load(1, b.add(b.mul(pu, n), col))))
        b.store(total, acc)
    k.store(2, b.add(arow, col), b.load(acc))


BM = BN = 64  # output tile of one workgroup (16 x 16 invocations, 4 x 4 outputs each)
BK = 16


@kernel(workgroup_size=(16, 16), bindings=(np.float32, np.float32, np.float32), constants=(np.uint32,), boundscheck=False,
        local_memory=4 * BK * (BM + BN), cpu=False)
def matmul_tiled(k):
    """c = a @ b for n x n (n a multiple of 64): a 64 x 64 tile per workgroup, staged through
    workgroup memory 16 columns of k at a time; invocation (x, y) keeps outputs (y + 16 i, x + 16 j)
    in registers (conflict-free reads of the tiles). GPU-only: barriers with 256 invocations."""
    b = k.b
    n = k.constant(0)
    tx, ty = k.local_id(0), k.local_id(1)
    t = b.add(tx, b.mul(ty, k.i32(16)))
    row0, col0 = b.mul(k.workgroup_id(1), k.i32(BM)), b.mul(k.workgroup_id(0), k.i32(BN))
    a_tile, b_tile = k.local_array("a", np.float32, BK * BM), k.local_array("b", np.float32, BK * BN)
    acc = [[b.alloca(F32) for _ in range(4)] for _ in range(4)]
    for row in acc:
        for slot in row:
            b.store(ir.Constant(F32, 0.0), slot)
    with k.loop(0, n, step=BK, name="k0") as k0:
        for step in range(4):  # 1024 elements of each tile, 4 per invocation
            idx = b.add(t, k.i32(256 * step))
            r, c = b.udiv(idx, k.i32(BK)), b.urem(idx, k.i32(BK))
            value = k.load(0, b.add(b.mul(b.add(row0, r), n), b.add(k0, c)))
            b.store(value, k.local_pointer(a_tile, b.add(b.mul(c, k.i32(BM)), r)))
            r, c = b.udiv(idx, k.i32(BN)), b.urem(idx, k.i32(BN))
            value = k.load(1, b.add(b.mul(b.add(k0, r), n), b.add(col0, c)))
            b.store(value, k.local_pointer(b_tile, b.add(b.mul(r, k.i32(BN)), c)))
        k.barrier()
        for kk in range(BK):
            av = [b.load(k.local_pointer(a_tile, b.add(ty, k.i32(kk * BM + 16 * i)))) for i in range(4)]
            bv = [b.load(k.local_pointer(b_tile, b.add(tx, k.i32(kk * BN + 16 * j)))) for j in range(4)]
            for i in range(4):
                for j in range(4):
                    b.store(b.fadd(b.load(acc[i][j]), b.fmul(av[i], bv[j])), acc[i][j])
        k.barrier()
    for i in range(4):
        for j in range(4):
            row = b.add(row0, b.add(ty, k.i32(16 * i)))
            col = b.add(col0, b.add(tx, k.i32(16 * j)))
            k.store(2, b.add(b.mul(row, n), col), b.load(acc[i][j]))


def _median_us(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def _run(device, cb, state: dict) -> None:
    state["v"] += 1
    device.queue_execute([cb], signal=[(state["sem"], state["v"])])
    state["sem"].wait(state["v"], 60)


def submit_to_signal(device, repeats: int) -> dict:
    sem = device.create_semaphore(0)
    state = {"sem": sem, "v": 0}
    word = device.allocator.allocate_view((1,), np.int32)
    cb = device.create_command_buffer("reusable")
    cb.dispatch(tiny, "tiny", 1, [], [word])
    cb.end()
    empty = device.create_command_buffer("reusable")
    empty.end()
    floor = _median_us(lambda: _run(device, empty, state), repeats)
    dispatch = _median_us(lambda: _run(device, cb, state), repeats)
    out = {"submit_to_signal_us": dispatch, "empty_submit_us": floor, "ratio_vs_floor": dispatch / floor}
    if device.driver == "cuda":
        raw = raw_cuda_launch(device, word, repeats)
        out.update({"raw_launch_sync_us": raw, "ratio_vs_raw_launch": dispatch / raw})
    return out


def raw_cuda_launch(device, word, repeats: int) -> float:
    """The tiny kernel launched straight through cuda.bindings (cuLaunchKernel +
    cuStreamSynchronize on the device's stream), what the driver's submit-to-signal is held to."""
    import ctypes

    from cuda.bindings import driver as cu

    exe = device.executable_for(tiny)
    state = device.allocator.allocate_buffer(64, DEVICE_LOCAL)
    args = (ctypes.c_uint64 * 2)(word.buffer.device_address, state.device_address)
    pointers = (ctypes.c_void_p * 2)(ctypes.addressof(args), ctypes.addressof(args) + 8)

    def launch() -> None:
        cu.cuLaunchKernel(exe.functions[0], 1, 1, 1, 1, 1, 1, 0, device.stream, ctypes.addressof(pointers), 0)
        cu.cuStreamSynchronize(device.stream)

    return _median_us(launch, repeats)


def copy_bandwidth(device, nbytes: int, repeats: int) -> dict:
    src = device.allocator.allocate_buffer(nbytes, DEVICE_LOCAL)
    dst = device.allocator.allocate_buffer(nbytes, DEVICE_LOCAL)
    cb = device.create_command_buffer("reusable")
    cb.copy(src, 0, dst, 0, nbytes)
    cb.end()
    state = {"sem": device.create_semaphore(0), "v": 0}
    us = _median_us(lambda: _run(device, cb, state), repeats)
    return {"copy_bytes": nbytes, "copy_us": us, "copy_GBps": nbytes / us / 1e3}


def matmul_rate(device, n: int, repeats: int, tiled: bool) -> dict:
    rng = np.random.default_rng(0)
    a_host = rng.standard_normal((n, n), dtype=np.float32)
    b_host = rng.standard_normal((n, n), dtype=np.float32)
    a, b = device.allocator.import_array(a_host), device.allocator.import_array(b_host)
    c = device.allocator.allocate_view((n, n), np.float32)
    cb = device.create_command_buffer("reusable")
    if tiled:
        cb.dispatch(matmul_tiled, "matmul_tiled", (n // BN, n // BM), [n], [a, b, c])
    else:
        cb.dispatch(matmul, "matmul", (n // TILE, n // TILE), [n], [a, b, c])
    cb.end()
    state = {"sem": device.create_semaphore(0), "v": 0}
    us = _median_us(lambda: _run(device, cb, state), repeats)
    rows = [0, n // 2, n - 1]
    got = c.to_numpy()[rows]
    want = a_host[rows].astype(np.float64) @ b_host.astype(np.float64)
    err = float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want)))))
    name = "matmul_tiled" if tiled else "matmul_naive"
    return {f"{name}_n": n, f"{name}_us": us, f"{name}_GFLOPs": 2.0 * n ** 3 / us / 1e3, f"{name}_rel_error": err}


# IREE 3.13's compiler knows no sm_90 target; its sm_89 PTX is JIT-compiled for Hopper by the
# driver, as any PTX of an older architecture is.
IREE_CUDA_TARGET = "sm_89"


def _iree_runner(vmfb: bytes, driver: str, inputs: list[np.ndarray]):
    """A compiled IREE module on IREE's own `driver` (bench.models.iree_module), checked to run
    once; None where IREE's runtime is missing or cannot run it (lavapipe refuses its
    host-memory import for some results)."""
    from bench.models import iree_module

    try:
        call = iree_module(vmfb, driver)
        call(*inputs)
    except Exception:  # noqa: BLE001 - a reference that cannot run is left out, not fatal
        return None
    return call


def _iree_compile(text: str, driver: str) -> bytes | None:
    """IREE's vmfb of a StableHLO text for its `driver` (vulkan or cuda); None without IREE's
    compiler or where it refuses the model."""
    try:
        import iree.compiler as ireec
    except ImportError:
        return None
    target = {"vulkan": ["--iree-hal-target-device=vulkan"],
              "cuda": ["--iree-hal-target-device=cuda", f"--iree-cuda-target={IREE_CUDA_TARGET}"]}[driver]
    try:
        return ireec.compile_str(text, input_type="stablehlo", extra_args=target)
    except Exception:  # noqa: BLE001
        return None


def _model_texts(names: list[str] | None):
    """(name, StableHLO text, inputs, numpy reference) of bench.models' JAX models."""
    import jax

    from bench.models import _cases

    for name, (jax_fn, np_fn, inputs) in _cases().items():
        if not names or name in names:
            yield name, jax.jit(jax_fn).lower(*inputs).as_text(), inputs, np_fn


def export_iree(folder: str, driver: str, names: list[str] | None) -> list[str]:
    """Compiles the models for IREE's `driver` into FOLDER/NAME.vmfb, for a machine that has
    IREE's runtime but not its compiler (the H200: `--iree-modules FOLDER` there)."""
    os.makedirs(folder, exist_ok=True)
    written = []
    for name, text, _, _ in _model_texts(names):
        vmfb = _iree_compile(text, driver)
        if vmfb is not None:
            with open(os.path.join(folder, f"{name}.{driver}.vmfb"), "wb") as f:
                f.write(vmfb)
            written.append(name)
    return written


def models(device, repeats: int, names: list[str] | None, iree_modules: str | None = None) -> dict:
    """Per-call latency (numpy in, numpy out) of bench.models' JAX models on this device, next
    to IREE's own driver for the same API (vulkan, cuda) in the same run, interleaved: compiled
    here where IREE's compiler imports, else read from `iree_modules` (export_iree)."""
    from bench.models import _max_rel_error
    from bench.timing import medians_us

    out: dict = {}
    iree_driver = {"vulkan": "vulkan", "cuda": "cuda"}.get(device.driver)
    for name, text, inputs, np_fn in _model_texts(names):
        try:
            module = fg.load(text, device=device)
            out[f"{name}_max_rel_error"] = _max_rel_error(module(*inputs), np_fn(*inputs))
        except fg.Error as e:
            out[f"{name}_error"] = str(e).splitlines()[0]
            continue
        calls = {"fibergrid": lambda module=module: module(*inputs)}
        iree = None
        if iree_driver is not None:
            path = os.path.join(iree_modules or "", f"{name}.{iree_driver}.vmfb")
            vmfb = open(path, "rb").read() if iree_modules and os.path.exists(path) else _iree_compile(text, iree_driver)
            iree = None if vmfb is None else _iree_runner(vmfb, iree_driver, inputs)
        if iree is not None:
            out[f"{name}_iree_max_rel_error"] = _max_rel_error(iree(*inputs), np_fn(*inputs))
            calls["iree"] = lambda: iree(*inputs)
        t = medians_us(calls, repeats)
        out[f"{name}_us"] = t["fibergrid"]
        if "iree" in t:
            out[f"{name}_iree_{iree_driver}_us"] = t["iree"]
            out[f"{name}_ratio_vs_iree"] = t["fibergrid"] / t["iree"]
    return out


H200_F32_PEAK_GFLOPS = 67_000.0  # without tensor cores (the figure)
IREE_VULKAN_BEST_US = 3_900.0  # IREE 3.13's Vulkan driver on the H200, its fastest of these models (issue 8)
IREE_CUDA_BEST_US = 500.0  # IREE 3.13's CUDA driver on the H200, its fastest of these models (issue 13: 0.5-6.6 ms)


def _bars(out: dict) -> dict:
    """Issues 8 and 13's bars from this run's figures. The models against IREE: the same-run
    ratios where IREE ran here, else IREE's fastest model on the H200 as the issues measured it
    (the peak is the H200's too)."""
    models = {k[:-3]: v for k, v in out.items() if k.endswith("_us") and not k.startswith(("matmul_", "submit", "empty", "copy", "raw_"))
              and not k.endswith(("_iree_vulkan_us", "_iree_cuda_us"))}
    same_run = {k[:-len("_ratio_vs_iree")]: v for k, v in out.items() if k.endswith("_ratio_vs_iree")}
    if same_run:
        against_iree = {"models_faster_than_iree_same_run": {name: r < 1.0 for name, r in same_run.items()},
                        "models_5x_faster_than_iree_same_run": {name: r * 5 < 1.0 for name, r in same_run.items()}}
    elif "ratio_vs_raw_launch" in out:
        against_iree = {"models_below_iree_cuda": {name: us < IREE_CUDA_BEST_US for name, us in models.items()},
                        "models_5x_below_iree_cuda": {name: us * 5 < IREE_CUDA_BEST_US for name, us in models.items()}}
    else:
        against_iree = {"models_below_iree_vulkan": {name: us < IREE_VULKAN_BEST_US for name, us in models.items()},
                        "models_10x_below_iree_vulkan": {name: us * 10 < IREE_VULKAN_BEST_US for name, us in models.items()}}
    return {
        "submit_within_2x_of_empty_submit": out["ratio_vs_floor"] <= 2.0,
        **({"submit_within_2x_of_raw_launch": out["ratio_vs_raw_launch"] <= 2.0} if "ratio_vs_raw_launch" in out else {}),
        "matmul_tiled_fraction_of_h200_peak": out.get("matmul_tiled_GFLOPs", 0.0) / H200_F32_PEAK_GFLOPS,
        **against_iree,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU Vulkan implementations)")
    parser.add_argument("--driver", default="vulkan", choices=["vulkan", "cuda", "webgpu"], help="the GPU driver to measure")
    parser.add_argument("--device", default=None, help="device index or name substring")
    parser.add_argument("--iree-modules", metavar="FOLDER", help="IREE's compiled models (from --iree-export), for a machine without IREE's compiler")
    parser.add_argument("--iree-export", metavar="FOLDER", help="only compile the models for IREE's --driver into FOLDER (needs iree-base-compiler), then exit")
    args = parser.parse_args(argv)
    if args.iree_export:
        written = export_iree(args.iree_export, args.driver, None)
        print(f"bench.gpu: {len(written)} IREE {args.driver} modules in {args.iree_export}: {', '.join(written)}", file=sys.stderr)
        return 0 if written else 2
    if args.driver not in fg.available_drivers():
        print(f"bench.gpu: no {args.driver} device on this machine (fg.available_drivers() has no '{args.driver}')", file=sys.stderr)
        return 2
    device = fg.create_device(args.driver, **({} if args.device is None else {"device": int(args.device) if args.device.isdigit() else args.device}))
    out: dict = {"driver": args.driver, "device": device.name}
    out.update(submit_to_signal(device, 50 if args.quick else 500))
    out.update(copy_bandwidth(device, (16 if args.quick else 256) << 20, 5 if args.quick else 20))
    out.update(matmul_rate(device, 256 if args.quick else 4096, 3 if args.quick else 10, tiled=False))
    out.update(matmul_rate(device, 256 if args.quick else 4096, 3 if args.quick else 10, tiled=True))
    quick_models = ["attention", "small_cnn", "integer_ops", "data_movement", "avg_pool", "mlp_b1"]
    out.update(models(device, 5 if args.quick else 50, quick_models if args.quick else None, args.iree_modules))
    out["bars"] = _bars(out)
    device.close()
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for key, value in out.items():
            print(f"{key:>24}: {value:.4g}" if isinstance(value, float) else f"{key:>24}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
