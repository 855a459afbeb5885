"""`fibergrid batch MODEL --input DIR_OR_FILE --output DIR [--ray ADDRESS | --local]`.

Scores a data set (.npy/.npz/Parquet files) with one function of a model and writes the scored
rows (the kept columns, then one column per result) as part files of --rows-per-file rows, in
input order. Locally it runs in this process on the local device (the default); with --ray it
runs on a Ray cluster (`auto`: the one `ray start` made on this machine; `local`: a fresh
instance in this process; or a cluster address) with --concurrency actors of --num-cpus CPUs.
Both write the same files. Progress goes to stderr with rows/s; a JSON summary to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Callable

from fibergrid.batch.data import Writer, list_files, read_file
from fibergrid.batch.model import BatchModel
from fibergrid.batch.progress import RowProgress
from fibergrid.batch import data as data_module


def add_arguments(p: argparse.ArgumentParser, device_options: Callable[[argparse.ArgumentParser], None]) -> None:
    p.add_argument("module", help="the model: an .fgx, a .mlir (StableHLO text) or an .onnx file")
    p.add_argument("--input", required=True, help="a .npy/.npz/.parquet file or a directory of them")
    p.add_argument("--output", required=True, help="a directory for the scored part files (created; must hold none)")
    p.add_argument("--function", default="main", help="the public function to score with (default: main)")
    p.add_argument("--batch-size", type=int, default=256, help="rows per model call (default: 256)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--ray", metavar="ADDRESS", default=None,
                       help="run on Ray: 'auto' (the cluster `ray start` made here), 'local' (a new instance) or an address")
    where.add_argument("--local", action="store_true", help="run in this process on the local device (the default)")
    p.add_argument("--concurrency", type=int, default=None, help="Ray actors (default: the cluster's CPUs / --num-cpus)")
    p.add_argument("--num-cpus", type=int, default=1, help="CPUs per Ray actor = its device's workers (default: 1)")
    p.add_argument("--inputs", default=None, help="comma-separated columns, one per model input (default: the model's names)")
    p.add_argument("--outputs", default=None, help="comma-separated names for the result columns (default: the model's names)")
    p.add_argument("--keep", default=None, help="comma-separated columns to carry through (default: every non-input column)")
    p.add_argument("--format", choices=("npz", "parquet"), default=None,
                   help="output file format (default: parquet for Parquet input, else npz)")
    p.add_argument("--rows-per-file", type=int, default=65536, help="rows per output part file (default: 65536)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    device_options(p)


def _names(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _model_bytes(path: str) -> bytes | str:
    """The model file's contents, so actors on other nodes need no shared file system."""
    if not os.path.isfile(path):
        return path  # StableHLO text, or a path fg.load reports on
    with open(path, "rb") as f:
        return f.read()


def run(args: argparse.Namespace, cli_error: type[Exception]) -> int:
    if args.batch_size < 1:
        raise cli_error(f"--batch-size {args.batch_size} must be >= 1")
    if args.num_cpus < 1 or (args.concurrency is not None and args.concurrency < 1):
        raise cli_error("--num-cpus and --concurrency must be >= 1")
    files = list_files(args.input)
    total = data_module.check_consistent(files)
    file_format = args.format or ("parquet" if all(p.endswith(".parquet") for p in files) else "npz")
    names = {"inputs": _names(args.inputs), "outputs": _names(args.outputs), "keep": _names(args.keep)}
    import fibergrid as fg

    start = time.perf_counter()
    if args.ray is None:
        options = {"workers": args.workers} if args.workers is not None else {}
        with fg.create_device(args.device, **options) as device:
            model = BatchModel(args.module, args.function, device=device, **names)
            writer = Writer(args.output, file_format, args.rows_per_file)
            progress = RowProgress(total, enabled=not args.quiet)
            from fibergrid.batch.local import score_local

            rows = score_local(model, files, writer, args.batch_size, progress)
            progress.close()
        where: dict = {"mode": "local", "device": device.driver, "workers": getattr(device, "workers", None)}
    else:
        from fibergrid.batch import ray_runner

        # Checked here first (columns, dtypes, shapes: one clear line before any actor starts);
        # for .mlir this also compiles into the disk cache that actors on this node share.
        check = BatchModel(args.module, args.function, device="local-sync", **names)
        first = read_file(files[0])
        check({k: v[: min(args.batch_size, len(v))] for k, v in first.items()})
        ray = ray_runner.require_ray()
        started = ray_runner.connect(args.ray)
        try:
            concurrency = args.concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)) // args.num_cpus)
            writer = Writer(args.output, file_format, args.rows_per_file)
            progress = RowProgress(total, enabled=not args.quiet)
            rows = ray_runner.score_ray(_model_bytes(args.module), files, writer, args.batch_size,
                                        concurrency=concurrency, num_cpus=args.num_cpus, progress=progress,
                                        function=args.function, **{k: v for k, v in names.items() if v is not None})
            progress.close()
        finally:
            if started:
                ray.shutdown()
        where = {"mode": "ray", "address": args.ray, "actors": concurrency, "cpus_per_actor": args.num_cpus}
    seconds = time.perf_counter() - start
    print(json.dumps({"rows": rows, "files": len(writer.files), "output": args.output, **where,
                      "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1) if seconds else None}))
    return 0
