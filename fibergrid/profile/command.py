"""`fibergrid profile`: the two ways in, one report out.

    fibergrid profile MODEL --function main --input 1x784xf32=0.5 [--repetitions N]
                      [--trace out.json] [--png timeline.png] [--json]
    fibergrid profile [--trace ...] [--png ...] [--json] -- python app.py args...

The first loads the model, makes one checked warm-up call, then traces N calls. The second runs
the program with FIBERGRID_PROFILE set to a fresh directory: the library (session.py) traces every
device the program creates (CPU: trace rings; GPU: timestamp queries) and leaves its captures there at exit; this process reads them
back and reports them exactly as for a model.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from typing import Any

from fibergrid.profile import chrome, report, timeline
from fibergrid.profile.analysis import Analysis, analyse
from fibergrid.profile.collect import DeviceCapture, Recorder
from fibergrid.profile.findings import Finding, explain
from fibergrid.profile.naming import register_sources
from fibergrid.profile.session import ENV_VAR

PROGRESS_AFTER_S = 1.0  # a profile quicker than this stays quiet on stderr


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `profile` subcommand's own options (the call options come from cli.py)."""
    p.add_argument("--repetitions", type=int, default=20, help="traced calls after one warm-up call (default: 20)")
    p.add_argument("--trace", default=None, help="write a Chrome/Perfetto trace-event JSON file")
    p.add_argument("--png", default=None, help="write a PNG timeline of a typical run of three calls (needs matplotlib)")
    p.add_argument("--png-size", default="1600x500", help="PNG size in pixels, WIDTHxHEIGHT (default: 1600x500)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    p.add_argument("--capacity", type=int, default=1 << 17, help="trace events kept per worker (default: 131072)")
    p.add_argument("--host-timing", action="store_true",
                   help="also time each submission and host wait from Python (2-5 us a call): splits host work "
                        "from launch and completion latency, and draws submission arrows in the trace")
    p.add_argument("--source", default=None, help="the StableHLO (.mlir) or ONNX model an .fgx was compiled from: names "
                                                  "its kernels after the model's ops (a .mlir or .onnx module is its own source)")


class _Progress:
    """'fibergrid: profile: 40/100 calls' on stderr, once a second, once the run takes a while."""

    def __init__(self, total: int) -> None:
        self.total, self.start, self.last = total, time.monotonic(), 0.0

    def tick(self, done: int) -> None:
        now = time.monotonic()
        if now - self.start >= PROGRESS_AFTER_S and now - self.last >= 1.0:
            self.last = now
            print(f"fibergrid: profile: {done}/{self.total} calls", file=sys.stderr, flush=True)


def _png_size(spec: str, error: type[Exception]) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in spec.lower().split("x"))
    except ValueError:
        raise error(f"--png-size {spec!r}: expected WIDTHxHEIGHT in pixels, e.g. 1600x500") from None
    if not (200 <= w <= 10000 and 100 <= h <= 10000):
        raise error(f"--png-size {spec!r}: width must be 200..10000 and height 100..10000 pixels")
    return w, h


def _register_names(module: Any, function: Any, path: str, source: str | None, error: type[Exception]) -> None:
    """Source names for the function's kernels, where the StableHLO text is at hand: --source,
    the source an .fgx keeps for dynamic functions, or the .mlir module itself."""
    from fibergrid.profile.sources import kernel_sources

    text = None
    if source is not None:
        try:
            with open(source, "rb") as f:
                data = f.read()
            text = data if source.endswith(".onnx") else data.decode()
        except (OSError, UnicodeDecodeError) as e:
            raise error(f"--source {source}: cannot read the model: {getattr(e, 'strerror', None) or e}") from None
    text = text or getattr(module.program, "source", None)
    if text is None and not path.endswith(".fgx"):
        try:
            with open(path, "rb") as f:
                data = f.read()
            text = data if path.endswith(".onnx") else data.decode()
        except (OSError, UnicodeDecodeError):
            return
    if text is None:
        return
    try:
        compiled = function.compiled
    except Exception:  # noqa: BLE001 — dynamic dims: named after the warm-up call compiled them
        prepared = getattr(function, "_prepared", {})
        if not prepared:
            return
        compiled = next(iter(prepared.values())).compiled
    names = kernel_sources(text, compiled)
    if source is not None and not names:
        raise error(f"--source {source}: its @{compiled.name} does not compile to this module's kernels")
    register_sources(compiled.executable, names)


def _emit(captures: list[DeviceCapture], args: argparse.Namespace, error: type[Exception], **meta: Any) -> int:
    size = _png_size(args.png_size, error) if args.png else None
    results: list[tuple[Analysis, list[Finding]]] = []
    peak = None
    for cap in captures:
        a = analyse(cap)
        if peak is None and any(d.kind in ("matmul", "conv") and d.gflops for d in a.dispatches):
            from fibergrid.profile.peak import matmul_gflops

            peak = matmul_gflops()
        results.append((a, explain(a, peak)))
    if args.json:
        print(json.dumps(report.as_json(results, **meta, reference_matmul_gflops_per_core=peak)))
    else:
        print("\n\n".join(report.text(a, fs) for a, fs in results) if results else
              "fibergrid: profile: no fibergrid CPU device ran work")
    if args.trace:
        events = sum(len(c.events) for c in captures)
        if events > 100_000:  # seconds of work: say so
            print(f"fibergrid: profile: writing {events} workgroup events to {args.trace}", file=sys.stderr, flush=True)
        try:
            chrome.write(captures, args.trace)
        except OSError as e:
            raise error(f"--trace {args.trace}: {e.strerror or e}") from None
    if args.png and captures:
        busiest = max(range(len(captures)), key=lambda i: len(captures[i].events))
        try:
            timeline.write(captures[busiest], results[busiest][0], args.png, size)
        except OSError as e:
            raise error(f"--png {args.png}: {e.strerror or e}") from None
    return 0


def profile_module(args: argparse.Namespace, device: Any, parse_input: Any, error: type[Exception]) -> int:
    """Profile calls of one function of a model on `device`."""
    import fibergrid as fg

    if args.repetitions < 1:
        raise error(f"--repetitions {args.repetitions} must be >= 1")
    if args.png:
        _png_size(args.png_size, error)
    if not hasattr(device, "scheduler") and not hasattr(device, "enable_timestamps"):
        raise error(f"profile: the {device.driver} driver has no tracing (neither worker trace rings nor GPU "
                    f"timestamps); profile on local-task, local-sync or vulkan")
    module = fg.load(args.module, device)
    function = module[args.function]
    inputs = [parse_input(spec) for spec in args.input]
    _register_names(module, function, args.module, args.source, error)
    recorder = Recorder(args.capacity, host_timing=args.host_timing)
    recorder.attach(device, label=f"{os.path.basename(args.module)}@{args.function}")
    function(*inputs)  # warm-up: checks the inputs, compiles a dynamic signature, wakes workers
    _register_names(module, function, args.module, args.source, error)
    recorder.reset()
    progress = _Progress(args.repetitions)
    for i in range(args.repetitions):
        with recorder.call():
            function(*inputs)
        progress.tick(i + 1)
    captures = recorder.capture()
    recorder.detach()
    return _emit(captures, args, error, module=args.module, function=args.function, device=device.driver,
                 workers=getattr(device, "workers", None), repetitions=args.repetitions)


def profile_program(args: argparse.Namespace, command: list[str], error: type[Exception]) -> int:
    """Run `command` with profiling on and report what its fibergrid devices did."""
    if not command:
        raise error("profile --: give the program to run, e.g. fibergrid profile -- python app.py")
    if args.png:
        _png_size(args.png_size, error)
    with tempfile.TemporaryDirectory(prefix="fibergrid-profile-") as out:
        env = dict(os.environ, **{ENV_VAR: out, f"{ENV_VAR}_CAPACITY": str(args.capacity),
                                  f"{ENV_VAR}_HOST_TIMING": "1" if args.host_timing else ""})
        try:
            # With --json this process's stdout is the report: the program's output goes to stderr.
            status = subprocess.call(command, env=env, stdout=sys.stderr if args.json else None)
        except OSError as e:
            raise error(f"cannot run {command[0]!r}: {e.strerror or e}") from None
        captures: list[DeviceCapture] = []
        for path in sorted(glob.glob(os.path.join(out, "*.pkl"))):
            with open(path, "rb") as f:
                captures += pickle.load(f)
    if status != 0:
        print(f"fibergrid: profile: {command[0]} exited with status {status}", file=sys.stderr)
    code = _emit(captures, args, error, command=command, exit_status=status)
    return status if status != 0 else code
