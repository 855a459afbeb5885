"""Kernel IR: one dispatch region, target-neutral (DESIGN.md, "Codegen: one kernel IR, several
targets").

A `KernelRegion` is everything a backend needs to emit one kernel and nothing about where the
region came from (no StableHLO op, no source location):

- `bindings`: the buffers the kernel reads and writes, in binding-slot order, each with a static
  shape and dtype. Buffers are dense and row-major, so a shape is enough to address them.
- a body, one of
  - `ElementwiseBody`: an expression DAG evaluated at every point of an output iteration space.
  - `ReductionBody`: a fold over some dims of an iteration space (reduce, reduce_window, small
    or integer dot_general, general convolution), with an expression DAG per element, a combiner
    DAG and output DAGs over the folded values.
  - `SortBody`: a stable sort of rows along one dim with a comparator DAG.
  - `RowBody`: whole rows at a time: folds along the row (max, sum) and per-row values feeding
    each other, then the row written out (softmax, layernorm, mean/variance in one pass).
  - `MatmulBody` / `ConvBody` / `AttentionBody`: library regions, mapped onto a backend's tuned
    generators, which pick their own workgroup grid.
- `grid` (elementwise and reduction): how the output space is tiled onto workgroups.
  Target-neutral: the space is seen as rows (all dims but the last, flattened) x columns (the
  last dim); workgroup (x, y) covers columns x*tile_cols.. and rows y*tile_rows.., clipped.

Expressions. Leaves are `Const`s, `Coord(d)` (the current point's coordinate along dim d of the
body's iteration space, an int64), `Arg(i)` (a value the body supplies: accumulators and
elements in a combiner, folded results in a reduction's outputs, the two rows' elements in a
comparator) and `Load`s. A `Load` reads a binding at one *index expression per dim of the
binding*: integer expressions over Coords, constants and other Loads. That one form expresses
all data movement as addressing, so it costs nothing but index arithmetic at run time:
broadcast and transpose (a Coord of another dim), slice (Coord*stride + start), reverse
(size-1-Coord), iota (a Coord converted), pad and concatenate (a `select` on a compare of a
Coord, the load's index clamped so it stays in bounds when not selected), dynamic_slice (Coord +
a clamped start loaded from a binding) and gather (an index that is itself a Load). A backend
vectorises along the last dim and uses `affine_step` to tell a contiguous load (step 1) from a
broadcast one (step 0) from one it must gather lane by lane.

Expression nodes compare by identity (eq=False) so that a DAG with shared subexpressions stays a
DAG: backends memoise on node identity and emit each node once per point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import numpy as np

from compiler.ir import ELEMENT_TYPES

# The scalar ops expressions may use, with their operand count. Every backend implements all of
# them; the fusion pass rejects anything else at compile time. 'compare' carries its direction
# in `Compute.attr` (with "TOTALORDER:" prefixed for IEEE totalOrder on floats); 'convert' and
# 'bitcast_convert' convert to the node's dtype; 'reduce_precision' carries "EXPONENT:MANTISSA"
# bits in `attr`.
SCALAR_OPS: dict[str, int] = {
    "add": 2, "subtract": 2, "multiply": 2, "divide": 2, "remainder": 2, "maximum": 2,
    "minimum": 2, "power": 2, "atan2": 2, "and": 2, "or": 2, "xor": 2, "compare": 2,
    "shift_left": 2, "shift_right_logical": 2, "shift_right_arithmetic": 2,
    "negate": 1, "abs": 1, "sign": 1, "exponential": 1, "exponential_minus_one": 1, "log": 1,
    "log_plus_one": 1, "tanh": 1, "logistic": 1, "sqrt": 1, "rsqrt": 1, "cbrt": 1, "sine": 1,
    "cosine": 1, "tan": 1, "erf": 1, "erfc": 1, "floor": 1, "ceil": 1, "round_nearest_even": 1,
    "round_nearest_afz": 1, "is_finite": 1, "not": 1, "convert": 1, "bitcast_convert": 1,
    "select": 3, "clamp": 3,
    "atan": 1, "asin": 1, "acos": 1, "sinh": 1, "cosh": 1, "asinh": 1, "acosh": 1, "atanh": 1,
    "lgamma": 1, "digamma": 1, "erf_inv": 1, "next_after": 2, "popcnt": 1,
    "count_leading_zeros": 1, "reduce_precision": 1,
}

# Element types kernels may load, store and compute on (bool is one byte in memory). f16 and
# bf16 are loaded and stored narrow; backends compute on them in f32 and round every result
# of a narrow type back to it, as XLA's CPU backend does.
NARROW_FLOATS: frozenset[np.dtype] = frozenset(
    [np.dtype(np.float16)] + [d for name, d in ELEMENT_TYPES.items() if name == "bf16"])
KERNEL_DTYPES: frozenset[np.dtype] = frozenset(np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float32, np.float64)) | NARROW_FLOATS


def is_float(dtype: np.dtype) -> bool:
    """Floats, bf16 (numpy kind 'V') included."""
    return dtype.kind == "f" or dtype in NARROW_FLOATS

INDEX = np.dtype(np.int64)
"""The dtype of coordinates and index expressions."""


@dataclass(frozen=True)
class BindingDecl:
    """One binding slot of a kernel: a dense row-major tensor it reads (or writes, if output)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    output: bool = False

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(eq=False, frozen=True)
class Load:
    """Input binding `binding` at the element whose coordinate along binding dim e is the value
    of `index[e]` (an INDEX expression, always within the binding's shape)."""

    binding: int
    index: tuple[Expr, ...]
    dtype: np.dtype


@dataclass(eq=False, frozen=True)
class Const:
    """A scalar constant, the same at every point."""

    value: float | int | bool
    dtype: np.dtype


@dataclass(eq=False, frozen=True)
class Coord:
    """The current point's coordinate along dim `dim` of the body's iteration space (INDEX)."""

    dim: int
    dtype: np.dtype = INDEX


@dataclass(eq=False, frozen=True)
class Arg:
    """Value `index` of those the body supplies (see each body), of type `dtype`."""

    index: int
    dtype: np.dtype


@dataclass(eq=False, frozen=True)
class Compute:
    """`op` (a SCALAR_OPS name) applied to `operands`, giving a `dtype` value."""

    op: str
    operands: tuple[Expr, ...]
    dtype: np.dtype
    attr: str = ""  # compare: direction (EQ, NE, LT, LE, GT, GE), "TOTALORDER:LT" etc.


@dataclass(eq=False, frozen=True)
class DimValue:
    """The function's dynamic dim D (push constant 0) as a `dtype` integer: what a constant the
    compiler derived from the dim's value becomes in a region compiled for every size of it
    (compiler/dynamic.py). Only regions with `dynamic` set have it."""

    dtype: np.dtype


Expr = Union[Load, Const, Coord, Arg, Compute, DimValue]


def affine_step(node: Expr, dim: int, memo: dict[int, int | None] | None = None) -> int | None:
    """How much `node` grows when Coord(dim) grows by one, if that is the same constant at every
    point (0 when it does not depend on Coord(dim)); None when it is not affine in Coord(dim).
    Backends use it on index expressions: a load whose flat offset has step 1 along the
    vectorised dim is a vector load, step 0 a broadcast scalar, anything else a gather."""
    memo = {} if memo is None else memo
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, Coord):
        step = 1 if node.dim == dim else 0
    elif isinstance(node, (Const, Arg, DimValue)):
        step = 0
    else:
        operands = node.index if isinstance(node, Load) else node.operands
        steps = [affine_step(x, dim, memo) for x in operands]
        step = None
        if all(s == 0 for s in steps):
            step = 0
        elif isinstance(node, Compute) and None not in steps:
            if node.op == "add":
                step = steps[0] + steps[1]
            elif node.op == "subtract":
                step = steps[0] - steps[1]
            elif node.op == "negate":
                step = -steps[0]
            elif node.op == "convert" and node.dtype == INDEX and node.operands[0].dtype.kind in "iu":
                step = steps[0]
            elif node.op == "multiply":
                const = [x for x, s in zip(node.operands, steps) if s == 0 and isinstance(x, Const)]
                if const:
                    step = sum(steps) * int(const[0].value)
    memo[id(node)] = step
    return step


def load_step(load: Load, shape: tuple[int, ...], dim: int) -> int | None:
    """Elements the flat offset of `load` (into a binding of `shape`) moves per step of
    Coord(dim); None when that is not constant."""
    total, memo = 0, {}
    for e, index in enumerate(load.index):
        step = affine_step(index, dim, memo)
        if step is None:
            return None
        total += step * math.prod(shape[e + 1:])
    return total


@dataclass(frozen=True)
class Grid:
    """Tiling: `tile_rows` x `tile_cols` output points per workgroup over a rows x cols space."""

    rows: int
    cols: int
    tile_rows: int
    tile_cols: int

    @property
    def workgroup_count(self) -> tuple[int, int, int]:
        return (-(-self.cols // self.tile_cols), -(-self.rows // self.tile_rows), 1)


def tile_elementwise(shape: tuple[int, ...], points_per_workgroup: int = 16384) -> Grid:
    """Rows x columns tiling of an output `shape`, about `points_per_workgroup` points per
    workgroup: big enough that scheduling costs (~10 ns a workgroup) vanish next to the work,
    small enough that a 2-worker device gets many workgroups on tensors of a few MB. Long rows
    are split so one huge vector still spreads over workers."""
    points_per_workgroup = max(1, points_per_workgroup)
    cols = shape[-1] if shape else 1
    rows = math.prod(shape[:-1]) if shape else 1
    tile_cols = cols if cols <= 2 * points_per_workgroup else points_per_workgroup
    tile_rows = max(1, min(rows, points_per_workgroup // max(tile_cols, 1)))
    return Grid(rows, cols, tile_rows, max(tile_cols, 1))


@dataclass(frozen=True)
class ElementwiseBody:
    """outputs[i] is written, at every point of `shape`, to output binding `output_bindings[i]`.
    Coords are those of `shape`; there are no Args."""

    shape: tuple[int, ...]
    outputs: tuple[Expr, ...]
    output_bindings: tuple[int, ...]
    grid: Grid


@dataclass(frozen=True)
class ReductionBody:
    """A fold over the dims `reduced` of the iteration space `shape`.

    At every point of `shape`, `inputs` give n element values (Coords of `shape`). Per output
    point (the dims of `shape` not in `reduced`, in order) n accumulators start at `inits` (no
    Coords) and, for each point of the reduced dims in row-major order, become `combiner`
    evaluated with Arg(0..n-1) = the accumulators and Arg(n..2n-1) = the elements. Finally
    `outputs[i]` (Arg(j) = final accumulator j, Coords of the output space) is written to
    `output_bindings[i]`. Backends may reorder the fold only where the combiner makes that
    exact or within float rounding (a plain add/max/min); `grid` tiles the output space."""

    shape: tuple[int, ...]
    reduced: tuple[int, ...]
    inputs: tuple[Expr, ...]
    inits: tuple[Expr, ...]
    combiner: tuple[Expr, ...]
    outputs: tuple[Expr, ...]
    output_bindings: tuple[int, ...]
    grid: Grid

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(n for d, n in enumerate(self.shape) if d not in self.reduced)


ROW_FOLDS: dict[str, float] = {"add": 0.0, "multiply": 1.0, "maximum": -math.inf, "minimum": math.inf}
"""The folds a `RowBody` step may be, with the identity each starts from."""


@dataclass(frozen=True)
class RowBody:
    """Rows (all dims of `shape` but the last) of `shape[-1]` points each, one whole row at a
    time, so a chain of folds over a row and the row written from their results reads the row
    from memory once (it stays in cache between the steps) instead of once per dispatch.

    Per row, each step appends one *row value*: `step_ops[i]` in ROW_FOLDS folds `steps[i]`
    (Coords of `shape`) over the row's points from the op's identity, in any order (float
    rounding as any vectorised reduction); `step_ops[i] == "value"` evaluates `steps[i]` once
    (Coords of the row dims only). `Arg(j)` anywhere is row value j (j < i in step i). Then
    `outputs[i]` (Coords of `shape`) is written at every point of the row to
    `output_bindings[i]`, and `row_outputs[i]` (row Coords) once per row to
    `row_output_bindings[i]` (a binding of the rows' shape). `grid` tiles rows x whole rows."""

    shape: tuple[int, ...]
    steps: tuple[Expr, ...]
    step_ops: tuple[str, ...]
    outputs: tuple[Expr, ...]
    output_bindings: tuple[int, ...]
    row_outputs: tuple[Expr, ...]
    row_output_bindings: tuple[int, ...]
    grid: Grid

    @property
    def rows(self) -> int:
        return math.prod(self.shape[:-1])


@dataclass(frozen=True)
class SortBody:
    """Bindings 0..n-1 (of `shape`) sorted along `dimension` into bindings n..2n-1, all operands
    permuted together. `less` (Arg(2k), Arg(2k+1) = operand k's two elements) says whether the
    first element goes before the second; equal elements keep their order (stable)."""

    shape: tuple[int, ...]
    dimension: int
    operands: int
    less: Expr


@dataclass(frozen=True)
class MatmulBody:
    """C[batch, m, n] = A[batch, m, k] @ B[batch, k, n] (f32), then `epilogue` in order:
    'bias_add' (+ bias[n], binding 3) and/or 'relu'. Bindings: 0 = A, 1 = B, 2 = C, 3 = bias.
    `b_panel` > 0: B is a constant pre-packed at compile time (compiler/passes/packing.py) as
    ceil(n / b_panel) panels of k x b_panel, the last zero-padded, shared by all batches.
    `activation` (after the epilogue): each value of C, Arg(0), through an expression of it and
    constants alone (no loads, no Coords: GELU, tanh; compiler/passes/matmul_activation.py)."""

    m: int
    n: int
    k: int
    batch: int = 1
    epilogue: tuple[str, ...] = ()
    b_panel: int = 0
    activation: Expr | None = None


@dataclass(frozen=True)
class AttentionBody:
    """Attention, f32, as one library region (llvm_cpu only: compiler/passes/attention_fusion.py):
    scores S[b] = Q[b] @ KT[b] (`batch` x `m` x `n`, contracting `k`), each row of S through a
    RowBody-like chain giving the probabilities P, then out[b] = P[b] @ V[b] (`dv` columns).
    Bindings: 0 = Q (batch, m, k), 1 = KT (batch, k, n), 2 = V (batch, n, dv), 3 = out
    (batch, m, dv), 4.. = what the row expressions read. `steps`/`step_ops` are a RowBody's over
    `shape` (the scores as the expressions index them: rows..., n, with batch * m rows), and
    `probability` is P at a point; in both, Arg(0) is the score at the point, Arg(j + 1) row
    value j. `transposed`: V arrives as V^T (batch, dv, n) and out is written as out^T (batch,
    dv, m) (JAX's form of attention over (batch, seq, heads, dim) tensors: out^T = V^T @ P^T).
    `views` (not with `transposed`): per operand Q, KT, V, out, where its element (batch,
    row, column) = (Coord(0), Coord(1), Coord(2)) is in its binding: an index per binding dim,
    affine in the row and the column, their steps 1 along Q's, V's and out's columns (and along
    KT's rows or columns): the heads read and written in place in a (batch, seq, heads * dim)
    projection, as torch's exports lay them out. Empty: bindings of the shapes above."""

    batch: int
    m: int
    n: int
    k: int
    dv: int
    shape: tuple[int, ...]
    steps: tuple[Expr, ...]
    step_ops: tuple[str, ...]
    probability: Expr
    transposed: bool = False
    views: tuple[tuple[Expr, ...], ...] = ()


@dataclass(frozen=True)
class ConvBody:
    """2-D convolution, f32: output N x OH x OW x F = input N x H x W x C (binding 0) with filter
    KH x KW x C x F (binding 1), explicit `padding` ((top, bottom), (left, right)), `strides`
    and filter `dilation`; output binding 2. `depthwise`: feature groups = C = F (MobileNet's),
    the filter KH x KW x 1 x F, output channel f reading input channel f only. `filter_panel` > 0:
    the filter is a constant pre-packed at compile time (compiler/passes/conv_packing.py) as the
    K x F matrix (K = KH*KW*C in HWIO order) in ceil(F / filter_panel) panels of K x
    filter_panel, the last zero-padded, as `MatmulBody.b_panel` packs B. `epilogue`, in order, on
    each output value: 'bias_add' (+ bias[f], the next binding from 3 on), 'residual_add' (+ the
    value at the same place of an N x OH x OW x F tensor, the next binding), 'relu', and
    'minimum:V' (min with the constant V: ReLU6 after 'relu'). `channels_first`: binding 0 holds
    the input as N x C x H x W (an NCHW image read in place by a stem convolution of few channels;
    `input_shape` stays N x H x W x C)."""

    input_shape: tuple[int, int, int, int]
    filter_shape: tuple[int, int, int, int]
    strides: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    depthwise: bool = False
    filter_panel: int = 0
    epilogue: tuple[str, ...] = ()
    channels_first: bool = False


@dataclass(frozen=True)
class DynamicExtents:
    """The extents of a region that are a multiple of the function's dynamic dim D, a value the
    kernel reads at run time from push constant 0 (compiler/dynamic.py): each is `scale * D`,
    and 0 means the region's static value holds. The static values of these fields in the
    region are those of one compile-time size and must not be used by a backend.

    Only leading extents can be dynamic (the first dim of size other than 1): a row-major buffer
    whose first dim grows keeps its strides, so addressing is unchanged and only loop bounds,
    grids and length checks move."""

    bindings: tuple[int, ...]  # per binding: its leading dim (the first of size other than 1)
    lead: int = 0  # elementwise/reduction: body.shape's leading dim (never a reduced one); matmul: m
    rows: int = 0  # grid.rows
    cols: int = 0  # grid.cols (an output space of one non-unit dim)
    batch: int = 0  # matmul: batch

    def binding_elements(self, decl: BindingDecl, index: int) -> int:
        """Elements of binding `index` per unit of D (0: static)."""
        scale = self.bindings[index]
        return scale * math.prod(decl.shape[leading_dim(decl.shape) + 1:]) if scale else 0


def leading_dim(shape: tuple[int, ...]) -> int:
    """The dim of a buffer or space that a dynamic dim can be: its first of size other than 1
    (unit dims before it have index 0 at every point, so its stride is all that addressing uses)."""
    return next((d for d, n in enumerate(shape) if n != 1), 0)


@dataclass(frozen=True)
class KernelRegion:
    """One dispatch region: a kernel's name, its bindings and what it computes; `dynamic` says
    which extents are run-time multiples of a dynamic dim (None: all static)."""

    name: str
    bindings: tuple[BindingDecl, ...]
    body: ElementwiseBody | ReductionBody | RowBody | SortBody | MatmulBody | ConvBody | AttentionBody
    dynamic: DynamicExtents | None = None
