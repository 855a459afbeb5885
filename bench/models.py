"""Model benchmarks: StableHLO from JAX compiled by fibergrid and run on local-task and
local-sync, next to numpy and IREE 3.x (local-task and local-sync, where `iree-base-compiler`/
`iree-base-runtime` import) in the same run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.models --json

Weights are baked into the modules as constants (as a deployed model has them); inputs are
passed per call, numpy in and numpy out on both sides. Every figure is a median latency in
microseconds over repeated calls, the drivers measured in interleaved rounds so that a noisy
neighbour hits them alike (in each round every runtime first runs untimed for 0.1 s, so that
another runtime's lingering threads do not land on its timed calls: `bench.timing.measure`).
Per case: `<case>_ratio_vs_iree` = fibergrid's better driver / IREE's better driver (below 1:
fibergrid is faster), `<case>_task_vs_sync` = local-task / local-sync, each a ratio within
rounds (`Rounds.ratio`: the median over rounds of that round's ratio, which the VM's drift
between rounds does not move). A case the compiler cannot lower yet reports its error instead
of a figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable

import numpy as np

import fibergrid as fg
from bench.timing import measure, medians_us

RNG = np.random.default_rng(0)


def _weights(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)


def _cases() -> dict[str, tuple[Callable, Callable, list[np.ndarray]]]:
    """name -> (jax function, numpy function, inputs)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    w1, b1, w2, b2, w3, b3 = _weights(784, 1024), _weights(1024), _weights(1024, 1024), _weights(1024), _weights(1024, 10), _weights(10)

    def mlp_jax(x):
        h = jnp.maximum(x @ w1 + b1, 0.0)
        h = jnp.maximum(h @ w2 + b2, 0.0)
        return h @ w3 + b3

    def mlp_np(x):
        h = np.maximum(x @ w1 + b1, 0.0)
        h = np.maximum(h @ w2 + b2, 0.0)
        return h @ w3 + b3

    b = _weights(1024, 1024)
    filt = _weights(3, 3, 64, 64)

    def conv_jax(x):
        return lax.conv_general_dilated(x, filt, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def conv_np(x):
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))  # n,h,w,c,kh,kw
        return np.einsum("nhwckl,klco->nhwo", windows, filt, optimize=True)

    def layernorm(h, g, b):
        mean = h.mean(-1, keepdims=True)
        var = ((h - mean) ** 2).mean(-1, keepdims=True)
        return (h - mean) / jnp.sqrt(var + 1e-5) * g + b

    def layernorm_np(h, g, b):
        mean = h.mean(-1, keepdims=True)
        var = ((h - mean) ** 2).mean(-1, keepdims=True)
        return (h - mean) / np.sqrt(var + 1e-5) * g + b

    wq, wk, wv, wo = (_weights(128, 128) for _ in range(4))
    g, beta = np.ones(128, np.float32), np.zeros(128, np.float32)

    def attention_jax(x):
        h = layernorm(x, g, beta)
        q, k, v = h @ wq, h @ wk, h @ wv
        p = jax.nn.softmax(q @ k.T / np.sqrt(128.0).astype(np.float32), axis=-1)
        return x + (p @ v) @ wo

    def attention_np(x):
        h = layernorm_np(x, g, beta)
        q, k, v = h @ wq, h @ wk, h @ wv
        s = q @ k.T / np.float32(np.sqrt(128.0))
        p = np.exp(s - s.max(-1, keepdims=True))
        return x + ((p / p.sum(-1, keepdims=True)) @ v) @ wo

    c1, c2, wd = _weights(3, 3, 3, 16), _weights(3, 3, 16, 32), _weights(32, 10)

    def cnn_jax(x):
        dn = ("NHWC", "HWIO", "NHWC")
        h = jax.nn.relu(lax.conv_general_dilated(x, c1, (1, 1), "SAME", dimension_numbers=dn))
        h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        h = jax.nn.relu(lax.conv_general_dilated(h, c2, (1, 1), "SAME", dimension_numbers=dn))
        return h.mean(axis=(1, 2)) @ wd

    def cnn_np(x):
        def conv(x, f):
            padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
            return np.einsum("nhwckl,klco->nhwo", windows, f, optimize=True)
        h = np.maximum(conv(x, c1), 0)
        n, hh, ww, c = h.shape
        h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
        h = np.maximum(conv(h, c2), 0)
        return h.mean(axis=(1, 2)) @ wd

    def integer_jax(a, b):
        mixed = (a * 3 + b) >> 1
        picked = jnp.where(a > b, mixed, b - a) ^ (a & 0xFF)
        return jnp.clip(picked, -1000, 1000), jnp.sum(picked % 7, axis=1)

    def integer_np(a, b):
        mixed = (a * 3 + b) >> 1
        picked = np.where(a > b, mixed, b - a) ^ (a & 0xFF)
        return np.clip(picked, -1000, 1000), np.sum(np.remainder(picked, 7), axis=1, dtype=np.int32)

    def movement_jax(x):
        t = jnp.transpose(x, (1, 0))
        cat = jnp.concatenate([x[:, ::2], t[:, 1::2]], axis=0)
        return jnp.pad(cat[::-1], ((1, 1), (2, 2))), jnp.reshape(t[:32], (16, 256))

    def movement_np(x):
        t = np.transpose(x, (1, 0))
        cat = np.concatenate([x[:, ::2], t[:, 1::2]], axis=0)
        return np.pad(cat[::-1], ((1, 1), (2, 2))), np.reshape(t[:32], (16, 256))

    def avgpool_jax(x):
        return lax.reduce_window(x, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4.0

    def avgpool_np(x):
        n, h, w, c = x.shape
        return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))

    f32, i32 = np.float32, np.int32
    return {
        "attention": (attention_jax, attention_np, [RNG.standard_normal((64, 128)).astype(f32)]),
        "small_cnn": (cnn_jax, cnn_np, [RNG.standard_normal((1, 32, 32, 3)).astype(f32)]),
        "integer_ops": (integer_jax, integer_np, [RNG.integers(-5000, 5000, (64, 64)).astype(i32), RNG.integers(-5000, 5000, (64, 64)).astype(i32)]),
        "data_movement": (movement_jax, movement_np, [RNG.standard_normal((128, 128)).astype(f32)]),
        "avg_pool": (avgpool_jax, avgpool_np, [RNG.standard_normal((1, 32, 32, 16)).astype(f32)]),
        "mlp_b1": (mlp_jax, mlp_np, [RNG.standard_normal((1, 784)).astype(f32)]),
        "mlp_b64": (mlp_jax, mlp_np, [RNG.standard_normal((64, 784)).astype(f32)]),
        "matmul_1024": (lambda x: x @ b, lambda x: x @ b, [RNG.standard_normal((1024, 1024)).astype(f32)]),
        "conv2d": (conv_jax, conv_np, [RNG.standard_normal((1, 56, 56, 64)).astype(f32)]),
    }

SMALL = ("attention", "small_cnn", "integer_ops", "data_movement", "avg_pool", "mlp_b1", "mlp_b64")


def iree_module(vmfb: bytes, driver: str) -> Callable:
    """@main of a compiled IREE module on IREE's own `driver`, numpy in and numpy out."""
    import iree.runtime as ireert

    ctx = ireert.SystemContext(config=ireert.Config(driver))
    ctx.add_vm_module(ireert.VmModule.copy_buffer(ctx.instance, vmfb))
    fn = getattr(ctx.modules, [name for name in ctx.modules if name != "hal"][0])["main"]

    def call(*args):
        out = fn(*args)
        return tuple(np.asarray(o) for o in out) if isinstance(out, (list, tuple)) else np.asarray(out)

    return call


def _iree_callable(text: str, driver: str) -> Callable | None:
    """IREE 3.x on `driver` (local-task or local-sync), compiled for the host CPU, numpy in and
    numpy out; None when IREE is not installed."""
    try:
        import iree.compiler as ireec

        vmfb = ireec.compile_str(text, target_backends=["llvm-cpu"], input_type="stablehlo", extra_args=["--iree-llvmcpu-target-cpu=host"])
        return iree_module(vmfb, driver)
    except ImportError:
        return None


def _max_rel_error(got, expected) -> float:
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    worst = 0.0
    for g, e in zip(got, expected, strict=True):
        e = np.asarray(e, np.float64)
        worst = max(worst, float(np.max(np.abs(np.asarray(g, np.float64) - e), initial=0.0) / max(1e-6, float(np.max(np.abs(e), initial=0.0)))))
    return worst


def run(repeats: int, cases: list[str] | None, iree: bool) -> dict:
    import jax

    out: dict = {}
    devices = {"task": fg.create_device("local-task"), "sync": fg.create_device("local-sync")}
    for name, (jax_fn, np_fn, inputs) in _cases().items():
        if cases and name not in cases:
            continue
        text = jax.jit(jax_fn).lower(*inputs).as_text()
        expected = np_fn(*inputs)
        # numpy apart, first: OpenBLAS's threads spin for a long while after each call, which
        # would take a core from whatever ran next in an interleaved round.
        out[f"{name}_numpy_us"] = medians_us({"numpy": lambda: np_fn(*inputs)}, repeats)["numpy"]
        calls: dict[str, Callable[[], object]] = {}
        try:
            for key, device in devices.items():
                module = fg.load(text, device=device)
                out[f"{name}_{key}_max_rel_error"] = _max_rel_error(module(*inputs), expected)
                calls[key] = lambda module=module: module(*inputs)
        except fg.Error as e:
            out[f"{name}_error"] = str(e).splitlines()[0]
            continue
        if iree:
            for key in ("task", "sync"):
                call = _iree_callable(text, f"local-{key}")
                if call is not None:
                    calls[f"iree_{key}"] = lambda call=call: call(*inputs)
        time.sleep(0.2)  # let OpenBLAS's threads go back to sleep
        timed = measure(calls, repeats)
        t = timed.medians_us()
        ours = min(("task", "sync"), key=t.__getitem__)
        out[f"{name}_us"] = t[ours]
        out[f"{name}_task_us"], out[f"{name}_sync_us"] = t["task"], t["sync"]
        out[f"{name}_task_vs_sync"] = timed.ratio("task", "sync")
        out[f"{name}_vs_numpy"] = out[f"{name}_us"] / out[f"{name}_numpy_us"]
        if "iree_task" in t:
            out[f"{name}_iree_task_us"], out[f"{name}_iree_sync_us"] = t["iree_task"], t["iree_sync"]
            out[f"{name}_ratio_vs_iree"] = timed.ratio(ours, min(("iree_task", "iree_sync"), key=t.__getitem__))
    for device in devices.values():
        device.close()
    ratios = {k: v for k, v in out.items() if k.endswith("_ratio_vs_iree")}
    if ratios:
        out["bars"] = {
            "faster_than_iree_everywhere": all(v < 1.0 for v in ratios.values()),
            "task_within_1.1x_of_sync_on_small": all(out[f"{c}_task_vs_sync"] <= 1.1 for c in SMALL if f"{c}_task_vs_sync" in out),
            "task_1.8x_faster_on_matmul_1024": out.get("matmul_1024_task_vs_sync", 1.0) <= 1 / 1.8,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default is a table)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--case", action="append", help=f"run only these cases ({', '.join(SMALL)}, matmul_1024, conv2d)")
    parser.add_argument("--no-iree", action="store_true", help="skip IREE even where it is installed")
    args = parser.parse_args(argv)
    result = run(args.repeats, args.case, not args.no_iree)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:34s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
