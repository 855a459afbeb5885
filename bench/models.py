"""Model benchmarks: StableHLO from JAX compiled by fibergrid and run on local-task, next to
numpy (and IREE 3.x local-task where `iree-base-compiler`/`iree-base-runtime` import) in the
same run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.models --json

Weights are baked into the modules as constants (as a deployed model has them); inputs are
passed per call. Every figure is a median latency in microseconds over repeated calls; a case
the compiler cannot lower yet reports its error instead of a figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Callable

import numpy as np

import fibergrid as fg

RNG = np.random.default_rng(0)


def _weights(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)


def _cases() -> dict[str, tuple[Callable, Callable, list[np.ndarray]]]:
    """name -> (jax function, numpy function, inputs)."""
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

    f32 = np.float32
    return {
        "mlp_b1": (mlp_jax, mlp_np, [RNG.standard_normal((1, 784)).astype(f32)]),
        "mlp_b64": (mlp_jax, mlp_np, [RNG.standard_normal((64, 784)).astype(f32)]),
        "matmul_1024": (lambda x: x @ b, lambda x: x @ b, [RNG.standard_normal((1024, 1024)).astype(f32)]),
        "conv2d": (conv_jax, conv_np, [RNG.standard_normal((1, 56, 56, 64)).astype(f32)]),
    }


def median_us(call: Callable[[], object], repeats: int, min_seconds: float = 0.2) -> float:
    """Median of `repeats` calls after a warm-up, with at least `min_seconds` of samples."""
    call()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
        if len(samples) >= 50 * repeats:
            break
    return statistics.median(samples) * 1e6


def _iree_callable(text: str) -> Callable | None:
    """IREE 3.x on its local-task driver, compiled for the host CPU; None when not installed."""
    try:
        import iree.compiler as ireec
        import iree.runtime as ireert
    except ImportError:
        return None
    vmfb = ireec.compile_str(text, target_backends=["llvm-cpu"], input_type="stablehlo", extra_args=["--iree-llvmcpu-target-cpu=host"])
    ctx = ireert.SystemContext(config=ireert.Config("local-task"))
    ctx.add_vm_module(ireert.VmModule.copy_buffer(ctx.instance, vmfb))
    module_name = [name for name in ctx.modules if name != "hal"][0]
    return getattr(ctx.modules, module_name)["main"]


def run(repeats: int, cases: list[str] | None, iree: bool) -> dict:
    import jax

    out: dict = {}
    device = fg.create_device("local-task")
    for name, (jax_fn, np_fn, inputs) in _cases().items():
        if cases and name not in cases:
            continue
        text = jax.jit(jax_fn).lower(*inputs).as_text()
        expected = np_fn(*inputs)
        out[f"{name}_numpy_us"] = median_us(lambda: np_fn(*inputs), repeats)
        try:
            module = fg.load(text, device=device)
            got = np.asarray(module(*inputs))
            err = float(np.max(np.abs(got - expected)) / max(1e-6, float(np.max(np.abs(expected)))))
            out[f"{name}_us"] = median_us(lambda: module(*inputs), repeats)
            out[f"{name}_vs_numpy"] = out[f"{name}_us"] / out[f"{name}_numpy_us"]
            out[f"{name}_max_rel_error"] = err
        except fg.Error as e:
            out[f"{name}_error"] = str(e).splitlines()[0]
        if iree:
            call = _iree_callable(text)
            if call is not None:
                out[f"{name}_iree_us"] = median_us(lambda: np.asarray(call(*inputs)), repeats)
    device.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default is a table)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--case", action="append", help="run only these cases (mlp_b1, mlp_b64, matmul_1024, conv2d)")
    parser.add_argument("--no-iree", action="store_true", help="skip IREE even where it is installed")
    args = parser.parse_args(argv)
    result = run(args.repeats, args.case, not args.no_iree)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:28s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
