"""Kernel IR elementwise regions -> LLVM IR kernels with the CPU ABI.

Workgroup (x, y) of the region's `Grid` computes rows y*tile_rows.. and columns x*tile_cols..
of the output seen as rows (all dims but the last) x columns (the last dim). Per row, the
kernel works out once where each load's row starts (the index map turns the row number into
offsets in that input), then runs the column loop with whole vectors of `lanes` elements and
finishes the row with a scalar loop: no masked loads, and the same expression emitter serves
both (`lanes == 1` is the scalar case). A load whose input does not move along the last dim is
one scalar load broadcast to all lanes; a load that moves with a stride other than 1 (a
transpose) makes the whole kernel scalar, which LLVM may still vectorise with gathers.

Math functions go through LLVM intrinsics (llvm.exp, llvm.tanh, ...): LLVM expands or calls libm
for them, so their results match the C library's to an ulp or so.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from llvmlite import ir

from compiler import kernel_ir as kir
from compiler.errors import CompileError

from . import jit
from .abi_builder import I1, I8, I64, KernelBuilder, for_range, i32, i64, intrinsic, splat
from .matmul import ERROR_BINDING_TOO_SHORT, GeneratedKernel


def _scalar_type(dtype: np.dtype, in_memory: bool = False) -> ir.Type:
    """LLVM type of one element: bool is i1 in registers and one byte in memory."""
    if dtype == np.bool_:
        return I8 if in_memory else I1
    if dtype.kind == "f":
        return {4: ir.FloatType(), 8: ir.DoubleType()}[dtype.itemsize]
    return ir.IntType(8 * dtype.itemsize)


def _typed(dtype: np.dtype, lanes: int) -> ir.Type:
    t = _scalar_type(dtype)
    return t if lanes == 1 else ir.VectorType(t, lanes)


def _strides(shape: tuple[int, ...]) -> list[int]:
    return [math.prod(shape[i + 1:]) for i in range(len(shape))]


class _Emitter:
    """Emits one region's expressions at column `j` of the current row, `lanes` wide."""

    def __init__(self, b: ir.IRBuilder, ptrs: list[ir.Value], row_offsets: dict[int, ir.Value],
                 col_strides: dict[int, int], lanes: int, j: ir.Value) -> None:
        self.b, self.ptrs, self.row_offsets, self.col_strides = b, ptrs, row_offsets, col_strides
        self.lanes, self.j = lanes, j
        self.memo: dict[int, ir.Value] = {}

    def emit(self, node: kir.Expr) -> ir.Value:
        if id(node) not in self.memo:
            self.memo[id(node)] = self._emit(node)
        return self.memo[id(node)]

    def splat(self, value: ir.Value) -> ir.Value:
        return value if self.lanes == 1 else splat(self.b, value, self.lanes)

    def constant(self, dtype: np.dtype, value) -> ir.Constant:
        value = bool(value) if dtype == np.bool_ else value
        scalar = ir.Constant(_scalar_type(dtype), int(value) if dtype.kind != "f" else float(value))
        return scalar if self.lanes == 1 else ir.Constant(ir.VectorType(scalar.type, self.lanes), [scalar.constant] * self.lanes)

    def _emit(self, node: kir.Expr) -> ir.Value:
        b = self.b
        if isinstance(node, kir.Const):
            return self.constant(node.dtype, node.value)
        if isinstance(node, kir.Load):
            stride = self.col_strides[id(node)]
            offset = self.row_offsets[id(node)]
            if stride:
                offset = b.add(offset, b.mul(self.j, i64(stride)) if stride != 1 else self.j)
            ptr = b.gep(self.ptrs[node.binding], [offset], inbounds=True)
            width = self.lanes if stride else 1
            if width > 1:
                ptr = b.bitcast(ptr, ir.VectorType(ptr.type.pointee, width).as_pointer())
            value = b.load(ptr)
            value.align = node.dtype.itemsize
            if node.dtype == np.bool_:
                value = b.icmp_unsigned("!=", value, ir.Constant(value.type, None))
            return value if stride else self.splat(value)
        args = [self.emit(x) for x in node.operands]
        return _compute(self, node, args)


def _intrinsic(e: _Emitter, name: str, args: list[ir.Value]) -> ir.Value:
    ty = args[0].type
    scalar = ty.element if isinstance(ty, ir.VectorType) else ty
    suffix = ("f32" if isinstance(scalar, ir.FloatType) else "f64")
    if isinstance(ty, ir.VectorType):
        suffix = f"v{ty.count}{suffix}"
    fn = intrinsic(e.b.module, f"llvm.{name}.{suffix}", ty, [ty] * len(args))
    return e.b.call(fn, args)


_FLOAT_CMP = {"EQ": "==", "NE": "!=", "LT": "<", "LE": "<=", "GT": ">", "GE": ">="}


def _compare(e: _Emitter, direction: str, dtype: np.dtype, x: ir.Value, y: ir.Value) -> ir.Value:
    op = _FLOAT_CMP[direction]
    if dtype.kind == "f":  # IEEE: NE is true on NaN (unordered), the others false (ordered)
        return e.b.fcmp_unordered(op, x, y) if direction == "NE" else e.b.fcmp_ordered(op, x, y)
    if dtype.kind == "i":
        return e.b.icmp_signed(op, x, y)
    return e.b.icmp_unsigned(op, x, y)


def _convert(e: _Emitter, src: np.dtype, dst: np.dtype, x: ir.Value) -> ir.Value:
    b, ty = e.b, _typed(dst, e.lanes)
    if dst == np.bool_:
        zero = e.constant(src, 0)
        return b.fcmp_unordered("!=", x, zero) if src.kind == "f" else b.icmp_unsigned("!=", x, zero)
    if src.kind == "f" and dst.kind == "f":
        return x if src == dst else (b.fpext(x, ty) if dst.itemsize > src.itemsize else b.fptrunc(x, ty))
    if dst.kind == "f":
        return b.sitofp(x, ty) if src.kind == "i" else b.uitofp(x, ty)
    if src.kind == "f":
        return b.fptosi(x, ty) if dst.kind == "i" else b.fptoui(x, ty)
    if dst.itemsize == src.itemsize and src != np.bool_:
        return x
    if dst.itemsize < src.itemsize:
        return b.trunc(x, ty)
    return b.sext(x, ty) if src.kind == "i" else b.zext(x, ty)


def _divide(e: _Emitter, dtype: np.dtype, x: ir.Value, y: ir.Value) -> ir.Value:
    """XLA integer division: x / 0 == -1 and INT_MIN / -1 == INT_MIN. LLVM's sdiv would trap on
    both (SIGFPE kills the process), so the divisor is made safe first."""
    b = e.b
    if dtype.kind == "f":
        return b.fdiv(x, y)
    zero = b.icmp_unsigned("==", y, e.constant(dtype, 0))
    if dtype.kind == "u":
        q = b.udiv(x, b.select(zero, e.constant(dtype, 1), y))
        return b.select(zero, e.constant(dtype, np.iinfo(dtype).max), q)
    overflow = b.and_(b.icmp_signed("==", x, e.constant(dtype, np.iinfo(dtype).min)),
                      b.icmp_signed("==", y, e.constant(dtype, -1)))
    q = b.sdiv(x, b.select(b.or_(zero, overflow), e.constant(dtype, 1), y))
    return b.select(zero, e.constant(dtype, -1), b.select(overflow, x, q))


def _compute(e: _Emitter, node: kir.Compute, args: list[ir.Value]) -> ir.Value:
    b, dtype = e.b, node.operands[0].dtype
    is_float, signed = dtype.kind == "f", dtype.kind == "i"
    op = node.op
    binary_int: dict[str, Callable] = {"add": b.add, "subtract": b.sub, "multiply": b.mul,
                                       "and": b.and_, "or": b.or_, "xor": b.xor}
    binary_float: dict[str, Callable] = {"add": b.fadd, "subtract": b.fsub, "multiply": b.fmul}
    unary_float = {"exponential": "exp", "log": "log", "tanh": "tanh", "sqrt": "sqrt", "sine": "sin",
                   "cosine": "cos", "floor": "floor", "ceil": "ceil", "round_nearest_even": "roundeven",
                   "abs": "fabs"}
    if op == "compare":
        return _compare(e, node.attr, dtype, *args)
    if op == "convert":
        return _convert(e, dtype, node.dtype, args[0])
    if op == "select":
        return b.select(*args)
    if op == "divide":
        return _divide(e, dtype, *args)
    if op in ("maximum", "minimum", "clamp"):
        def pick(name: str, x: ir.Value, y: ir.Value) -> ir.Value:
            if is_float:  # llvm.maximum/minimum propagate NaN, as XLA's max/min do
                return _intrinsic(e, name, [x, y])
            cmp = b.icmp_signed if signed else b.icmp_unsigned
            return b.select(cmp(">" if name == "maximum" else "<", x, y), x, y)
        if op == "clamp":
            lo, x, hi = args
            return pick("minimum", pick("maximum", x, lo), hi)
        return pick(op, *args)
    if is_float:
        if op in binary_float:
            return binary_float[op](*args)
        if op == "power":
            return _intrinsic(e, "pow", args)
        if op in unary_float:
            return _intrinsic(e, unary_float[op], args)
        one = e.constant(dtype, 1.0)
        if op == "negate":
            return b.fneg(args[0])
        if op == "rsqrt":
            return b.fdiv(one, _intrinsic(e, "sqrt", args))
        if op == "logistic":
            return b.fdiv(one, b.fadd(one, _intrinsic(e, "exp", [b.fneg(args[0])])))
    else:
        if op in binary_int:
            return binary_int[op](*args)
        if op == "not":
            return b.xor(args[0], e.constant(dtype, 1 if dtype == np.bool_ else -1))  # all ones
        if op == "negate":
            return b.sub(e.constant(dtype, 0), args[0])
        if op == "abs" and signed:
            return b.select(b.icmp_signed("<", args[0], e.constant(dtype, 0)), b.sub(e.constant(dtype, 0), args[0]), args[0])
    raise CompileError(f"llvm_cpu: elementwise op '{op}' on {dtype} has no lowering")


def _loads(node: kir.Expr, seen: dict[int, kir.Load]) -> dict[int, kir.Load]:
    """Every distinct Load node of a DAG, by identity."""
    if isinstance(node, kir.Load):
        seen[id(node)] = node
    elif isinstance(node, kir.Compute):
        for x in node.operands:
            _loads(x, seen)
    return seen


def generate_elementwise(region: kir.KernelRegion, lanes: int | None = None) -> GeneratedKernel:
    """LLVM IR for an elementwise `region`; dispatch it with `kernel.workgroup_count`."""
    body = region.body
    assert isinstance(body, kir.ElementwiseBody)
    grid, shape = body.grid, body.shape
    rank = len(shape)
    loads: dict[int, kir.Load] = {}
    for out in body.outputs:
        _loads(out, loads)
    # Per load: (output dim, stride in the input) pairs; the last output dim is the column.
    col_strides: dict[int, int] = {}
    row_terms: dict[int, list[tuple[int, int]]] = {}
    for key, load in loads.items():
        strides = _strides(region.bindings[load.binding].shape)
        col_strides[key] = sum(s for d, s in zip(load.index_map, strides) if d == rank - 1)
        row_terms[key] = [(d, s) for d, s in zip(load.index_map, strides) if d is not None and d != rank - 1]
    lanes = lanes or jit.vector_width_f32()
    if any(s not in (0, 1) for s in col_strides.values()):
        lanes = 1

    module = ir.Module()
    kb = KernelBuilder(module, region.name)
    b = kb.builder
    short = ir.Constant(I1, 0)
    for i, decl in enumerate(region.bindings):
        short = b.or_(short, b.icmp_unsigned("<", kb.binding_length(i), i64(decl.size * decl.dtype.itemsize)))
    with b.if_then(short, likely=False):
        b.ret(i32(ERROR_BINDING_TOO_SHORT))
    ptrs = [kb.binding_ptr(i, _scalar_type(d.dtype, in_memory=True)) for i, d in enumerate(region.bindings)]
    wx, wy = (b.zext(kb.workgroup_id(d), I64) for d in range(2))

    def clipped_range(w: ir.Value, tile: int, extent: int) -> tuple[ir.Value, ir.Value]:
        start = b.mul(w, i64(tile))
        end = b.add(start, i64(tile))
        return start, b.select(b.icmp_unsigned("<", end, i64(extent)), end, i64(extent))

    r0, r_end = clipped_range(wy, grid.tile_rows, grid.rows)
    c0, c_end = clipped_range(wx, grid.tile_cols, grid.cols)
    lead_strides = _strides(shape[:-1]) if rank else []
    with for_range(b, r0, r_end, name="row") as row:
        index = [b.urem(b.udiv(row, i64(s)), i64(shape[d])) for d, s in enumerate(lead_strides)]
        row_offsets = {}
        for key, terms in row_terms.items():
            offset = i64(0)
            for d, s in terms:
                offset = b.add(offset, b.mul(index[d], i64(s)))
            row_offsets[key] = offset
        out_row = b.mul(row, i64(grid.cols))

        def columns(j: ir.Value, width: int) -> None:
            e = _Emitter(b, ptrs, row_offsets, col_strides, width, j)
            for slot, expr in zip(body.output_bindings, body.outputs):
                value = e.emit(expr)
                decl = region.bindings[slot]
                if decl.dtype == np.bool_:
                    value = b.zext(value, _typed(np.dtype(np.uint8), width))
                ptr = b.gep(ptrs[slot], [b.add(out_row, j)], inbounds=True)
                if width > 1:
                    ptr = b.bitcast(ptr, value.type.as_pointer())
                b.store(value, ptr).align = decl.dtype.itemsize

        tail_start = c0
        if lanes > 1:
            with for_range(b, c0, b.sub(c_end, i64(lanes - 1)), step=lanes, name="vec") as j:
                columns(j, lanes)
            tail_start = j  # the loop's index at exit: the first column no whole vector covers
        with for_range(b, tail_start, c_end, name="col") as j:
            columns(j, 1)
    b.ret(i32(0))
    return GeneratedKernel(region.name, str(module), grid.workgroup_count, 0, len(region.bindings), grid)
