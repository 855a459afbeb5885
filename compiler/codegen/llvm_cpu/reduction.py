"""Kernel IR reduction regions -> LLVM IR kernels with the CPU ABI.

Per output point the accumulators live in stack slots (registers after SROA) through loops over
the reduced dims; element, combiner and output expressions all go through `expr.ExprEmitter`.
Two ways to use vectors, picked per region:

- across outputs (the default): `lanes` neighbouring outputs along the output's last dim fold
  at once, each lane in exactly the sequential order, so any combiner works (argmax's variadic
  body, integer sums) and results are bit-identical to a scalar loop. This is the fast form when
  the reduced dims are outer ones (a sum over rows, pooling windows, a contraction's k): the
  lanes' elements are then contiguous.
- along the fold (`_is_horizontal`): when the innermost dim of the space is reduced and the
  combiner is a plain add/max/min/multiply with an identity (or idempotent) init, CHAINS vector
  accumulators fold `lanes` consecutive elements each at a time and are combined at the end. That reassociates float sums, which is within the tolerance and what every fast CPU
  reduction does; integer add/mul wrap, so reassociating them is exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

from llvmlite import ir

from compiler import kernel_ir as kir

from . import jit
from .abi_builder import entry_alloca, for_range, i32, i64
from .expr import ExprEmitter, store, typed
from .grid_loops import for_each_point, kernel_entry
from .matmul import GeneratedKernel

_IDENTITY = {"add": 0, "multiply": 1}
# Independent vector accumulators of a fold along the innermost dim: one chain waits out the
# add/max latency (~4 cycles) at every step; four keep the vector units busy on cached rows.
CHAINS = 4


def _is_horizontal(body: kir.ReductionBody, lanes: int) -> bool:
    """A single add/max/min/multiply fold over the innermost dim, long enough to vectorise,
    whose init may be folded in once per lane (an identity, or max/min which are idempotent)."""
    if len(body.combiner) != 1 or not body.reduced or body.reduced[-1] != len(body.shape) - 1:
        return False
    if body.shape[-1] < lanes:
        return False
    node, init = body.combiner[0], body.inits[0]
    if not (isinstance(node, kir.Compute) and node.op in ("add", "multiply", "maximum", "minimum")):
        return False
    if {x.index for x in node.operands if isinstance(x, kir.Arg)} != {0, 1} or not isinstance(init, kir.Const):
        return False
    return node.op not in _IDENTITY or init.value == _IDENTITY[node.op]


@contextmanager
def _loops(b: ir.IRBuilder, extents: Sequence[int]) -> Iterator[list[ir.Value]]:
    """Nested loops over `extents` (outermost first); yields the induction variables."""
    with ExitStack() as stack:
        yield [stack.enter_context(for_range(b, 0, n, name=f"r{i}")) for i, n in enumerate(extents)]


class _Fold:
    """Accumulator slots and the combiner, `width` lanes wide."""

    def __init__(self, b: ir.IRBuilder, region: kir.KernelRegion, ptrs: list[ir.Value], width: int) -> None:
        self.b, self.region, self.ptrs, self.width = b, region, ptrs, width
        body = region.body
        self.slots = [entry_alloca(b, typed(x.dtype, width)) for x in body.inits]

    def emitter(self, coords: list[ir.Value], vector_dim: int | None, args: Sequence[ir.Value] = ()) -> ExprEmitter:
        return ExprEmitter(self.b, self.region.bindings, self.ptrs, coords, vector_dim, self.width, args)

    def init(self) -> None:
        e = self.emitter([], None)
        for slot, init in zip(self.slots, self.region.body.inits):
            self.b.store(e.value(init), slot)

    def values(self) -> list[ir.Value]:
        return [self.b.load(s) for s in self.slots]

    def combine(self, elements: Sequence[ir.Value]) -> None:
        e = self.emitter([], None, self.values() + list(elements))
        new = [e.value(c) for c in self.region.body.combiner]
        for slot, value in zip(self.slots, new):
            self.b.store(value, slot)


def generate_reduction(region: kir.KernelRegion, lanes: int | None = None) -> GeneratedKernel:
    """LLVM IR for a reduction `region`; dispatch it with `kernel.workgroup_count`."""
    body = region.body
    assert isinstance(body, kir.ReductionBody)
    lanes = lanes or jit.vector_width_f32()
    module = ir.Module()
    kb, ptrs = kernel_entry(module, region)
    b = kb.builder
    rank = len(body.shape)
    kept = [d for d in range(rank) if d not in body.reduced]
    horizontal = _is_horizontal(body, lanes)

    def space_coords(out_coords: list[ir.Value], loop_vars: list[ir.Value]) -> list[ir.Value]:
        coords: list[ir.Value] = [None] * rank
        for d, c in zip(kept, out_coords):
            coords[d] = c
        for d, c in zip(body.reduced, loop_vars):
            coords[d] = c
        return coords

    def finish(fold: _Fold, out_coords: list[ir.Value], offset: ir.Value) -> None:
        out_dim = len(kept) - 1 if kept else None
        e = fold.emitter(out_coords, out_dim, fold.values())
        for slot, expr in zip(body.output_bindings, body.outputs):
            store(b, ptrs, region.bindings[slot], slot, offset, e.value(expr))

    def across_outputs(out_coords: list[ir.Value], offset: ir.Value, width: int) -> None:
        fold = _Fold(b, region, ptrs, width)
        fold.init()
        with _loops(b, [body.shape[d] for d in body.reduced]) as loop_vars:
            e = fold.emitter(space_coords(out_coords, loop_vars), kept[-1] if kept else None)
            fold.combine([e.value(x) for x in body.inputs])
        finish(fold, out_coords, offset)

    def along_fold(out_coords: list[ir.Value], offset: ir.Value, width: int) -> None:
        n = body.shape[-1]
        scalar = _Fold(b, region, ptrs, 1)
        vectors = [_Fold(b, region, ptrs, lanes) for _ in range(CHAINS if n >= 2 * lanes else 1)]
        for fold in (scalar, *vectors):
            fold.init()
        step = len(vectors) * lanes
        with _loops(b, [body.shape[d] for d in body.reduced[:-1]]) as outer:
            def fold_at(acc: _Fold, j: ir.Value) -> None:
                e = acc.emitter(space_coords(out_coords, outer + [j]), rank - 1)
                acc.combine([e.value(x) for x in body.inputs])

            with for_range(b, 0, n - step + 1, step=step, name="chains") as j:
                for chain, acc in enumerate(vectors):
                    fold_at(acc, b.add(j, i64(chain * lanes)))
            with for_range(b, j, n - lanes + 1, step=lanes, name="vec") as j:
                fold_at(vectors[0], j)
            with for_range(b, j, n, name="tail") as j:
                fold_at(scalar, j)
        for acc in vectors[1:]:
            vectors[0].combine(acc.values())
        total = vectors[0].values()[0]
        for lane in range(lanes):
            scalar.combine([b.extract_element(total, i32(lane))])
        finish(scalar, out_coords, offset)

    out_shape = body.output_shape
    if horizontal:
        for_each_point(kb, body.grid, out_shape, 1, along_fold, region.dynamic)
    else:
        for_each_point(kb, body.grid, out_shape, lanes, across_outputs, region.dynamic)
    b.ret(i32(0))
    return GeneratedKernel(region.name, str(module), body.grid.workgroup_count, 0, len(region.bindings), body.grid)

