"""Kernel IR row regions (`RowBody`: softmax, layernorm, mean/variance) -> LLVM IR kernels.

A workgroup owns `grid.tile_rows` whole rows. Per row the steps run in order over the row, which
stays in L1/L2 after the first step has read it from memory: a fold keeps CHAINS independent
vector accumulators (one would wait out the add/max latency at every vector) plus a scalar one
for the tail, then folds the lanes into the scalar; a value step is one scalar expression. The
row values are splatted into every vector expression that reads them. The outputs are written
vector-wide, with streaming stores when the region writes far more than the caches hold
(`streaming`), then the per-row outputs.

A costly row-long value that a fold and later steps all read (softmax's exp(x - max): summed,
then divided by the sum) is computed once: the fold stores it into the workgroup's local memory
as it goes, the later steps load it from there (L1) instead of computing it again (`kept_values`).

A quotient by a row value in an output (softmax's e / sum, layernorm's (x - mean) / sqrt(var +
eps)) multiplies by its reciprocal, taken once per row (`row_divisors`): a 16-lane divide costs ~10 cycles of throughput, a
multiply 0.5, and the divides alone took a third of a 16384 x 1024 softmax. x * (1/s) may differ
from x / s in the last bit; a row whose divisor is not a normal float (its reciprocal would
overflow or lose bits) takes the divide path.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from llvmlite import ir

from compiler import kernel_ir as kir

from . import jit, streaming
from .abi_builder import F32, I32, I64, entry_alloca, for_range, i32, i64, intrinsic, splat
from .expr import ExprEmitter, constant, store, typed, width_of
from .grid_loops import kernel_entry, row_coords, row_range
from .matmul import ERROR_LOCAL_MEMORY, GeneratedKernel

CHAINS = 4
KEPT_BYTES = 64 << 10  # local memory a row region may use for values it keeps across steps
_COSTLY = frozenset({"exponential", "exponential_minus_one", "log", "log_plus_one", "tanh", "logistic",
                     "divide", "power", "sqrt", "rsqrt", "erf", "sine", "cosine"})


def kept_values(body: kir.RowBody) -> list[tuple[kir.Expr, int]]:
    """(node, fold step that first computes it): the largest f32 subexpressions with costly math
    in them that a fold step and a later step or the outputs share (the same node: row fusion
    substitutes one expression wherever a temporary was read)."""
    groups = [(i, (x,)) for i, (x, op) in enumerate(zip(body.steps, body.step_ops)) if op != "value"]
    groups.append((len(body.steps), body.outputs))
    seen: dict[int, list[int]] = {}
    nodes: dict[int, kir.Expr] = {}
    costly: dict[int, bool] = {}

    def walk(node, group: int, visited: set[int]) -> bool:
        if id(node) in visited:
            return costly.get(id(node), False)
        visited.add(id(node))
        if not isinstance(node, kir.Compute):
            return False
        inner = [walk(x, group, visited) for x in node.operands]
        costly[id(node)] = node.op in _COSTLY or any(inner)
        nodes[id(node)] = node
        seen.setdefault(id(node), []).append(group)
        return costly[id(node)]

    for group, exprs in groups:
        visited: set[int] = set()
        for x in exprs:
            walk(x, group, visited)
    shared = [k for k, g in seen.items() if len(g) > 1 and costly[k] and nodes[k].dtype == np.float32
              and g[0] < len(body.steps)]

    def inside(node, visited: set[int]) -> set[int]:
        out = set()
        for x in getattr(node, "operands", ()):
            if id(x) not in visited:
                visited.add(id(x))
                out |= {id(x)} | inside(x, visited)
        return out

    covered = set().union(*(inside(nodes[k], set()) for k in shared)) if shared else set()
    return [(nodes[k], seen[k][0]) for k in shared if k not in covered]


def _row_invariant(node: kir.Expr, rank: int, first_value: int = 0) -> bool:
    """Whether `node` has one value per row: built from row values (Args from `first_value` on;
    those before it vary along the row), constants, the row's coords and loads at them, not the
    coord along the row (dim rank - 1)."""
    if isinstance(node, kir.Arg):
        return node.index >= first_value
    if isinstance(node, kir.Const):
        return True
    if isinstance(node, kir.Coord):
        return node.dim < rank - 1
    if isinstance(node, kir.Load):
        return all(_row_invariant(x, rank, first_value) for x in node.index)
    return isinstance(node, kir.Compute) and all(_row_invariant(x, rank, first_value) for x in node.operands)


# Ops through which a quotient may move by its last bit: continuous ones, where it moves the
# result by about as little. A rounding, a comparison or a conversion to an integer could move by
# a whole unit for it: a quantizer's round(x / scale) did (ONNX's DynamicQuantizeLinear).
_CONTINUOUS = frozenset({"add", "subtract", "multiply", "divide", "negate", "abs", "maximum", "minimum",
                         "exponential", "tanh", "logistic", "erf", "sqrt", "log"})


def row_divisors(outputs: tuple[kir.Expr, ...], n_values: int, rank: int, kept: frozenset[int] = frozenset(),
                 first_value: int = 0) -> tuple[tuple[kir.Expr, ...], list[kir.Expr]]:
    """(`outputs` with each f32 `a / s`, s row-invariant and a not, rewritten as `a * Arg(k)`,
    the divisors s: Arg n_values + j is to hold 1 / divisors[j]). Only quotients reached
    from an output through `_CONTINUOUS` ops (layernorm's (x - mean) / sqrt(var + eps) * g + b,
    softmax's e / sum), and none inside a `kept` node (by id: the kernel loads those as stored)."""
    divisors: list[kir.Expr] = []
    slots: dict[int, int] = {}
    memo: dict[int, kir.Expr] = {}

    def rewrite(node: kir.Expr) -> kir.Expr:
        if id(node) in memo:
            return memo[id(node)]
        new = node
        if isinstance(node, kir.Compute) and node.op in _CONTINUOUS and id(node) not in kept:
            operands = tuple(rewrite(x) for x in node.operands)
            divisor = node.operands[-1]
            if node.op == "divide" and node.dtype == np.float32 and _row_invariant(divisor, rank, first_value) \
                    and not _row_invariant(node.operands[0], rank, first_value):
                if id(divisor) not in slots:
                    slots[id(divisor)] = n_values + len(divisors)
                    divisors.append(divisor)
                new = kir.Compute("multiply", (operands[0], kir.Arg(slots[id(divisor)], node.dtype)), node.dtype)
            elif any(a is not b for a, b in zip(operands, node.operands)):
                new = kir.Compute(node.op, operands, node.dtype, node.attr)
        memo[id(node)] = new
        return new

    return tuple(rewrite(x) for x in outputs), divisors


def divide_by_reciprocals(b: ir.IRBuilder, row: ExprEmitter, outputs: tuple[kir.Expr, ...], n_values: int,
                          rank: int, kept: frozenset[int], write: Callable[[tuple[kir.Expr, ...], list[ir.Value]], None],
                          first_value: int = 0) -> None:
    """Emit `write(outputs, extra Args)` for one row: with `row_divisors`' rewrite and the
    divisors' reciprocals (evaluated by `row`, the row's scalar emitter) where every divisor is
    a normal float, else as they are (a zero, denormal, huge, infinite or NaN divisor's
    reciprocal would overflow or lose bits)."""
    multiplied, divisors = row_divisors(outputs, n_values, rank, kept, first_value)
    if not divisors:
        write(outputs, [])
        return
    fabs = intrinsic(b.module, "llvm.fabs.f32", F32, [F32])
    normal = ir.Constant(ir.IntType(1), 1)
    reciprocals = []
    for divisor in divisors:
        value = row.value(divisor)
        magnitude = b.call(fabs, [value])
        normal = b.and_(normal, b.and_(b.fcmp_ordered(">=", magnitude, ir.Constant(F32, 2.0 ** -126)),
                                       b.fcmp_ordered("<=", magnitude, ir.Constant(F32, 2.0 ** 126))))
        reciprocals.append(b.fdiv(ir.Constant(F32, 1.0), value))
    with b.if_else(normal, likely=True) as (fast, exact):
        with fast:
            write(multiplied, reciprocals)
        with exact:
            write(outputs, [])


class Accumulator:
    """A fold's running value, `width` lanes wide, in a stack slot (a register after SROA).

    maximum / minimum: XLA's propagate NaN, which `llvm.maximum` does in a 6-instruction
    sequence whose latency chains every step; here the fold keeps the plain ordered max (one
    vmaxps: a NaN element never wins) and, apart, whether any element was NaN, and the result
    is NaN if one was. (Equal values keep the first seen, so max(-0, +0) may be -0.)"""

    def __init__(self, b: ir.IRBuilder, region: kir.KernelRegion, ptrs: list[ir.Value], op: str,
                 dtype: np.dtype, width: int) -> None:
        self.b, self.region, self.ptrs, self.op, self.dtype, self.width = b, region, ptrs, op, dtype, width
        self.slot = entry_alloca(b, typed(dtype, width))
        b.store(constant(dtype, kir.ROW_FOLDS[op], width), self.slot)
        self.nan = None
        if op in ("maximum", "minimum"):
            self.nan = entry_alloca(b, typed(np.dtype(np.bool_), width))
            b.store(constant(np.dtype(np.bool_), False, width), self.nan)

    def add(self, element: ir.Value) -> None:
        self._fold_in(element, None if self.nan is None else self.b.fcmp_unordered("uno", element, element))

    def merge(self, other: "Accumulator") -> None:
        self._fold_in(self.b.load(other.slot), None if other.nan is None else self.b.load(other.nan))

    def merge_lanes(self, vector: "Accumulator") -> None:
        """Fold every lane of the vector accumulator `vector` into this scalar one, halving the
        vector log2(width) times: a row's fold ends in 4 dependent steps instead of 16 (a short
        row's latency: layernorm over 128 values spent half its time on the two lane folds)."""
        b = self.b
        value = b.load(vector.slot)
        nan = None if vector.nan is None else b.load(vector.nan)
        width = vector.width
        while width > 1 and width % 2 == 0:
            width //= 2
            low, high = (ir.Constant(ir.VectorType(I32, width), list(range(start, start + width))) for start in (0, width))
            value = self._combine(b.shuffle_vector(value, value, low), b.shuffle_vector(value, value, high))
            if nan is not None:
                nan = b.or_(b.shuffle_vector(nan, nan, low), b.shuffle_vector(nan, nan, high))
        for k in range(width):
            self._fold_in(b.extract_element(value, i32(k)), None if nan is None else b.extract_element(nan, i32(k)))

    def _fold_in(self, value: ir.Value, nan: ir.Value | None) -> None:
        """The accumulator combined with `value`; `nan` (maximum/minimum: whether it was NaN) or-ed in."""
        b = self.b
        b.store(self._combine(b.load(self.slot), value), self.slot)
        if nan is not None:
            b.store(b.or_(b.load(self.nan), nan), self.nan)

    def _combine(self, acc: ir.Value, element: ir.Value) -> ir.Value:
        b = self.b
        if self.nan is None:
            combiner = kir.Compute(self.op, (kir.Arg(0, self.dtype), kir.Arg(1, self.dtype)), self.dtype)
            return ExprEmitter(b, self.region.bindings, self.ptrs, [], None, width_of(element), [acc, element]).value(combiner)
        better = b.fcmp_ordered(">" if self.op == "maximum" else "<", element, acc)
        return b.select(better, element, acc)

    def result(self) -> ir.Value:
        value = self.b.load(self.slot)
        if self.nan is None:
            return value
        return self.b.select(self.b.load(self.nan), constant(self.dtype, math.nan), value)


def generate_rows(region: kir.KernelRegion, lanes: int | None = None, prefetch_rows: bool = True) -> GeneratedKernel:
    """LLVM IR for a row `region`; dispatch it with `kernel.workgroup_count`."""
    body = region.body
    assert isinstance(body, kir.RowBody)
    lanes = lanes or jit.vector_width_f32()
    module = ir.Module()
    kb, ptrs = kernel_entry(module, region)
    b = kb.builder
    n, grid = body.shape[-1], body.grid
    rank = len(body.shape)

    kept = kept_values(body)
    if n * 4 * len(kept) > KEPT_BYTES:
        kept = []
    local_memory_size = n * 4 * len(kept)
    rows_kept: list[ir.Value] = []
    if kept:
        with b.if_then(b.icmp_unsigned("<", kb.local_memory_size(), i32(local_memory_size)), likely=False):
            b.ret(i32(ERROR_LOCAL_MEMORY))
        local = kb.local_memory(F32)
        rows_kept = [b.gep(local, [i64(k * n)], inbounds=True) for k in range(len(kept))]

    def evaluate(exprs: tuple[kir.Expr, ...], group: int, coords: list[ir.Value], width: int,
                 values: list[ir.Value]) -> list[ir.Value]:
        """`exprs` at column coords[-1] (`width` lanes) in step `group` (len(steps): the outputs),
        kept values loaded where an earlier step stored them, stored where this one computes them."""
        args = values if width == 1 else [splat(b, v, width) for v in values]
        e = ExprEmitter(b, region.bindings, ptrs, coords, rank - 1 if width > 1 else None, width, args)
        j = coords[-1]
        for (node, first), row_ptr in zip(kept, rows_kept):
            if first < group:
                ptr = b.gep(row_ptr, [j], inbounds=True)
                if width > 1:
                    ptr = b.bitcast(ptr, typed(node.dtype, width).as_pointer())
                e.memo[(id(node), None)] = b.load(ptr, align=4)
        out = [e.value(x) for x in exprs]
        for (node, first), row_ptr in zip(kept, rows_kept):
            if first == group:
                ptr = b.gep(row_ptr, [j], inbounds=True)
                if width > 1:
                    ptr = b.bitcast(ptr, typed(node.dtype, width).as_pointer())
                b.store(e.value(node), ptr, align=4)  # memoised unless only lanes of it were needed
        return out

    row_inputs = [s for s, d in enumerate(region.bindings) if not d.output and d.shape == body.shape]
    prefetch = intrinsic(module, "llvm.prefetch.p0", ir.VoidType(), [ir.PointerType(ir.IntType(8)), I32, I32, I32])
    first_fold = next((i for i, op in enumerate(body.step_ops) if op != "value"), None)
    current = entry_alloca(b, I64, "next.row")

    def prefetch_next(j: ir.Value) -> None:
        """Ask for the next row's line at column j while this row computes from cache, so
        memory keeps streaming during the steps that do not read it."""
        at = b.add(b.load(current), j)
        for slot in row_inputs:
            ptr = b.bitcast(b.gep(ptrs[slot], [at], inbounds=False), ir.PointerType(ir.IntType(8)))
            b.call(prefetch, [ptr, i32(0), i32(3), i32(1)])

    def fold(step: int, row: list[ir.Value], values: list[ir.Value]) -> ir.Value:
        expr, op = body.steps[step], body.step_ops[step]
        dtype = expr.dtype
        chains = CHAINS if n >= 2 * CHAINS * lanes else 1
        accumulators = [Accumulator(b, region, ptrs, op, dtype, lanes) for _ in range(chains if n >= lanes else 0)]
        scalar = Accumulator(b, region, ptrs, op, dtype, 1)

        def at(acc: Accumulator, j: ir.Value, width: int) -> None:
            if width > 1 and step != first_fold and prefetch_rows:
                prefetch_next(j)
            acc.add(evaluate((expr,), step, row + [j], width, values)[0])

        j = i64(0)
        if accumulators:
            step_width = chains * lanes
            with for_range(b, 0, n - step_width + 1, step=step_width, name="chains") as j:
                for c, acc in enumerate(accumulators):
                    at(acc, b.add(j, i64(c * lanes)), lanes)
            with for_range(b, j, n - lanes + 1, step=lanes, name="vec") as j:
                at(accumulators[0], j, lanes)
            for acc in accumulators[1:]:
                accumulators[0].merge(acc)
        with for_range(b, j, n, name="tail") as j:
            at(scalar, j, 1)
        if accumulators:
            scalar.merge_lanes(accumulators[0])
        return scalar.result()

    def write_row(row: list[ir.Value], base: ir.Value, outputs: tuple[kir.Expr, ...], values: list[ir.Value],
                  peel: ir.Value | None) -> None:
        """The row's `outputs`; with `peel` (streaming.alignment), its first `peel` points
        plainly, then whole vectors with streaming stores."""
        def at(j: ir.Value, width: int) -> None:
            if width > 1 and prefetch_rows:
                prefetch_next(j)
            results = evaluate(outputs, len(body.steps), row + [j], width, values)
            for slot, value in zip(body.output_bindings, results):
                store(b, ptrs, region.bindings[slot], slot, b.add(base, j), value, peel is not None)

        j = i64(0)
        if n >= lanes:
            if peel is not None:
                with for_range(b, 0, peel, name="out.peel") as j:
                    at(j, 1)
            with for_range(b, j, n - lanes + 1, step=lanes, name="out") as j:
                at(j, lanes)
        with for_range(b, j, n, name="out.tail") as j:
            at(j, 1)

    def write_rows(row: list[ir.Value], base: ir.Value, outputs: tuple[kir.Expr, ...], values: list[ir.Value]) -> None:
        if streamed:
            streaming.both(b, same_offset, lambda nontemporal: write_row(row, base, outputs, values, peel if nontemporal else None))
        else:
            write_row(row, base, outputs, values, None)

    kept_ids = frozenset(id(node) for node, _ in kept)
    r0, r_end = row_range(kb, grid, region.dynamic)
    streamed = bool(body.outputs) and n % lanes == 0 and region.dynamic is None and streaming.wanted(region, body.output_bindings)
    same_offset, peel = streaming.alignment(b, region, ptrs, body.output_bindings, lanes) if streamed else (None, None)
    with for_range(b, r0, r_end, name="row") as r:
        row = row_coords(b, r, body.shape, region.dynamic)
        b.store(b.mul(b.add(r, i64(1)), i64(n)), current)
        values: list[ir.Value] = []
        for step, (expr, op) in enumerate(zip(body.steps, body.step_ops)):
            if op == "value":
                values.append(ExprEmitter(b, region.bindings, ptrs, row, None, 1, values).value(expr))
            else:
                values.append(fold(step, row, values))
        base = b.mul(r, i64(n))
        e = ExprEmitter(b, region.bindings, ptrs, row, None, 1, values)  # per-row scalars
        divide_by_reciprocals(b, e, body.outputs, len(body.steps), rank, kept_ids,
                              lambda outputs, extra: write_rows(row, base, outputs, values + extra))
        for slot, expr in zip(body.row_output_bindings, body.row_outputs):
            store(b, ptrs, region.bindings[slot], slot, r, e.value(expr))
    b.ret(i32(0))
    return GeneratedKernel(region.name, str(module), grid.workgroup_count, local_memory_size, len(region.bindings), grid)
