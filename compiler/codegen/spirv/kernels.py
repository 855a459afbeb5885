"""Kernel IR regions -> SPIR-V compute entry points (the portable lowering for GPUs).

Every region becomes one entry point of `WORKGROUP_SIZE` invocations that walks its output
points (or sort rows) with a grid-stride loop: invocation g of G handles points g, g + G, ...
So a kernel is correct for any workgroup count a host program dispatches it with — the SPIR-V
target's own (`workgroup_count`) or another target's — and the count only tunes occupancy.

Expressions go through the CPU backend's `ExprEmitter` one lane wide (it is LLVM IR either way):
the builder here (`_SpirvBuilder`) turns the emitter's "pointer to element i of binding s" into
the resource access the SPIR-V backend needs (module.py), adding the binding's offset from the
dispatch state (hal/spirv_abi.py). Library bodies (matmul, conv) arrive already lowered to
reductions (compiler/passes/library_lowering.py). Math the C library provides on the CPU (erf,
expm1, ...) has no SPIR-V form: such calls are refused with a CompileError naming them, unless
the special-math expansion (compiler/passes/special_math.py) replaced them first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from llvmlite import ir

from compiler import kernel_ir as kir
from compiler.codegen.llvm_cpu.expr import ExprEmitter, scalar_type, store, strides, widen_bits
from compiler.codegen.spirv.module import I32, I64, SpirvBuilder, SpirvEntry, SpirvModule
from compiler.errors import CompileError
from compiler.codegen.spirv import matmul as library_matmul
from compiler.passes import index_exprs as ix
from compiler.passes.library_lowering import portable
from compiler.passes.special_math import expand as expand_special_math
from hal import spirv_abi

WORKGROUP_SIZE = 64
MAX_WORKGROUPS = 65535  # per dimension, the Vulkan minimum every device supports


class _BindingBase:
    """What the emitter holds as binding `slot`'s base pointer; `_SpirvBuilder.gep` resolves it."""

    def __init__(self, slot: int, elem: ir.Type) -> None:
        self.slot = slot
        self.type = ir.PointerType(elem, addrspace=11)


# C library functions with a GLSL.std.450 instruction behind an LLVM intrinsic the SPIR-V backend
# selects; the others are expanded in kernel IR first (compiler/passes/special_math.py).
_GLSL_MATH = frozenset({"atan", "asin", "acos", "sinh", "cosh", "atan2"})
# C library / LLVM math functions whose GLSL.std.450 instruction Vulkan allows on 16- and 32-bit
# floats only (spirv-val refuses an f64 one)
_GLSL_32_BIT_ONLY = frozenset({"exp", "exp2", "log", "log2", "sin", "cos", "tan", "tanh", "pow", "atan", "atan2",
                               "asin", "acos", "sinh", "cosh", "asinh", "acosh", "atanh"})
# Kernel IR math ops the SPIR-V target lowers itself (GLSL.std.450 or plain arithmetic).
# (tan is expanded as sin / cos: NVIDIA's GLSL Tan missed the tolerance near the poles.)
SPIRV_NATIVE_MATH = frozenset({"atan", "asin", "acos", "sinh", "cosh", "atan2", "digamma"})


class _SpirvBuilder(SpirvBuilder):
    entry: SpirvEntry

    def target_math(self, name: str, args: list[ir.Value]) -> ir.Value | None:
        """The SPIR-V form of a math function the CPU emitter would call (expr.py's hook)."""
        ty = args[0].type
        if isinstance(ty, ir.DoubleType) and name in _GLSL_32_BIT_ONLY:
            raise CompileError(f"SPIR-V: no f64 {name} (GLSL.std.450's transcendental instructions take 16- and 32-bit "
                               "floats only); compute it in float32 for the GPU targets")
        if name == "copysign":  # the SPIR-V backend cannot select llvm.copysign: sign bit by hand
            width = 32 if isinstance(ty, ir.FloatType) else 64
            ity = ir.IntType(width)
            sign = ir.Constant(ity, 1 << (width - 1))
            magnitude = self.and_(self.bitcast(args[0], ity), ir.Constant(ity, (1 << (width - 1)) - 1))
            return self.bitcast(self.or_(magnitude, self.and_(self.bitcast(args[1], ity), sign)), ty)
        if name == "ctlz":  # LLVM's SPIR-V backend cannot select llvm.ctlz: the width minus the
            # population count of x with every bit below its highest set bit set too (0 -> width)
            x, width = args[0], args[0].type.width
            shift = 1
            while shift < width:
                x = self.or_(x, self.lshr(x, ir.Constant(ty, shift)))
                shift *= 2
            return self.sub(ir.Constant(ty, width), self.target_math("ctpop", [x]))
        if name == "ctpop":  # Vulkan's OpBitCount takes 32-bit integers only: count by words
            x, width = args[0], args[0].type.width
            fn = self.module.globals.get("llvm.ctpop.i32") or ir.Function(self.module, ir.FunctionType(I32, [I32]), "llvm.ctpop.i32")
            if width <= 32:
                count = self.call(fn, [x if width == 32 else self.zext(x, I32)])
                return count if width == 32 else self.trunc(count, ty)
            total = ir.Constant(ty, 0)
            for low in range(0, width, 32):
                word = self.trunc(self.lshr(x, ir.Constant(ty, low)), I32)
                total = self.add(total, self.zext(self.call(fn, [word]), ty))
            return total
        if name == "round":  # GLSL Round leaves a half's direction to the implementation (lavapipe
            # took f64 -2.5 to -2): away from zero by hand, from trunc (inf and NaN pass through)
            (x,) = args
            t = self.call(self._float_intrinsic("trunc", ty, 1), [x])
            half_or_more = self.fcmp_ordered(">=", self.call(self._float_intrinsic("fabs", ty, 1), [self.fsub(x, t)]), ir.Constant(ty, 0.5))
            return self.select(half_or_more, self.fadd(t, self.target_math("copysign", [ir.Constant(ty, 1.0), x])), t)
        if name in ("maximum", "minimum"):  # the backend's FMax/FMin leave NaN undefined (lavapipe
            # gave max(NaN, inf) = inf): NaN put back by hand, as XLA's max/min propagate it
            x, y = args
            return self.select(self.fcmp_unordered("uno", x, y), self.fadd(x, y), self.call(self._float_intrinsic(name, ty, 2), args))
        if name in _GLSL_MATH:
            return self.call(self._float_intrinsic(name, ty, len(args)), args)
        return None

    def _float_intrinsic(self, name: str, ty: ir.Type, arity: int) -> ir.Function:
        suffix = {ir.FloatType: "f32", ir.DoubleType: "f64", ir.HalfType: "f16"}[type(ty)]
        fname = f"llvm.{name}.{suffix}"
        return self.module.globals.get(fname) or ir.Function(self.module, ir.FunctionType(ty, [ty] * arity), fname)

    def gep(self, ptr, indices, inbounds=False, name="", source_etype=None):
        if isinstance(ptr, _BindingBase):
            (index,) = indices
            offset = self.entry.state_word(spirv_abi.binding_offset_word(ptr.slot))
            index = self.trunc(index, I32) if index.type != I32 else index
            return self.entry.element_pointer(ptr.slot, self.add(offset, index))
        return super().gep(ptr, indices, inbounds=inbounds, name=name, source_etype=source_etype)


@dataclass(frozen=True)
class SpirvKernel:
    name: str
    workgroup_count: tuple[int, int, int]
    binding_dtypes: tuple[np.dtype, ...]
    workgroup_size: tuple[int, int, int] = (WORKGROUP_SIZE, 1, 1)


def workgroup_count(points: int) -> tuple[int, int, int]:
    """The grid the SPIR-V target picks for `points` independent items."""
    groups = max(1, min(-(-points // WORKGROUP_SIZE), MAX_WORKGROUPS))
    return (groups, 1, 1)


def _entry(module: SpirvModule, region: kir.KernelRegion) -> tuple[SpirvEntry, _SpirvBuilder, list]:
    entry = module.entry(region.name, [d.dtype for d in region.bindings], (WORKGROUP_SIZE, 1, 1))
    b = _SpirvBuilder(entry.builder.block)
    b.entry = entry
    entry.builder = b
    ptrs = [_BindingBase(i, scalar_type(d.dtype, in_memory=True)) for i, d in enumerate(region.bindings)]
    return entry, b, ptrs


def _grid_stride(entry: SpirvEntry, b: ir.IRBuilder, total: int, body) -> None:
    """for (p = global invocation; p < total; p += invocations in the grid) body(p).

    `p` is an i32 (the body gets it as i64 too): see `_unravel` for why index math at the top
    stays 32-bit."""
    if total >= 1 << 31:
        raise CompileError(f"SPIR-V: a region of {total} points is over the 2**31 a kernel addresses")
    counts = [entry.state_word(spirv_abi.WORKGROUP_COUNT + d) for d in range(3)]
    gx, gy, gz = (entry.builtin("group", d) for d in range(3))
    linear = b.add(gx, b.mul(counts[0], b.add(gy, b.mul(counts[1], gz))))
    first = b.add(b.mul(linear, ir.Constant(I32, WORKGROUP_SIZE)), entry.builtin("local", 0))
    step = b.mul(b.mul(b.mul(counts[0], counts[1]), counts[2]), ir.Constant(I32, WORKGROUP_SIZE))
    before = b.block
    header, loop, after = (b.append_basic_block(f"gs.{s}") for s in ("header", "body", "end"))
    b.branch(header)
    b.position_at_end(header)
    p = b.phi(I32, name="p")
    p.add_incoming(first, before)
    b.cbranch(b.icmp_unsigned("<", p, ir.Constant(I32, total)), loop, after)
    b.position_at_end(loop)
    body(p)
    p.add_incoming(b.add(p, step), b.block)
    b.branch(header)
    b.position_at_end(after)


def _unravel(b: ir.IRBuilder, flat: ir.Value, shape: Sequence[int]) -> list[ir.Value]:
    """Coordinates (i64, as the expression emitter takes them) of the i32 flat index `flat`.

    32-bit division on purpose: NVIDIA's compiler (driver 580) gave wrong coordinates for 64-bit
    division of a loop-carried index by a constant that is not a power of two (pad and
    concatenate kernels read the wrong rows); the same kernels with 32-bit division are right."""
    return [b.zext(b.urem(b.udiv(flat, ir.Constant(I32, s)), ir.Constant(I32, n)), I64) for s, n in zip(strides(shape), shape)]


def _loops(b: ir.IRBuilder, extents: Sequence[int], body, coords: list | None = None) -> None:
    """Nested counted loops (outermost first), body(loop variables)."""
    coords = [] if coords is None else coords
    if len(coords) == len(extents):
        body(coords)
        return
    from compiler.codegen.llvm_cpu.abi_builder import for_range

    with for_range(b, 0, extents[len(coords)], name=f"r{len(coords)}") as v:
        _loops(b, extents, body, coords + [v])


def _elementwise(module: SpirvModule, region: kir.KernelRegion) -> SpirvKernel:
    body = region.body
    entry, b, ptrs = _entry(module, region)
    total = math.prod(body.shape)

    def point(p: ir.Value) -> None:
        e = ExprEmitter(b, region.bindings, ptrs, _unravel(b, p, body.shape), None, 1)
        for slot, expr in zip(body.output_bindings, body.outputs):
            store(b, ptrs, region.bindings[slot], slot, p, e.value(expr))  # p: i32, the builder's gep takes it

    _grid_stride(entry, b, total, point)
    b.ret_void()
    return SpirvKernel(region.name, workgroup_count(total), tuple(d.dtype for d in region.bindings))


def _reduction(module: SpirvModule, region: kir.KernelRegion) -> SpirvKernel:
    body = region.body
    entry, b, ptrs = _entry(module, region)
    rank = len(body.shape)
    kept = [d for d in range(rank) if d not in body.reduced]
    out_shape = body.output_shape
    total = math.prod(out_shape)
    with b.goto_block(entry.function.entry_basic_block):
        b.position_at_start(entry.function.entry_basic_block)
        slots = [b.alloca(scalar_type(x.dtype)) for x in body.inits]

    def point(p: ir.Value) -> None:
        out_coords = _unravel(b, p, out_shape)
        e0 = ExprEmitter(b, region.bindings, ptrs, [], None, 1)
        for slot, init in zip(slots, body.inits):
            b.store(e0.value(init), slot)

        def fold(loop_vars: list[ir.Value]) -> None:
            coords: list = [None] * rank
            for d, c in zip(kept, out_coords):
                coords[d] = c
            for d, c in zip(body.reduced, loop_vars):
                coords[d] = c
            elements = [ExprEmitter(b, region.bindings, ptrs, coords, None, 1).value(x) for x in body.inputs]
            acc = [b.load(s) for s in slots]
            ec = ExprEmitter(b, region.bindings, ptrs, [], None, 1, acc + elements)
            new = [ec.value(c) for c in body.combiner]
            for s, v in zip(slots, new):
                b.store(v, s)

        _loops(b, [body.shape[d] for d in body.reduced], fold)
        eo = ExprEmitter(b, region.bindings, ptrs, out_coords, None, 1, [b.load(s) for s in slots])
        for slot, expr in zip(body.output_bindings, body.outputs):
            store(b, ptrs, region.bindings[slot], slot, p, eo.value(expr))

    _grid_stride(entry, b, total, point)
    b.ret_void()
    return SpirvKernel(region.name, workgroup_count(total), tuple(d.dtype for d in region.bindings))


def _rows(module: SpirvModule, region: kir.KernelRegion) -> SpirvKernel:
    """A RowBody: one invocation per row runs its steps in order, then writes the row."""
    body = region.body
    entry, b, ptrs = _entry(module, region)
    n, lead = body.shape[-1], body.shape[:-1]
    with b.goto_block(entry.function.entry_basic_block):
        b.position_at_start(entry.function.entry_basic_block)
        slots = [b.alloca(scalar_type(x.dtype)) for x in body.steps]

    def emitter(coords: list, values: list) -> ExprEmitter:
        return ExprEmitter(b, region.bindings, ptrs, coords, None, 1, values)

    def row(r: ir.Value) -> None:
        coords = _unravel(b, r, lead)
        values: list[ir.Value] = []
        for expr, op, slot in zip(body.steps, body.step_ops, slots):
            if op == "value":
                values.append(emitter(coords, values).value(expr))
                continue
            b.store(emitter([], []).value(kir.Const(kir.ROW_FOLDS[op], expr.dtype)), slot)
            combiner = kir.Compute(op, (kir.Arg(0, expr.dtype), kir.Arg(1, expr.dtype)), expr.dtype)

            def fold(j: list[ir.Value], expr=expr, slot=slot, combiner=combiner) -> None:
                element = emitter(coords + j, values).value(expr)
                b.store(emitter([], [b.load(slot), element]).value(combiner), slot)

            _loops(b, [n], fold)
            values.append(b.load(slot))
        base = b.mul(b.zext(r, I64), ir.Constant(I64, n))

        def write(j: list[ir.Value]) -> None:
            e = emitter(coords + j, values)
            for slot, expr in zip(body.output_bindings, body.outputs):
                store(b, ptrs, region.bindings[slot], slot, b.add(base, j[0]), e.value(expr))

        _loops(b, [n], write)
        e = emitter(coords, values)
        for slot, expr in zip(body.row_output_bindings, body.row_outputs):
            store(b, ptrs, region.bindings[slot], slot, r, e.value(expr))

    _grid_stride(entry, b, body.rows, row)
    b.ret_void()
    return SpirvKernel(region.name, workgroup_count(body.rows), tuple(d.dtype for d in region.bindings))


def _attention(module: SpirvModule, region: kir.KernelRegion) -> SpirvKernel:
    """An AttentionBody: one invocation per query row recomputes the row's scores (a dot product
    over k each) in every fold step, then adds each key's probability times V's row into the
    output row. Correct, not tuned: the CPU's fused kernel is the fast form."""
    body = region.body
    entry, b, ptrs = _entry(module, region)
    f32 = np.dtype(np.float32)
    with b.goto_block(entry.function.entry_basic_block):
        b.position_at_start(entry.function.entry_basic_block)
        slots = [b.alloca(scalar_type(x.dtype)) for x in body.steps]
        dot = b.alloca(scalar_type(f32))
    views = body.views or (ix.coords(3),) * 4  # element (batch, row, column) of Q, KT, V, out
    q, kt, v, out = (kir.Load(s, views[s], f32) for s in range(4))
    kt = kir.Load(1, tuple(ix.substitute(x, [kir.Coord(0), kir.Coord(2), kir.Coord(3)]) for x in views[1]), f32)
    product = kir.Compute("multiply", (q, kt), f32)
    out_at = ix.index(0)  # out's flat index at (batch, row, column)
    for d, x in enumerate(views[3]):
        out_at = ix.add(out_at, ix.mul(x, math.prod(region.bindings[3].shape[d + 1:])))

    def emitter(coords: list, args: list) -> ExprEmitter:
        return ExprEmitter(b, region.bindings, ptrs, coords, None, 1, args)

    def row(r: ir.Value) -> None:
        batch, i = _unravel(b, r, (body.batch, body.m))
        coords = _unravel(b, r, body.shape[:-1])
        values: list[ir.Value] = []

        def score(j: ir.Value) -> ir.Value:
            b.store(ir.Constant(scalar_type(f32), 0.0), dot)
            _loops(b, [body.k], lambda p: b.store(b.fadd(b.load(dot), emitter([batch, i, p[0], j], []).value(product)), dot))
            return b.load(dot)

        for expr, op, slot in zip(body.steps, body.step_ops, slots):
            if op == "value":
                values.append(emitter(coords, [ir.Constant(scalar_type(f32), 0.0)] + values).value(expr))
                continue
            b.store(emitter([], []).value(kir.Const(kir.ROW_FOLDS[op], expr.dtype)), slot)
            combiner = kir.Compute(op, (kir.Arg(0, expr.dtype), kir.Arg(1, expr.dtype)), expr.dtype)

            def fold(j: list[ir.Value], expr=expr, slot=slot, combiner=combiner) -> None:
                element = emitter(coords + j, [score(j[0])] + values).value(expr)
                b.store(emitter([], [b.load(slot), element]).value(combiner), slot)

            _loops(b, [body.n], fold)
            values.append(b.load(slot))
        def at(c: ir.Value) -> tuple[list[ir.Value], ir.Value]:
            """Coords and flat index of output element (query i, column c): out or out^T."""
            if body.transposed:
                return [batch, c, i], b.add(b.mul(b.add(b.mul(batch, ir.Constant(I64, body.dv)), c), ir.Constant(I64, body.m)), i)
            return [batch, i, c], emitter([batch, i, c], []).value(out_at)

        _loops(b, [body.dv], lambda c: store(b, ptrs, region.bindings[3], 3, at(c[0])[1], ir.Constant(scalar_type(f32), 0.0)))

        def add_key(j: list[ir.Value]) -> None:
            p = emitter(coords + j, [score(j[0])] + values).value(body.probability)

            def add(c: list[ir.Value]) -> None:
                out_coords, flat = at(c[0])
                v_coords = [batch, c[0], j[0]] if body.transposed else [batch, j[0], c[0]]
                term = b.fmul(p, emitter(v_coords, []).value(v))
                store(b, ptrs, region.bindings[3], 3, flat, b.fadd(emitter(out_coords, []).value(out), term))

            _loops(b, [body.dv], add)

        _loops(b, [body.n], add_key)

    rows = body.batch * body.m
    _grid_stride(entry, b, rows, row)
    b.ret_void()
    return SpirvKernel(region.name, workgroup_count(rows), tuple(d.dtype for d in region.bindings))


def _register_value(b: ir.IRBuilder, raw: ir.Value, dtype: np.dtype) -> ir.Value:
    """A loaded memory value as the emitter holds it (bool i1, f16/bf16 as f32)."""
    if dtype == np.bool_:
        return b.icmp_unsigned("!=", raw, ir.Constant(raw.type, 0))
    if dtype in kir.NARROW_FLOATS:
        return widen_bits(b, raw, dtype)
    return raw


def _sort(module: SpirvModule, region: kir.KernelRegion) -> SpirvKernel:
    """Stable insertion sort of each row, in place in the outputs (one invocation per row)."""
    body = region.body
    entry, b, ptrs = _entry(module, region)
    n_ops, dim, shape = body.operands, body.dimension, body.shape
    length = shape[dim]
    row_stride = strides(shape)[dim]
    rest = [n for d, n in enumerate(shape) if d != dim]
    rows = math.prod(rest)
    dtypes = [region.bindings[k].dtype for k in range(n_ops)]
    with b.goto_block(entry.function.entry_basic_block):
        b.position_at_start(entry.function.entry_basic_block)
        key_slots = [b.alloca(scalar_type(d, in_memory=True)) for d in dtypes]
        j_slot = b.alloca(I64)

    def at(base: ir.Value, i: ir.Value) -> ir.Value:
        return b.add(base, b.mul(i, ir.Constant(I64, row_stride)))

    def load(slot: int, offset: ir.Value) -> ir.Value:
        return b.load(b.gep(ptrs[slot], [offset]))

    def row(r: ir.Value) -> None:
        coords = _unravel(b, r, rest)
        full = coords[:dim] + [ir.Constant(I64, 0)] + coords[dim:]
        base = ir.Constant(I64, 0)
        for c, s in zip(full, strides(shape)):
            base = b.add(base, b.mul(c, ir.Constant(I64, s)))
        from compiler.codegen.llvm_cpu.abi_builder import for_range

        with for_range(b, 0, length, name="copy") as i:
            for k in range(n_ops):
                b.store(load(k, at(base, i)), b.gep(ptrs[n_ops + k], [at(base, i)]))
        with for_range(b, 1, length, name="ins") as i:
            for k in range(n_ops):
                b.store(load(n_ops + k, at(base, i)), key_slots[k])
            b.store(i, j_slot)
            header, step, done = (b.append_basic_block(f"shift.{s}") for s in ("header", "body", "end"))
            b.branch(header)
            b.position_at_end(header)
            j = b.load(j_slot)
            positive = b.icmp_signed(">", j, ir.Constant(I64, 0))
            prev = b.select(positive, b.sub(j, ir.Constant(I64, 1)), ir.Constant(I64, 0))
            keys = [_register_value(b, b.load(key_slots[k]), dtypes[k]) for k in range(n_ops)]
            prevs = [_register_value(b, load(n_ops + k, at(base, prev)), dtypes[k]) for k in range(n_ops)]
            args = [v for k in range(n_ops) for v in (keys[k], prevs[k])]
            less = ExprEmitter(b, region.bindings, ptrs, [], None, 1, args).value(body.less)
            b.cbranch(b.and_(positive, less), step, done)
            b.position_at_end(step)
            for k in range(n_ops):
                b.store(load(n_ops + k, at(base, prev)), b.gep(ptrs[n_ops + k], [at(base, j)]))
            b.store(prev, j_slot)
            b.branch(header)
            b.position_at_end(done)
            for k in range(n_ops):
                b.store(b.load(key_slots[k]), b.gep(ptrs[n_ops + k], [at(base, b.load(j_slot))]))

    _grid_stride(entry, b, rows, row)
    b.ret_void()
    return SpirvKernel(region.name, workgroup_count(rows), tuple(d.dtype for d in region.bindings))


def workgroup_size(region: kir.KernelRegion) -> tuple[int, int, int]:
    """The workgroup size of `region`'s entry point."""
    return library_matmul.WORKGROUP_SIZE if library_matmul.applies(region.body) else (WORKGROUP_SIZE, 1, 1)


def grid(region: kir.KernelRegion) -> tuple[int, int, int]:
    """The workgroup count `generate` picks for `region`, without generating it."""
    if library_matmul.applies(region.body):
        return library_matmul.grid(region.body)
    body = portable(region).body
    if isinstance(body, kir.ElementwiseBody):
        return workgroup_count(math.prod(body.shape))
    if isinstance(body, kir.ReductionBody):
        return workgroup_count(math.prod(body.output_shape))
    if isinstance(body, kir.RowBody):
        return workgroup_count(body.rows)
    if isinstance(body, kir.AttentionBody):
        return workgroup_count(body.batch * body.m)
    if isinstance(body, kir.SortBody):
        return workgroup_count(math.prod(n for d, n in enumerate(body.shape) if d != body.dimension))
    raise CompileError(f"SPIR-V: region '{region.name}' has a {type(body).__name__}, which has no SPIR-V lowering")


def generate(module: SpirvModule, region: kir.KernelRegion) -> SpirvKernel:
    """Adds `region`'s entry point to `module`: the one place that picks a generator per body."""
    if library_matmul.applies(region.body):
        library_matmul.generate(module, region)
        return SpirvKernel(region.name, grid(region), tuple(d.dtype for d in region.bindings), library_matmul.WORKGROUP_SIZE)
    region = expand_special_math(portable(region), SPIRV_NATIVE_MATH)
    body = region.body
    if isinstance(body, kir.ElementwiseBody):
        return _elementwise(module, region)
    if isinstance(body, kir.ReductionBody):
        return _reduction(module, region)
    if isinstance(body, kir.RowBody):
        return _rows(module, region)
    if isinstance(body, kir.AttentionBody):
        return _attention(module, region)
    if isinstance(body, kir.SortBody):
        return _sort(module, region)
    raise CompileError(f"SPIR-V: region '{region.name}' has a {type(body).__name__}, which has no SPIR-V lowering")
