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
from compiler.frontends.savedmodel.export import SavedModel
from compiler.frontends.savedmodel.text import tf_op_at
from compiler.pipeline import CompiledFunction, Progress, Shapes
from common.errors import InvalidArgument

_WHERE_RE = re.compile(r" at (\d+):(\d+)")


def _shapes_for(model: SavedModel, input_shapes: Sequence[Shapes] | None, progress: Progress) -> list[Shapes]:
    """The input shapes to compile: each given one checked against the signature, or the
    signature's own with every unknown dim 1."""
    inputs = model.signature.inputs
    if not input_shapes:
        default = tuple(tuple(1 if d is None else d for d in shape) for _, shape, _ in inputs)
        unknown = [f"'{name}' {tuple(shape)}" for name, shape, _ in inputs if None in shape]
        if unknown:
            progress.report(f"fibergrid: {model.where}: unknown dims in {', '.join(unknown)}: compiled for "
                            f"{', '.join('x'.join(map(str, s)) for s in default)}; --input-shape compiles other shapes")
        return [default]
    checked = []
    for shapes in input_shapes:
        if len(shapes) != len(inputs):
            raise InvalidArgument(f"{model.where}: {len(shapes)} input shape(s) for {len(inputs)} inputs "
                                  f"({', '.join(name for name, _, _ in inputs)}, in this order)")
        for (name, declared, _), shape in zip(inputs, shapes):
            if len(shape) != len(declared) or any(d is not None and d != s for d, s in zip(declared, shape)):
                raise InvalidArgument(f"{model.where}: input '{name}' is declared {tuple(declared)}, "
                                      f"got shape {tuple(shape)}")
        checked.append(tuple(tuple(int(d) for d in s) for s in shapes))
    return list(dict.fromkeys(checked))


def _compile(model: SavedModel, text: str, progress: Progress, targets: Sequence[str]) -> CompiledFunction:
    def build() -> executable.Program:
        return executable.build(text, ["main"], progress=progress, targets=targets)

    try:
        program = CACHE.get_or_build(text, ["main"], None, build, targets=targets)
    except CompileError as e:
        m = _WHERE_RE.search(str(e))
        op = tf_op_at(text, int(m.group(1))) if m else None
        raise CompileError(f"{model.where}: " + (f"TF op '{op}': " if op else "") + str(e)) from None
    return next(iter(program.functions["main"].specializations.values()))


def _common(shapes: Sequence[tuple[int, ...]]) -> tuple[int | None, ...]:
    """Per dim, its size where all `shapes` agree, else None (dynamic)."""
    return tuple(dims[0] if len(set(dims)) == 1 else None for dims in zip(*shapes))


def compile_saved_model(path: str, signature: str = "serving_default", input_shapes: Sequence[Shapes] | None = None,
                        progress: Progress | None = None, targets: Sequence[str] = ()) -> executable.Program:
    """Compile `signature` of the SavedModel at `path` for each of `input_shapes` (one shape per
    input, inputs sorted by name; default: the declared shapes, unknown dims 1) into a Program
    whose @main takes the signature's inputs and returns its outputs, by name, sorted by name."""
    progress = progress or Progress()
    with progress.stage("read SavedModel (TensorFlow)"):
        model = SavedModel(path, signature)
    compiled = {}
    for shapes in _shapes_for(model, input_shapes, progress):
        with progress.stage(f"export {'x'.join(map(str, shapes[0])) if shapes else ''} to StableHLO (TensorFlow)"):
            text = model.export(shapes)
        function = _compile(model, text, progress, targets)
        compiled[function.shapes] = function
    first = next(iter(compiled.values()))
    dtypes = [dtype for _, dtype in first.inputs]
    declared = [_common([s[i] for s in compiled]) for i in range(len(dtypes))]
    results = [_common([c.results[i][1] for c in compiled.values()]) for i in range(len(first.results))]
    sig = model.signature
    entry = executable.FunctionEntry(
        "main", tuple(zip(declared, dtypes)), compiled,
        tuple((name, shape, dtype) for (name, _, dtype), shape in zip(sig.inputs, declared)),
        tuple((name, shape, dtype) for (name, dtype), shape in zip(sig.outputs, results)))
    return executable.Program({"main": entry}, None)
