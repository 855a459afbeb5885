"""A SavedModel signature -> StableHLO text, through TensorFlow's own bridge (tf2xla).

The signature is wrapped in a `tf.function(jit_compile=True)` that takes its inputs positionally
(sorted by name, TensorFlow's own flattening order) and returns its outputs as a list (sorted by
key), and `experimental_get_compiler_ir(...)(stage="stablehlo")` prints it. The bridge needs
static shapes, so each input-shape signature is exported on its own. Variables arrive as extra
@main arguments (the function's captures, in order) and are folded into constants here.

Freezing the graph first (`convert_variables_to_constants_v2`) would be TensorFlow's usual route
to constants, but it rewrites functional `While` into v1 `Enter`/`Exit` control flow, which has no
XLA kernel: every Keras RNN and `tf.TensorArray` loop would fail. Folding after the bridge keeps
the loops as `stablehlo.while`.

Every TensorFlow failure becomes a CompileError naming the signature and, where TensorFlow says
which, the TF op (its node name and type): never a TensorFlow traceback.

This module runs in a worker process (`python -m compiler.frontends.savedmodel.export`, started
and reused by process.py), never in the caller's: TensorFlow brings its own LLVM, and a
process holding it crashes when the vulkan driver (Mesa's lavapipe) compiles a shader; its
pins, memory and logging stay out of the caller's process too.
"""

from __future__ import annotations

import functools
import json
import os
import re
import select
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from compiler.errors import CompileError
from compiler.executable import dtype_name
from compiler.frontends.savedmodel import text as text_edits
from common.errors import InvalidArgument

# Ops whose results differ per run by design: a compiled program would fix one draw, or XLA would
# draw from its own generator, so neither matches the model. Stateless random ops (seeded by an
# input) are deterministic and compile.
STATEFUL_RANDOM_OPS = frozenset({
    "RandomUniform", "RandomUniformInt", "RandomStandardNormal", "TruncatedNormal", "RandomShuffle",
    "RandomGamma", "RandomPoisson", "RandomPoissonV2", "Multinomial", "ParameterizedTruncatedNormal",
    "RandomCrop", "StatefulUniform", "StatefulUniformInt", "StatefulUniformFullInt",
    "StatefulStandardNormal", "StatefulStandardNormalV2", "StatefulTruncatedNormal",
    "StatefulRandomBinomial", "RngReadAndSkip", "RngSkip", "NonDeterministicInts",
})

IOSpec = tuple[str, tuple[int | None, ...], np.dtype]
"""(name, declared shape with None for unknown dims, dtype) of a signature input."""


@dataclass(frozen=True)
class Signature:
    """A SavedModel signature as fibergrid sees it: inputs and outputs sorted by name (the
    outputs' shapes come from the export, at each input shape)."""

    name: str
    inputs: tuple[IOSpec, ...]
    outputs: tuple[tuple[str, np.dtype], ...]


def import_tensorflow() -> Any:
    """TensorFlow, or a CompileError saying how to install it. Its C++ INFO/WARNING logging is
    silenced unless the user chose a level (TF_CPP_MIN_LOG_LEVEL)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise CompileError(f"reading SavedModels needs TensorFlow ({e}): pip install 'fibergrid[tf]'") from None
    return tf


def _dtype(tf: Any, dtype: Any, what: str) -> np.dtype:
    if dtype == tf.string:
        raise CompileError(f"{what} is a tf.string tensor: fibergrid compiles numeric tensors only")
    try:
        return np.dtype(dtype.as_numpy_dtype)
    except TypeError:
        raise CompileError(f"{what} has element type {dtype.name}, which fibergrid does not support") from None


class SavedModel:
    """A loaded SavedModel and one of its signatures, ready to export per input shape."""

    def __init__(self, path: str, signature: str) -> None:
        tf = self._tf = import_tensorflow()
        self.path = path
        try:
            self._loaded = tf.saved_model.load(path)
        except Exception as e:  # noqa: BLE001 -- TensorFlow raises many kinds; none may escape raw
            raise CompileError(f"{path}: TensorFlow cannot load the SavedModel: {_first_line(e)}") from None
        signatures = dict(getattr(self._loaded, "signatures", {}) or {})
        if signature not in signatures:
            have = ", ".join(sorted(signatures)) or "none"
            raise CompileError(f"{path}: no signature '{signature}' (signatures: {have})")
        self._function = signatures[signature]
        args, kwargs = self._function.structured_input_signature
        if args:
            raise CompileError(f"{path}: signature '{signature}' takes positional inputs; SavedModel signatures take them by name")
        self._input_specs = dict(sorted(kwargs.items()))
        outputs = self._function.structured_outputs
        if not isinstance(outputs, dict):
            raise CompileError(f"{path}: signature '{signature}' does not return a dict of named outputs")
        self._output_keys = sorted(outputs)
        where = f"{path}: signature '{signature}'"
        for k, spec in self._input_specs.items():
            if spec.shape.rank is None:
                raise CompileError(f"{where}: input '{k}' has unknown rank: fibergrid needs each input's rank "
                                   f"(save the signature with a TensorSpec of known rank)")
        self.signature = Signature(
            signature,
            tuple((k, tuple(s.shape.as_list()), _dtype(tf, s.dtype, f"{where}: input '{k}'")) for k, s in self._input_specs.items()),
            tuple((k, _dtype(tf, outputs[k].dtype, f"{where}: output '{k}'")) for k in self._output_keys))
        self._check_ops()

    @property
    def where(self) -> str:
        return f"{self.path}: signature '{self.signature.name}'"

    def _check_ops(self) -> None:
        """Refuses stateful random ops anywhere in the signature's graph (its functions too)."""
        graph_def = self._function.graph.as_graph_def()
        nodes = [n for f in graph_def.library.function for n in f.node_def] + list(graph_def.node)
        for node in nodes:
            if node.op in STATEFUL_RANDOM_OPS:
                raise CompileError(f"{self.where}: TF op '{node.name}' ({node.op}) is a stateful random op: each run "
                                   f"draws new numbers, which a compiled program cannot reproduce (use a stateless "
                                   f"random op seeded by an input, or drop it for inference)")

    def export(self, shapes: Sequence[tuple[int, ...]]) -> str:
        """StableHLO text of the signature at `shapes` (one per input, in `signature.inputs` order),
        variables folded into constants and the bridge's legacy ops normalised."""
        tf = self._tf
        keys, function, output_keys = list(self._input_specs), self._function, self._output_keys

        @tf.autograph.experimental.do_not_convert
        def flat(*inputs: Any) -> list[Any]:
            results = function(**dict(zip(keys, inputs)))
            return [results[k] for k in output_keys]

        args = [tf.zeros(shape, self._input_specs[k].dtype) for k, shape in zip(keys, shapes)]
        wrapped = tf.function(flat, jit_compile=True, autograph=False)
        try:
            concrete = wrapped.get_concrete_function(*args)
            stablehlo = wrapped.experimental_get_compiler_ir(*args)(stage="stablehlo")
            values = [self._capture_value(c) for c in concrete.captured_inputs]
        except CompileError:
            raise
        except Exception as e:  # noqa: BLE001 -- tf.errors.*, ValueError, TypeError...: none may escape raw
            raise CompileError(f"{self.where}: {_bridge_failure(e)}") from None
        text = text_edits.fold_variables(stablehlo, len(keys), values)
        results = text_edits.main_result_types(text)
        if "?" in results:
            unknown = [k for k, t in zip(output_keys, re.findall(r"tensor<[^>]*>(?:,\s*#[^>]*>)?", results)) if "?" in t]
            raise CompileError(f"{self.where}: output(s) {', '.join(repr(k) for k in unknown) or results} have a "
                               f"data-dependent shape (e.g. tf.unique, tf.boolean_mask): fibergrid needs shapes known "
                               f"from the input shapes")
        return text_edits.normalize_legacy_ops(text)

    def _capture_value(self, capture: Any) -> np.ndarray:
        """The value a captured tensor stands for: a variable's (found by its handle) or a
        captured constant's."""
        if capture.dtype != self._tf.resource:
            return capture.numpy()
        for variable in self._variables:
            if variable.handle is capture:
                return variable.numpy()
        raise CompileError(f"{self.where}: captures a resource that is not a variable (a lookup table?): "
                           f"fibergrid folds variables into constants and nothing else")

    @functools.cached_property
    def _variables(self) -> list[Any]:
        return list(self._function.variables) + list(getattr(self._loaded, "variables", None) or [])


def shapes_for(where: str, signature: Signature, input_shapes: Sequence[Sequence[Sequence[int]]] | None
               ) -> tuple[list[tuple[tuple[int, ...], ...]], str | None]:
    """The input shapes to export, each given one checked against the signature (default: the
    signature's own with every unknown dim 1), and a note saying so when dims were unknown."""
    inputs = signature.inputs
    if not input_shapes:
        default = tuple(tuple(1 if d is None else d for d in shape) for _, shape, _ in inputs)
        unknown = [f"'{name}' {tuple(shape)}" for name, shape, _ in inputs if None in shape]
        note = (f"{where}: unknown dims in {', '.join(unknown)}: compiled for "
                f"{', '.join('x'.join(map(str, s)) for s in default)}; --input-shape compiles other shapes") if unknown else None
        return [default], note
    checked = []
    for shapes in input_shapes:
        if len(shapes) != len(inputs):
            raise InvalidArgument(f"{where}: {len(shapes)} input shape(s) for {len(inputs)} inputs "
                                  f"({', '.join(name for name, _, _ in inputs)}, in this order)")
        for (name, declared, _), shape in zip(inputs, shapes):
            if len(shape) != len(declared) or any(d is not None and d != s for d, s in zip(declared, shape)):
                raise InvalidArgument(f"{where}: input '{name}' is declared {tuple(declared)}, got shape {tuple(shape)}")
        checked.append(tuple(tuple(int(d) for d in s) for s in shapes))
    return list(dict.fromkeys(checked)), None


def export_saved_model(path: str, signature: str, input_shapes: Sequence[Sequence[Sequence[int]]] | None) -> dict[str, Any]:
    """The signature's names and one StableHLO text per input-shape signature, as JSON data."""
    model = SavedModel(path, signature)
    shapes, note = shapes_for(model.where, model.signature, input_shapes)
    return {
        "where": model.where, "note": note,
        "inputs": [[name, list(shape), dtype_name(dtype)] for name, shape, dtype in model.signature.inputs],
        "outputs": [[name, dtype_name(dtype)] for name, dtype in model.signature.outputs],
        "exports": [{"shapes": [list(s) for s in shape], "text": model.export(shape)} for shape in shapes],
    }


IDLE_EXIT_S = 60.0  # the worker exits after this long without a request: TensorFlow's memory goes with it


def _answer(request_path: str, result_path: str) -> None:
    """Reads a request (JSON: path, signature, input_shapes) and writes the export, or
    {"error": {"kind", "message"}}, as JSON."""
    with open(request_path) as f:
        request = json.load(f)
    try:
        result = export_saved_model(request["path"], request["signature"], request["input_shapes"])
    except (CompileError, InvalidArgument) as e:
        result = {"error": {"kind": type(e).__name__, "message": str(e)}}
    with open(result_path, "w") as f:
        json.dump(result, f)


def main() -> int:
    """The worker: one request per stdin line (`REQUEST\tRESULT` file paths), one `done` line on
    stdout after each; it exits when stdin closes (its caller ended) or after IDLE_EXIT_S idle.
    Whatever TensorFlow prints goes to stderr: stdout carries only the answers."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    while select.select([sys.stdin], [], [], IDLE_EXIT_S)[0]:
        line = sys.stdin.readline()
        if not line:
            break
        _answer(*line.rstrip("\n").split("\t"))
        answers.write("done\n")
        answers.flush()
    return 0


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


_NO_KERNEL_RE = re.compile(r"on XLA_\w+: (\w+) \(No registered '\w+' OpKernel")
_NODE_RE = re.compile(r"\{\{node ([^}]+)\}\}")


def _bridge_failure(e: BaseException) -> str:
    """What TensorFlow's bridge failed on, in one line: the TF op without an XLA kernel (string
    ops, py_function, ...) where its message names one."""
    m = _NO_KERNEL_RE.search(str(e))
    if m:
        # The message names the node once per function it is nested in: the longest is the full path.
        node = max(_NODE_RE.findall(str(e)), key=len, default=m.group(1))
        return (f"TF op '{node}' ({m.group(1)}) has no XLA kernel, so TensorFlow cannot export it to "
                f"StableHLO (string ops, py_function and some data-dependent ops have none)")
    message = str(e)
    if "Only support static input shape" in message:
        return "TensorFlow's bridge needs static input shapes"
    return f"TensorFlow cannot export it to StableHLO: {_first_line(e)}"


if __name__ == "__main__":
    sys.exit(main())
