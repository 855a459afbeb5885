"""Dynamic batch dims: what a call at a new batch size costs, compiled per shape (before) and
compiled once for every size (after, compiler/dynamic.py), and what a steady call costs against a
static compile of the same shape, in the same run.

    python -m bench.dynamic [--json] [--device local-task] [--calls 200]

Models: an MLP (256-1024-1024-16) and a transformer block (T=16, D=64, 4 heads), both exported
with `jax.export` and a symbolic batch. Every compile is real: the run uses a fresh compile
cache. "first call" is the first call at each batch size (per shape: a compile of that shape;
once: sizing buffers, recording a command buffer); "steady" the median call at one batch size
after warm-up; the ratio is dynamic / static.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

NEW_BATCHES = (1, 3, 8, 17, 32, 64, 100, 256)
STEADY_BATCHES = (1, 64)


def models():
    """(jax, {name: (function, its jax.export shape spec, an input row's shape)}): the models
    measured here, which tests/compiler/test_dynamic_once.py checks against JAX too."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)

    def weights(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    w1, w2, w3 = weights(256, 1024), weights(1024, 1024), weights(1024, 16)

    def mlp(x):
        return jax.nn.softmax(jax.nn.relu(jax.nn.relu(x @ w1) @ w2) @ w3)

    t, d, h = 16, 64, 4
    wq, wk, wv, wo = (weights(d, d) for _ in range(4))
    wu, wd = weights(d, 4 * d), weights(4 * d, d)

    def norm(x):
        m = x.mean(-1, keepdims=True)
        return (x - m) / jnp.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + 1e-5)

    def block(x):
        b = x.shape[0]
        y = norm(x)
        q, k, v = ((y @ w).reshape(b, t, h, d // h).transpose(0, 2, 1, 3) for w in (wq, wk, wv))
        a = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // h), axis=-1)
        x = x + (a @ v).transpose(0, 2, 1, 3).reshape(b, t, d) @ wo
        return x + jax.nn.gelu(norm(x) @ wu) @ wd

    return jax, {"mlp": (mlp, "b, 256", (256,)), "transformer_block": (block, "b, 16, 64", (t, d))}


def _load(program, tmp: str, name: str, device):
    import fibergrid as fg
    from compiler import executable

    path = os.path.join(tmp, name + ".fgx")
    executable.save(program, path)
    return fg.load(path, device)


def _median_call(fn, x, calls: int) -> float:
    for _ in range(5):
        fn(x)
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(x)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def measure(device_name: str, calls: int) -> dict:
    import fibergrid as fg
    from compiler import executable

    jax, cases = models()
    device = fg.default_device(device_name)
    out: dict = {"device": device_name, "new_batches": list(NEW_BATCHES), "calls": calls, "models": {}}
    rng = np.random.default_rng(1)
    for name, (f, spec, row) in cases.items():
        text = jax.export.export(jax.jit(f))(
            jax.ShapeDtypeStruct(jax.export.symbolic_shape(spec), np.float32)).mlir_module()
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["FIBERGRID_CACHE_DIR"] = os.path.join(tmp, "cache")
            t0 = time.perf_counter()
            once = _load(executable.build(text), tmp, "once", device)
            compile_once_s = time.perf_counter() - t0
            per_shape = _load(executable.build(text, dynamic=False), tmp, "per_shape", device)
            assert once.main.dynamic and not per_shape.main.dynamic
            first: dict[str, list[float]] = {"per_shape_ms": [], "once_ms": []}
            for batch in NEW_BATCHES:
                x = rng.standard_normal((batch, *row)).astype(np.float32)
                for key, model in (("per_shape_ms", per_shape), ("once_ms", once)):
                    t0 = time.perf_counter()
                    model(x)
                    first[key].append(round((time.perf_counter() - t0) * 1e3, 2))
            steady = {}
            for batch in STEADY_BATCHES:
                x = rng.standard_normal((batch, *row)).astype(np.float32)
                static = fg.load(jax.jit(f).lower(x).as_text(), device)
                np.testing.assert_allclose(once(x), static(x), rtol=1e-4, atol=1e-5)
                d, s = _median_call(once, x, calls), _median_call(static, x, calls)
                steady[str(batch)] = {"dynamic_us": round(d * 1e6, 1), "static_us": round(s * 1e6, 1),
                                      "ratio": round(d / s, 3)}
        out["models"][name] = {
            "compile_once_s": round(compile_once_s, 2),
            "first_call": {**first, "per_shape_median_ms": statistics.median(first["per_shape_ms"]),
                           "once_median_ms": statistics.median(first["once_ms"])},
            "steady": steady,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="local-task")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="JSON only (the default prints it indented too)")
    args = parser.parse_args(argv)
    result = measure(args.device, args.calls)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
