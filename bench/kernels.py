"""Kernel cases against the machine's roofline, next to numpy/OpenBLAS and IREE in the same run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.kernels --json

The machine's limits are measured once (`bench.roofline`: peak f32 FMA throughput and copy
bandwidth, for one worker and for all). Each case is a JAX function lowered to StableHLO,
loaded with `fg.load` (weights baked in as constants) and run on local-sync (one worker) and
local-task (all workers), results written into preallocated `out` arrays; numpy runs with
OpenBLAS at 1 and at all threads; IREE (where `iree.compiler`/`iree.runtime` import) on
local-sync and local-task. All figures are medians of interleaved rounds (`bench.timing.measure`),
except numpy on all threads, measured just before (OpenBLAS's spinning threads would take cores
from whatever ran next); the ratios of runtimes timed in the same rounds are ratios within
rounds (`Rounds.ratio`, which the VM's drift between rounds does not move).

Per case: its FLOPs (XLA's cost analysis of the JAX function) and its compulsory bytes (inputs +
outputs + constants, each touched once); the roofline time `max(flops / peak, bytes / bandwidth)`
for the worker count; `roofline_fraction` = that time / the measured time (1.0 = at the limit),
and `vs_numpy` = fibergrid's time / numpy's at the same thread count (below 1: faster). The
bandwidth is DRAM's (a copy far beyond the last-level cache): a case whose data stay in cache
between calls (the MLP's weights) can pass 1.0 of its memory roof.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import numpy as np

import fibergrid as fg
from bench import roofline
from bench.matmul_kernels import _openblas_threads
from bench.models import _cases as model_cases
from bench.models import _iree_callable, _max_rel_error, _weights
from bench.timing import measure, medians_us

RNG = np.random.default_rng(1)
F32 = np.float32


def _cases() -> dict[str, tuple[Callable, Callable, list[np.ndarray]]]:
    """name -> (jax function, numpy function, inputs): the kernel classes of issue #12."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    models = model_cases()
    b2048 = _weights(2048, 2048)
    dn = ("NHWC", "HWIO", "NHWC")
    depthwise = _weights(3, 3, 1, 128)
    pointwise = _weights(1, 1, 64, 256)

    def windows_np(x: np.ndarray, k: int) -> np.ndarray:
        pad = k // 2
        padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        return np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))  # n,h,w,c,kh,kw

    def softmax_np(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    gamma, beta = _weights(1024), _weights(1024)

    def layernorm_jax(x):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) * lax.rsqrt(var + 1e-5) * gamma + beta

    def layernorm_np(x):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * gamma + beta

    def chain(x, y, m):
        return m.maximum(x * 0.5 + y * y - 1.0, 0.0) * x + y

    rows = RNG.standard_normal((16384, 1024)).astype(F32)
    cases = {name: models[name] for name in ("matmul_1024",)}
    cases["matmul_2048"] = (lambda x: x @ b2048, lambda x: x @ b2048, [RNG.standard_normal((2048, 2048)).astype(F32)])
    cases |= {name: models[name] for name in ("mlp_b1", "mlp_b64")}
    cases["conv3x3"] = models["conv2d"]
    cases["conv_depthwise3x3"] = (
        lambda x: lax.conv_general_dilated(x, depthwise, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=128),
        lambda x: np.einsum("nhwckl,klc->nhwc", windows_np(x, 3), depthwise[:, :, 0, :], optimize=True),
        [RNG.standard_normal((1, 56, 56, 128)).astype(F32)])
    cases["conv1x1"] = (
        lambda x: lax.conv_general_dilated(x, pointwise, (1, 1), "SAME", dimension_numbers=dn),
        lambda x: (x.reshape(-1, 64) @ pointwise[0, 0]).reshape(1, 56, 56, 256),
        [RNG.standard_normal((1, 56, 56, 64)).astype(F32)])
    cases["softmax_1024"] = (lambda x: jax.nn.softmax(x, axis=-1), softmax_np, [rows])
    cases["layernorm_1024"] = (layernorm_jax, layernorm_np, [rows])
    big = [RNG.standard_normal((4096, 4096)).astype(F32) for _ in range(2)]
    cases["elementwise_16m"] = (lambda x, y: chain(x, y, jnp), lambda x, y: chain(x, y, np), big)
    cases["attention"] = models["attention"]
    return cases


def _flops(jax_fn: Callable, inputs: list[np.ndarray]) -> float:
    """XLA's CPU count: where JAX's default device is a GPU, a matmul is a cuBLAS call that
    XLA's cost analysis counts as -1 flops."""
    import jax

    with jax.default_device(jax.devices("cpu")[0]):
        cost = jax.jit(jax_fn).lower(*inputs).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0))


def _case(name: str, jax_fn: Callable, np_fn: Callable, inputs: list[np.ndarray], limits: dict,
          devices: dict[str, object], repeats: int, iree: bool) -> dict:
    import jax

    text = jax.jit(jax_fn).lower(*inputs).as_text()
    expected = np_fn(*inputs)
    outputs = expected if isinstance(expected, tuple) else (expected,)
    row: dict = {"case": name, "flops": _flops(jax_fn, inputs)}
    calls: dict[str, Callable[[], object]] = {}
    try:
        for key, device in devices.items():
            module = fg.load(text, device=device)
            # C order, as a caller's buffers are: np.einsum's results (the conv references) are views in
            # another order, and empty_like kept it, so every fibergrid call ended in a strided copy
            out = [np.empty(o.shape, o.dtype) for o in outputs]
            got = module(*inputs, out=out)
            row[f"{key}_max_rel_error"] = _max_rel_error(got if isinstance(got, tuple) else (got,), outputs)
            calls[key] = lambda module=module, out=out: module(*inputs, out=out)
        constants = sum(t.value.nbytes for t in module.compiled.tensors if t.kind == "constant")
    except fg.Error as e:
        row["error"] = str(e).splitlines()[0]
        return row
    row["bytes"] = sum(a.nbytes for a in inputs) + sum(o.nbytes for o in outputs) + constants
    if iree:
        for key in ("sync", "task"):
            try:
                call = _iree_callable(text, f"local-{key}")
            except Exception as e:  # noqa: BLE001 (IREE's compiler raises its own errors)
                row["iree_error"] = str(e).splitlines()[0][:200]
                break
            if call is not None:
                calls[f"iree_{key}"] = lambda call=call: call(*inputs)
    # numpy on all threads apart, first: OpenBLAS's threads spin for a while after each call.
    # On one thread it spins nothing, so it joins the interleaved rounds (a noisy neighbour then
    # slows it and fibergrid alike).
    _openblas_threads(limits["workers"])
    row["numpy_task_us"] = medians_us({"numpy": lambda: np_fn(*inputs)}, repeats)["numpy"]
    _openblas_threads(1)
    time.sleep(0.2)
    timed = measure(calls | {"numpy_sync": lambda: np_fn(*inputs)}, repeats)
    t = timed.medians_us()
    row["numpy_sync_us"] = t["numpy_sync"]
    for key, count in (("sync", "1"), ("task", "all")):
        peak, bandwidth = limits["peak_gflops"][count] * 1e9, limits["bandwidth_gbs"][count] * 1e9
        bound = max(row["flops"] / peak, row["bytes"] / bandwidth)
        row[f"{key}_us"] = round(t[key], 1)
        row[f"{key}_bound"] = "compute" if row["flops"] / peak >= row["bytes"] / bandwidth else "memory"
        row[f"{key}_roofline_fraction"] = round(bound * 1e6 / t[key], 3)
        # (numpy on all threads ran apart: that ratio is of medians, the others within rounds)
        row[f"{key}_vs_numpy"] = round(timed.ratio(key, "numpy_sync") if key == "sync" else t[key] / row["numpy_task_us"], 3)
        if f"iree_{key}" in t:
            row[f"iree_{key}_us"] = round(t[f"iree_{key}"], 1)
            row[f"{key}_vs_iree"] = round(timed.ratio(key, f"iree_{key}"), 3)
            row[f"iree_{key}_roofline_fraction"] = round(bound * 1e6 / t[f"iree_{key}"], 3)
    return row


def run(repeats: int, names: list[str] | None, iree: bool) -> dict:
    limits = roofline.measure()
    devices = {"sync": fg.create_device("local-sync"),
               "task": fg.create_device("local-task", workers=limits["workers"])}
    rows = []
    try:
        for name, (jax_fn, np_fn, inputs) in _cases().items():
            if names and name not in names:
                continue
            print(f"bench.kernels: {name}", file=sys.stderr, flush=True)
            rows.append(_case(name, jax_fn, np_fn, inputs, limits, devices, repeats, iree))
    finally:
        for device in devices.values():
            device.close()
    return {"limits": limits, "cases": rows, "bars": bars(rows)}


def bars(rows: list[dict]) -> dict[str, bool]:
    """Issue #12's bars, where this run measured the case: GEMM and the MLP at least as fast as
    numpy (1 and all workers), convolutions at >= 60 % of peak, the memory-bound cases at >= 70 %
    of bandwidth, attention 1.5x faster than IREE's better driver."""
    by = {row["case"]: row for row in rows if "error" not in row}
    out = {}
    for case in ("matmul_1024", "matmul_2048", "mlp_b1", "mlp_b64"):
        if case in by:
            out[f"{case}_not_slower_than_numpy"] = all(by[case][f"{k}_vs_numpy"] <= 1.0 for k in ("sync", "task"))
    for case, fraction in (("conv3x3", 0.6), ("conv_depthwise3x3", 0.6), ("conv1x1", 0.6),
                           ("softmax_1024", 0.7), ("layernorm_1024", 0.7), ("elementwise_16m", 0.7)):
        if case in by:
            out[f"{case}_at_{fraction:.0%}_of_roof"] = by[case]["task_roofline_fraction"] >= fraction
    if "attention" in by and "iree_task_us" in by["attention"]:
        best_iree = min(by["attention"]["iree_task_us"], by["attention"]["iree_sync_us"])
        out["attention_1.5x_faster_than_iree"] = min(by["attention"]["task_us"], by["attention"]["sync_us"]) * 1.5 <= best_iree
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default is a table)")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per figure (median)")
    parser.add_argument("--case", action="append", help="run only these cases")
    parser.add_argument("--no-iree", action="store_true", help="skip IREE even where it is installed")
    args = parser.parse_args(argv)
    result = run(args.repeats, args.case, not args.no_iree)
    if args.json:
        print(json.dumps(result))
        return 0
    print(json.dumps(result["limits"]))
    print(json.dumps(result["bars"]))
    for row in result["cases"]:
        if "error" in row:
            print(f"{row['case']:<20} error: {row['error']}")
            continue
        print(f"{row['case']:<20} " + "  ".join(
            f"{k}: {row[f'{k}_us']:9.1f} us  {row[f'{k}_roofline_fraction']:5.2f} of {row[f'{k}_bound']} roof"
            f"  vs numpy {row[f'{k}_vs_numpy']:5.2f}" + (f"  vs iree {row[f'{k}_vs_iree']:5.2f}" if f"{k}_vs_iree" in row else "")
            for k in ("sync", "task")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
