"""Kernel IR expressions -> LLVM IR values: the emitter every llvm_cpu body generator shares.

An `ExprEmitter` evaluates expression DAGs at one point of an iteration space, or at `lanes`
consecutive points along its `vector_dim` at once (vector values). The generator that owns the
loops hands it the current coordinates (scalars, lane 0) and the values of `Arg`s.

Loads: the flat offset of a load is its index expressions times the binding's strides. Along the
vectorised dim a load whose offset moves by 1 per lane is one vector load, by 0 one scalar load
broadcast, and anything else (a transpose, a strided slice, a clamped pad/concat index, a gather)
is loaded lane by lane from indices evaluated per lane, so no layout forces a whole kernel to be
scalar. Index expressions are always evaluated per lane as scalars: they are address arithmetic.

Math functions go through LLVM intrinsics (llvm.exp, llvm.tanh, ...) where LLVM has them, else
through the C library (erf, expm1, ...), called lane by lane: their results match the C
library's to an ulp or so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import numpy as np
from llvmlite import ir

from compiler import kernel_ir as kir
from compiler.errors import CompileError

from .abi_builder import I1, I8, i32, i64, intrinsic, splat


def scalar_type(dtype: np.dtype, in_memory: bool = False) -> ir.Type:
    """LLVM type of one element: bool is i1 in registers and one byte in memory."""
    if dtype == np.bool_:
        return I8 if in_memory else I1
    if dtype.kind == "f":
        return {4: ir.FloatType(), 8: ir.DoubleType()}[dtype.itemsize]
    return ir.IntType(8 * dtype.itemsize)


def typed(dtype: np.dtype, lanes: int) -> ir.Type:
    t = scalar_type(dtype)
    return t if lanes == 1 else ir.VectorType(t, lanes)


def strides(shape: Sequence[int]) -> list[int]:
    """Row-major element strides of `shape`."""
    out, step = [], 1
    for n in reversed(shape):
        out.append(step)
        step *= n
    return out[::-1]


def width_of(value: ir.Value) -> int:
    return value.type.count if isinstance(value.type, ir.VectorType) else 1


def constant(dtype: np.dtype, value, lanes: int = 1) -> ir.Constant:
    """The constant `value` of `dtype`, splatted over `lanes` lanes when lanes > 1."""
    value = bool(value) if dtype == np.bool_ else value
    scalar = ir.Constant(scalar_type(dtype), float(value) if dtype.kind == "f" else int(value))
    return scalar if lanes == 1 else ir.Constant(ir.VectorType(scalar.type, lanes), [scalar.constant] * lanes)


def const_like(like: ir.Value, dtype: np.dtype, value) -> ir.Constant:
    """The constant `value` of `dtype`, as wide as `like`."""
    return constant(dtype, value, width_of(like))


def binding_pointers(kb, bindings: Sequence[kir.BindingDecl]) -> list[ir.Value]:
    """Each binding's base pointer typed as its element (bool: a byte)."""
    return [kb.binding_ptr(i, scalar_type(d.dtype, in_memory=True)) for i, d in enumerate(bindings)]


def store(b: ir.IRBuilder, ptrs: Sequence[ir.Value], decl: kir.BindingDecl, slot: int,
          offset: ir.Value, value: ir.Value) -> None:
    """Store a scalar or vector `value` at element `offset` of binding `slot`."""
    if decl.dtype == np.bool_:
        value = b.zext(value, typed(np.dtype(np.uint8), width_of(value)))
    ptr = b.gep(ptrs[slot], [offset], inbounds=True)
    if width_of(value) > 1:
        ptr = b.bitcast(ptr, value.type.as_pointer())
    b.store(value, ptr).align = decl.dtype.itemsize


class ExprEmitter:
    """Emits expressions at the point `coords` (i64 per dim of the iteration space), `lanes`
    wide along `vector_dim` (lane l is at coords[vector_dim] + l; with no vector_dim, every lane
    is at the same point). `args` are Arg values, as wide as the emitter."""

    def __init__(self, b: ir.IRBuilder, bindings: Sequence[kir.BindingDecl], ptrs: Sequence[ir.Value],
                 coords: Sequence[ir.Value], vector_dim: int | None = None, lanes: int = 1,
                 args: Sequence[ir.Value] = ()) -> None:
        self.b, self.bindings, self.ptrs, self.coords = b, bindings, ptrs, list(coords)
        self.vector_dim, self.lanes, self.args = vector_dim, lanes, list(args)
        self.memo: dict[tuple[int, int | None], ir.Value] = {}

    def value(self, node: kir.Expr) -> ir.Value:
        """`node` over all lanes (a scalar when the emitter is one lane wide)."""
        return self.emit(node, None)

    def emit(self, node: kir.Expr, lane: int | None) -> ir.Value:
        """`node` over all lanes (lane None) or as a scalar at one lane."""
        if self.lanes == 1:
            lane = None
        key = (id(node), lane)
        if key not in self.memo:
            self.memo[key] = self._emit(node, lane)
        return self.memo[key]

    def _emit(self, node: kir.Expr, lane: int | None) -> ir.Value:
        b = self.b
        if isinstance(node, kir.Const):
            return constant(node.dtype, node.value, self.lanes if lane is None else 1)
        if isinstance(node, kir.Coord):
            base = self.coords[node.dim]
            moving = node.dim == self.vector_dim
            if lane is not None:
                return b.add(base, i64(lane)) if moving and lane else base
            if self.lanes == 1:
                return base
            ramp = ir.Constant(ir.VectorType(base.type, self.lanes), list(range(self.lanes)) if moving else [0] * self.lanes)
            return b.add(splat(b, base, self.lanes), ramp)
        if isinstance(node, kir.Arg):
            value = self.args[node.index]
            return b.extract_element(value, i32(lane)) if lane is not None and width_of(value) > 1 else value
        if isinstance(node, kir.Load):
            return self._load(node, lane)
        return _compute(b, node, [self.emit(x, lane) for x in node.operands])

    def _offset(self, load: kir.Load, lane: int | None) -> ir.Value:
        shape = self.bindings[load.binding].shape
        offset = i64(0)
        for index, stride in zip(load.index, strides(shape)):
            term = self.emit(index, 0 if lane is None else lane)
            offset = self.b.add(offset, term if stride == 1 else self.b.mul(term, i64(stride)))
        return offset

    def _scalar_load(self, load: kir.Load, offset: ir.Value, width: int = 1) -> ir.Value:
        b = self.b
        ptr = b.gep(self.ptrs[load.binding], [offset], inbounds=True)
        if width > 1:
            ptr = b.bitcast(ptr, ir.VectorType(ptr.type.pointee, width).as_pointer())
        value = b.load(ptr)
        value.align = load.dtype.itemsize
        if load.dtype == np.bool_:
            value = b.icmp_unsigned("!=", value, ir.Constant(value.type, None))
        return value

    def _load(self, load: kir.Load, lane: int | None) -> ir.Value:
        if lane is not None or self.lanes == 1:
            return self._scalar_load(load, self._offset(load, lane))
        step = kir.load_step(load, self.bindings[load.binding].shape, self.vector_dim)
        if step == 0:
            return splat(self.b, self.emit(load, 0), self.lanes)
        if step == 1:
            return self._scalar_load(load, self._offset(load, None), self.lanes)
        vec = ir.Constant(typed(load.dtype, self.lanes), ir.Undefined)
        for lane_ in range(self.lanes):
            vec = self.b.insert_element(vec, self.emit(load, lane_), i32(lane_))
        return vec


# ---------------------------------------------------------------------------------------------
# Scalar ops


def _float_suffix(ty: ir.Type) -> str:
    scalar = ty.element if isinstance(ty, ir.VectorType) else ty
    suffix = "f32" if isinstance(scalar, ir.FloatType) else "f64"
    return f"v{ty.count}{suffix}" if isinstance(ty, ir.VectorType) else suffix


def _int_suffix(ty: ir.Type) -> str:
    scalar = ty.element if isinstance(ty, ir.VectorType) else ty
    return f"v{ty.count}i{scalar.width}" if isinstance(ty, ir.VectorType) else f"i{scalar.width}"


def _intrinsic(b: ir.IRBuilder, name: str, args: list[ir.Value]) -> ir.Value:
    ty = args[0].type
    fn = intrinsic(b.module, f"llvm.{name}.{_float_suffix(ty)}", ty, [ty] * len(args))
    return b.call(fn, args)


def _libm(b: ir.IRBuilder, name: str, args: list[ir.Value]) -> ir.Value:
    """C library `name` (f64) / `name`f (f32), lane by lane for vectors."""
    ty = args[0].type
    scalar = ty.element if isinstance(ty, ir.VectorType) else ty
    symbol = name + ("f" if isinstance(scalar, ir.FloatType) else "")
    fn = b.module.globals.get(symbol) or ir.Function(b.module, ir.FunctionType(scalar, [scalar] * len(args)), symbol)
    if not isinstance(ty, ir.VectorType):
        return b.call(fn, args)
    out = ir.Constant(ty, ir.Undefined)
    for lane in range(ty.count):
        out = b.insert_element(out, b.call(fn, [b.extract_element(a, i32(lane)) for a in args]), i32(lane))
    return out


_CMP = {"EQ": "==", "NE": "!=", "LT": "<", "LE": "<=", "GT": ">", "GE": ">="}
_LIBM = {"erf": "erf", "erfc": "erfc", "exponential_minus_one": "expm1", "log_plus_one": "log1p", "cbrt": "cbrt",
         "tan": "tan", "atan2": "atan2"}
_UNARY_FLOAT = {"exponential": "exp", "log": "log", "tanh": "tanh", "sqrt": "sqrt", "sine": "sin",
                "cosine": "cos", "floor": "floor", "ceil": "ceil", "round_nearest_even": "roundeven",
                "round_nearest_afz": "round", "abs": "fabs"}


def _total_order_key(b: ir.IRBuilder, x: ir.Value, dtype: np.dtype) -> ir.Value:
    """Float bits as signed ints ordered like IEEE totalOrder (-NaN < -inf < -0 < +0 < NaN)."""
    ity = typed(np.dtype(f"i{dtype.itemsize}"), width_of(x))
    bits = b.bitcast(x, ity)
    flipped = b.xor(bits, const_like(bits, np.dtype(f"i{dtype.itemsize}"), np.iinfo(f"i{dtype.itemsize}").max))
    return b.select(b.icmp_signed("<", bits, const_like(bits, np.dtype(f"i{dtype.itemsize}"), 0)), flipped, bits)


def _compare(b: ir.IRBuilder, attr: str, dtype: np.dtype, x: ir.Value, y: ir.Value) -> ir.Value:
    total, _, direction = attr.rpartition(":")
    op = _CMP[direction]
    if dtype.kind == "f" and total:
        x, y = _total_order_key(b, x, dtype), _total_order_key(b, y, dtype)
        return b.icmp_signed(op, x, y)
    if dtype.kind == "f":  # IEEE: NE is true on NaN (unordered), the others false (ordered)
        return b.fcmp_unordered(op, x, y) if direction == "NE" else b.fcmp_ordered(op, x, y)
    if dtype.kind == "i":
        return b.icmp_signed(op, x, y)
    return b.icmp_unsigned(op, x, y)


def _convert(b: ir.IRBuilder, src: np.dtype, dst: np.dtype, x: ir.Value) -> ir.Value:
    ty = typed(dst, width_of(x))
    if dst == np.bool_:
        zero = const_like(x, src, 0)
        return b.fcmp_unordered("!=", x, zero) if src.kind == "f" else b.icmp_unsigned("!=", x, zero)
    if src.kind == "f" and dst.kind == "f":
        return x if src == dst else (b.fpext(x, ty) if dst.itemsize > src.itemsize else b.fptrunc(x, ty))
    if dst.kind == "f":
        return b.sitofp(x, ty) if src.kind == "i" else b.uitofp(x, ty)
    if src.kind == "f":  # XLA: truncate, saturate at the int range, NaN -> 0 (the .sat intrinsics)
        name = "fptosi" if dst.kind == "i" else "fptoui"
        fn = intrinsic(b.module, f"llvm.{name}.sat.{_int_suffix(ty)}.{_float_suffix(x.type)}", ty, [x.type])
        return b.call(fn, [x])
    if dst.itemsize == src.itemsize and src != np.bool_:
        return x
    if dst.itemsize < src.itemsize:
        return b.trunc(x, ty)
    return b.sext(x, ty) if src.kind == "i" else b.zext(x, ty)


def _divide(b: ir.IRBuilder, dtype: np.dtype, x: ir.Value, y: ir.Value, remainder: bool) -> ir.Value:
    """XLA integer division and remainder: x / 0 == -1 (unsigned: all ones), x % 0 == x,
    INT_MIN / -1 == INT_MIN, INT_MIN % -1 == 0. LLVM's sdiv/srem would trap on those (SIGFPE
    kills the process), so the divisor is made safe first."""
    if dtype.kind == "f":
        return b.frem(x, y) if remainder else b.fdiv(x, y)
    one = const_like(x, dtype, 1)
    zero = b.icmp_unsigned("==", y, const_like(x, dtype, 0))
    if dtype.kind == "u" or dtype == np.bool_:
        safe = b.select(zero, one, y)
        if remainder:
            return b.select(zero, x, b.urem(x, safe))
        return b.select(zero, const_like(x, dtype, -1 if dtype != np.bool_ else 1), b.udiv(x, safe))
    overflow = b.and_(b.icmp_signed("==", x, const_like(x, dtype, np.iinfo(dtype).min)),
                      b.icmp_signed("==", y, const_like(x, dtype, -1)))
    safe = b.select(b.or_(zero, overflow), one, y)
    if remainder:
        return b.select(zero, x, b.select(overflow, const_like(x, dtype, 0), b.srem(x, safe)))
    return b.select(zero, const_like(x, dtype, -1), b.select(overflow, x, b.sdiv(x, safe)))


def _shift(b: ir.IRBuilder, op: str, dtype: np.dtype, x: ir.Value, y: ir.Value) -> ir.Value:
    """XLA shifts: an amount outside [0, bits) gives 0 (arithmetic right: the sign fill)."""
    bits = dtype.itemsize * 8
    out_of_range = b.icmp_unsigned(">=", y, const_like(y, dtype, bits))  # negative: huge unsigned
    if op == "shift_right_arithmetic":
        return b.ashr(x, b.select(out_of_range, const_like(y, dtype, bits - 1), y))
    safe = b.select(out_of_range, const_like(y, dtype, 0), y)
    shifted = b.shl(x, safe) if op == "shift_left" else b.lshr(x, safe)
    return b.select(out_of_range, const_like(x, dtype, 0), shifted)


def _min_max(b: ir.IRBuilder, name: str, dtype: np.dtype, x: ir.Value, y: ir.Value) -> ir.Value:
    if dtype.kind == "f":  # llvm.maximum/minimum propagate NaN, as XLA's max/min do
        return _intrinsic(b, name, [x, y])
    cmp = b.icmp_signed if dtype.kind == "i" else b.icmp_unsigned
    return b.select(cmp(">" if name == "maximum" else "<", x, y), x, y)


def _compute(b: ir.IRBuilder, node: kir.Compute, args: list[ir.Value]) -> ir.Value:
    dtype = node.operands[0].dtype
    op, x = node.op, args[0]
    if op == "compare":
        return _compare(b, node.attr, dtype, *args)
    if op == "convert":
        return _convert(b, dtype, node.dtype, x)
    if op == "bitcast_convert":
        return b.bitcast(x, typed(node.dtype, width_of(x)))
    if op == "select":
        return b.select(*args)
    if op in ("divide", "remainder"):
        return _divide(b, dtype, *args, remainder=op == "remainder")
    if op in ("maximum", "minimum"):
        return _min_max(b, op, dtype, *args)
    if op == "clamp":
        lo, value, hi = args
        return _min_max(b, "minimum", dtype, _min_max(b, "maximum", dtype, value, lo), hi)
    if op == "sign":
        one, zero = const_like(x, dtype, 1), const_like(x, dtype, 0)
        if dtype.kind == "f":  # NaN and +-0 stay as they are
            gt, lt = b.fcmp_ordered(">", x, zero), b.fcmp_ordered("<", x, zero)
            return b.select(gt, one, b.select(lt, const_like(x, dtype, -1), x))
        if dtype.kind == "u":
            return b.select(b.icmp_unsigned("!=", x, zero), one, zero)
        return b.select(b.icmp_signed(">", x, zero), one,
                        b.select(b.icmp_signed("<", x, zero), const_like(x, dtype, -1), zero))
    if dtype.kind == "f":
        return _float_op(b, op, dtype, args)
    return _int_op(b, op, dtype, args)


def _float_op(b: ir.IRBuilder, op: str, dtype: np.dtype, args: list[ir.Value]) -> ir.Value:
    binary: dict[str, Callable] = {"add": b.fadd, "subtract": b.fsub, "multiply": b.fmul}
    x, one = args[0], const_like(args[0], dtype, 1.0)
    if op in binary:
        return binary[op](*args)
    if op == "power":
        return _intrinsic(b, "pow", args)
    if op in _UNARY_FLOAT:
        return _intrinsic(b, _UNARY_FLOAT[op], args)
    if op in _LIBM:
        return _libm(b, _LIBM[op], args)
    if op == "negate":
        return b.fneg(x)
    if op == "rsqrt":
        return b.fdiv(one, _intrinsic(b, "sqrt", args))
    if op == "logistic":
        return b.fdiv(one, b.fadd(one, _intrinsic(b, "exp", [b.fneg(x)])))
    if op == "is_finite":
        return b.fcmp_ordered("<", _intrinsic(b, "fabs", args), const_like(x, dtype, float("inf")))
    raise CompileError(f"llvm_cpu: op '{op}' on {dtype} has no lowering")


def _int_op(b: ir.IRBuilder, op: str, dtype: np.dtype, args: list[ir.Value]) -> ir.Value:
    binary: dict[str, Callable] = {"add": b.add, "subtract": b.sub, "multiply": b.mul,
                                   "and": b.and_, "or": b.or_, "xor": b.xor}
    x = args[0]
    if op in binary:
        return binary[op](*args)
    if op.startswith("shift_"):
        return _shift(b, op, dtype, *args)
    if op == "not":
        return b.xor(x, const_like(x, dtype, 1 if dtype == np.bool_ else -1))  # all ones
    if op == "negate":
        return b.sub(const_like(x, dtype, 0), x)
    if op == "abs":
        if dtype.kind == "u":
            return x
        zero = const_like(x, dtype, 0)
        return b.select(b.icmp_signed("<", x, zero), b.sub(zero, x), x)
    raise CompileError(f"llvm_cpu: op '{op}' on {dtype} has no lowering")
