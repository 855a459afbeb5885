"""The machine's limits a kernel is measured against: peak f32 FMA throughput and memory
bandwidth, each for one worker and for all of them (the CPUs this process may run on).

Both probes are native code generated here with llvmlite for the host's widest vector ISA
(`jit.vector_width_f32()`), called through ctypes (which releases the GIL) on one thread per
worker:

- peak: a register-resident loop of independent `llvm.fma` chains, enough of them to cover the
  FMA latency on every FMA port (16 vector accumulators with 32 vector registers, 12 with 16),
  no loads or stores in the loop;
- bandwidth: a vector copy between two buffers far larger than the last-level cache, counted as
  bytes read + bytes written, with non-temporal stores (the machine's limit: a plain store
  also reads the line it writes) and with plain stores (what the generated kernels do; reported
  beside it).
"""

from __future__ import annotations

import ctypes
import os
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
from llvmlite import ir

from compiler.codegen.llvm_cpu import jit
from compiler.codegen.llvm_cpu.abi_builder import F32, I64, fma, for_range, splat, vector

FMA_ITERATIONS = 20_000_000  # per call: ~0.1-0.3 s at a few hundred GFLOP/s
COPY_BYTES = 512 << 20  # per buffer: beyond any last-level cache the project's machines have


def workers() -> int:
    """The CPUs this process may run on (taskset/cgroup aware)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _accumulators(lanes: int) -> int:
    return 16 if lanes >= 16 else 12


def _probe_module() -> tuple[jit.JitModule, int]:
    """`float fma_loop(i64 n)` and `void copy(float* dst, float* src, i64 n)`."""
    lanes = jit.vector_width_f32()
    module = ir.Module()
    # x and y are arguments: with constants LLVM proves the chains reach a fixed point and folds
    # the loop away.
    fn = ir.Function(module, ir.FunctionType(F32, [I64, F32, F32]), "fma_loop")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    acc_count = _accumulators(lanes)
    slots = [b.alloca(vector(lanes)) for _ in range(acc_count)]
    for i, slot in enumerate(slots):
        b.store(splat(b, ir.Constant(F32, 1.0 + i * 1e-3), lanes), slot)
    x, y = splat(b, fn.args[1], lanes), splat(b, fn.args[2], lanes)
    with for_range(b, 0, fn.args[0], name="i"):
        for slot in slots:
            b.store(fma(b, b.load(slot), x, y), slot)
    total = b.load(slots[0])
    for slot in slots[1:]:
        total = b.fadd(total, b.load(slot))
    b.ret(b.extract_element(total, ir.Constant(ir.IntType(32), 0)))

    fp = F32.as_pointer()
    nontemporal = module.add_metadata([ir.Constant(ir.IntType(32), 1)])
    for name, streaming in (("copy", False), ("copy_nt", True)):
        copy = ir.Function(module, ir.FunctionType(ir.VoidType(), [fp, fp, I64]), name)
        copy.args[0].add_attribute("noalias")
        copy.args[1].add_attribute("noalias")
        b = ir.IRBuilder(copy.append_basic_block("entry"))
        vp = vector(lanes).as_pointer()
        with for_range(b, 0, copy.args[2], step=lanes, name="i") as i:
            src = b.bitcast(b.gep(copy.args[1], [i]), vp)
            dst = b.bitcast(b.gep(copy.args[0], [i]), vp)
            store = b.store(b.load(src, align=64), dst, align=64)
            if streaming:
                store.set_metadata("nontemporal", nontemporal)
        b.ret_void()
    return jit.compile_ir(str(module)), acc_count * lanes


def _on_threads(count: int, work: Callable[[int], None]) -> float:
    """Seconds for `count` threads to each run `work(thread index)`, started together."""
    start = threading.Barrier(count + 1)

    def run(index: int) -> None:
        start.wait()
        work(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def measure(repeats: int = 5) -> dict:
    """{"peak_gflops": {"1": .., "all": ..}, "bandwidth_gbs": {..}, ...}: medians of `repeats`."""
    module, flops_per_iteration = _probe_module()
    fma_loop = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64, ctypes.c_float, ctypes.c_float)(module.address("fma_loop"))
    copy_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    copies = {name: copy_type(module.address(name)) for name in ("copy", "copy_nt")}
    count = workers()
    floats = COPY_BYTES // 4 // count // 64 * 64  # per thread
    src = np.ones(floats * count + 16, np.float32)
    dst = np.zeros_like(src)
    base_src, base_dst = (src.ctypes.data + 63) // 64 * 64, (dst.ctypes.data + 63) // 64 * 64

    def peak(threads: int) -> float:
        fma_loop(FMA_ITERATIONS // 20, 0.999999, 1e-6)  # warm the clock up
        seconds = statistics.median(_on_threads(threads, lambda _: fma_loop(FMA_ITERATIONS, 0.999999, 1e-6))
                                    for _ in range(repeats))
        return threads * FMA_ITERATIONS * flops_per_iteration * 2 / seconds / 1e9

    def bandwidth(threads: int, kind: str = "copy_nt") -> float:
        share = floats * count // threads // 64 * 64
        copy = copies[kind]

        def part(i: int) -> None:
            copy(base_dst + 4 * i * share, base_src + 4 * i * share, share)

        part(0)
        seconds = statistics.median(_on_threads(threads, part) for _ in range(repeats))
        return 2 * 4 * share * threads / seconds / 1e9

    return {
        "workers": count,
        "vector_lanes": jit.vector_width_f32(),
        "peak_gflops": {"1": round(peak(1), 1), "all": round(peak(count), 1)},
        "bandwidth_gbs": {"1": round(bandwidth(1), 1), "all": round(bandwidth(count), 1)},
        "plain_store_copy_gbs": {"1": round(bandwidth(1, "copy"), 1), "all": round(bandwidth(count, "copy"), 1)},
        "copy_bytes": 2 * COPY_BYTES,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(measure()))
