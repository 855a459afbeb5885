"""Batch scoring throughput: one process on the local device vs Ray Data on this machine.

    python -m bench.batch --json [--rows 100000] [--files 10] [--batch-size 512]

The model is an MLP (256 -> 1024 -> 1024 -> 16, softmax; 2.6 MFLOP a row) exported by JAX with a
symbolic batch dim; the data set is --rows rows of 256 f32 in --files .npz files (written to a
temp directory). Every configuration scores it end to end (read, score, write the part files):
`rows_per_s` over the whole run; `steady_rows_per_s` over the time from the
actors' first call start to their last call end (each batch is stamped in the actor), and
`startup_s` the fixed time before the first call. The compile cache is warmed first, so no configuration pays for compiling.

- `local`: this process, one local-task device with one worker per core (`fibergrid batch --local`);
- `ray_2x1`: Ray Data, 2 Predictor actors of 1 CPU each (workers=1 per actor);
- `ray_1x2`: Ray Data, 1 actor of 2 CPUs (workers=2).

Ray's cost splits in two: a fixed start-up (actor processes, imports, model load, the streaming
executor) and a cost per batch (object store transfers, task scheduling). `startup_s` is the
first; `overhead_per_batch_ms` is the second: the median time the Ray 1x2 actor waits between two
of its calls (`gap_between_calls_ms`), against `local_model_ms_per_batch`, the model's time per
batch in-process. Locally `model_rows_per_s` is the rate inside the model calls alone (reading and
writing take the rest: a Ray run overlaps them with scoring, in other processes). The
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

from fibergrid.batch.predictor import Predictor

ROW_WIDTH = 256
HIDDEN = 1024


def _model_text() -> str:
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((ROW_WIDTH, HIDDEN)) / 16).astype(np.float32)
    w2 = (rng.standard_normal((HIDDEN, HIDDEN)) / 32).astype(np.float32)
    w3 = (rng.standard_normal((HIDDEN, 16)) / 32).astype(np.float32)

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


class TimedPredictor(Predictor):
    """A Predictor that stamps each batch's rows with when its call ran and in which actor
    (wall clock: one machine), so the driver can tell Ray's time from the model's."""

    def __call__(self, batch):
        start = time.time()
        out = super().__call__(batch)
        n = len(out["id"])
        out.update(_start=np.full(n, start), _end=np.full(n, time.time()), _pid=np.full(n, os.getpid()))
        return out


class _Stamps:
    """A Writer wrapper that keeps the timing columns apart from the scored rows."""

    def __init__(self, writer) -> None:
        self.writer, self.calls = writer, set()

    def write(self, batch) -> None:
        self.calls.update(zip(batch.pop("_pid").tolist(), batch.pop("_start").tolist(), batch.pop("_end").tolist()))
        self.writer.write(batch)

    def close(self):
        return self.writer.close()

    @property
    def rows(self) -> int:
        return self.writer.rows

    def figures(self, start: float, rows: int) -> dict:
        """startup: run start to the first call; steady: rows over first call start to last call
        end; the gap an actor waits between the end of one call and the start of its next is
        Ray's per-batch cost (fetching the next batch, returning the last)."""
        calls = sorted(self.calls, key=lambda c: c[1])
        first, last = calls[0][1], max(c[2] for c in calls)
        gaps = []
        for pid in {c[0] for c in calls}:
            mine = [c for c in calls if c[0] == pid]
            gaps += [b[1] - a[2] for a, b in zip(mine, mine[1:])]
        busy = sum(c[2] - c[1] for c in calls)
        actors = len({c[0] for c in calls})
        return {"startup_s": round(first - start, 3), "steady_rows_per_s": round(rows / (last - first), 1),
                "calls": len(calls), "actor_processes": actors,
                "gap_between_calls_ms": round(float(np.median(gaps)) * 1e3, 3) if gaps else None,
                "actors_busy": round(busy / (actors * (last - first)), 3)}


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
        _dataset(source, rows, files)
        paths = data.list_files(source)
        sizes = {batch_size} | {n % batch_size for p in paths for n in [data.count_rows(p)]} - {0}
        out: dict = {"rows": rows, "files": files, "batch_size": batch_size, "cpus": len(os.sched_getaffinity(0)),
                     "model": f"mlp {ROW_WIDTH}-{HIDDEN}-{HIDDEN}-16 (dynamic batch)"}

        # Warm the compile cache for every batch size a run calls with (files are read whole and
        # rebatched; a Ray actor sees the same sizes, or a file's last partial batch).
        with fg.create_device("local-sync") as device:
            warm = BatchModel(model_path, device=device)
            for size in sorted(sizes):
                warm({"x": np.zeros((size, ROW_WIDTH), np.float32)})

        with fg.create_device("local-task") as device:
            model = BatchModel(model_path, device=device)
            score_local(model, paths[:1], data.Writer(os.path.join(work, "local_warm")), batch_size)  # buffers, pages
            in_model = [0.0]
            call = model.__call__

            def timed_call(batch):  # the model's share of the run: the local "steady" rate
                t0 = time.perf_counter()
                result = call(batch)
                in_model[0] += time.perf_counter() - t0
                return result

            start = time.perf_counter()
            score_local(timed_call, paths, data.Writer(os.path.join(work, "local")), batch_size)
            seconds = time.perf_counter() - start
            out["local"] = {"workers": device.workers, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1),
                            "model_rows_per_s": round(rows / in_model[0], 1)}
        reference = data.read_dataset(os.path.join(work, "local"))

        import ray

        from fibergrid.batch.ray_runner import score_ray

        t = time.perf_counter()
        ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False)
        out["ray_init_s"] = round(time.perf_counter() - t, 3)
        try:
            for name, actors, cpus in (("ray_2x1", 2, 1), ("ray_1x2", 1, 2)):
                writer = _Stamps(data.Writer(os.path.join(work, name)))
                start = time.time()
                score_ray(model_path, paths, writer, batch_size, concurrency=actors, num_cpus=cpus,
                          predictor_class=TimedPredictor)
                seconds = time.time() - start
                got = data.read_dataset(os.path.join(work, name))
                out[name] = {"actors": actors, "cpus_per_actor": cpus, "seconds": round(seconds, 3),
                             "rows_per_s": round(rows / seconds, 1), **writer.figures(start, rows),
                             "equal_to_local": all(np.array_equal(got[k], reference[k]) for k in reference)}
        finally:
            ray.shutdown()
        out["overhead_per_batch_ms"] = out["ray_1x2"]["gap_between_calls_ms"]
        out["local_model_ms_per_batch"] = round(batch_size / out["local"]["model_rows_per_s"] * 1e3, 3)
        for k in ("ray_2x1", "ray_1x2"):
            out[f"ratio_{k}_vs_local"] = round(out[k]["rows_per_s"] / out["local"]["rows_per_s"], 3)
            out[f"ratio_steady_{k}_vs_local_model"] = round(out[k]["steady_rows_per_s"] / out["local"]["model_rows_per_s"], 3)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default is indented)")
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args(argv)
    result = run(args.rows, args.files, args.batch_size)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
