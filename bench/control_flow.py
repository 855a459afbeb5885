"""What a loop iteration costs: `lax.while_loop` / `fori_loop` of trivial bodies, fibergrid against
JAX's jit on the CPU, in the same run.

    python -m bench.control_flow [--iterations 1000] [--calls 20] [--devices local-task,local-sync,vulkan]

Three loops: a `while_loop` whose bound is an argument (nobody knows the trip count before
running it), a `fori_loop` with the trip count as an argument, and a `scan` (its length, so its
trip count, is static: the program is lowered once per length). Each call is timed end to end
(numpy in, numpy out); the per-iteration cost is (median call at N iterations - median call at 1
iteration) / (N - 1), so the call overhead cancels. On the CPU drivers the loop runs inside one
command buffer (the scheduler evaluates the jumps); on vulkan and webgpu the host runs the
blocks and reads the predicate back every iteration (the scan too: counting its exit instead was slower).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

import fibergrid as fg


def _programs():
    import jax
    import jax.numpy as jnp
    from jax import lax

    def while_loop(x, bound):
        return lax.while_loop(lambda c: c[1] < bound, lambda c: (c[0] * 1.0001 + 1.0, c[1] + 1), (x, jnp.int32(0)))[0]

    def fori_loop(x, n):
        return lax.fori_loop(0, n, lambda i, c: c * 0.999 + 1.0, x)

    def scan(x, n):  # n: a static length (the argument is there for the same call signature)
        return lax.scan(lambda c, _: (c * 0.999 + 1.0, None), x, None, length=n)[0]

    return jax, {"while_loop": (while_loop, ()), "fori_loop": (fori_loop, ()), "scan": (scan, (1,))}


def _median_call(fn, args, calls: int) -> float:
    fn(*args)
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(*args)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def measure(iterations: int, calls: int, devices: list[str]) -> dict:
    jax, programs = _programs()
    x = np.ones(8, np.float32)
    out: dict = {"iterations": iterations, "calls": calls}
    for name, (f, static) in programs.items():
        jitted = jax.jit(f, static_argnums=static)

        def lowered(n: int) -> str:
            return jitted.lower(x, n if static else np.int32(n)).as_text()

        def via_jax(x, n):
            return np.asarray(jitted(x, int(n) if static else n))

        runners = {"jax_jit_cpu": (via_jax, via_jax)}
        for device in devices:
            if static:  # one module per length, called with (x, its length) for the same timing loop
                one, many = fg.load(lowered(1), device=device), fg.load(lowered(iterations), device=device)
                runners[device] = (lambda x, n, m=one: m(x), lambda x, n, m=many: m(x))
            else:
                module = fg.load(lowered(iterations), device=device)
                runners[device] = (module, module)
        row = {}
        for who, (run_one, run_many) in runners.items():
            np.testing.assert_allclose(run_many(x, np.int32(iterations)), via_jax(x, np.int32(iterations)), rtol=1e-4)
            one = _median_call(run_one, (x, np.int32(1)), calls)
            many = _median_call(run_many, (x, np.int32(iterations)), calls)
            row[who] = {"call_1_iteration_us": round(one * 1e6, 2), f"call_{iterations}_iterations_us": round(many * 1e6, 2),
                        "per_iteration_us": round((many - one) / (iterations - 1) * 1e6, 3)}
        base = row["jax_jit_cpu"]["per_iteration_us"]
        for who in devices:
            row[who]["per_iteration_vs_jax"] = round(row[who]["per_iteration_us"] / base, 2) if base > 0 else None
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--devices", default=",".join(d for d in ("local-task", "local-sync", "vulkan")
                                                      if d in fg.available_drivers()))
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.iterations, args.calls, args.devices.split(",")), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
