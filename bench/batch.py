"""Batch scoring throughput: one process on the local device vs Ray Data on this machine.

    python -m bench.batch --json [--rows 20000] [--files 4] [--batch-size 512]

The model is an MLP (256 -> 512 -> 512 -> 16, softmax) exported by JAX with a symbolic batch dim;
the data sets are --rows and 3 x --rows rows of 256 f32 in --files and 3 x --files .npz files
(written to a temp directory). Every configuration scores both end to end (read, score, write
the part files); `rows_per_s` is the larger run's; a line through the two runs splits the time
into a fixed start-up and a steady rate. The compile cache is warmed first, so no configuration
pays for compiling.

- `local`: this process, one local-task device with one worker per core (`fibergrid batch --local`);
- `ray_2x1`: Ray Data, 2 Predictor actors of 1 CPU each (workers=1 per actor);
- `ray_1x2`: Ray Data, 1 actor of 2 CPUs (workers=2).

Ray's cost splits in two: a fixed start-up (actor processes, imports, model load, the streaming
executor) and a cost per batch (object store transfers, task scheduling). `startup_s` is the
first; `overhead_per_batch_ms` is the second: (steady seconds per batch on Ray 1x2) - (steady
seconds per batch locally), both with 2 workers on the same cores. The
machine is shared and noisy: take ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ROW_WIDTH = 256


def _model_text() -> str:
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((ROW_WIDTH, 512)) / 16).astype(np.float32)
    w2 = (rng.standard_normal((512, 512)) / 22).astype(np.float32)
    w3 = (rng.standard_normal((512, 16)) / 22).astype(np.float32)

    def mlp(x):
        h = jax.nn.relu(x @ w1)
        h = jax.nn.relu(h @ w2)
        return {"probs": jax.nn.softmax(h @ w3, axis=-1)}

    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 256"), jnp.float32)
    return jax.export.export(jax.jit(mlp))(spec).mlir_module()


def _dataset(directory: str, rows: int, files: int) -> None:
    rng = np.random.default_rng(1)
    bounds = np.linspace(0, rows, files + 1).astype(int)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        np.savez(os.path.join(directory, f"part{i:03d}.npz"), id=np.arange(a, b, dtype=np.int64),
                 x=rng.standard_normal((b - a, ROW_WIDTH)).astype(np.float32))


def _fit(small: tuple[int, float], large: tuple[int, float]) -> tuple[float | None, float | None]:
    """(fixed seconds, seconds per row) of a run, from two runs of different sizes; None where
    noise made the larger run no slower (a shared machine: run again)."""
    (n1, t1), (n2, t2) = small, large
    if t2 <= t1:
        return None, None
    per_row = (t2 - t1) / (n2 - n1)
    return max(t1 - n1 * per_row, 0.0), per_row


def run(rows: int, files: int, batch_size: int) -> dict:
    import fibergrid as fg
    from fibergrid.batch import data
    from fibergrid.batch.local import score_local
    from fibergrid.batch.model import BatchModel

    work = tempfile.mkdtemp(prefix="fibergrid-bench-batch-")
    try:
        model_path = os.path.join(work, "mlp.mlir")
        with open(model_path, "w") as f:
            f.write(_model_text())
        source = os.path.join(work, "in")
        os.mkdir(source)
        _dataset(source, 3 * rows, 3 * files)
        every = data.list_files(source)
        sets = {"small": (every[:files], rows), "large": (every, 3 * rows)}
        sizes = {batch_size} | {n % batch_size for p in every for n in [data.count_rows(p)]} - {0}
        out: dict = {"rows": [rows, 3 * rows], "files": [files, 3 * files], "batch_size": batch_size,
                     "cpus": len(os.sched_getaffinity(0)), "model": "mlp 256-512-512-16 (dynamic batch)"}

        # Warm the compile cache for every batch size a run calls with (files are read whole and
        # rebatched; a Ray actor sees the same sizes, or a file's last partial batch).
        with fg.create_device("local-sync") as device:
            warm = BatchModel(model_path, device=device)
            for size in sorted(sizes):
                warm({"x": np.zeros((size, ROW_WIDTH), np.float32)})

        def timed(score, name: str) -> dict:
            runs = {}
            for label, (paths, n) in sets.items():
                writer = data.Writer(os.path.join(work, f"{name}_{label}"))
                start = time.perf_counter()
                score(paths, writer)
                runs[label] = (n, time.perf_counter() - start)
            fixed, per_row = _fit(runs["small"], runs["large"])
            n, seconds = runs["large"]
            return {"seconds": [round(runs["small"][1], 3), round(seconds, 3)], "rows_per_s": round(n / seconds, 1),
                    "startup_s": None if fixed is None else round(fixed, 3),
                    "steady_rows_per_s": None if per_row is None else round(1 / per_row, 1)}

        with fg.create_device("local-task") as device:
            model = BatchModel(model_path, device=device)
            score_local(model, every[:1], data.Writer(os.path.join(work, "local_warm")), batch_size)  # buffers, pages
            out["local"] = {"workers": device.workers,
                            **timed(lambda paths, w: score_local(model, paths, w, batch_size), "local")}
        reference = data.read_dataset(os.path.join(work, "local_large"))

        import ray

        from fibergrid.batch.ray_runner import score_ray

        t = time.perf_counter()
        ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False)
        out["ray_init_s"] = round(time.perf_counter() - t, 3)
        try:
            for name, actors, cpus in (("ray_2x1", 2, 1), ("ray_1x2", 1, 2)):
                figures = timed(lambda paths, w: score_ray(model_path, paths, w, batch_size, concurrency=actors,
                                                           num_cpus=cpus), name)
                got = data.read_dataset(os.path.join(work, f"{name}_large"))
                figures["equal_to_local"] = all(np.array_equal(got[k], reference[k]) for k in reference)
                out[name] = {"actors": actors, "cpus_per_actor": cpus, **figures}
        finally:
            ray.shutdown()
        steady = {k: out[k]["steady_rows_per_s"] for k in ("local", "ray_2x1", "ray_1x2")}
        out["overhead_per_batch_ms"] = (round((batch_size / steady["ray_1x2"] - batch_size / steady["local"]) * 1e3, 3)
                                        if steady["local"] and steady["ray_1x2"] else None)
        for k in ("ray_2x1", "ray_1x2"):
            out[f"ratio_{k}_vs_local"] = round(out[k]["rows_per_s"] / out["local"]["rows_per_s"], 3)
            out[f"ratio_steady_{k}_vs_local"] = (round(steady[k] / steady["local"], 3)
                                                 if steady[k] and steady["local"] else None)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default is indented)")
    parser.add_argument("--rows", type=int, default=20000, help="rows of the small run (the large one has 3x)")
    parser.add_argument("--files", type=int, default=4, help="files of the small run (the large one has 3x)")
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args(argv)
    result = run(args.rows, args.files, args.batch_size)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
