"""Fusion: partition a static function into dispatch regions (kernel IR) and the buffers between.

The walk goes over the ops in order and keeps, for every tensor value, either a buffer that
holds it or a *lazy* expression over buffers (kernel IR `Compute`/`Const`/`Coord` nodes and
`index_exprs.Leaf` loads). Elementwise ops, compare, convert, constants, iota and every
data-movement op (broadcast, transpose, reshape splitting dims, slice, reverse, pad, concatenate,
dynamic_slice, dynamic_update_slice, gather) only build expressions (`index_exprs`), so a chain
of them costs nothing until a value must exist in memory: it is a function result, an operand
of an op that needs a buffer (matmul, conv, sort, a general reshape), or a computed value used
more than once (computed once into a buffer rather than recomputed per use). Materialising emits
one elementwise region.

Folds become `ReductionBody` regions whose element expressions are the lazy operands, so
producers fuse into them: reduce (any elementwise body, several operands as argmax needs),
reduce_window (the window is reduced dims of the iteration space, padding a select),
dot_general on non-f32 types and convolutions the conv generator does not take (the contraction
is the fold of a product). A fold stays pending until a result is needed, so elementwise ops
on one of its results (mean's divide, a scale) become its output expressions rather than
another dispatch. dot_general on f32 becomes a matmul region (operands transposed into
[batch, m, k] x [batch, k, n] first where needed) that stays *pending* while its single user is
an `add` of a bias broadcast along the columns and then a `maximum` with 0: those fold into its
epilogue, as jax.nn.relu(x @ w + b) is lowered. 2-D f32 convolutions without groups or input
dilation go to the conv generator in NHWC x HWIO (other layouts transposed there), and so do
depthwise ones (as many groups as input and output features); they stay pending as matmuls do,
taking a bias along the features, a residual add of the output's shape, relu and then a minimum
with a constant (ReLU6) into their epilogue: a CNN layer is one dispatch. sort becomes
a sort region.

bitcast_convert between widths is index arithmetic too (shifts and ors of the operand's bits).
A region with nothing to write (every output of size 0) is not emitted at all.

Anything without a lowering raises CompileError("unsupported op 'NAME' at LINE:COL") here, at
compile time, never at run time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from compiler import kernel_ir as kir
from compiler.errors import CompileError
from compiler.ir import Function, Module, Op, TensorType, Value, reduce_precision_format
from compiler.passes import index_exprs as ix
from compiler.passes.decompose import decompose
from compiler.passes.index_exprs import Leaf

F32 = np.dtype(np.float32)
CHANNELS_FIRST_MAX = 4  # input channels up to which a convolution reads a channels-first image in place


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


@dataclass
class _PendingMatmul:
    """A matmul not emitted yet, growing an epilogue; with `conv`, a convolution of input `a` by
    filter `b` into its NHWC output (`shape`, `n` features) that the op's result reads through
    the permutation `view` (the result's dim i is the output's dim view[i])."""

    a: int
    b: int
    m: int
    n: int
    k: int
    batch: int
    shape: tuple[int, ...]
    epilogue: list[str] = field(default_factory=list)
    bias: int | None = None
    conv: kir.ConvBody | None = None
    view: tuple[int, ...] = ()
    residual: int | None = None

    @property
    def feature_dim(self) -> int:
        """The result's dim that a bias runs along."""
        return self.view.index(3) if self.conv is not None else len(self.shape) - 1


@dataclass
class _PendingFold:
    """A reduction not emitted yet (lazy expressions, not lowered): `outputs` maps each value
    it will produce to its expression of the folded values (kir.Arg) over `out_shape`."""

    shape: tuple[int, ...]
    reduced: tuple[int, ...]
    inputs: list
    inits: list
    combiner: list
    out_shape: tuple[int, ...]
    outputs: dict[Value, object] = field(default_factory=dict)


class _Bindings:
    """The bindings of one region being built: lowers lazy expressions to kernel IR, giving each
    distinct (buffer, view shape) one input slot; outputs are added after the inputs."""

    def __init__(self) -> None:
        self.decls: list[kir.BindingDecl] = []
        self.tensors: list[int] = []
        self.slots: dict[tuple[int, tuple[int, ...]], int] = {}
        self.memo: dict[int, kir.Expr] = {}

    def input(self, tensor: int, shape: tuple[int, ...], dtype: np.dtype) -> int:
        key = (tensor, shape)
        if key not in self.slots:
            self.slots[key] = len(self.decls)
            self.decls.append(kir.BindingDecl(shape, dtype))
            self.tensors.append(tensor)
        return self.slots[key]

    def output(self, tensor: int, shape: tuple[int, ...], dtype: np.dtype) -> int:
        self.decls.append(kir.BindingDecl(tuple(shape), dtype, output=True))
        self.tensors.append(tensor)
        return len(self.decls) - 1

    def extra(self, tensor: int, shape: tuple[int, ...], dtype: np.dtype) -> int:
        """An input slot of its own (a library body's epilogue operand, at a fixed position),
        even when the tensor is bound already."""
        self.decls.append(kir.BindingDecl(tuple(shape), dtype))
        self.tensors.append(tensor)
        return len(self.decls) - 1

    def lower(self, node) -> kir.Expr:
        if id(node) in self.memo:
            return self.memo[id(node)]
        if isinstance(node, Leaf):
            out = kir.Load(self.input(node.tensor, node.shape, node.dtype),
                           tuple(self.lower(x) for x in node.index), node.dtype)
        elif isinstance(node, kir.Compute):
            out = kir.Compute(node.op, tuple(self.lower(x) for x in node.operands), node.dtype, node.attr)
        else:
            out = node
        self.memo[id(node)] = out
        return out


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


def _reads_memory(node, memo: dict[int, bool]) -> bool:
    """Whether an expression loads anything: one that does not (constants, iota masks) is
    cheaper to recompute at each use than to store and load."""
    if id(node) not in memo:
        if isinstance(node, Leaf):
            memo[id(node)] = True
        else:
            memo[id(node)] = isinstance(node, kir.Compute) and any(_reads_memory(x, memo) for x in node.operands)
    return memo[id(node)]


def _permuted(node, perm: list[int]):
    """`node` with its dims reordered: result dim i is operand dim perm[i]."""
    new: list = [None] * len(perm)
    for i, p in enumerate(perm):
        new[p] = kir.Coord(i)
    return ix.substitute(node, new)


class _Fuser:
    def __init__(self, fn: Function) -> None:
        self.fn = fn
        self.part = Partition()
        self.lazy: dict[Value, object] = {}
        self.pending: dict[Value, _PendingMatmul] = {}
        self.pending_folds: dict[Value, _PendingFold] = {}
        self.uses: dict[Value, int] = {}
        for op in fn.ops:
            for v in op.operands:
                self.uses[v] = self.uses.get(v, 0) + 1
        for v in fn.results:
            self.uses[v] = self.uses.get(v, 0) + 1

    # -- buffers ---------------------------------------------------------------------------
    def new_tensor(self, shape: tuple[int, ...], dtype: np.dtype, kind: str = "temp", **kw) -> int:
        t = Tensor(len(self.part.tensors), tuple(shape), np.dtype(dtype), kind, **kw)
        self.part.tensors.append(t)
        return t.id

    @staticmethod
    def leaf(tensor: int, shape: tuple[int, ...], dtype: np.dtype) -> Leaf:
        return Leaf(tensor, tuple(shape), ix.coords(len(shape)), np.dtype(dtype))

    def buffer_of(self, v: Value) -> int:
        """The tensor holding `v` densely in its own shape, materialising it if needed."""
        self.flush(v)
        tensor = self.tensor_of(self.lazy[v], tuple(v.type.shape), v.type.dtype)
        self.lazy[v] = self.leaf(tensor, tuple(v.type.shape), v.type.dtype)
        return tensor

    def tensor_of(self, node, shape: tuple[int, ...], dtype: np.dtype) -> int:
        """A tensor holding the value of expression `node` (over `shape`) densely: a buffer that
        holds it already (unit dims aside: (1, 32, 256) is (32, 256)) or a new one."""
        if isinstance(node, Leaf) and (node.is_dense and node.shape == shape or ix.reads_point(node.shape, node.index, shape)
                                       and math.prod(self.part.tensors[node.tensor].shape) == math.prod(shape)):
            return node.tensor
        out = self.new_tensor(shape, dtype)
        regs = _Bindings()
        expr = regs.lower(node)
        slot = regs.output(out, shape, dtype)
        body = kir.ElementwiseBody(shape, (expr,), (slot,), kir.tile_elementwise(shape))
        self.add_dispatch("elementwise", regs, body)
        return out

    def materialize(self, v: Value) -> None:
        """Compute `v` into a new temporary; later uses load it."""
        tensor = self.tensor_of(self.lazy[v], tuple(v.type.shape), v.type.dtype)
        self.lazy[v] = self.leaf(tensor, tuple(v.type.shape), v.type.dtype)

    def add_dispatch(self, kind: str, regs: _Bindings, body) -> None:
        if all(d.size == 0 for d in regs.decls if d.output):
            return  # nothing to write (zero-size results): no dispatch, the buffers stay empty
        name = f"{self.fn.name}_dispatch_{len(self.part.dispatches)}_{kind}"
        region = kir.KernelRegion(name, tuple(regs.decls), body)
        self.part.dispatches.append(Dispatch(region, tuple(regs.tensors)))

    # -- folds -------------------------------------------------------------------------------
    def fold(self, op: Op, shape: tuple[int, ...], reduced: list[int], inputs: list, inits: list,
             combiner: list | None) -> None:
        """A reduction folding `inputs` (expressions over `shape`) over the dims `reduced`. It
        stays pending (`absorb_into_fold`) until a result is needed, so that elementwise
        consumers (mean's divide, a scale) join its outputs instead of another dispatch."""
        if combiner is None:
            raise _unsupported(op, "the reducer body has an op without a scalar lowering")
        out_shape = tuple(n for d, n in enumerate(shape) if d not in reduced)
        fold = _PendingFold(tuple(shape), tuple(reduced), inputs, inits, combiner, out_shape)
        used = [i for i, r in enumerate(op.results) if self.uses.get(r, 0)] or [len(op.results) - 1]
        for i in used:
            r = op.results[i]
            fold.outputs[r] = kir.Arg(i, r.type.dtype)
            self.pending_folds[r] = fold

    def absorb_into_fold(self, op: Op) -> bool:
        """Make an elementwise `op` on one result of a pending fold (used only there) an output
        expression of that fold; True if it did."""
        if op.name not in kir.SCALAR_OPS:
            return False
        pending = [v for v in op.operands if v in self.pending_folds or v in self.pending]
        if len(pending) != 1 or pending[0] not in self.pending_folds or self.uses[pending[0]] != 1:
            return False
        v = pending[0]
        fold = self.pending_folds.pop(v)
        if tuple(op.results[0].type.shape) != fold.out_shape:
            self.pending_folds[v] = fold
            return False
        operands = [fold.outputs.pop(x) if x is v else self.lazy[x] for x in op.operands]
        result = op.results[0]
        fold.outputs[result] = kir.Compute(op.name, tuple(operands), result.type.dtype, ix.compare_attr(op))
        self.pending_folds[result] = fold
        return True

    def flush_fold(self, fold: _PendingFold) -> None:
        """Emit a pending fold's reduction region; its outputs become buffers."""
        regs = _Bindings()
        elements = tuple(regs.lower(x) for x in fold.inputs)
        inits = tuple(regs.lower(x) for x in fold.inits)
        outputs = tuple(regs.lower(x) for x in fold.outputs.values())
        slots = []
        for v in fold.outputs:
            tensor = self.new_tensor(fold.out_shape, v.type.dtype)
            slots.append(regs.output(tensor, fold.out_shape, v.type.dtype))
            self.lazy[v] = self.leaf(tensor, fold.out_shape, v.type.dtype)
            del self.pending_folds[v]
        size = math.prod(fold.shape[d] for d in fold.reduced)
        grid = kir.tile_elementwise(fold.out_shape, 16384 // max(size, 1))
        body = kir.ReductionBody(fold.shape, fold.reduced, elements, inits,
                                 tuple(regs.lower(c) for c in fold.combiner), outputs, tuple(slots), grid)
        self.add_dispatch("reduction", regs, body)

    @staticmethod
    def combiner_args(op: Op, inits: list) -> list[kir.Arg]:
        """Arg(0..n-1): accumulators (the inits' types), Arg(n..2n-1): elements."""
        n = len(inits)
        types = [v.type.dtype for v in op.operands[n:2 * n]] + [v.type.dtype for v in op.operands[:n]]
        return [kir.Arg(i, t) for i, t in enumerate(types)]

    def reduce(self, op: Op, operands: list) -> None:
        n = len(operands) // 2
        combiner = ix.region_exprs(op.regions[0], self.combiner_args(op, operands[n:]))
        self.fold(op, tuple(op.operands[0].type.shape), sorted(op.attrs["dimensions"]),
                  operands[:n], operands[n:], combiner)

    def reduce_window(self, op: Op, operands: list) -> None:
        """The iteration space is output dims x window dims; the window dims are reduced. A
        window point outside the (padded, dilated) operand reads the init value, as in XLA."""
        a = op.attrs
        n = len(operands) // 2
        shape, out = op.operands[0].type.shape, op.results[0].type.shape
        rank = len(shape)
        new, guard = ix.window_coords(shape, a["window_strides"], a["window_dilations"], a["padding"], a["base_dilations"])
        elements = [ix.select(guard, ix.substitute(x, new), init) for x, init in zip(operands[:n], operands[n:])]
        combiner = ix.region_exprs(op.regions[0], self.combiner_args(op, operands[n:]))
        self.fold(op, tuple(out) + tuple(a["window_dimensions"]), list(range(rank, 2 * rank)),
                  elements, operands[n:], combiner)

    def contraction(self, op: Op, shape: tuple[int, ...], reduced: list[int], lhs, rhs) -> None:
        """sum over `reduced` of lhs * rhs (both converted to the result type; f16 and bf16
        products and sums in f32, rounded once at the end, as XLA's CPU dot does)."""
        result = op.results[0]
        dtype = acc = result.type.dtype
        if dtype in kir.NARROW_FLOATS:
            acc = F32
        lhs, rhs = (x if x.dtype == acc else kir.Compute("convert", (x,), acc) for x in (lhs, rhs))
        product = kir.Compute("multiply", (lhs, rhs), acc)
        combiner = [kir.Compute("add", (kir.Arg(0, acc), kir.Arg(1, acc)), acc)]
        self.fold(op, shape, reduced, [product], [kir.Const(0, acc)], combiner)
        if acc != dtype:
            self.pending_folds[result].outputs[result] = kir.Compute("convert", (kir.Arg(0, acc),), dtype)

    # -- dot_general ---------------------------------------------------------------------------
    def flush(self, v: Value) -> None:
        """Emit the pending fold or matmul producing `v`, if any: it can grow no further."""
        if v in self.pending_folds:
            return self.flush_fold(self.pending_folds[v])
        p = self.pending.pop(v, None)
        if p is None:
            return
        if p.conv is not None:
            return self.flush_conv(v, p)
        out = self.new_tensor(p.shape, F32)
        regs = _Bindings()
        regs.input(p.a, (p.batch, p.m, p.k), F32)
        regs.input(p.b, (p.batch, p.k, p.n), F32)
        regs.output(out, (p.batch, p.m, p.n), F32)
        if p.bias is not None:
            regs.input(p.bias, (p.n,), F32)
        self.add_dispatch("matmul", regs, kir.MatmulBody(p.m, p.n, p.k, p.batch, tuple(p.epilogue)))
        self.lazy[v] = self.leaf(out, p.shape, F32)

    def dot_general(self, op: Op, lhs_node, rhs_node) -> None:
        """f32: a matmul on operands transposed to [batch, m, k] / [batch, k, n]; other types:
        a contraction fold over the iteration space (batch, lhs free, rhs free, contracting)."""
        lhs, rhs = op.operands
        a = op.attrs
        lb, rb = list(a["lhs_batching_dimensions"]), list(a["rhs_batching_dimensions"])
        lc, rc = list(a["lhs_contracting_dimensions"]), list(a["rhs_contracting_dimensions"])
        lf = [d for d in range(lhs.type.rank) if d not in lb + lc]
        rf = [d for d in range(rhs.type.rank) if d not in rb + rc]
        ls, rs = lhs.type.shape, rhs.type.shape
        batch = math.prod(ls[d] for d in lb)
        m, n, k = math.prod(ls[d] for d in lf), math.prod(rs[d] for d in rf), math.prod(ls[d] for d in lc)
        if all(t.dtype == F32 for t in (lhs.type, rhs.type, op.results[0].type)) and min(batch, m, n, k) > 0:
            lhs_perm, rhs_perm = lb + lf + lc, rb + rc + rf
            a_t = self.tensor_of(_permuted(lhs_node, lhs_perm), tuple(ls[d] for d in lhs_perm), F32)
            b_t = self.tensor_of(_permuted(rhs_node, rhs_perm), tuple(rs[d] for d in rhs_perm), F32)
            self.pending[op.results[0]] = _PendingMatmul(a_t, b_t, m, n, k, batch, tuple(op.results[0].type.shape))
            return
        nb, nl, nr = len(lb), len(lf), len(rf)
        lhs_coords, rhs_coords = [None] * lhs.type.rank, [None] * rhs.type.rank
        for i, (l, r) in enumerate(zip(lb, rb)):
            lhs_coords[l] = rhs_coords[r] = kir.Coord(i)
        for i, d in enumerate(lf):
            lhs_coords[d] = kir.Coord(nb + i)
        for i, d in enumerate(rf):
            rhs_coords[d] = kir.Coord(nb + nl + i)
        for i, (l, r) in enumerate(zip(lc, rc)):
            lhs_coords[l] = rhs_coords[r] = kir.Coord(nb + nl + nr + i)
        shape = tuple(ls[d] for d in lb + lf) + tuple(rs[d] for d in rf) + tuple(ls[d] for d in lc)
        self.contraction(op, shape, list(range(nb + nl + nr, len(shape))),
                         ix.substitute(lhs_node, lhs_coords), ix.substitute(rhs_node, rhs_coords))

    def absorb_epilogue(self, op: Op) -> bool:
        """Fold `op` into the pending matmul or convolution it consumes (bias add, then relu; a
        convolution also takes a residual add before the relu and a minimum with a constant
        after it: ReLU6); True if it did."""
        if op.name not in ("add", "maximum", "minimum"):
            return False
        for i, v in enumerate(op.operands):
            p = self.pending.get(v)
            if p is None or self.uses[v] != 1:
                continue
            other = self.lazy.get(op.operands[1 - i])
            if op.name == "add" and not p.epilogue and self._is_bias(other, p.feature_dim, p.n):
                p.bias = other.tensor
                p.epilogue.append("bias_add")
            elif op.name == "maximum" and "relu" not in p.epilogue and isinstance(other, kir.Const) \
                    and other.value == 0:
                p.epilogue.append("relu")
            elif op.name == "minimum" and p.conv is not None and p.epilogue[-1:] == ["relu"] \
                    and isinstance(other, kir.Const) and other.dtype == F32:
                p.epilogue.append(f"minimum:{float(other.value)!r}")
            elif op.name == "add" and p.conv is not None and set(p.epilogue) <= {"bias_add"} \
                    and op.operands[1 - i] is not v and op.operands[1 - i].type == op.results[0].type:
                self.flush(op.operands[1 - i])
                layout = [p.view.index(d) for d in range(len(p.view))]
                p.residual = self.tensor_of(_permuted(self.lazy[op.operands[1 - i]], layout), p.shape, F32)
                p.epilogue.append("residual_add")
            else:
                return False
            del self.pending[v]
            self.pending[op.results[0]] = p
            return True
        return False

    @staticmethod
    def _is_bias(node: object, dim: int, n: int) -> bool:
        """A dense f32 vector of n values indexed by the output's dim `dim` only."""
        if not (isinstance(node, Leaf) and node.dtype == F32 and math.prod(node.shape) == n):
            return False
        moving = [x for x in node.index if not (isinstance(x, kir.Const) and x.value == 0)]
        return len(moving) == 1 and isinstance(moving[0], kir.Coord) and moving[0].dim == dim \
            and node.shape[node.index.index(moving[0])] == n

    # -- convolution ---------------------------------------------------------------------------
    def convolution(self, op: Op, lhs_node, rhs_node) -> None:
        a = op.attrs
        groups, features = a["feature_group_count"], op.results[0].type.shape[a["output_feature_dimension"]]
        depthwise = groups == features == op.operands[0].type.shape[a["input_feature_dimension"]]
        if (op.results[0].type.dtype == F32 and op.operands[0].type.dtype == F32
                and op.operands[1].type.dtype == F32 and len(a["input_spatial_dimensions"]) == 2
                and (groups == 1 or depthwise) and a["batch_group_count"] == 1
                and all(d == 1 for d in a["lhs_dilation"]) and not any(a["window_reversal"])):
            return self.conv2d(op, lhs_node, rhs_node)
        self.direct_convolution(op, lhs_node, rhs_node)

    def conv2d(self, op: Op, lhs_node, rhs_node) -> None:
        """The conv generator's NHWC x HWIO -> NHWC, other layouts transposed into it."""
        a = op.attrs
        in_perm = [a["input_batch_dimension"], *a["input_spatial_dimensions"], a["input_feature_dimension"]]
        k_perm = [*a["kernel_spatial_dimensions"], a["kernel_input_feature_dimension"], a["kernel_output_feature_dimension"]]
        out_perm = [a["output_batch_dimension"], *a["output_spatial_dimensions"], a["output_feature_dimension"]]
        ls, ks, os_ = op.operands[0].type.shape, op.operands[1].type.shape, op.results[0].type.shape
        in_shape, k_shape = tuple(ls[d] for d in in_perm), tuple(ks[d] for d in k_perm)
        out_shape = tuple(os_[d] for d in out_perm)
        inverse = tuple(out_perm.index(d) for d in range(len(out_perm)))
        patches = self.patches(op, _permuted(lhs_node, in_perm), rhs_node, k_perm, out_shape)
        if patches is not None:
            self.lazy[op.results[0]] = _permuted(self.leaf(patches, out_shape, F32), list(inverse))
            return
        # An image of few channels stored channels first (an NCHW model's input) is read in place.
        first = [in_perm[0], in_perm[-1], *in_perm[1:-1]]
        planes = _permuted(lhs_node, first)
        channels_first = in_shape[3] <= CHANNELS_FIRST_MAX and a["feature_group_count"] == 1 \
            and isinstance(planes, Leaf) and planes.is_dense and planes.shape == tuple(ls[d] for d in first)
        image = planes.tensor if channels_first else self.tensor_of(_permuted(lhs_node, in_perm), in_shape, F32)
        filt = self.tensor_of(_permuted(rhs_node, k_perm), k_shape, F32)
        body = kir.ConvBody(in_shape, k_shape, tuple(a["window_strides"]),
                            tuple(tuple(p) for p in a["padding"]), tuple(a["rhs_dilation"]),
                            a["feature_group_count"] > 1, channels_first=channels_first)
        # Pending, like a matmul, so that a bias, residual and activation join its epilogue.
        self.pending[op.results[0]] = _PendingMatmul(image, filt, 0, out_shape[3], 0, 1, out_shape,
                                                     conv=body, view=inverse)

    def flush_conv(self, v: Value, p: _PendingMatmul) -> None:
        """Emit a pending convolution: bindings input, filter, output, then the bias and the
        residual its epilogue reads."""
        regs = _Bindings()
        n, h, w, c = p.conv.input_shape
        regs.input(p.a, (n, c, h, w) if p.conv.channels_first else p.conv.input_shape, F32)
        regs.input(p.b, p.conv.filter_shape, F32)
        out = self.new_tensor(p.shape, F32)
        regs.output(out, p.shape, F32)
        if p.bias is not None:
            regs.extra(p.bias, (p.n,), F32)
        if p.residual is not None:
            regs.extra(p.residual, p.shape, F32)
        self.add_dispatch("conv", regs, dataclasses.replace(p.conv, epilogue=tuple(p.epilogue)))
        self.lazy[v] = _permuted(self.leaf(out, p.shape, F32), list(p.view))

    def patches(self, op: Op, nhwc, rhs_node, k_perm: list[int], out_shape: tuple[int, ...]) -> int | None:
        """A convolution whose windows tile the input (strides = window > 1 pixel, no padding,
        dilation or groups: a vision transformer's patch embedding) with a constant filter, as a
        matmul: each output pixel's window is one row of patches (gathered by index arithmetic,
        in the input's order: (channel, row, column), whole rows of pixels contiguous in NCHW),
        times the filter reordered to match at compile time. The conv kernel vectorises along
        the input's few channels; the GEMM takes the patches' hundreds. Returns the NHWC result
        tensor, or None when the convolution is not of that kind."""
        a = op.attrs
        kh, kw, c, f = (op.operands[1].type.shape[d] for d in k_perm)
        constant = isinstance(rhs_node, Leaf) and self.part.tensors[rhs_node.tensor].kind == "constant" \
            and rhs_node.is_dense and rhs_node.shape == tuple(op.operands[1].type.shape)
        if (not constant or kh * kw == 1 or tuple(a["window_strides"]) != (kh, kw) or a["feature_group_count"] != 1
                or any(p for pair in a["padding"] for p in pair) or any(d != 1 for d in a["rhs_dilation"])):
            return None
        n, oh, ow, _ = out_shape
        at = kir.Coord
        rows = ix.substitute(nhwc, [at(0), ix.add(ix.mul(at(1), kh), at(4)), ix.add(ix.mul(at(2), kw), at(5)), at(3)])
        a_t = self.tensor_of(rows, (n, oh, ow, c, kh, kw), F32)
        value = self.part.tensors[rhs_node.tensor].value.reshape(op.operands[1].type.shape)
        weights = np.ascontiguousarray(np.transpose(value, k_perm).transpose(2, 0, 1, 3).reshape(c * kh * kw, f), F32)
        b_t = self.new_tensor(weights.shape, F32, "constant", value=weights)
        out = self.new_tensor(out_shape, F32)
        regs = _Bindings()
        regs.input(a_t, (1, n * oh * ow, c * kh * kw), F32)
        regs.input(b_t, (1, c * kh * kw, f), F32)
        regs.output(out, (1, n * oh * ow, f), F32)
        self.add_dispatch("matmul", regs, kir.MatmulBody(n * oh * ow, f, c * kh * kw))
        return out

    def direct_convolution(self, op: Op, lhs_node, rhs_node) -> None:
        """Any convolution as a fold: output dims x (input features of a group, window dims),
        with feature and batch groups, padding, strides, both dilations and window reversal."""
        a = op.attrs
        ls, ks, os_ = op.operands[0].type.shape, op.operands[1].type.shape, op.results[0].type.shape
        rank, spatial = len(os_), len(a["input_spatial_dimensions"])
        groups, batch_groups = a["feature_group_count"], a["batch_group_count"]
        features = os_[a["output_feature_dimension"]]
        group_in = ks[a["kernel_input_feature_dimension"]]
        o = kir.Coord(a["output_feature_dimension"])
        cg = kir.Coord(rank)
        window = [kir.Coord(rank + 1 + i) for i in range(spatial)]
        lhs_coords, rhs_coords = [None] * rank, [None] * rank
        group = kir.Compute("divide", (o, ix.index(features // groups)), kir.INDEX) if groups > 1 else ix.index(0)
        if groups > 1 and batch_groups > 1:
            group = kir.Compute("remainder", (group, ix.index(groups)), kir.INDEX)
        lhs_coords[a["input_feature_dimension"]] = ix.add(ix.mul(group, group_in), cg)
        batch = kir.Coord(a["output_batch_dimension"])
        if batch_groups > 1:
            bgroup = kir.Compute("divide", (o, ix.index(features // batch_groups)), kir.INDEX)
            batch = ix.add(ix.mul(bgroup, os_[a["output_batch_dimension"]]), batch)
        lhs_coords[a["input_batch_dimension"]] = batch
        rhs_coords[a["kernel_output_feature_dimension"]] = o
        rhs_coords[a["kernel_input_feature_dimension"]] = cg
        conditions = []
        for i in range(spatial):
            size, kernel = ls[a["input_spatial_dimensions"][i]], ks[a["kernel_spatial_dimensions"][i]]
            lo, hi = a["padding"][i]
            position = ix.add(ix.mul(kir.Coord(a["output_spatial_dimensions"][i]), a["window_strides"][i]),
                              ix.mul(window[i], a["rhs_dilation"][i]))
            span = (size - 1) * a["lhs_dilation"][i] + 1 + lo + hi
            coordinate, condition = ix.window_position(position, size, lo, a["lhs_dilation"][i], span)
            lhs_coords[a["input_spatial_dimensions"][i]] = coordinate
            conditions += [condition] if condition is not None else []
            tap = window[i]
            if a["window_reversal"][i]:
                tap = kir.Compute("subtract", (ix.index(kernel - 1), tap), kir.INDEX)
            rhs_coords[a["kernel_spatial_dimensions"][i]] = tap
        lhs = ix.select(ix.all_of(conditions), ix.substitute(lhs_node, lhs_coords), kir.Const(0, lhs_node.dtype))
        shape = tuple(os_) + (group_in,) + tuple(ks[d] for d in a["kernel_spatial_dimensions"])
        self.contraction(op, shape, list(range(rank, len(shape))), lhs, ix.substitute(rhs_node, rhs_coords))

    # -- scatter -------------------------------------------------------------------------------
    def scatter(self, op: Op, operands: list) -> None:
        """A fold per output point over the update scatter indices s: whether s's window is
        inside the operand and covers the point (`hit`), the update element there, the operand
        element. Accumulators (found, value per operand): the first hit starts from the operand
        element, each hit applies the update computation, in s order as the reference does;
        the output is the value where found, else the operand element. Cost: output points x
        scatter indices (no atomics, deterministic)."""
        a = op.attrs
        n = (len(operands) - 1) // 2
        targets, indices, updates = operands[:n], operands[n], operands[n + 1:]
        shape = tuple(op.operands[0].type.shape)
        update_shape = tuple(op.operands[n + 1].type.shape)
        rank, index_rank, ivd = len(shape), op.operands[n].type.rank, a["index_vector_dim"]
        scatter_dims = [d for d in range(len(update_shape)) if d not in a["update_window_dims"]]
        scatter_shape = tuple(update_shape[d] for d in scatter_dims) or (1,)
        s = [kir.Coord(rank + j) for j in range(len(scatter_dims))]
        window_dims = [d for d in range(rank) if d not in a["inserted_window_dims"] and d not in a["input_batching_dims"]]
        sizes = [1] * rank
        for j, d in enumerate(window_dims):
            sizes[d] = update_shape[a["update_window_dims"][j]]

        def index_at(k: int):
            at = list(s)
            if ivd < index_rank:
                at.insert(ivd, ix.index(k))
            return ix.as_index(ix.substitute(indices, at))

        starts: list = [ix.index(0)] * rank
        for k, d in enumerate(a["scatter_dims_to_operand_dims"]):
            starts[d] = index_at(k)
        for d, i in zip(a["input_batching_dims"], a["scatter_indices_batching_dims"]):
            starts[d] = s[i if i < ivd else i - 1]
        conditions, offsets = [], []
        for d in range(rank):
            c = kir.Coord(d)
            if isinstance(starts[d], kir.Const):
                offsets.append(ix.add(c, ix.index(-int(starts[d].value))))
                if sizes[d] > shape[d]:
                    conditions.append(kir.Const(False, np.dtype(np.bool_)))
                if sizes[d] < shape[d]:
                    conditions.append(ix.compare(c, "LT", ix.index(int(starts[d].value) + sizes[d])))
                    conditions.append(ix.compare(c, "GE", starts[d]))
                continue
            offset = kir.Compute("subtract", (c, starts[d]), kir.INDEX)
            offsets.append(offset)
            conditions += [ix.compare(starts[d], "GE", ix.index(0)),
                           ix.compare(starts[d], "LE", ix.index(shape[d] - sizes[d])),
                           ix.compare(offset, "GE", ix.index(0)), ix.compare(offset, "LT", ix.index(sizes[d]))]
        hit = ix.all_of(conditions) or kir.Const(True, np.dtype(np.bool_))
        update_at: list = [None] * len(update_shape)
        for d, coord in zip(scatter_dims, s):
            update_at[d] = coord
        for j, d in enumerate(window_dims):
            update_at[a["update_window_dims"][j]] = ix.clamp(offsets[d], 0, sizes[d] - 1)
        elements = [hit] + [ix.substitute(u, update_at) for u in updates] + list(targets)
        types = [np.dtype(np.bool_)] + [v.type.dtype for v in op.operands[:n]] * 2
        accs = [kir.Arg(i, t) for i, t in enumerate(types)]
        items = [kir.Arg(len(types) + i, t) for i, t in enumerate(types)]
        found, values, hit_arg = accs[0], accs[1:1 + n], items[0]
        starts_from = [ix.select(found, v, e) for v, e in zip(values, items[1 + n:])]
        applied = ix.region_exprs(op.regions[0], starts_from + items[1:1 + n])
        if applied is None:
            raise _unsupported(op, "the update computation has an op without a scalar lowering")
        bool_t = np.dtype(np.bool_)
        combiner = ([kir.Compute("or", (found, hit_arg), bool_t)]
                    + [ix.select(hit_arg, x, v) for x, v in zip(applied, values)] + accs[1 + n:])
        inits = [kir.Const(False, bool_t)] + [kir.Const(0, t) for t in types[1:]]
        fold = _PendingFold(shape + scatter_shape, tuple(range(rank, rank + len(scatter_shape))),
                            elements, inits, combiner, shape)
        for i, r in enumerate(op.results):
            fold.outputs[r] = ix.select(kir.Arg(0, bool_t), kir.Arg(1 + i, r.type.dtype), targets[i])
            self.pending_folds[r] = fold

    def select_and_scatter(self, op: Op, operands: list) -> None:
        """Two folds: per window, the flat offset of the element the select region picks
        (padding never; -1 for a window wholly in padding); then per operand point, the source
        values of the windows that picked it, combined from init by the scatter region."""
        a = op.attrs
        operand, source, init = operands
        shape, src_shape = tuple(op.operands[0].type.shape), tuple(op.operands[1].type.shape)
        window, strides = tuple(a["window_dimensions"]), a["window_strides"]
        rank, dtype, index_t, bool_t = len(shape), op.operands[0].type.dtype, kir.INDEX, np.dtype(np.bool_)
        flat = ix.index(0)
        for d in range(rank):
            flat = ix.add(ix.mul(flat, window[d]), kir.Coord(rank + d))
        # fold 1: iteration space source x window
        positions, inside = [], []
        for d in range(rank):
            pos = ix.add(ix.mul(kir.Coord(d), strides[d]), ix.add(kir.Coord(rank + d), ix.index(-a["padding"][d][0])))
            positions.append(ix.clamp(pos, 0, shape[d] - 1))
            inside += [ix.compare(pos, "GE", ix.index(0)), ix.compare(pos, "LT", ix.index(shape[d]))]
        valid = ix.all_of(inside)
        acc_has, acc_value, acc_index = kir.Arg(0, bool_t), kir.Arg(1, dtype), kir.Arg(2, index_t)
        valid_arg, value_arg, index_arg = kir.Arg(3, bool_t), kir.Arg(4, dtype), kir.Arg(5, index_t)
        keeps = ix.region_exprs(op.regions[0], [acc_value, value_arg])
        if keeps is None:
            raise _unsupported(op, "the select region has an op without a scalar lowering")
        take = kir.Compute("and", (valid_arg, kir.Compute("or", (kir.Compute("not", (acc_has,), bool_t),
                                                                  kir.Compute("not", (keeps[0],), bool_t)), bool_t)), bool_t)
        picked = Value(TensorType(src_shape, index_t), "selected")
        fold = _PendingFold(src_shape + window, tuple(range(rank, 2 * rank)),
                            [valid, ix.substitute(operand, positions), flat],
                            [kir.Const(False, bool_t), kir.Const(0, dtype), ix.index(-1)],
                            [kir.Compute("or", (acc_has, valid_arg), bool_t), ix.select(take, value_arg, acc_value),
                             ix.select(take, index_arg, acc_index)], src_shape)
        fold.outputs[picked] = ix.select(acc_has, acc_index, ix.index(-1))
        self.pending_folds[picked] = fold
        self.flush(picked)
        selected = self.lazy.pop(picked)
        # fold 2: iteration space operand x window; window w = (p + low - k) / stride
        w_coords, hits = [], []
        for d in range(rank):
            numerator = ix.add(kir.Coord(d), ix.add(ix.index(a["padding"][d][0]), kir.Compute(
                "negate", (kir.Coord(rank + d),), index_t)))
            w = kir.Compute("divide", (numerator, ix.index(strides[d])), index_t) if strides[d] > 1 else numerator
            hits += [ix.compare(numerator, "GE", ix.index(0)), ix.compare(w, "LT", ix.index(src_shape[d]))]
            if strides[d] > 1:
                hits.append(ix.compare(kir.Compute("remainder", (numerator, ix.index(strides[d])), index_t),
                                       "EQ", ix.index(0)))
            w_coords.append(ix.clamp(w, 0, src_shape[d] - 1))
        hits.append(ix.compare(ix.substitute(selected, w_coords), "EQ", flat))
        acc_flag, acc = kir.Arg(0, bool_t), kir.Arg(1, dtype)
        hit_arg, src_arg = kir.Arg(2, bool_t), kir.Arg(3, dtype)
        combined = ix.region_exprs(op.regions[1], [acc, src_arg])
        if combined is None:
            raise _unsupported(op, "the scatter region has an op without a scalar lowering")
        result = op.results[0]
        fold = _PendingFold(shape + window, tuple(range(rank, 2 * rank)),
                            [ix.all_of(hits), ix.substitute(source, w_coords)], [kir.Const(False, bool_t), init],
                            [acc_flag, ix.select(hit_arg, combined[0], acc)], shape)
        fold.outputs[result] = kir.Arg(1, dtype)
        self.pending_folds[result] = fold

    # -- sort ----------------------------------------------------------------------------------
    def sort(self, op: Op, operands: list) -> None:
        shape = tuple(op.operands[0].type.shape)
        args = [kir.Arg(i, op.operands[i // 2].type.dtype) for i in range(2 * len(operands))]
        less = ix.region_exprs(op.regions[0], args)
        if less is None:
            raise _unsupported(op, "the comparator has an op without a scalar lowering")
        regs = _Bindings()
        for v, node in zip(op.operands, operands):
            regs.input(self.tensor_of(node, shape, v.type.dtype), shape, v.type.dtype)
        for r in op.results:
            tensor = self.new_tensor(shape, r.type.dtype)
            regs.output(tensor, shape, r.type.dtype)
            self.lazy[r] = self.leaf(tensor, shape, r.type.dtype)
        body = kir.SortBody(shape, op.attrs["dimension"] % len(shape), len(operands), regs.lower(less[0]))
        self.add_dispatch("sort", regs, body)

    # -- the walk --------------------------------------------------------------------------
    def run(self) -> Partition:
        for i, arg in enumerate(self.fn.args):
            self.check_dtype(arg.type.dtype, f"input {i}")
            t = self.new_tensor(arg.type.shape, arg.type.dtype, "input", input_index=i)
            self.lazy[arg] = self.leaf(t, arg.type.shape, arg.type.dtype)
        for op in self.fn.ops:
            if self.absorb_epilogue(op) or self.absorb_into_fold(op):
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
        for v in [*op.operands, *op.results]:
            self.check_dtype(v.type.dtype, "", op)
        result = op.results[0] if op.results else None
        operands = [self.lazy[v] for v in op.operands]
        folds = {"dot_general": self.dot_general, "convolution": self.convolution}
        if op.name in folds:
            return folds[op.name](op, *operands)
        if op.name in ("reduce", "reduce_window", "sort", "scatter", "select_and_scatter"):
            return getattr(self, op.name)(op, operands)
        node = self.expression(op, operands)
        if node is None:
            raise _unsupported(op)
        self.lazy[result] = node
        if self.uses.get(result, 0) > 1 and isinstance(node, kir.Compute) and _reads_memory(node, {}):
            self.materialize(result)

    def expression(self, op: Op, operands: list):
        """The lazy expression of an elementwise or data-movement op's result (None: no
        lowering)."""
        result = op.results[0]
        name = op.name
        if name == "constant":
            value = np.asarray(op.attrs["value"])
            if value.size == 1:
                return kir.Const(value.reshape(()).item(), result.type.dtype)
            t = self.new_tensor(value.shape, value.dtype, "constant", value=np.ascontiguousarray(value))
            return self.leaf(t, value.shape, value.dtype)
        if name == "bitcast_convert" and op.operands[0].type.dtype.itemsize != result.type.dtype.itemsize:
            return _bitcast_resize(op, operands[0])
        if name == "reduce_precision":
            exponent_bits, mantissa_bits = reduce_precision_format(op.attrs)
            return kir.Compute(name, tuple(operands), result.type.dtype, f"{exponent_bits}:{mantissa_bits}")
        if name in kir.SCALAR_OPS:
            return kir.Compute(name, tuple(operands), result.type.dtype, ix.compare_attr(op))
        if name == "map":  # its region on scalars, at every point
            exprs = ix.region_exprs(op.regions[0], list(operands))
            return None if exprs is None else exprs[0]
        if name == "reshape":  # a view of a buffer, else index arithmetic where that is affine
            x = operands[0]
            node = None
            if not (isinstance(x, Leaf) and x.is_dense and x.shape == tuple(op.operands[0].type.shape)):
                node = ix.reshape_split_dims(op, x)
                node = ix.reshape_merging_views(op, x) if node is None else node
            return node or self.leaf(self.buffer_of(op.operands[0]), result.type.shape, result.type.dtype)
        movers = {"broadcast_in_dim": ix.broadcast_in_dim, "transpose": ix.transpose, "slice": ix.slice_,
                  "reverse": ix.reverse, "pad": ix.pad, "dynamic_slice": lambda o, x, *s: ix.dynamic_slice(o, x, list(s)),
                  "dynamic_update_slice": lambda o, x, u, *s: ix.dynamic_update_slice(o, x, u, list(s)),
                  "gather": ix.gather, "iota": ix.iota, "concatenate": lambda o, *xs: ix.concatenate(o, list(xs))}
        if name in movers:
            return movers[name](op, *operands)
        return None


def _bitcast_resize(op: Op, node):
    """bitcast_convert between element types of different widths, little-endian as XLA: a
    wide element becomes a trailing dim of narrow ones (byte j of the bits at index j), and a
    trailing dim of narrow elements one wide element. An i1 is one bit."""
    src, dst = op.operands[0].type.dtype, op.results[0].type.dtype
    s_bits = 1 if src == np.bool_ else 8 * src.itemsize
    d_bits = 1 if dst == np.bool_ else 8 * dst.itemsize
    us, ud = np.dtype(f"u{src.itemsize}"), np.dtype(f"u{dst.itemsize}")

    def bits_of(x, dtype, unsigned):
        if dtype == np.bool_:
            return kir.Compute("convert", (x,), unsigned)
        return x if x.dtype == unsigned else kir.Compute("bitcast_convert", (x,), unsigned)

    def from_bits(x, dtype):
        if dtype == np.bool_:
            return kir.Compute("convert", (kir.Compute("and", (x, kir.Const(1, x.dtype)), x.dtype),), dtype)
        return x if x.dtype == dtype else kir.Compute("bitcast_convert", (x,), dtype)

    if s_bits > d_bits:
        rank = op.operands[0].type.rank
        shift = kir.Compute("multiply", (kir.Compute("convert", (kir.Coord(rank),), us), kir.Const(d_bits, us)), us)
        part = kir.Compute("shift_right_logical", (bits_of(node, src, us), shift), us)
        return from_bits(kir.Compute("convert", (part,), ud), dst)
    rank = op.results[0].type.rank
    out = None
    for j in range(d_bits // s_bits):
        piece = ix.substitute(node, [*ix.coords(rank), ix.index(j)])
        wide = kir.Compute("convert", (bits_of(piece, src, us),), ud)
        if j:
            wide = kir.Compute("shift_left", (wide, kir.Const(j * s_bits, ud)), ud)
        out = wide if out is None else kir.Compute("or", (out, wide), ud)
    return from_bits(out, dst)


def partition(module: Module, function: str) -> Partition:
    """Dispatch regions and buffers for the static function `function` of `module` (the output
    of shape_inference.specialize)."""
    return _Fuser(decompose(inline_calls(module, module.function(function)))).run()
