"""llvmlite.ir helpers shared by every generated CPU kernel.

`KernelBuilder` declares a kernel with the ABI signature of `hal.abi`
(`i32 (i8* dispatch_state, i8* workgroup_state)`) and reads the two structs through the byte
offsets `hal.abi` publishes, so the layout lives in one place. The remaining helpers (counted
loops, entry-block allocas, intrinsics, vector splats and masks) are what kernel generators
need around the ABI; they emit plain IR that LLVM's O3 pipeline turns into registers (SROA)
and vector code.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from llvmlite import ir

from hal import abi

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
I8P = I8.as_pointer()

KERNEL_TYPE = ir.FunctionType(I32, [I8P, I8P])


def i32(value: int) -> ir.Constant:
    return ir.Constant(I32, value)


def i64(value: int) -> ir.Constant:
    return ir.Constant(I64, value)


def f32(value: float) -> ir.Constant:
    return ir.Constant(F32, value)


FLUSH_DENORMALS = platform.machine().lower() in ("x86_64", "amd64")
_MXCSR_FTZ_DAZ = 0x8040  # MXCSR bits 15 (flush to zero) and 6 (denormals are zero)


def _flush_denormals_entry(module: ir.Module, name: str, body: ir.Function) -> None:
    """`i32 name(...)`: save MXCSR, set FTZ and DAZ, call `body`, restore MXCSR."""
    fn = ir.Function(module, KERNEL_TYPE, name)
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    stmxcsr = intrinsic(module, "llvm.x86.sse.stmxcsr", ir.VoidType(), [I8P])
    ldmxcsr = intrinsic(module, "llvm.x86.sse.ldmxcsr", ir.VoidType(), [I8P])
    slot = b.alloca(I32)
    ptr = b.bitcast(slot, I8P)
    b.call(stmxcsr, [ptr])
    saved = b.load(slot)
    b.store(b.or_(saved, i32(_MXCSR_FTZ_DAZ)), slot)
    b.call(ldmxcsr, [ptr])
    result = b.call(body, list(fn.args))
    b.store(saved, slot)
    b.call(ldmxcsr, [ptr])
    b.ret(result)


class KernelBuilder:
    """A kernel function `i32 name(i8* dispatch_state, i8* workgroup_state)` being built.

    Every accessor emits its load at the builder's current position; call them in the entry
    block (before any branch) so each value is loaded once per workgroup.
    """

    def __init__(self, module: ir.Module, name: str) -> None:
        self.module = module
        if FLUSH_DENORMALS:
            # The entry sets flush-to-zero / denormals-are-zero around the kernel body (which
            # LLVM inlines into it), so f32/f64 arithmetic and libm calls see denormals as XLA's
            # CPU runtime does (jnp.log(1e-40) == log(2**-150), 1e-39 > 0 is false).
            self.function = ir.Function(module, KERNEL_TYPE, name + ".body")
            self.function.linkage = "internal"
            self.function.attributes.add("alwaysinline")
            _flush_denormals_entry(module, name, self.function)
        else:
            self.function = ir.Function(module, KERNEL_TYPE, name)
        self.function.attributes.add("nounwind")
        dispatch, workgroup = self.function.args
        dispatch.name, workgroup.name = "dispatch_state", "workgroup_state"
        # The driver guarantees both structs are valid and unaliased by any binding.
        for arg in (dispatch, workgroup):
            arg.add_attribute("noalias")
            arg.attributes.align = 8
        self.dispatch_state, self.workgroup_state = dispatch, workgroup
        self.builder = ir.IRBuilder(self.function.append_basic_block("entry"))

    def _field(self, struct: ir.Value, offset: int, ty: ir.Type, name: str) -> ir.Value:
        """Load a `ty` at byte `offset` of an ABI struct (offsets from hal.abi, never literals)."""
        b = self.builder
        addr = b.bitcast(b.gep(struct, [i64(offset)], inbounds=True), ty.as_pointer())
        load = b.load(addr, name=name)
        load.set_metadata("invariant.load", self.module.add_metadata([]))
        return load

    def _indexed(self, array_field: int, index: int, ty: ir.Type, name: str) -> ir.Value:
        """Load element `index` of the array whose pointer lives at `array_field` in DispatchState."""
        base = self._field(self.dispatch_state, array_field, ty.as_pointer(), f"{name}.base")
        load = self.builder.load(self.builder.gep(base, [i64(index)], inbounds=True), name=name)
        load.set_metadata("invariant.load", self.module.add_metadata([]))
        return load

    def workgroup_id(self, dim: int) -> ir.Value:
        """workgroup_id[dim] as i32."""
        return self._field(self.workgroup_state, abi.WS_WORKGROUP_ID + 4 * dim, I32, f"wg_id{dim}")

    def workgroup_count(self, dim: int) -> ir.Value:
        return self._field(
            self.dispatch_state, abi.DS_WORKGROUP_COUNT + 4 * dim, I32, f"wg_count{dim}"
        )

    def workgroup_size(self, dim: int) -> ir.Value:
        return self._field(self.dispatch_state, abi.DS_WORKGROUP_SIZE + 4 * dim, I32, f"wg_size{dim}")

    def constant_i32(self, index: int) -> ir.Value:
        """Push constant `index` as i32 (constants are 32-bit words)."""
        return self._indexed(abi.DS_CONSTANTS, index, I32, f"const{index}")

    def dynamic_dim(self) -> ir.Value:
        """The function's dynamic dim D (push constant 0, kernel_ir.DynamicExtents) as i64."""
        return self.builder.zext(self.constant_i32(0), I64, name="dim")

    def extent(self, static: int, scale: int, dim: ir.Value | None) -> ir.Value:
        """An i64 extent: `scale * dim` when scale > 0 (a dynamic extent), else `static`."""
        return self.builder.mul(dim, i64(scale)) if scale else i64(static)

    def constant_f32(self, index: int) -> ir.Value:
        """Push constant `index` reinterpreted as f32."""
        return self.builder.bitcast(self.constant_i32(index), F32, name=f"const{index}.f32")

    def binding_ptr(self, index: int, elem: ir.Type = F32) -> ir.Value:
        """Base pointer of binding `index` as `elem*`.

        No alignment is assumed: a binding's base is its buffer (64-byte aligned) plus an
        arbitrary offset. Aliasing is declared where it is valid, on the parameters of the
        internal functions generators pass these pointers to (see `internal_function`).
        """
        raw = self._indexed(abi.DS_BINDING_PTRS, index, I8P, f"binding{index}.raw")
        return self.builder.bitcast(raw, elem.as_pointer(), name=f"binding{index}")

    def binding_length(self, index: int) -> ir.Value:
        """Bytes visible through binding `index`, as i64."""
        return self._indexed(abi.DS_BINDING_LENGTHS, index, I64, f"binding{index}.len")

    def local_memory(self, elem: ir.Type = F32) -> ir.Value:
        """The workgroup's scratch memory (64-byte aligned) as `elem*`."""
        raw = self._field(self.workgroup_state, abi.WS_LOCAL_MEMORY, I8P, "local.raw")
        return self.builder.bitcast(raw, elem.as_pointer(), name="local")

    def local_memory_size(self) -> ir.Value:
        return self._field(self.workgroup_state, abi.WS_LOCAL_MEMORY_SIZE, I32, "local.size")


def push_constant_i32(builder: ir.IRBuilder, index: int) -> ir.Value:
    """Push constant `index` read inside a kernel's own function, whose first argument is the
    DispatchState (what expression emitters use where no KernelBuilder is at hand)."""
    dispatch = builder.function.args[0]
    base = builder.load(builder.bitcast(builder.gep(dispatch, [i64(abi.DS_CONSTANTS)], inbounds=True), I32.as_pointer().as_pointer()))
    return builder.load(builder.gep(base, [i64(index)], inbounds=True))


def internal_function(
    module: ir.Module, name: str, args: Sequence[tuple[str, ir.Type]], noalias: Sequence[str] = ()
) -> tuple[ir.Function, ir.IRBuilder]:
    """Declare an internal `void name(args)` and return it with a builder at its entry block.

    Pointers named in `noalias` get `noalias`: a kernel's bindings are
    distinct buffers or disjoint ranges, which lets LLVM vectorise copies and keep loads of one
    binding in registers across stores to another. Internal linkage lets LLVM inline or
    specialise it freely.
    """
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ty for _, ty in args]), name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    for arg, (arg_name, _) in zip(fn.args, args):
        arg.name = arg_name
        if arg_name in noalias:
            arg.add_attribute("noalias")
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


@contextmanager
def for_range(
    builder: ir.IRBuilder, start: ir.Value | int, stop: ir.Value | int, step: int = 1, name: str = "i"
) -> Iterator[ir.Value]:
    """`for (i64 i = start; i < stop; i += step)`; the body is emitted inside the `with`.

    On exit the builder sits after the loop. Values carried across iterations go through
    `entry_alloca` slots, which SROA turns into registers.
    """
    start = i64(start) if isinstance(start, int) else start
    stop = i64(stop) if isinstance(stop, int) else stop
    before = builder.block
    header = builder.append_basic_block(f"{name}.header")
    body = builder.append_basic_block(f"{name}.body")
    after = builder.append_basic_block(f"{name}.end")
    builder.branch(header)
    builder.position_at_end(header)
    index = builder.phi(I64, name=name)
    index.add_incoming(start, before)
    builder.cbranch(builder.icmp_signed("<", index, stop), body, after)
    builder.position_at_end(body)
    yield index
    index.add_incoming(builder.add(index, i64(step), name=f"{name}.next"), builder.block)
    builder.branch(header)
    builder.position_at_end(after)


def entry_alloca(builder: ir.IRBuilder, ty: ir.Type, name: str = "") -> ir.AllocaInstr:
    """A stack slot in the function's entry block, where SROA/mem2reg can promote it."""
    with builder.goto_entry_block():
        if builder.block.instructions:
            builder.position_before(builder.block.instructions[0])
        return builder.alloca(ty, name=name)


def intrinsic(module: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
    """Declare (once) the LLVM intrinsic `name`, e.g. `llvm.fma.v8f32`."""
    if name in module.globals:
        return module.globals[name]
    return ir.Function(module, ir.FunctionType(ret, list(args)), name)


def vector(lanes: int) -> ir.VectorType:
    return ir.VectorType(F32, lanes)


def splat(builder: ir.IRBuilder, scalar: ir.Value, lanes: int) -> ir.Value:
    """Broadcast a scalar to every lane (lowered to one vbroadcastss)."""
    ty = ir.VectorType(scalar.type, lanes)
    one = builder.insert_element(ir.Constant(ty, ir.Undefined), scalar, i32(0))
    return builder.shuffle_vector(one, ir.Constant(ty, ir.Undefined), ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))


def fma(builder: ir.IRBuilder, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
    """a * b + c with one rounding (`llvm.fma`), for scalars or vectors of f32."""
    suffix = f"v{a.type.count}f32" if isinstance(a.type, ir.VectorType) else "f32"
    fn = intrinsic(builder.module, f"llvm.fma.{suffix}", a.type, [a.type] * 3)
    return builder.call(fn, [a, b, c])


def lane_mask(lanes: int, valid: int) -> ir.Constant:
    """`<lanes x i1>` with the first `valid` lanes set: for masked loads/stores at edges."""
    return ir.Constant(ir.VectorType(I1, lanes), [1 if lane < valid else 0 for lane in range(lanes)])


def load_vector(builder: ir.IRBuilder, ptr: ir.Value, lanes: int, valid: int) -> ir.Value:
    """Load `lanes` f32 from `ptr` (an f32*); when `valid < lanes` only the first `valid` lanes
    are read (a masked load: never touches memory past the edge) and the rest are zero."""
    vty = vector(lanes)
    vptr = builder.bitcast(ptr, vty.as_pointer())
    if valid >= lanes:
        load = builder.load(vptr)
        load.align = 4
        return load
    fn = intrinsic(
        builder.module, f"llvm.masked.load.v{lanes}f32.p0",
        vty, [vty.as_pointer(), I32, ir.VectorType(I1, lanes), vty],
    )
    return builder.call(fn, [vptr, i32(4), lane_mask(lanes, valid), ir.Constant(vty, [0.0] * lanes)])


def store_vector(builder: ir.IRBuilder, value: ir.Value, ptr: ir.Value, valid: int) -> None:
    """Store the first `valid` lanes of `value` to `ptr` (masked when not all lanes are valid)."""
    vty = value.type
    vptr = builder.bitcast(ptr, vty.as_pointer())
    if valid >= vty.count:
        builder.store(value, vptr).align = 4
        return
    fn = intrinsic(
        builder.module, f"llvm.masked.store.v{vty.count}f32.p0",
        ir.VoidType(), [vty, vty.as_pointer(), I32, ir.VectorType(I1, vty.count)],
    )
    builder.call(fn, [value, vptr, i32(4), lane_mask(vty.count, valid)])
