"""The `fibergrid` command line.

    fibergrid compile model.mlir -o model.fgx [--function main] [--specialize main=1x784]
    fibergrid compile saved_model_dir/ -o model.fgx [--signature serving_default] [--input-shape 8x784]
    fibergrid run model.fgx --device local-task --workers 2 --input 2x3xf32=1 --input @x.npy [--output @y.npy]
    fibergrid benchmark model.fgx --input 1x784xf32=0.5 --repetitions 100
    fibergrid batch model.fgx --input data/ --output scored/ [--batch-size 256] [--ray auto | --local]

Inputs and outputs follow IREE's iree-run-module: `SHAPExTYPE=VALUES` (one value is a splat,
otherwise whitespace- or comma-separated values, brackets optional: `2x2xi32=[1 2][3 4]`),
`@file.npy` for a numpy file; `--output @y.npy` writes a result (`+y.npy` appends to the file,
`-` prints it, an empty value drops it), in result order; results without an --output print as
`result[0]: 2x3xf32=[1 2 3][4 5 6]`. Every failure is one line `fibergrid: error: ...` on stderr
and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

import fibergrid as fg
from compiler.executable import dtype_from_name, dtype_name
from common.memory import check_available

if TYPE_CHECKING:
    from compiler.executable import Program
    from compiler.pipeline import Progress

PRINT_MAX_ELEMENTS = 1024  # as iree-run-module's --print_max_element_count


class CliError(Exception):
    """A usage error: reported like every other failure, as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage and exit 2
        raise CliError(message)


# --------------------------------------------------------------------------------------------
# Inputs and outputs


def parse_input(spec: str) -> np.ndarray:
    """An IREE-style input: `2x3xf32=1`, `2x2xi32=[1 2][3 4]`, `f32=0.5` or `@x.npy`."""
    if spec.startswith("@"):
        try:
            return np.load(spec[1:], allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:  # EOFError: an empty file
            raise CliError(f"--input {spec}: cannot read a .npy array: {e}") from None
    type_part, sep, values = spec.partition("=")
    if not sep:
        raise CliError(f"--input {spec!r}: expected SHAPExTYPE=VALUES (e.g. 2x3xf32=1) or @file.npy")
    *dims, type_name = type_part.split("x")
    try:
        shape = tuple(int(d) for d in dims)
    except ValueError:
        raise CliError(f"--input {spec!r}: bad shape {'x'.join(dims)!r}") from None
    if any(d < 0 for d in shape):
        raise CliError(f"--input {spec!r}: negative dimension in shape {shape}")
    try:
        dtype = dtype_from_name(type_name)
    except fg.InvalidArgument as e:
        raise CliError(f"--input {spec!r}: {e}") from None
    words = [w for w in re.split(r"[\s,\[\]]+", values) if w]
    count = math.prod(shape)
    if len(words) not in (1, count):
        raise CliError(f"--input {spec!r}: {len(words)} values for shape {shape} ({count} elements)")
    try:
        parsed = [float(w) if dtype.kind in "fc" else int(w) for w in words]
        array = np.array(parsed, dtype=dtype)
    except (ValueError, OverflowError) as e:
        raise CliError(f"--input {spec!r}: values are not {type_name}: {e}") from None
    if len(words) != 1:
        try:
            return array.reshape(shape)
        except ValueError as e:  # an empty shape whose other dims overflow numpy's size (99999999999x0x99999999999)
            raise CliError(f"--input {spec!r}: shape {shape} is too large: {e}") from None
    try:
        check_available(count * dtype.itemsize, "the array")  # before np.full writes (and the OOM killer ends us)
        return np.full(shape, array[0], dtype=dtype)  # one value fills the shape (a scalar too)
    except (MemoryError, ValueError) as e:  # ResourceExhausted is a MemoryError
        raise CliError(f"--input {spec!r}: cannot allocate shape {shape}: {e}") from None


def format_result(array: np.ndarray) -> str:
    """IREE's printed form: `2x3xf32=[1 2 3][4 5 6]` (`f32=5` for a scalar)."""
    type_str = "x".join([str(d) for d in array.shape] + [dtype_name(array.dtype)])
    if array.size > PRINT_MAX_ELEMENTS:
        return f"{type_str}=[... {array.size} elements ...]"
    flat = array.astype(np.int8) if array.dtype == np.bool_ else array

    def nested(a: np.ndarray) -> str:
        if a.ndim == 1:
            return "[" + " ".join(f"{v:g}" if a.dtype.kind == "f" else str(v) for v in a.tolist()) + "]"
        return "".join(nested(sub) for sub in a)

    body = nested(flat) if array.ndim else (f"{flat.item():g}" if flat.dtype.kind == "f" else str(flat.item()))
    return f"{type_str}={body}"


def emit_results(results: tuple[np.ndarray, ...], outputs: list[str]) -> None:
    if len(outputs) > len(results):
        raise CliError(f"{len(outputs)} --output given, the function has {len(results)} results")
    for i, array in enumerate(results):
        target = outputs[i] if i < len(outputs) else "-"
        if target == "-":
            print(f"result[{i}]: {format_result(array)}")
        elif target[:1] in ("@", "+"):
            try:
                with open(target[1:], "wb" if target[0] == "@" else "ab") as f:
                    np.save(f, array, allow_pickle=False)
            except OSError as e:
                raise CliError(f"--output {target}: {e.strerror or e}") from None
        elif target:
            raise CliError(f"--output {target!r}: expected @file.npy, +file.npy, - or an empty value")


# --------------------------------------------------------------------------------------------
# Commands


def _call(args: argparse.Namespace, device: fg.Device) -> tuple[object, tuple[np.ndarray, ...], list[np.ndarray]]:
    """(function, its results, the inputs) for run and benchmark: one checked first call."""
    function = fg.load(args.module, device)[args.function]
    inputs = [parse_input(spec) for spec in args.input]
    results = function(*inputs)
    return function, results if isinstance(results, tuple) else (results,), inputs


def _shapes(text: str) -> tuple[tuple[int, ...], ...] | None:
    """`4x784,4x10` -> ((4, 784), (4, 10)); None when malformed."""
    try:
        return tuple(tuple(int(d) for d in s.split("x") if d) for s in text.split(","))
    except ValueError:
        return None


def _specializations(specs: list[str]) -> dict[str, list[tuple[tuple[int, ...], ...]]]:
    """`--specialize main=4x784,4x10` -> {"main": [((4, 784), (4, 10))]}: input shapes, in order,
    of a function with dynamic dims to compile ahead of time."""
    out: dict[str, list[tuple[tuple[int, ...], ...]]] = {}
    for spec in specs:
        name, sep, shapes = spec.partition("=")
        parsed = _shapes(shapes)
        if not sep or not name or parsed is None:
            raise CliError(f"--specialize {spec!r}: expected FUNCTION=SHAPE[,SHAPE...], e.g. main=4x784")
        out.setdefault(name, []).append(parsed)
    return out


def _driver_detail(name: str) -> str:
    """What a driver would run on (the GPU drivers' device names), for `fibergrid drivers`."""
    if name == "cuda":
        from hal_gpu.cuda import driver as cuda

        return ", ".join(cuda.device_name(p) for p in cuda.devices())
    if name == "webgpu":
        from hal_gpu.webgpu import driver as webgpu

        return ", ".join(webgpu.adapter_name(a) for a in webgpu.adapters())
    if name != "vulkan":
        return ""
    from hal_gpu.vulkan import driver

    return ", ".join(driver.device_name(p) for p in driver.physical_devices())


def _compile(args: argparse.Namespace) -> int:
    from compiler import executable
    from compiler.cache import CACHE
    from compiler.pipeline import Progress

    if args.input.endswith(".fgx"):
        raise CliError(f"{args.input} is already compiled; compile takes StableHLO text (.mlir), an ONNX model (.onnx) "
                       f"or a SavedModel directory")
    progress = Progress(threshold=0.0 if args.verbose else 1.0)
    targets = tuple(dict.fromkeys(t for t in args.target if t != "cpu"))  # the host CPU's code is always in
    if os.path.isdir(args.input):
        program = _compile_saved_model(args, progress, targets)
        _say_dynamic(program)
        executable.save(program, args.output)
        return 0
    if args.signature is not None or args.input_shape:
        raise CliError("--signature and --input-shape are for SavedModel directories; use --function and --specialize")
    text: str | bytes
    if args.input.endswith(".onnx"):  # the model's bytes (external data inlined) are the source
        from compiler.frontends.onnx.model import read_source

        text = read_source(args.input)
    else:
        try:
            with open(args.input, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(f"cannot read '{args.input}': {getattr(e, 'strerror', None) or e}") from None
    shapes = _specializations(args.specialize)
    if shapes:  # the cache keys one function and one signature; several are built directly
        program = executable.build(text, args.function, shapes, progress, targets=targets)
    else:
        program = CACHE.get_or_build(text, args.function, None,
                                     lambda: executable.build(text, args.function, progress=progress, targets=targets),
                                     targets=targets)
    _say_dynamic(program)
    executable.save(program, args.output)
    return 0


def _say_dynamic(program: Program) -> None:
    """One line on stderr per function with dynamic dims: which path it takes."""
    for name, entry in program.functions.items():
        if entry.dynamic is not None:
            print(f"fibergrid: @{name}: dynamic dims compiled once, for every size (CPU drivers)", file=sys.stderr)
        elif entry.dynamic_fallback:
            print(f"fibergrid: @{name}: compiled per input shape: {entry.dynamic_fallback}", file=sys.stderr)


def _compile_saved_model(args: argparse.Namespace, progress: Progress, targets: tuple[str, ...]) -> Program:
    """A SavedModel directory's signature, compiled for each --input-shape (an empty shape is a
    scalar's)."""
    from compiler.frontends.savedmodel import compile_saved_model

    if args.specialize or args.function:
        raise CliError("a SavedModel compiles one signature to @main: use --signature and --input-shape, "
                       "not --function or --specialize")
    shapes = []
    for spec in args.input_shape:
        parsed = _shapes(spec)
        if parsed is None:
            raise CliError(f"--input-shape {spec!r}: expected SHAPE[,SHAPE...], one per input, e.g. 4x784")
        shapes.append(parsed)
    return compile_saved_model(args.input, args.signature or "serving_default", shapes, progress, targets)


def _run(args: argparse.Namespace, device: fg.Device) -> int:
    _, results, _ = _call(args, device)
    emit_results(results, args.output)
    return 0


def _benchmark(args: argparse.Namespace, device: fg.Device) -> int:
    if args.repetitions < 1:
        raise CliError(f"--repetitions {args.repetitions} must be >= 1")
    function, _, inputs = _call(args, device)
    times = []
    for _ in range(args.repetitions):
        start = time.perf_counter()
        function(*inputs)
        times.append((time.perf_counter() - start) * 1e6)
    print(json.dumps({
        "module": args.module, "function": args.function, "device": device.driver,
        "workers": getattr(device, "workers", None), "repetitions": args.repetitions,
        "median_us": round(float(np.median(times)), 2), "p90_us": round(float(np.percentile(times, 90)), 2),
        "min_us": round(min(times), 2),
    }))
    return 0


def _device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help=f"driver name (default: {fg.default_driver()}); see `fibergrid drivers`")
    p.add_argument("--workers", type=int, default=None, help="worker threads for local-task (default: one per core)")


def _call_options(p: argparse.ArgumentParser, module_required: bool = True) -> None:
    p.add_argument("module", nargs=None if module_required else "?", help="an .fgx file (or a .mlir or .onnx file or a SavedModel directory, compiled)")
    p.add_argument("--function", default="main", help="the public function to call (default: main)")
    p.add_argument("--input", action="append", default=[], help="SHAPExTYPE=VALUES or @file.npy, once per argument, in order")
    _device_options(p)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fibergrid", description="Compiled compute kernels on CPUs with GPU semantics.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = sub.add_parser("demo", help="run a built-in saxpy + barrier + matmul command buffer and check it against numpy")
    _device_options(demo)
    sub.add_parser("drivers", help="list the drivers available here")
    comp = sub.add_parser("compile", help="compile StableHLO text (.mlir), an ONNX model (.onnx) or a TF2 SavedModel "
                                          "directory into an .fgx executable")
    comp.add_argument("input", help="StableHLO text, as jax.jit(f).lower(x).as_text() prints it, an ONNX model (.onnx) "
                                    "or a SavedModel directory (needs TensorFlow: pip install 'fibergrid[tf]')")
    comp.add_argument("-o", "--output", required=True, help="the .fgx file to write")
    comp.add_argument("--function", action="append", default=None, help="a public function to compile (repeatable; default: all)")
    comp.add_argument("--specialize", action="append", default=[],
                      help="FUNCTION=SHAPE[,SHAPE...]: also compile a function with dynamic dims for these input shapes")
    comp.add_argument("--target", action="append", default=[], choices=["cpu", "vulkan", "cuda", "webgpu"],
                      help="also compile for this target (repeatable; the host CPU is always included): "
                           "vulkan (or webgpu) adds SPIR-V, cuda PTX, so the .fgx runs on --device vulkan / webgpu / cuda with no compile there")
    comp.add_argument("--signature", default=None, help="SavedModel: the signature to compile (default: serving_default)")
    comp.add_argument("--input-shape", action="append", default=[],
                      help="SavedModel: SHAPE[,SHAPE...], one per input in name order (e.g. 8x784): compile for "
                           "these shapes (repeatable; default: the signature's, unknown dims 1)")
    comp.add_argument("-v", "--verbose", action="store_true", help="report every compile stage on stderr")
    run = sub.add_parser("run", help="call a function of a module once and print or save its results")
    _call_options(run)
    run.add_argument("--output", action="append", default=[], help="@file.npy, +file.npy, - or '' per result, in order")
    bench = sub.add_parser("benchmark", help="time repeated calls of a function; prints JSON")
    _call_options(bench)
    bench.add_argument("--repetitions", type=int, default=100, help="timed calls (default: 100)")
    prof = sub.add_parser("profile", help="trace calls (or a whole program after --): per-worker and per-dispatch "
                                          "time, where a call's time goes, findings; Chrome trace, PNG, JSON")
    _call_options(prof, module_required=False)
    from fibergrid.profile import command as profile_command

    profile_command.add_arguments(prof)
    batch = sub.add_parser("batch", help="score a data set (.npy/.npz/Parquet) with a model, here or on a Ray cluster")
    from fibergrid.batch import command as batch_command

    batch_command.add_arguments(batch, _device_options)
    check = sub.add_parser("check", help="run check-dialect test files (split at `// -----`), as iree-check-module "
                                         "does: PASS / FAIL / ERROR / SKIP per test, and totals")
    check.add_argument("files", nargs="+", help="check-dialect .mlir test files")
    check.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    _device_options(check)
    return parser


def _profile(args: argparse.Namespace, device: fg.Device) -> int:
    from fibergrid.profile import command as profile_command

    return profile_command.profile_module(args, device, parse_input, CliError)


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        program = None  # `fibergrid profile [options] -- python app.py ...`: the program to run
        if argv[:1] == ["profile"] and "--" in argv:
            argv, program = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
        args = _parser().parse_args(argv)
        if args.command == "demo":
            from fibergrid import demo as demo_module

            return demo_module.run(args.device, args.workers)
        if args.command == "drivers":
            for name in fg.available_drivers():
                detail = _driver_detail(name)
                print(name + (f" ({detail})" if detail else "") + (" (default)" if name == fg.default_driver() else ""))
            return 0
        if args.command == "compile":
            return _compile(args)
        if args.command == "batch":
            from fibergrid.batch import command as batch_command

            return batch_command.run(args, CliError)
        if args.command == "profile" and (program is not None or args.module is None):
            from fibergrid.profile import command as profile_command

            return profile_command.profile_program(args, program or [], CliError)
        options = {"workers": args.workers} if args.workers is not None else {}
        with fg.create_device(args.device, **options) as device:
            if args.command == "check":
                from fibergrid import check as check_command

                return check_command.main(args.files, device, args.json)
            return {"run": _run, "benchmark": _benchmark, "profile": _profile}[args.command](args, device)
    except (fg.Error, CliError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
    except Exception as e:  # noqa: BLE001 — a bug must still be one line, never a traceback
        message = f"internal error: {type(e).__name__}: {e}".splitlines()[0]
    except KeyboardInterrupt:
        message = "interrupted"
    print(f"fibergrid: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
