"""A SavedModel signature -> a compiled Program (what an .fgx holds), one specialisation per
input-shape signature.

TensorFlow's bridge only exports static shapes, so a signature with unknown dims (`None`, a
Keras model's batch) is compiled for the shapes asked for (`--input-shape`; each unknown dim 1
when none are, said on stderr). The function's declared signature keeps a dim only where every
compiled specialisation agrees, so a call at another shape is refused with the shapes it has. The
Program carries no source: running it needs neither TensorFlow nor the model directory.

Errors the StableHLO frontend or the passes raise name a line:col of the exported text; they are
re-raised naming the TF op that line came from and the signature.
"""

from __future__ import annotations

import re
from typing import Sequence

from compiler import executable
from compiler.cache import CACHE
from compiler.errors import CompileError
from compiler.frontends.savedmodel import process
from compiler.frontends.savedmodel.text import tf_op_at
from compiler.pipeline import CompiledFunction, Progress, Shapes

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


def program_from(exported: process.Exported, progress: Progress | None = None, targets: Sequence[str] = ()) -> executable.Program:
    """The Program of an export: @main takes the signature's inputs and returns its outputs, by name."""
    progress = progress or Progress()
    if exported.note:
        progress.report(f"fibergrid: {exported.note}")
    compiled = {}
    for _, text in exported.texts:
        function = _compile(exported.where, text, progress, targets)
        compiled[function.shapes] = function
    first = next(iter(compiled.values()))
    dtypes = [dtype for _, dtype in first.inputs]
    declared = [_common([s[i] for s in compiled]) for i in range(len(dtypes))]
    results = [_common([c.results[i][1] for c in compiled.values()]) for i in range(len(first.results))]
    entry = executable.FunctionEntry(
        "main", tuple(zip(declared, dtypes)), compiled,
        tuple((name, shape, dtype) for (name, _, dtype), shape in zip(exported.inputs, declared)),
        tuple((name, shape, dtype) for (name, dtype), shape in zip(exported.outputs, results)))
    return executable.Program({"main": entry}, None)


def compile_saved_model(path: str, signature: str = "serving_default", input_shapes: Sequence[Shapes] | None = None,
                        progress: Progress | None = None, targets: Sequence[str] = ()) -> executable.Program:
    """Compile `signature` of the SavedModel at `path` for each of `input_shapes` (one shape per
    input, inputs sorted by name; default: the declared shapes, unknown dims 1) into a Program
    whose @main takes the signature's inputs and returns its outputs, by name, sorted by name."""
    progress = progress or Progress()
    with progress.stage("export to StableHLO (TensorFlow)"):
        exported = process.export(path, signature, input_shapes)
    return program_from(exported, progress, targets)
