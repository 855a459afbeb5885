"""Fusion: partition a static function into dispatch regions (kernel IR) and the buffers between.

The walk goes over the ops in order and keeps, for every tensor value, either a buffer that
holds it or a *lazy* expression over buffers (kernel IR `Compute`/`Const` nodes with `_Leaf`
loads). Elementwise ops, compare, convert, scalar constants, broadcast_in_dim and transpose only
build expressions (the last two by rewriting the leaves' index maps), so a chain of them costs
nothing until a value must exist in memory: it is a function result, an operand of a
non-elementwise op (dot_general, a reshape of a computed value), or used more than once (computed
once into a buffer rather than recomputed per use). Materialising emits one elementwise region.

dot_general becomes a matmul region that stays *pending* while its single user is an `add` of a
bias broadcast along the columns and then a `maximum` with 0: those fold into its epilogue, as
jax.nn.relu(x @ w + b) is lowered. Any other use emits it.

Anything without a lowering raises CompileError("unsupported op 'NAME' at LINE:COL") here, at
compile time, never at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from compiler import kernel_ir as kir
from compiler.errors import CompileError
from compiler.ir import Function, Module, Op, Value


@dataclass(frozen=True)
class Tensor:
    """A buffer of the host program: a function input, a constant baked into the executable, or
    a temporary written by one dispatch (results are temporaries or inputs)."""

    id: int
    shape: tuple[int, ...]
    dtype: np.dtype
    kind: str  # "input" | "constant" | "temp"
    input_index: int = -1
    value: np.ndarray | None = None


@dataclass(frozen=True)
class Dispatch:
    """One region and, per binding slot, the id of the Tensor bound there."""

    region: kir.KernelRegion
    tensors: tuple[int, ...]


@dataclass
class Partition:
    """What fusion hands to codegen and the host program: buffers, dispatches in a valid order,
    and per function result the tensor holding it and the shape to view it with."""

    tensors: list[Tensor] = field(default_factory=list)
    dispatches: list[Dispatch] = field(default_factory=list)
    results: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)


@dataclass(eq=False, frozen=True)
class _Leaf:
    """A load of tensor `tensor` seen with `shape` (a reshape view of its bytes) through
    `index_map` (as kernel_ir.Load). Becomes a kir.Load once the region's bindings are known."""

    tensor: int
    shape: tuple[int, ...]
    index_map: tuple[int | None, ...]
    dtype: np.dtype


@dataclass
class _PendingMatmul:
    a: int
    b: int
    m: int
    n: int
    k: int
    batch: int
    shape: tuple[int, ...]
    epilogue: list[str] = field(default_factory=list)
    bias: int | None = None


def _unsupported(op: Op, why: str = "") -> CompileError:
    where = f" at {op.loc[0]}:{op.loc[1]}" if op.loc else ""
    return CompileError(f"unsupported op '{op.name}'{where}" + (f": {why}" if why else ""))


def inline_calls(module: Module, fn: Function) -> Function:
    """`fn` with every `call` replaced by a copy of its callee's ops (jax emits calls for
    helpers such as relu and _where; fusion must see through them)."""
    ops: list[Op] = []
    subst: dict[Value, Value] = {}

    def emit(body: list[Op], vmap: dict[Value, Value]) -> None:
        for op in body:
            operands = [vmap.get(v, v) for v in op.operands]
            if op.name == "call":
                callee = module.function(op.attrs["callee"])
                inner = dict(zip(callee.args, operands))
                emit(callee.ops, inner)
                vmap.update((r, inner.get(v, v)) for r, v in zip(op.results, callee.results))
                continue
            results = [Value(r.type, r.name) for r in op.results]
            vmap.update(zip(op.results, results))
            ops.append(Op(op.name, operands, results, op.attrs, op.regions, op.loc))

    emit(fn.ops, subst)
    return Function(fn.name, fn.args, [subst.get(v, v) for v in fn.results], ops, fn.public)


def _remap(node, leaf_map, memo: dict[int, object]):
    """Rewrite every leaf's index map with `leaf_map(map) -> map`, keeping shared nodes shared."""
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, _Leaf):
        out = _Leaf(node.tensor, node.shape, leaf_map(node.index_map), node.dtype)
    elif isinstance(node, kir.Compute):
        out = kir.Compute(node.op, tuple(_remap(x, leaf_map, memo) for x in node.operands), node.dtype, node.attr)
    else:
        out = node
    memo[id(node)] = out
    return out


class _Fuser:
    def __init__(self, fn: Function) -> None:
        self.fn = fn
        self.part = Partition()
        self.lazy: dict[Value, object] = {}
        self.pending: dict[Value, _PendingMatmul] = {}
        self.uses: dict[Value, int] = {}
        for op in fn.ops:
            for v in op.operands:
                self.uses[v] = self.uses.get(v, 0) + 1
        for v in fn.results:
            self.uses[v] = self.uses.get(v, 0) + 1

    # -- buffers ---------------------------------------------------------------------------
    def new_tensor(self, shape: tuple[int, ...], dtype: np.dtype, kind: str, **kw) -> int:
        t = Tensor(len(self.part.tensors), tuple(shape), np.dtype(dtype), kind, **kw)
        self.part.tensors.append(t)
        return t.id

    def leaf(self, tensor: int, shape: tuple[int, ...], dtype: np.dtype) -> _Leaf:
        return _Leaf(tensor, tuple(shape), tuple(range(len(shape))), np.dtype(dtype))

    def buffer_of(self, v: Value) -> int:
        """The tensor holding `v` densely in its own shape, materialising it if needed."""
        self.flush(v)
        node = self.lazy[v]
        if not (isinstance(node, _Leaf) and node.index_map == tuple(range(v.type.rank))):
            node = self.materialize(v)
        return node.tensor

    def materialize(self, v: Value) -> _Leaf:
        """Emit an elementwise region computing `v` into a new temporary; later uses load it."""
        shape = tuple(v.type.shape)
        out = self.new_tensor(shape, v.type.dtype, "temp")
        bindings: list[kir.BindingDecl] = []
        tensors: list[int] = []
        slots: dict[tuple[int, tuple[int, ...]], int] = {}
        memo: dict[int, object] = {}

        def lower(node):
            if id(node) in memo:
                return memo[id(node)]
            if isinstance(node, _Leaf):
                key = (node.tensor, node.shape)
                if key not in slots:
                    slots[key] = len(bindings)
                    bindings.append(kir.BindingDecl(node.shape, node.dtype))
                    tensors.append(node.tensor)
                res = kir.Load(slots[key], node.index_map, node.dtype)
            elif isinstance(node, kir.Compute):
                res = kir.Compute(node.op, tuple(lower(x) for x in node.operands), node.dtype, node.attr)
            else:
                res = node
            memo[id(node)] = res
            return res

        expr = lower(self.lazy[v])
        bindings.append(kir.BindingDecl(shape, v.type.dtype, output=True))
        tensors.append(out)
        body = kir.ElementwiseBody(shape, (expr,), (len(bindings) - 1,), kir.tile_elementwise(shape))
        self.add_dispatch("elementwise", bindings, body, tensors)
        self.lazy[v] = self.leaf(out, shape, v.type.dtype)
        return self.lazy[v]

    def add_dispatch(self, kind: str, bindings, body, tensors) -> None:
        name = f"{self.fn.name}_dispatch_{len(self.part.dispatches)}_{kind}"
        region = kir.KernelRegion(name, tuple(bindings), body)
        self.part.dispatches.append(Dispatch(region, tuple(tensors)))

    # -- matmul ----------------------------------------------------------------------------
    def flush(self, v: Value) -> None:
        """Emit the pending matmul producing `v`, if any: its epilogue can grow no further."""
        p = self.pending.pop(v, None)
        if p is None:
            return
        out = self.new_tensor(p.shape, np.float32, "temp")
        f32 = np.dtype(np.float32)
        bindings = [kir.BindingDecl((p.batch, p.m, p.k), f32), kir.BindingDecl((p.batch, p.k, p.n), f32),
                    kir.BindingDecl((p.batch, p.m, p.n), f32, output=True)]
        tensors = [p.a, p.b, out]
        if p.bias is not None:
            bindings.append(kir.BindingDecl((p.n,), f32))
            tensors.append(p.bias)
        body = kir.MatmulBody(p.m, p.n, p.k, p.batch, tuple(p.epilogue))
        self.add_dispatch("matmul", bindings, body, tensors)
        self.lazy[v] = self.leaf(out, p.shape, f32)

    def dot_general(self, op: Op) -> None:
        lhs, rhs = op.operands
        a = op.attrs
        dims = (a["lhs_batching_dimensions"], a["rhs_batching_dimensions"],
                a["lhs_contracting_dimensions"], a["rhs_contracting_dimensions"])
        f32 = np.dtype(np.float32)
        if any(t.dtype != f32 for t in (lhs.type, rhs.type, op.results[0].type)):
            raise _unsupported(op, "only f32 matmuls are lowered")
        if lhs.type.rank == 2 and rhs.type.rank == 2 and dims == ((), (), (1,), (0,)):
            (m, k), n, batch = lhs.type.shape, rhs.type.shape[1], 1
        elif lhs.type.rank == 3 and rhs.type.rank == 3 and dims == ((0,), (0,), (2,), (1,)):
            (batch, m, k), n = lhs.type.shape, rhs.type.shape[2]
        else:
            raise _unsupported(op, "only [m,k]x[k,n] and [b,m,k]x[b,k,n] contractions are lowered")
        self.pending[op.results[0]] = _PendingMatmul(
            self.buffer_of(lhs), self.buffer_of(rhs), m, n, k, batch, tuple(op.results[0].type.shape))

    def absorb_epilogue(self, op: Op) -> bool:
        """Fold `op` into the pending matmul it consumes (bias add, then relu); True if it did."""
        if op.name not in ("add", "maximum"):
            return False
        for i, v in enumerate(op.operands):
            p = self.pending.get(v)
            if p is None or self.uses[v] != 1:
                continue
            other = self.lazy.get(op.operands[1 - i])
            if op.name == "add" and not p.epilogue and self._is_bias(other, len(p.shape), p.n):
                p.bias = other.tensor
                p.epilogue.append("bias_add")
            elif op.name == "maximum" and "relu" not in p.epilogue and isinstance(other, kir.Const) \
                    and other.value == 0:
                p.epilogue.append("relu")
            else:
                return False
            del self.pending[v]
            self.pending[op.results[0]] = p
            return True
        return False

    @staticmethod
    def _is_bias(node: object, rank: int, n: int) -> bool:
        """A dense f32 vector of n values indexed by the last output dim only."""
        return (isinstance(node, _Leaf) and node.dtype == np.float32 and math.prod(node.shape) == n
                and all(d in (None, rank - 1) for d in node.index_map)
                and sum(d == rank - 1 for d in node.index_map) == 1)

    # -- the walk --------------------------------------------------------------------------
    def run(self) -> Partition:
        for i, arg in enumerate(self.fn.args):
            self.check_dtype(arg.type.dtype, f"input {i}")
            t = self.new_tensor(arg.type.shape, arg.type.dtype, "input", input_index=i)
            self.lazy[arg] = self.leaf(t, arg.type.shape, arg.type.dtype)
        for op in self.fn.ops:
            if self.absorb_epilogue(op):
                continue
            for v in op.operands:
                self.flush(v)
            self.op(op)
        for v in self.fn.results:
            self.part.results.append((self.buffer_of(v), tuple(v.type.shape)))
        return self.part

    def check_dtype(self, dtype: np.dtype, what: str, op: Op | None = None) -> None:
        if dtype not in kir.KERNEL_DTYPES:
            if op is not None:
                raise _unsupported(op, f"element type {dtype}")
            raise CompileError(f"{what}: unsupported element type {dtype}")

    def op(self, op: Op) -> None:
        for r in op.results:
            self.check_dtype(r.type.dtype, "", op)
        result = op.results[0] if op.results else None
        operands = [self.lazy[v] for v in op.operands]
        if op.name == "dot_general":
            return self.dot_general(op)
        if op.name == "constant":
            value = np.asarray(op.attrs["value"])
            if value.size == 1:
                node = kir.Const(value.reshape(()).item(), result.type.dtype)
            else:
                t = self.new_tensor(value.shape, value.dtype, "constant", value=np.ascontiguousarray(value))
                node = self.leaf(t, value.shape, value.dtype)
        elif op.name in kir.SCALAR_OPS:
            attr = op.attrs.get("comparison_direction", "") if op.name == "compare" else ""
            if op.name == "compare" and op.attrs.get("compare_type") == "TOTALORDER":
                raise _unsupported(op, "TOTALORDER comparisons")
            node = kir.Compute(op.name, tuple(operands), result.type.dtype, attr)
        elif op.name == "broadcast_in_dim":
            node = self.broadcast(op, operands[0])
        elif op.name == "transpose":
            inverse = {d: i for i, d in enumerate(op.attrs["permutation"])}
            node = _remap(operands[0], lambda m: tuple(None if d is None else inverse[d] for d in m), {})
        elif op.name == "reshape":
            node = self.leaf(self.buffer_of(op.operands[0]), result.type.shape, result.type.dtype)
        else:
            raise _unsupported(op)
        self.lazy[result] = node
        if self.uses.get(result, 0) > 1 and isinstance(node, kir.Compute):
            self.materialize(result)

    def broadcast(self, op: Op, node):
        src, dst = op.operands[0].type.shape, op.results[0].type.shape
        dims = op.attrs["broadcast_dimensions"]

        def through(index_map):
            return tuple(None if d is None or (src[d] == 1 and dst[dims[d]] != 1) else dims[d]
                         for d in index_map)

        return _remap(node, through, {})


def partition(module: Module, function: str) -> Partition:
    """Dispatch regions and buffers for the static function `function` of `module` (the output
    of shape_inference.specialize)."""
    return _Fuser(inline_calls(module, module.function(function))).run()
