"""Kernel IR attention regions (`AttentionBody`) -> one LLVM IR kernel.

Workgroup (x, y) owns query rows x*tile_m.. of batch y. It computes those rows' scores against
every key into local memory with the matmul microkernel (Q rows against NR-wide panels of K^T,
read in place), runs the row chain (softmax: max, exp, sum, the divide; the scale and mask
inside it) over each score row in place, vector-wide with CHAINS independent accumulators per
fold as rows.py does, then multiplies the block of probabilities by V with the microkernel again
into the output rows. The tile_m x n block stays in L2, so the scores never go to memory: the
three-dispatch form writes and reads the batch x m x n scores twice.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from compiler import kernel_ir as kir
from compiler.errors import CompileError

from . import caches, jit, vector_math
from .abi_builder import F32, I1, I32, I64, for_range, i32, i64, internal_function, load_vector, splat, store_vector
from .expr import ExprEmitter, typed
from .grid_loops import kernel_entry, row_coords
from .matmul import ERROR_LOCAL_MEMORY, MIN_WORKGROUPS, GeneratedKernel, RegisterTile, microkernel, register_tile
from .rows import CHAINS, KEPT_BYTES, Accumulator, divide_by_reciprocals, kept_values

F32P = F32.as_pointer()
F32_DTYPE = np.dtype(np.float32)


MIN_WORKGROUP_FLOPS = 1 << 20  # below this a workgroup's fixed costs (packing K^T, reading V) show
LOCAL_BYTES = 3 << 18  # local memory a workgroup may take, of the 1 MiB the CPU drivers give


def _local_bytes(rows: int, n: int, k: int, transposed: bool, kept_bytes: int, lanes: int) -> int:
    """Local memory of a workgroup of `rows` query rows: the scores, one panel of K^T, the kept
    values of one row, P^T (transposed: n rows of the workgroup's queries)."""
    nv = register_tile(n, lanes)[1]
    return 4 * (rows * _padded(n, lanes) + k * nv * lanes + (n * _padded(rows, lanes) if transposed else 0)) + kept_bytes


def fits_attention(m: int, n: int, k: int, transposed: bool) -> bool:
    """Whether attention over n keys with k-wide heads has a workgroup of a register tile's
    rows (or m) within LOCAL_BYTES and half the L2 (compiler/passes/attention_fusion.py asks)."""
    lanes = jit.vector_width_f32()
    rows = min(m, register_tile(n, lanes)[0])
    return _local_bytes(rows, n, k, transposed, KEPT_BYTES, lanes) <= min(LOCAL_BYTES, caches.host().l2 // 2)


def _tile_rows(body: kir.AttentionBody, kept_bytes: int, mr: int, lanes: int) -> int:
    """Query rows per workgroup: at least MIN_WORKGROUPS workgroups where the rows allow (whole
    register tiles, at most 16 as the matmul's row tiles) and at least MIN_WORKGROUP_FLOPS of
    work each, while its local memory stays within LOCAL_BYTES and half the L2. Every workgroup
    packs all of K^T and reads all of V, so more rows share that cost."""
    tiles_per_batch = max(1, -(-MIN_WORKGROUPS // body.batch))
    enough = mr * -(-MIN_WORKGROUP_FLOPS // (2 * body.n * (body.k + body.dv) * mr))
    rows = max(1, min(body.m, 16 * mr, max(enough, mr * -(-body.m // (mr * tiles_per_batch)))))
    limit = min(LOCAL_BYTES, caches.host().l2 // 2)
    while rows > 1 and _local_bytes(rows, body.n, body.k, body.transposed, kept_bytes, lanes) > limit:
        rows -= 1
    return rows


def generate_attention(region: kir.KernelRegion, lanes: int | None = None) -> GeneratedKernel:
    """LLVM IR for an attention `region`; dispatch it with `kernel.workgroup_count`."""
    body = region.body
    assert isinstance(body, kir.AttentionBody)
    lanes = lanes or jit.vector_width_f32()
    n, k, dv, m = body.n, body.k, body.dv, body.m
    ld = -(-n // lanes) * lanes  # floats per score row in local memory (rows start aligned)
    mr_s, nv_s = register_tile(n, lanes)
    mr_o, nv_o = register_tile(dv, lanes)
    kept = _kept(body, ld)
    tile_m = _tile_rows(body, 4 * ld * len(kept), max(mr_s, mr_o), lanes)
    if body.transposed:  # out^T = V^T @ P^T: register tiles over dv x query rows
        mr_o, nv_o = register_tile(tile_m, lanes)
    grid = (-(-m // tile_m), body.batch, 1)
    local_memory_size = _local_bytes(tile_m, n, k, body.transposed, 4 * ld * len(kept), lanes)
    module = ir.Module()
    kb, ptrs = kernel_entry(module, region)
    b = kb.builder
    with b.if_then(b.icmp_unsigned("<", kb.local_memory_size(), i32(local_memory_size)), likely=False):
        b.ret(i32(ERROR_LOCAL_MEMORY))
    local = kb.local_memory(F32)
    wx, wy = (b.zext(kb.workgroup_id(d), I64) for d in range(2))
    args = [*ptrs, local, wy, b.mul(wx, i64(tile_m))]
    edge = m - (grid[0] - 1) * tile_m
    if edge != tile_m:
        with b.if_then(b.icmp_unsigned("==", wx, i64(grid[0] - 1))):
            b.call(_tile(module, region, [p.type for p in ptrs], lanes, edge, tile_m, ld, (mr_s, nv_s), (mr_o, nv_o)), args)
            b.ret(i32(0))
    b.call(_tile(module, region, [p.type for p in ptrs], lanes, tile_m, tile_m, ld, (mr_s, nv_s), (mr_o, nv_o)), args)
    b.ret(i32(0))
    return GeneratedKernel(region.name, str(module), grid, local_memory_size, len(region.bindings), (tile_m, ld))


def _kept(body: kir.AttentionBody, row_floats: int) -> list[tuple[kir.Expr, int]]:
    """rows.py's kept values of the row chain (softmax's exp(x - max), summed then divided by
    the sum: computed once, kept in local memory for the probabilities), seen as a RowBody
    whose output is the probability."""
    view = kir.RowBody(body.shape, body.steps, body.step_ops, (body.probability,), (3,), (), (), kir.Grid(1, 1, 1, 1))
    kept = kept_values(view)
    return kept if row_floats * 4 * len(kept) <= KEPT_BYTES else []


def _padded(rows: int, lanes: int) -> int:
    """Floats per row of P^T: the workgroup's query rows, whole vectors."""
    return -(-rows // lanes) * lanes


@dataclass(frozen=True)
class _Operand:
    """Where one of Q, KT, V, out lies (AttentionBody.views): its element (batch, row, column)
    at `view` in a binding of `shape`, which moves by the static `row` and `col` steps."""

    view: tuple[kir.Expr, ...]
    shape: tuple[int, ...]
    row: int
    col: int

    def at_batch(self, b: ir.IRBuilder, ptr: ir.Value, batch: ir.Value, e: ExprEmitter) -> ir.Value:
        """The operand's (row 0, column 0) of `batch` (`e` emits at coords (batch, 0, 0))."""
        flat = i64(0)
        for d, x in enumerate(self.view):
            flat = b.add(flat, b.mul(e.value(x), i64(math.prod(self.shape[d + 1:]))))
        return b.gep(ptr, [flat], inbounds=True)


def _operands(region: kir.KernelRegion) -> list[_Operand]:
    views = region.body.views or (tuple(kir.Coord(d) for d in range(3)),) * 4
    out = []
    for slot, view in enumerate(views):
        shape = region.bindings[slot].shape
        row, col = (kir.load_step(kir.Load(slot, view, F32_DTYPE), shape, d) for d in (1, 2))
        if row is None or col is None or col != 1 and not (slot == 1 and row == 1):
            raise CompileError(f"{region.name}: attention operand {slot} is not contiguous along its columns "
                               "(or, K^T, its rows)")
        out.append(_Operand(view, shape, row, col))
    return out


def _transpose(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """The lanes x lanes block `rows` transposed in registers: at each level h (lanes/2 .. 1)
    the off-diagonal h x h blocks of every 2h x 2h block swap (log2(lanes) rounds of shuffles)."""
    n = len(rows)
    rows = list(rows)
    h = n // 2
    while h:
        low = ir.Constant(ir.VectorType(I32, n), [lane if not lane & h else n + lane - h for lane in range(n)])
        high = ir.Constant(ir.VectorType(I32, n), [lane + h if not lane & h else n + lane for lane in range(n)])
        for i in range(n):
            if not i & h:
                a, c = rows[i], rows[i + h]
                rows[i], rows[i + h] = b.shuffle_vector(a, c, low), b.shuffle_vector(a, c, high)
        h //= 2
    return rows


def _pack_transposed(b: ir.IRBuilder, keys: ir.Value, key_stride: int, depth: int, width: int, panel: ir.Value,
                     nr: int, lanes: int) -> None:
    """panel[p][j] = keys[j * key_stride + p] for p < depth, j < width (K^T's panel from K's
    rows): lanes x lanes blocks transposed in registers, the ragged edges element by element."""
    def element(j: ir.Value, p: ir.Value) -> None:
        value = b.load(b.gep(keys, [b.add(b.mul(j, i64(key_stride)), p)], inbounds=True))
        b.store(value, b.gep(panel, [b.add(b.mul(p, i64(nr)), j)], inbounds=True))

    full_j, full_p = width // lanes * lanes, depth // lanes * lanes
    if full_j and full_p:
        with for_range(b, 0, full_j, step=lanes, name="pack.j") as j0:
            with for_range(b, 0, full_p, step=lanes, name="pack.p") as p0:
                first = b.gep(keys, [b.add(b.mul(j0, i64(key_stride)), p0)], inbounds=True)
                rows = [load_vector(b, b.gep(first, [i64(j * key_stride)], inbounds=True), lanes, lanes) for j in range(lanes)]
                at = b.gep(panel, [b.add(b.mul(p0, i64(nr)), j0)], inbounds=True)
                for p, row in enumerate(_transpose(b, rows)):
                    store_vector(b, row, b.gep(at, [i64(p * nr)], inbounds=True), lanes)
    for (j_lo, j_hi), (p_lo, p_hi) in (((0, full_j), (full_p, depth)), ((full_j, width), (0, depth))):
        if j_lo < j_hi and p_lo < p_hi:
            with for_range(b, j_lo, j_hi, name="pack.edge.j") as j:
                with for_range(b, p_lo, p_hi, name="pack.edge.p") as p:
                    element(j, p)


def _matmul_block(b: ir.IRBuilder, module: ir.Module, prefix: str, lanes: int, rows: int, cols: int, depth: int,
                  tile: tuple[int, int], a: ir.Value, lda: int, bm: ir.Value, ldb: int, c: ir.Value, ldc: int,
                  panel_buffer: ir.Value | None = None, b_col: int = 1) -> None:
    """C[rows x cols] = A[rows x depth] @ B[depth x cols] (all f32*, static leading dims) with the
    matmul microkernel over NR-wide panels of B: read in place, or with `panel_buffer` (depth x NR
    floats) copied there first, contiguous (K^T's rows lie n floats apart, 4 KiB at n = 1024:
    every row of a panel in the same L1 set). `b_col` other than 1 (with a panel buffer): B's
    columns lie that far apart and its rows ldb (K^T read from K as the projection wrote it)."""
    mr, nv = tile
    nr = nv * lanes
    blocks = [(r, min(mr, rows - r)) for r in range(0, rows, mr)]
    one = ir.Constant(I1, 1)

    def panel(col: ir.Value, width: int) -> None:
        source, stride = b.gep(bm, [b.mul(col, i64(b_col))], inbounds=True), ldb
        if panel_buffer is not None and b_col != 1:  # key j's row of K is contiguous (ldb 1): transpose it in
            assert ldb == 1
            _pack_transposed(b, source, b_col, depth, width, panel_buffer, nr, lanes)
            source, stride = panel_buffer, nr
        elif panel_buffer is not None:
            with for_range(b, 0, depth, name="pack") as kk:
                row = b.gep(source, [b.mul(kk, i64(ldb))], inbounds=True)
                to = b.gep(panel_buffer, [b.mul(kk, i64(nr))], inbounds=True)
                for j in range(0, width, lanes):
                    value = load_vector(b, b.gep(row, [i64(j)], inbounds=True), lanes, width - j)
                    store_vector(b, value, b.gep(to, [i64(j)], inbounds=True), lanes)
            source, stride = panel_buffer, nr
        for r, height in blocks:
            shape = RegisterTile(lanes, height, width, lda, stride, ldc, masked_b=panel_buffer is None)
            kernel = microkernel(module, prefix, shape, accumulate=False, epilogue=None, extra_count=0)
            b.call(kernel, [b.gep(a, [i64(r * lda)], inbounds=True), source,
                            b.gep(c, [b.add(col, i64(r * ldc))], inbounds=True), i64(depth), one, one, i64(r), col])

    full, rest = divmod(cols, nr)
    with for_range(b, 0, full * nr, step=nr, name="panel") as col:
        panel(col, nr)
    if rest:
        panel(i64(full * nr), rest)


def _tile(module: ir.Module, region: kir.KernelRegion, types: list[ir.Type], lanes: int, tm: int, tm_max: int, ld: int,
          score_tile: tuple[int, int], out_tile: tuple[int, int]) -> ir.Function:
    """One workgroup's `tm` query rows (of `tm_max` a workgroup has room for): arguments the
    bindings, local memory, batch, first row."""
    key = f"{region.name}.tile.{tm}"
    if key in module.globals:
        return module.globals[key]
    body = region.body
    n, k, dv, m = body.n, body.k, body.dv, body.m
    names = [f"binding{i}" for i in range(len(region.bindings))]
    fn, b = internal_function(module, key, [*zip(names, types), ("local", F32P), ("batch", I64), ("m0", I64)],
                              noalias=("local",))
    b.target_math = functools.partial(vector_math.lower, b)  # inline vector exp, as kernel_entry's builder
    *ptrs, local, batch, m0 = fn.args
    first_row = b.add(b.mul(batch, i64(m)), m0)
    operands = _operands(region)
    qo, kto, vo, outo = operands
    e = ExprEmitter(b, region.bindings, ptrs, [batch, i64(0), i64(0)])
    q, kt, v, out = (o.at_batch(b, ptrs[slot], batch, e) for slot, o in enumerate(operands))
    q = b.gep(q, [b.mul(m0, i64(qo.row))], inbounds=True)
    prefix = region.name
    panel = b.gep(local, [i64(tm_max * ld)], inbounds=True)
    if kto.col == 1:
        _matmul_block(b, module, prefix, lanes, tm, n, k, score_tile, q, qo.row, kt, kto.row, local, ld, panel)
    else:
        _matmul_block(b, module, prefix, lanes, tm, n, k, score_tile, q, qo.row, kt, kto.row, local, ld, panel, kto.col)
    kept = _kept(body, ld)
    kept_rows = [b.gep(panel, [i64(k * score_tile[1] * lanes + i * ld)], inbounds=True) for i in range(len(kept))]
    pt, pt_stride = None, _padded(tm_max, lanes)
    if body.transposed:
        pt = b.gep(panel, [i64(k * score_tile[1] * lanes + len(kept) * ld)], inbounds=True)
    with for_range(b, 0, tm, name="row") as r:
        scores = b.gep(local, [b.mul(r, i64(ld))], inbounds=True)
        transposed = None if pt is None else (b.gep(pt, [r], inbounds=True), pt_stride)
        _softmax_row(b, region, list(ptrs), lanes, scores, b.add(first_row, r), list(zip(kept, kept_rows)), transposed)
    if body.transposed:  # out^T[batch, :, m0..] = V^T[batch] @ P^T
        out = b.gep(out, [m0], inbounds=True)
        _matmul_block(b, module, prefix, lanes, dv, tm, n, out_tile, v, n, pt, pt_stride, out, m)
    else:
        out = b.gep(out, [b.mul(m0, i64(outo.row))], inbounds=True)
        _matmul_block(b, module, prefix, lanes, tm, dv, n, out_tile, local, ld, v, vo.row, out, outo.row)
    b.ret_void()
    return fn


def _softmax_row(b: ir.IRBuilder, region: kir.KernelRegion, ptrs: list[ir.Value], lanes: int, scores: ir.Value,
                 row: ir.Value, kept: list[tuple[tuple[kir.Expr, int], ir.Value]],
                 transposed: tuple[ir.Value, int] | None) -> None:
    """The row chain over one row of scores at `scores` (local memory), its probabilities
    written back in place, or with `transposed` (column pointer, row stride) down a column of
    P^T; `row` is the flat row index (batch * m + query). `kept`: ((node, fold step that
    computes it), its row in local memory) per value kept for later steps."""
    body = region.body
    n, rank = body.n, len(body.shape)
    coords = row_coords(b, row, body.shape, None)

    def pointer(base: ir.Value, j: ir.Value, width: int) -> ir.Value:
        ptr = b.gep(base, [j], inbounds=True)
        return b.bitcast(ptr, typed(F32_DTYPE, width).as_pointer()) if width > 1 else ptr

    def evaluate(expr: kir.Expr, group: int, j: ir.Value, width: int, values: list[ir.Value]) -> ir.Value:
        """`expr` at column j in step `group` (len(steps): the probability), kept values loaded
        where an earlier step stored them, stored where this one computes them."""
        score = b.load(pointer(scores, j, width), align=4)
        args = [score] + ([splat(b, x, width) for x in values] if width > 1 else values)
        e = ExprEmitter(b, region.bindings, ptrs, coords + [j], rank - 1 if width > 1 else None, width, args)
        for (node, first), row_ptr in kept:
            if first < group:
                e.memo[(id(node), None)] = b.load(pointer(row_ptr, j, width), align=4)
        out = e.value(expr)
        for (node, first), row_ptr in kept:
            if first == group:
                b.store(e.value(node), pointer(row_ptr, j, width), align=4)
        return out

    def fold(step: int, values: list[ir.Value]) -> ir.Value:
        expr, op = body.steps[step], body.step_ops[step]
        chains = CHAINS if n >= 2 * CHAINS * lanes else 1
        vectors = [Accumulator(b, region, ptrs, op, expr.dtype, lanes) for _ in range(chains if n >= lanes else 0)]
        scalar = Accumulator(b, region, ptrs, op, expr.dtype, 1)
        j = i64(0)
        if vectors:
            with for_range(b, 0, n - chains * lanes + 1, step=chains * lanes, name="chains") as j:
                for c, acc in enumerate(vectors):
                    at = b.add(j, i64(c * lanes))
                    acc.add(evaluate(expr, step, at, lanes, values))
            with for_range(b, j, n - lanes + 1, step=lanes, name="vec") as j:
                vectors[0].add(evaluate(expr, step, j, lanes, values))
            for acc in vectors[1:]:
                vectors[0].merge(acc)
        with for_range(b, j, n, name="tail") as j:
            scalar.add(evaluate(expr, step, j, 1, values))
        if vectors:
            scalar.merge_lanes(vectors[0])
        return scalar.result()

    values: list[ir.Value] = []
    for step, (expr, op) in enumerate(zip(body.steps, body.step_ops)):
        if op == "value":
            e = ExprEmitter(b, region.bindings, ptrs, coords, None, 1, [ir.Constant(F32, ir.Undefined)] + values)
            values.append(e.value(expr))
        else:
            values.append(fold(step, values))

    def write(probability: kir.Expr, values: list[ir.Value], j: ir.Value, width: int) -> None:
        p = evaluate(probability, len(body.steps), j, width, values)
        if transposed is not None:
            column, stride = transposed
            for lane in range(width):
                at = b.gep(column, [b.mul(b.add(j, i64(lane)), i64(stride))], inbounds=True)
                b.store(b.extract_element(p, i32(lane)) if width > 1 else p, at)
            return
        ptr = b.gep(scores, [j], inbounds=True)
        if width > 1:
            ptr = b.bitcast(ptr, p.type.as_pointer())
        b.store(p, ptr, align=4)

    def write_row(probability: tuple[kir.Expr], extra: list[ir.Value]) -> None:
        j = i64(0)
        if n >= lanes:
            with for_range(b, 0, n - lanes + 1, step=lanes, name="p") as j:
                write(probability[0], values + extra, j, lanes)
        with for_range(b, j, n, name="p.tail") as j:
            write(probability[0], values + extra, j, 1)

    # The probability's Arg 0 is the score; its divide by the sum multiplies by the reciprocal.
    row_scalars = ExprEmitter(b, region.bindings, ptrs, coords, None, 1, [ir.Constant(F32, ir.Undefined)] + values)
    divide_by_reciprocals(b, row_scalars, (body.probability,), 1 + len(values), rank,
                          frozenset(id(node) for (node, _), _ in kept), write_row, first_value=1)
