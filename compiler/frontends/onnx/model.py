"""Reading an ONNX model: bytes -> a checked `onnx.ModelProto` -> an `OnnxModule`.

An `OnnxModule` is an IR `Module` whose @main has the graph's declared signature (a `dim_param`
stays a symbolic dim, named as in the model; an unnamed unknown dim is None) and no body: the
body is built per input-shape signature by `instantiate`, which binds every symbolic dim to one
value (a dim bound two ways is an error naming it), folds the shape subgraphs and returns a fully
static module. The pipeline calls `instantiate` where it would specialize a StableHLO module, so
the .fgx, the compile cache and `fg.load`'s per-call specialization work unchanged.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Sequence

import numpy as np

from compiler.errors import CompileError
from compiler.frontends.onnx.builder import Builder
from compiler.frontends.onnx.graph import Scope, convert_graph
from compiler.frontends.onnx.narrow import storage, to_storage
from compiler.frontends.onnx.rewrite import fold_batch_norms
from compiler.ir import Dim, Function, Module, TensorType, Value
from common.errors import Error as HalError
from common.errors import InvalidArgument

NARROW_TYPES = ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0", "FLOAT4E2M1",
                "INT4", "UINT4", "INT2", "UINT2")
"""ONNX element types held as their storage bytes (narrow.py)."""

MIN_OPSET = 7  # older opsets: the ops whose inputs were attributes read both forms


def _max_opset() -> int:
    """The newest opset the installed onnx package defines (later versions of the ops converted
    here add element types, not semantics, and the checker validates the rest)."""
    import onnx
    return int(onnx.defs.onnx_opset_version())


def element_type(elem_type: int, what: str) -> np.dtype:
    """numpy dtype of an ONNX TensorProto element type (ml_dtypes' for the narrow ones: float8,
    float4, int4, int2; see narrow.py); CompileError for those fibergrid lacks."""
    from onnx import TensorProto, helper
    supported = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                 TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
                 TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64, TensorProto.BOOL,
                 *(getattr(TensorProto, n) for n in NARROW_TYPES if hasattr(TensorProto, n))}
    if elem_type not in supported:
        name = TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else str(elem_type)
        raise CompileError(f"{what}: unsupported element type {name}")
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def tensor_value(t: Any, what: str) -> np.ndarray:
    """An initializer or Constant's TensorProto as a read-only numpy array."""
    from onnx import numpy_helper
    element_type(t.data_type, what)
    try:
        array = numpy_helper.to_array(t)
    except (ValueError, TypeError, OSError) as e:
        raise CompileError(f"{what}: cannot read tensor '{t.name}': {e}") from None
    array = np.array(array, copy=not array.flags.c_contiguous)  # (ascontiguousarray makes a scalar 1-D)
    array.setflags(write=False)
    return array


def _check_unchanged_since(graph: Any, opset: int) -> None:
    """A model of an opset before MIN_OPSET is converted only where each of its ops is still the
    version in force at MIN_OPSET (Not, Relu...: the definition, hence the semantics, is the same);
    CompileError naming the first op that changed."""
    from onnx import AttributeProto, defs
    for node in graph.node:
        if node.domain in ("", "ai.onnx"):
            try:
                old = defs.get_schema(node.op_type, opset).since_version
                new = defs.get_schema(node.op_type, MIN_OPSET).since_version
            except defs.SchemaError:
                old, new = -1, 0
            if old != new:
                raise CompileError(f"ONNX opset {opset} is not supported (opsets {MIN_OPSET} to {_max_opset()} are): "
                                   f"op '{node.op_type}' (node '{node.name or node.output[0]}') changed since")
        for attr in node.attribute:
            for g in ([attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)):
                _check_unchanged_since(g, opset)


def read_model(data: bytes, base_dir: str | None = None) -> Any:
    """Parse and check a serialized ModelProto (external data read from `base_dir`)."""
    try:
        import onnx
    except ImportError:
        raise CompileError("reading ONNX models needs the 'onnx' package: pip install 'fibergrid[onnx]'") from None
    from google.protobuf.message import DecodeError
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CompileError(f"expected a serialized ONNX model (bytes), got {type(data).__name__}")
    try:
        model = onnx.load_from_string(bytes(data))
    except (DecodeError, ValueError, RuntimeError) as e:
        raise CompileError(f"not a valid ONNX model (truncated or corrupted?): {e}") from None
    if not model.HasField("graph") or not model.graph.output:
        raise CompileError("not a valid ONNX model (truncated or corrupted?): it has no graph outputs")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        if base_dir is None:
            raise CompileError("the model keeps initializers in external data files: load it from its path")
        try:
            from onnx.external_data_helper import load_external_data_for_model
            load_external_data_for_model(model, base_dir)
        except (OSError, ValueError, onnx.checker.ValidationError) as e:
            raise CompileError(f"cannot read the model's external data: {str(e).strip().splitlines()[0]}") from None
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid"
        raise CompileError(f"invalid ONNX model: {first}") from None
    return model


def default_opset(model: Any) -> int | None:
    """The default domain's opset; None when the model imports none (it then uses only ops of
    other domains, each refused by name when converted)."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return None


class OnnxModule(Module):
    """The declared signature of an ONNX graph as @main; `instantiate` builds its body."""

    def __init__(self, model: Any) -> None:
        self.model = model
        opset = default_opset(model)
        self.opset = _max_opset() if opset is None else opset
        if not 1 <= self.opset <= _max_opset():
            raise CompileError(f"ONNX opset {self.opset} is not supported (opsets {MIN_OPSET} to {_max_opset()} are)")
        if self.opset < MIN_OPSET:
            _check_unchanged_since(model.graph, self.opset)
        graph = model.graph
        self.constants = {t.name: tensor_value(t, f"initializer '{t.name}'") for t in graph.initializer}
        self.graph_inputs = [i for i in graph.input if i.name not in self.constants]
        fold_batch_norms(graph, self.constants)
        # the declared types as converted (narrow types as ml_dtypes') and as called (their bytes)
        self.logical_inputs = [self._declared(i, "input") for i in self.graph_inputs]
        self.logical_outputs = [self._declared(o, "output", allow_unknown=True) for o in graph.output]
        args = [Value(TensorType(t.shape, storage(t.dtype)), i.name) for t, i in zip(self.logical_inputs, self.graph_inputs)]
        results = [Value(TensorType(t.shape, storage(t.dtype)), o.name) for t, o in zip(self.logical_outputs, graph.output)]
        super().__init__({"main": Function("main", args, results, [])})

    @staticmethod
    def _declared(info: Any, kind: str, allow_unknown: bool = False) -> TensorType:
        what = f"graph {kind} '{info.name}'"
        if not isinstance(info.name, str):  # protobuf hands invalid UTF-8 in a string field over as bytes
            raise CompileError(f"{what}: the name is not UTF-8 text")
        t = info.type
        if t.WhichOneof("value") == "optional_type" and t.optional_type.elem_type.WhichOneof("value") == "tensor_type":
            t = t.optional_type.elem_type  # an optional tensor is passed as the tensor (present: see ops/optional.py)
        if t.WhichOneof("value") != "tensor_type":
            raise CompileError(f"{what}: only tensor {kind}s are supported (got {t.WhichOneof('value')})")
        dtype = element_type(t.tensor_type.elem_type, what)
        if not t.tensor_type.HasField("shape"):
            if allow_unknown:
                return TensorType((), dtype)
            raise CompileError(f"{what} has no shape (rank unknown)")
        dims: list[Dim] = []
        for d in t.tensor_type.shape.dim:
            which = d.WhichOneof("value")
            if which == "dim_param" and not isinstance(d.dim_param, str):
                raise CompileError(f"{what}: a dim_param is not UTF-8 text ({d.dim_param!r})")
            dims.append(int(d.dim_value) if which == "dim_value" else (d.dim_param or None) if which == "dim_param" else None)
        return TensorType(tuple(dims), dtype)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.functions["main"].args)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.functions["main"].results)

    def bind_dims(self, shapes: Sequence[Sequence[int]]) -> dict[str, int]:
        """The value of every symbolic dim at these input shapes (InvalidArgument naming the dim
        when one is bound two ways, or an input's rank or static dim does not fit)."""
        args = self.functions["main"].args
        if len(shapes) != len(args):
            raise InvalidArgument(f"the ONNX graph takes {len(args)} inputs, got {len(shapes)} shapes")
        bound: dict[str, tuple[int, str]] = {}
        for arg, shape in zip(args, shapes):
            if len(shape) != arg.type.rank:
                raise InvalidArgument(f"input '{arg.name}': expected rank {arg.type.rank}, got shape {tuple(shape)}")
            for k, (d, s) in enumerate(zip(arg.type.shape, shape)):
                if isinstance(d, int) and d != s:
                    raise InvalidArgument(f"input '{arg.name}': dim {k} must be {d}, got {s}")
                if isinstance(d, str):
                    if d in bound and bound[d][0] != s:
                        raise InvalidArgument(f"symbolic dim '{d}' is bound to {bound[d][0]} by input "
                                              f"'{bound[d][1]}' and to {s} by input '{arg.name}'")
                    bound.setdefault(d, (int(s), arg.name))
        return {k: v for k, (v, _) in bound.items()}

    def instantiate(self, function: str, shapes: Sequence[Sequence[int]],
                    values: dict[str, np.ndarray] | None = None) -> Module:
        """A static module: the graph converted at these input shapes, and with `values` (input
        name -> contents) known for the inputs a conversion needs the contents of
        (NeedsInputValues names them). Such an input stays an argument of the function, unused:
        the compiled code is only valid for those contents, which the caller keys it by."""
        with _malformed_is_compile_error():
            return self._instantiate(function, shapes, values or {})

    def _instantiate(self, function: str, shapes: Sequence[Sequence[int]], values: dict[str, np.ndarray]) -> Module:
        from compiler.frontends.onnx.ops import HANDLERS
        if function != "main":
            raise CompileError(f"an ONNX model has one function, 'main' (asked for '{function}')")
        self.bind_dims(shapes)
        declared = self.functions["main"]
        scope = Scope()
        builder = Builder()
        builder.opsets = {o.domain: int(o.version) for o in self.model.opset_import if o.domain not in ("", "ai.onnx")}
        scope.values.update(self.constants)
        args = []
        unknown = sorted(set(values) - {a.name for a in declared.args})
        if unknown:
            raise CompileError(f"values given for {unknown}, which are not inputs of the graph")
        for arg, logical, shape in zip(declared.args, self.logical_inputs, shapes):
            v = Value(TensorType(tuple(int(s) for s in shape), logical.dtype), arg.name)
            args.append(v)
            scope.values[arg.name] = v
            if arg.name in values:
                value = np.asarray(values[arg.name])
                if value.shape != v.type.shape or value.dtype != arg.type.dtype:
                    raise CompileError(f"the value given for input '{arg.name}' is {value.dtype}{list(value.shape)}, "
                                       f"the input is {arg.type.dtype}{list(v.type.shape)}")
                scope.values[arg.name] = value.view(logical.dtype)
        outputs = convert_graph(self.model.graph, scope, builder, self.opset, HANDLERS)
        results = []
        for declared_out, logical, out in zip(declared.results, self.logical_outputs, outputs):
            v = builder.value(out)
            if v.type.dtype != logical.dtype:
                raise CompileError(f"graph output '{declared_out.name}': declared {logical.dtype}, "
                                   f"computed {v.type.dtype}")
            results.append(v)
        main = Function("main", args, results, builder.ops)
        to_storage(main)
        return Module({"main": main})


def read_source(path: str | os.PathLike) -> bytes:
    """The bytes of the model at `path`, self-contained: a model whose initializers live in
    external data files (beside it) is returned with them inlined, so that the bytes alone key the
    compile cache and rebuild the model later."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InvalidArgument(f"cannot read '{path}': {e.strerror or e}") from None
    if b"location" not in data:  # no external data reference (a cheap scan before a full parse)
        return data
    import onnx
    model = read_model(data, os.path.dirname(os.path.abspath(path)) or ".")
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load_from_string(data).graph.initializer):
        return data
    for t in model.graph.initializer:
        t.data_location = onnx.TensorProto.DEFAULT
        del t.external_data[:]
    return model.SerializeToString()


@contextlib.contextmanager
def _malformed_is_compile_error() -> Iterator[None]:
    """A safety net: every check should raise CompileError itself, but a corrupted model can
    still surprise (protobuf decodes strings lazily: a bad UTF-8 name fails where it is read)."""
    try:
        yield
    except HalError:
        raise
    except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError) as e:
        raise CompileError(f"malformed ONNX model ({type(e).__name__}: {str(e)[:200]})") from None


def parse_onnx(data: bytes, base_dir: str | os.PathLike | None = None) -> OnnxModule:
    """A serialized ONNX model -> an `OnnxModule` (CompileError for bad or unsupported input)."""
    with _malformed_is_compile_error():
        return OnnxModule(read_model(data, None if base_dir is None else os.fspath(base_dir)))
