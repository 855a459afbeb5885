"""ONNX graph -> tensor IR at one input-shape signature.

`convert_graph` walks the nodes in order (ONNX graphs are topologically sorted, the checker
enforces it), looks each op up in the op tables and lets its handler emit IR through a `Ctx`.
Nodes whose inputs are all known at compile time are folded (see builder.py): at one shape
signature every `Shape` is known, so the shape-computing subgraphs torch.onnx emits
(`Shape -> Gather -> Unsqueeze -> Concat -> Reshape`, a runtime `-1`) become plain constants and the
ops that consume them take static attrs, as the rest of the compiler wants.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from compiler import reference
from compiler.errors import CompileError, NeedsInputValues
from compiler.frontends.onnx.builder import FOLD_LIMIT, Builder, Tensor, dtype_of, shape_of
from compiler.ir import Value
from common.errors import Error as HalError


class Ctx:
    """What an op handler sees: its node's inputs (None for an omitted optional input), its
    attributes with defaults, the opset, and the builder to emit into."""

    def __init__(self, node: Any, inputs: list[Tensor | None], builder: Builder, opset: int,
                 scope: "Scope") -> None:
        self.node = node
        self.inputs = inputs
        self.b = builder
        self.opset = opset
        self.scope = scope
        self._attrs: dict[str, Any] | None = None

    @property
    def where(self) -> str:
        return f"ONNX op '{self.node.op_type}' (node '{self.node.name or self.node.output[0]}')"

    def error(self, message: str) -> CompileError:
        return CompileError(f"{self.where}: {message}")

    @property
    def attrs(self) -> dict[str, Any]:
        if self._attrs is None:
            from onnx import helper
            self._attrs = {}
            for a in self.node.attribute:
                if a.ref_attr_name:
                    raise self.error(f"attribute '{a.name}' refers to a function attribute (only in functions)")
                value = helper.get_attribute_value(a)
                self._attrs[a.name] = value.decode() if isinstance(value, bytes) else value
        return self._attrs

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def input(self, i: int) -> Tensor:
        """A required input."""
        if i >= len(self.inputs) or self.inputs[i] is None:
            raise self.error(f"input {i} is required")
        return self.inputs[i]  # type: ignore[return-value]

    def optional(self, i: int) -> Tensor | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def known(self, i: int, what: str) -> np.ndarray | None:
        """An optional input whose contents the conversion needs (a shape, axes, pads...): it
        must be computable at compile time for this shape signature."""
        x = self.optional(i)
        if x is None:
            return None
        if not isinstance(x, np.ndarray):
            sources = _graph_inputs_of(self.b, x)
            if x.name:  # a graph input: its value arrives with each call
                message = f"input {i} ('{what}') is the graph input '{x.name}', a value given at run time"
            else:
                message = (f"input {i} ('{what}') must be known at compile time (an initializer, a Constant or "
                           f"computed from shapes); it depends on the model's inputs " + ", ".join(f"'{n}'" for n in sources))
            raise NeedsInputValues(f"{self.where}: {message}", sources)
        return x

    def ints(self, i: int, what: str, attr: str | None = None) -> list[int] | None:
        """The ints of input i, or of attribute `attr` in opsets that had it as an attribute."""
        if attr is not None and attr in self.attrs:
            return [int(v) for v in self.attrs[attr]]
        value = self.known(i, what)
        return None if value is None else [int(v) for v in value.reshape(-1)]

    def axis(self, axis: int, rank: int) -> int:
        if not -max(rank, 1) <= axis < max(rank, 1):
            raise self.error(f"axis {axis} is out of range for rank {rank}")
        return axis % max(rank, 1)


Handler = Callable[[Ctx], Sequence[Tensor | None]]


def _graph_inputs_of(builder: Builder, value: Value) -> tuple[str, ...]:
    """The graph inputs `value` is computed from (named values no op of `builder` produced)."""
    producers = {r: op for op in builder.ops for r in op.results}
    names, seen, stack = [], set(), [value]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if v in producers:
            stack.extend(producers[v].operands)
        elif v.name and v.name not in names:
            names.append(v.name)
    return tuple(sorted(names))


class Scope:
    """Values by ONNX name; a subgraph (If/Loop body) sees its enclosing graph's values."""

    def __init__(self, parent: "Scope | None" = None) -> None:
        self.values: dict[str, Tensor] = {}
        self.parent = parent

    def get(self, name: str) -> Tensor | None:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.values:
                return scope.values[name]
            scope = scope.parent
        return None


def _fold(ops, outputs: list[Tensor | None], where: str) -> list[Tensor | None]:
    """Runs the ops a handler emitted from known inputs with the reference evaluator."""
    env: dict[Value, np.ndarray] = {}
    try:
        for op in ops:
            for v, r in zip(op.results, reference.evaluate_op(op, [env[x] for x in op.operands], None, env)):
                env[v] = np.asarray(r)
    except HalError as e:
        raise CompileError(f"{where}: folding at compile time failed: {e}") from None
    return [env[o] if isinstance(o, Value) else o for o in outputs]


def _size(t: Tensor | None) -> int:
    return 0 if t is None else int(np.prod(shape_of(t)))


def convert_node(node: Any, scope: Scope, builder: Builder, opset: int, handlers: dict[str, Handler],
                 index: int) -> None:
    """Converts one node, defining its outputs in `scope`."""
    inputs = _inputs(node, scope)
    default = node.domain in ("", "ai.onnx")  # other domains' ops are keyed 'domain.Op'
    handler = handlers.get(node.op_type if default else f"{node.domain}.{node.op_type}")
    if handler is None:
        expanded = _function_body(node, inputs, opset if default else builder.opsets.get(node.domain, 1))
        if expanded is None:
            name = node.op_type if default else f"{node.domain}.{node.op_type}"
            raise CompileError(f"unsupported ONNX op '{name}' (node '{node.name or node.output[0]}')")
        nodes, body_opset = expanded
        for inner in nodes:
            convert_node(inner, scope, builder, body_opset, handlers, index)
        return
    # If/Loop bodies may read runtime values of the enclosing graph: never fold those whole
    known = node.op_type not in ("If", "Loop", "Scan") and all(x is None or isinstance(x, np.ndarray) for x in inputs)
    _convert(node, handler, inputs, known, scope, builder, opset, index)


def _inputs(node: Any, scope: Scope) -> list[Tensor | None]:
    inputs: list[Tensor | None] = []
    for name in node.input:
        if not name:
            inputs.append(None)
            continue
        value = scope.get(name)
        if value is None:
            raise CompileError(f"ONNX node '{node.name or node.output[0]}' uses '{name}', which no node, "
                               f"input or initializer defines before it")
        inputs.append(value)
    return inputs


def _function_body(node: Any, inputs: list[Tensor | None], opset: int) -> tuple[list[Any], int] | None:
    """The nodes of the op's ONNX function body (ops the standard defines as a function of
    others: Swish, NegativeLogLikelihoodLoss, Attention...), renamed into this graph, and the
    body's opset; None when the op has none."""
    import onnx
    from onnx import FunctionProto, defs, helper
    from onnx.backend.test.case.node import function_expand_helper
    try:
        schema = defs.get_schema(node.op_type, opset, node.domain or "")
    except defs.SchemaError:
        return None
    node = onnx.NodeProto.FromString(node.SerializeToString())
    present = {a.name for a in node.attribute}
    for name, attr in schema.attributes.items():  # the body may refer to defaulted attributes
        if name not in present and attr.default_value and attr.default_value.type:
            node.attribute.extend([attr.default_value])
    plain = [v for v in schema.function_opset_versions if v <= opset]
    dependent = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    if plain:
        body = FunctionProto.FromString(schema.get_function_with_opset_version(max(plain)))
    elif dependent:
        types = [onnx.TypeProto() if x is None else
                 helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(dtype_of(x)), shape_of(x)) for x in inputs]
        body = FunctionProto.FromString(schema.get_context_dependent_function_with_opset_version(
            max(dependent), node.SerializeToString(), [t.SerializeToString() for t in types]))
    else:
        return None
    body_opset = next((o.version for o in body.opset_import if o.domain in ("", "ai.onnx")), opset)
    prefix = f"{node.output[0]}__{node.op_type}__"
    return function_expand_helper(node, body, prefix), int(body_opset)


def _convert(node: Any, handler: Handler, inputs: list[Tensor | None], known: bool, scope: Scope,
             builder: Builder, opset: int, index: int) -> None:
    target = Builder() if known else builder
    target.loc = (index + 1, 0)
    ctx = Ctx(node, inputs, target, opset, scope)
    try:
        outputs = list(handler(ctx))
    except HalError:
        raise
    except (ValueError, IndexError, TypeError, KeyError, ArithmeticError) as e:
        raise ctx.error(f"{type(e).__name__}: {e}") from None
    # numpy scalars (np.take with a scalar index...) are arrays of rank 0 here
    outputs = [np.asarray(o) if isinstance(o, np.generic) else o for o in outputs]
    if known and target.ops:
        if sum(_size(o) for o in outputs) <= FOLD_LIMIT:
            outputs = _fold(target.ops, outputs, ctx.where)
        else:
            builder.ops.extend(target.ops)
    for name, value in zip(node.output, outputs):
        if name and value is not None:
            scope.values[name] = value


def convert_graph(graph: Any, scope: Scope, builder: Builder, opset: int,
                  handlers: dict[str, Handler]) -> list[Tensor]:
    """Converts `graph`'s nodes into `builder` (its inputs and initializers already in `scope`)
    and returns its outputs."""
    for index, node in enumerate(graph.node):
        convert_node(node, scope, builder, opset, handlers, index)
    outputs = []
    for out in graph.output:
        value = scope.get(out.name)
        if value is None:
            raise CompileError(f"ONNX graph output '{out.name}' is not produced by any node")
        outputs.append(value)
    return outputs


def check_dtype(x: Tensor, dtype: np.dtype, what: str) -> None:
    if dtype_of(x) != dtype:
        raise CompileError(f"{what}: expected {dtype}, got {dtype_of(x)}")
