"""A SavedModel signature -> a compiled Program (what an .fgx holds): one specialisation per
input-shape signature asked for, and where the signature has unknown dims, one function for every
size of them.

TensorFlow's bridge only exports static shapes. A signature whose unknown dims (`None`, a Keras
model's batch) lead its inputs is exported once more at two large sizes, and the two are compiled
into one function whose dims are run-time values (`pipeline.compile_generalized`, the mechanism of
`jax.export` modules: compiler/dynamic.py); @main then declares those dims None and runs at any
size. Where that cannot be (a dim in an inner position, code that needs the dim's value) the
function is compiled for the shapes asked for (`--input-shape`; each unknown dim 1 when none are,
said on stderr), its declared signature keeping a dim only where every specialisation agrees, so a
call at another shape is refused with the shapes it has. The Program carries no source: running it
needs neither TensorFlow nor the model directory.

Errors the StableHLO frontend or the passes raise name a line:col of the exported text; they are
re-raised naming the TF op that line came from and the signature.
"""

from __future__ import annotations

import re
from typing import Sequence

from compiler import dynamic, executable
from compiler import kernel_ir as kir
from compiler.cache import CACHE
from compiler.errors import CompileError
from compiler.frontends.savedmodel import process
from compiler.frontends.savedmodel.text import tf_op_at
from compiler.pipeline import CompiledFunction, Progress, Shapes, compile_generalized, parse, static_module

_WHERE_RE = re.compile(r" at (\d+):(\d+)")


def _compile(where: str, text: str, progress: Progress, targets: Sequence[str]) -> CompiledFunction:
    def build() -> executable.Program:
        return executable.build(text, ["main"], progress=progress, targets=targets)

    try:
        program = CACHE.get_or_build(text, ["main"], None, build, targets=targets)
    except CompileError as e:
        m = _WHERE_RE.search(str(e))
        op = tf_op_at(text, int(m.group(1))) if m else None
        raise CompileError(f"{where}: " + (f"TF op '{op}': " if op else "") + str(e)) from None
    return next(iter(program.functions["main"].specializations.values()))


def _common(shapes: Sequence[tuple[int, ...]]) -> tuple[int | None, ...]:
    """Per dim, its size where all `shapes` agree, else None (dynamic)."""
    return tuple(dims[0] if len(set(dims)) == 1 else None for dims in zip(*shapes))


def program_from(exported: process.Exported, progress: Progress | None = None, targets: Sequence[str] = (),
                 generic: CompiledFunction | None = None, fallback: str = "") -> executable.Program:
    """The Program of an export: @main takes the signature's inputs and returns its outputs, by
    name. `generic`: the function compiled for every size of its unknown dims (`compile_dynamic`),
    which @main then declares None; else `fallback`, why not."""
    progress = progress or Progress()
    if exported.note and generic is None:
        progress.report(f"fibergrid: {exported.note}")
    compiled = {}
    for _, text in exported.texts:
        function = _compile(exported.where, text, progress, targets)
        compiled[function.shapes] = function
    first = next(iter(compiled.values()))
    dtypes = [dtype for _, dtype in first.inputs]
    declared = [_common([s[i] for s in compiled]) for i in range(len(dtypes))]
    results = [_common([c.results[i][1] for c in compiled.values()]) for i in range(len(first.results))]
    if generic is not None:  # the signature's own shapes; results: None where they grow with the dim
        declared = [shape for _, shape, _ in exported.inputs]
        results = [tuple(None if scale and d == kir.leading_dim(shape) else n for d, n in enumerate(shape))
                   for (_, shape), scale in zip(generic.results, generic.dynamic.results)]
    entry = executable.FunctionEntry(
        "main", tuple(zip(declared, dtypes)), compiled,
        tuple((name, shape, dtype) for (name, _, dtype), shape in zip(exported.inputs, declared)),
        tuple((name, shape, dtype) for (name, dtype), shape in zip(exported.outputs, results)),
        dynamic=generic, dynamic_fallback=fallback if generic is None else "")
    return executable.Program({"main": entry}, None)


def compile_dynamic(path: str, signature: str, exported: process.Exported,
                    progress: Progress) -> tuple[CompiledFunction | None, str]:
    """(the signature compiled once for every size of its unknown dims, "") or (None, why not;
    "" when it has none). TensorFlow exports it at the sizes dynamic.SENTINELS."""
    declared = [(shape, dtype) for _, shape, dtype in exported.inputs]
    if all(d is not None for shape, _ in declared for d in shape):
        return None, ""
    def static_at(size: int):
        with progress.stage(f"export at {size} for the unknown dims (TensorFlow)"):
            [(shapes, text)] = process.export(path, signature, [dynamic.sentinel_shapes(declared, size)]).texts
        return static_module(parse(text), "main", shapes)

    try:
        dynamic.check_leading(declared)
        return compile_generalized(static_at, "main", progress), ""
    except dynamic.NotDynamic as e:
        return None, str(e)
    except CompileError as e:
        return None, f"it does not export or compile at a large size of its unknown dims ({str(e).splitlines()[0][:200]})"


def compile_saved_model(path: str, signature: str = "serving_default", input_shapes: Sequence[Shapes] | None = None,
                        progress: Progress | None = None, targets: Sequence[str] = ()) -> executable.Program:
    """Compile `signature` of the SavedModel at `path` for each of `input_shapes` (one shape per
    input, inputs sorted by name; default: the declared shapes, unknown dims 1), and where it has
    unknown dims, once for every size of them, into a Program whose @main takes the signature's
    inputs and returns its outputs, by name, sorted by name."""
    progress = progress or Progress()
    with progress.stage("export to StableHLO (TensorFlow)"):
        exported = process.export(path, signature, input_shapes)
    generic, fallback = compile_dynamic(path, signature, exported, progress)
    return program_from(exported, progress, targets, generic, fallback)
