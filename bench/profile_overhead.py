"""What profiling costs: the bench.models cases with tracing off and on, in the same run.

    python -m bench.profile_overhead --json [--case mlp_b1] [--blocks 10] [--calls 20]

"on" is what `fibergrid profile` turns on by default: the scheduler's trace rings (one event per
workgroup reservation, written by the workers; nothing runs per call in Python). "host" adds
--host-timing's Python timestamps of every submission and host wait. Off, on and host alternate
in blocks of calls on one loaded module, so all see the same machine state (the machine is shared
and noisy); the figures are ratios of the medians per call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

import fibergrid as fg
from bench.models import _cases
from fibergrid.profile.collect import Recorder


def _block(call, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return samples


def measure(module, inputs: list[np.ndarray], device, blocks: int, calls: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {"off": [], "on": [], "host": []}
    call = lambda: module(*inputs)  # noqa: E731
    call()
    for _ in range(blocks):
        samples["off"] += _block(call, calls)
        for mode, host_timing in (("on", False), ("host", True)):
            recorder = Recorder(host_timing=host_timing)
            recorder.attach(device)
            call()  # untimed: the first traced call
            samples[mode] += _block(call, calls)
            recorder.detach()
    med = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
    return {"off_us": round(med["off"], 2), "on_us": round(med["on"], 2), "host_timing_us": round(med["host"], 2),
            "overhead": round(med["on"] / med["off"] - 1, 4), "host_timing_overhead": round(med["host"] / med["off"] - 1, 4)}


def run(cases: list[str] | None, blocks: int, calls: int, local_memory: int) -> dict:
    import jax

    out: dict = {}
    # More local memory than the default where asked: the matmul kernels of mlp_b64 and
    # matmul_1024 need more than 256 KiB on AVX-512 hosts; the figure is a ratio either way.
    device = fg.create_device("local-task", local_memory_size=local_memory)
    for name, (jax_fn, _, inputs) in _cases().items():
        if cases and name not in cases:
            continue
        try:
            module = fg.load(jax.jit(jax_fn).lower(*inputs).as_text(), device=device)
            out[name] = measure(module, inputs, device, blocks, calls)
        except fg.Error as e:
            out[name] = {"error": str(e).splitlines()[0]}
    device.close()
    ratios = [v["overhead"] for v in out.values() if "overhead" in v]
    out["max_overhead"] = max(ratios) if ratios else None
    out["median_overhead"] = statistics.median(ratios) if ratios else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default is a table)")
    parser.add_argument("--case", action="append", help="only these bench.models cases")
    parser.add_argument("--blocks", type=int, default=10, help="off/on block pairs (default: 10)")
    parser.add_argument("--calls", type=int, default=20, help="calls per block (default: 20)")
    parser.add_argument("--local-memory", type=int, default=1 << 20, help="device local memory bytes (default: 1 MiB)")
    args = parser.parse_args(argv)
    result = run(args.case, args.blocks, args.calls, args.local_memory)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:14s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
