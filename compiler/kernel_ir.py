"""Kernel IR: one dispatch region, target-neutral (DESIGN.md, "Codegen: one kernel IR, several
targets").

A `KernelRegion` is everything a backend needs to emit one kernel and nothing about where the
region came from (no StableHLO op, no source location):

- `bindings`: the buffers the kernel reads and writes, in binding-slot order, each with a static
  shape and dtype. Buffers are dense and row-major, so a shape is enough to address them.
- a body, one of
  - `ElementwiseBody`: an expression DAG evaluated at every point of an output iteration space.
    Leaves are `Load`s of input bindings through an *index map* (which output dim indexes each
    input dim; `None` = index 0, a broadcast size-1 dim) and scalar `Const`s; inner nodes are
    `Compute`s named after the ops of `SCALAR_OPS`. Broadcasts and transposes are folded into
    index maps by the fusion pass, so they cost nothing at run time.
  - `MatmulBody`: a library region, C = A @ B with an optional fused epilogue; backends map it
    onto their tuned matmul generator, which also picks its own workgroup grid.
- `grid` (elementwise only): how the iteration space is tiled onto workgroups. Target-neutral:
  the space is seen as rows (all dims but the last, flattened) x columns (the last dim);
  workgroup (x, y) covers columns x*tile_cols.. and rows y*tile_rows.., clipped at the edges.

Expression nodes compare by identity (eq=False) so that a DAG with shared subexpressions stays a
DAG: backends memoise on node identity and emit each node once per point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import numpy as np

# The scalar ops an ElementwiseBody may use, with their operand count. Every backend implements
# all of them; the fusion pass rejects anything else at compile time. 'compare' carries its
# direction in `Compute.attr`; 'convert' converts to the node's dtype.
SCALAR_OPS: dict[str, int] = {
    "add": 2, "subtract": 2, "multiply": 2, "divide": 2, "maximum": 2, "minimum": 2, "power": 2,
    "and": 2, "or": 2, "xor": 2, "compare": 2,
    "negate": 1, "abs": 1, "exponential": 1, "log": 1, "tanh": 1, "logistic": 1, "sqrt": 1,
    "rsqrt": 1, "sine": 1, "cosine": 1, "floor": 1, "ceil": 1, "round_nearest_even": 1, "not": 1,
    "convert": 1,
    "select": 3, "clamp": 3,
}

# Element types kernels may load, store and compute on (bool is one byte in memory).
KERNEL_DTYPES: frozenset[np.dtype] = frozenset(np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float32, np.float64))


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
    """Input binding `binding` at the point whose coordinate along input dim e is output
    coordinate `index_map[e]` (None: 0, the dim is a broadcast size-1 dim)."""

    binding: int
    index_map: tuple[int | None, ...]
    dtype: np.dtype


@dataclass(eq=False, frozen=True)
class Const:
    """A scalar constant, the same at every point."""

    value: float | int | bool
    dtype: np.dtype


@dataclass(eq=False, frozen=True)
class Compute:
    """`op` (a SCALAR_OPS name) applied to `operands`, giving a `dtype` value."""

    op: str
    operands: tuple[Expr, ...]
    dtype: np.dtype
    attr: str = ""  # compare: direction (EQ, NE, LT, LE, GT, GE)


Expr = Union[Load, Const, Compute]


@dataclass(frozen=True)
class Grid:
    """Elementwise tiling: `tile_rows` x `tile_cols` points per workgroup over a rows x cols space."""

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
    cols = shape[-1] if shape else 1
    rows = math.prod(shape[:-1]) if shape else 1
    tile_cols = cols if cols <= 2 * points_per_workgroup else points_per_workgroup
    tile_rows = max(1, min(rows, points_per_workgroup // max(tile_cols, 1)))
    return Grid(rows, cols, tile_rows, max(tile_cols, 1))


@dataclass(frozen=True)
class ElementwiseBody:
    """outputs[i] is written, at every point of `shape`, to output binding `output_bindings[i]`."""

    shape: tuple[int, ...]
    outputs: tuple[Expr, ...]
    output_bindings: tuple[int, ...]
    grid: Grid


@dataclass(frozen=True)
class MatmulBody:
    """C[batch, m, n] = A[batch, m, k] @ B[batch, k, n] (f32), then `epilogue` in order:
    'bias_add' (+ bias[n], binding 3) and/or 'relu'. Bindings: 0 = A, 1 = B, 2 = C, 3 = bias."""

    m: int
    n: int
    k: int
    batch: int = 1
    epilogue: tuple[str, ...] = ()


@dataclass(frozen=True)
class KernelRegion:
    """One dispatch region: a kernel's name, its bindings and what it computes."""

    name: str
    bindings: tuple[BindingDecl, ...]
    body: ElementwiseBody | MatmulBody
