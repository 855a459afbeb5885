"""Vulkan compute kernels as llvmlite IR, linked into one SPIR-V module.

llvmlite's IR builder cannot spell the SPIR-V backend's resource types (`target("spirv.
VulkanBuffer", [0 x T], 12, 1)`), so kernels are built against placeholders that `SpirvModule.
text()` rewrites: `@fg.spv.ptr.<slot>.<type>(i32 index)` becomes `llvm.spv.resource.getpointer`
on the binding's handle, and a marker call at the top of each entry becomes the
`llvm.spv.resource.handlefrombinding` calls for its bindings. Every storage-buffer access takes
its element pointer from `getpointer(handle, index)`: the SPIR-V backend turns that into one
OpAccessChain, while a GEP on a buffer pointer aborts it (backend.py).

The resource layout is `hal.spirv_abi`: bindings 0..n-1 then the dispatch-state words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from llvmlite import ir

from compiler.codegen.spirv import TRIPLE
from compiler.codegen.spirv.backend import compile_spirv
from compiler.codegen.spirv.bytes import widen_bytes
from compiler.errors import CompileError

I1, I8, I16, I32, I64 = (ir.IntType(w) for w in (1, 8, 16, 32, 64))
F32, F64, HALF = ir.FloatType(), ir.DoubleType(), ir.HalfType()

# element type in memory -> (LLVM type, its name in the handle type, its mangling); bytes are
# addressed through 32-bit words (bytes.py)
_ELEMENTS = {
    "f32": (F32, "float", "f32"), "f64": (F64, "double", "f64"), "f16": (HALF, "half", "f16"),
    "i8": (I8, "i32", "i32"), "i16": (I16, "i16", "i16"), "i32": (I32, "i32", "i32"), "i64": (I64, "i64", "i64"),
}


def memory_element(dtype: np.dtype) -> str:
    """The storage-buffer element of a binding of `dtype` (bool is a byte; bf16 its i16 bits)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or dtype.itemsize == 1:
        return "i8"
    if dtype == np.float16:
        return "f16"
    if dtype.kind == "f":
        return {4: "f32", 8: "f64"}[dtype.itemsize]
    if dtype.itemsize == 2:
        return "i16"  # int16/uint16 and bf16's bits
    return {4: "i32", 8: "i64"}[dtype.itemsize]


def _handle_type(elem: str) -> str:
    return f'target("spirv.VulkanBuffer", [0 x {_ELEMENTS[elem][1]}], 12, 1)'


def _mangled(elem: str) -> str:
    return f"tspirv.VulkanBuffer_a0{_ELEMENTS[elem][2]}_12_1t"


class SpirvBuilder(ir.IRBuilder):
    """The IR builder of SPIR-V entry points: signed division and remainder are emitted as
    unsigned ones on magnitudes, arithmetic shifts as logical ones (`ashr` says why).

    Why: LLVM's SPIR-V backend declares every integer type unsigned, and NVIDIA's compiler
    (driver 580) then got OpSDiv / OpSRem wrong on negative operands (jnp's % and // on int32
    were off on the H200, right on lavapipe); OpUDiv / OpURem on |x| and |y| with the sign put
    back are right on both. INT_MIN's magnitude is 2**(w-1) as an unsigned value, so it works."""

    def _magnitudes(self, x: ir.Value, y: ir.Value):
        zero = ir.Constant(x.type, 0)
        xneg, yneg = self.icmp_signed("<", x, zero), self.icmp_signed("<", y, zero)
        return xneg, yneg, self.select(xneg, self.neg(x), x), self.select(yneg, self.neg(y), y)

    def sdiv(self, x, y, name="", flags=()):
        xneg, yneg, ax, ay = self._magnitudes(x, y)
        q = self.udiv(ax, ay)
        return self.select(self.xor(xneg, yneg), self.neg(q), q, name=name)

    def srem(self, x, y, name="", flags=()):
        xneg, _, ax, ay = self._magnitudes(x, y)
        r = self.urem(ax, ay)
        return self.select(xneg, self.neg(r), r, name=name)

    def ashr(self, x, n, name="", flags=()):
        """An arithmetic shift as logical ones: ~(~x >> n) for negative x.

        Why: naga (WebGPU's translator) turns OpShiftRightArithmetic on the unsigned-declared
        ints into WGSL's `>>` on u32, a logical shift (jnp's >> on negative int32 came out
        wrong on webgpu, right on vulkan)."""
        negative = self.icmp_signed("<", x, ir.Constant(x.type, 0))
        return self.select(negative, self.not_(self.lshr(self.not_(x), n)), self.lshr(x, n), name=name)

    def sitofp(self, x, typ, name=""):
        """A signed int -> float conversion as an unsigned one of |x|, the sign put back.

        Why: naga (WebGPU) translates OpConvertSToF on the unsigned-declared ints as a
        conversion from u32 (jnp's int -> float came out 4.29e9 for -1 on webgpu)."""
        negative = self.icmp_signed("<", x, ir.Constant(x.type, 0))
        value = self.uitofp(self.select(negative, self.neg(x), x), typ)
        return self.select(negative, self.fneg(value), value, name=name)

    def fptosi(self, x, typ, name=""):
        """A float -> signed int conversion as an unsigned one of |x|, the sign put back (naga,
        as `sitofp`: OpConvertFToS to an unsigned-declared int is a conversion to u32, which
        took every negative value to 0 on webgpu)."""
        negative = self.fcmp_ordered("<", x, ir.Constant(x.type, 0.0))
        value = self.fptoui(self.select(negative, self.fneg(x), x), typ)
        return self.select(negative, self.neg(value), value, name=name)

    def fcmp_unordered(self, cmpop, lhs, rhs, name="", flags=()):
        """`uno` (either is NaN) as a test of the bits: OpUnordered needs the Kernel capability,
        which spirv-val refuses for Vulkan (every bf16 rounding and NaN test hit it), and naga
        (WebGPU) may take x != x to be false, as WGSL lets it assume no NaN."""
        if cmpop == "uno":
            nan = self.is_nan(lhs)
            return nan if lhs is rhs else self.or_(nan, self.is_nan(rhs), name=name)
        return super().fcmp_unordered(cmpop, lhs, rhs, name=name, flags=flags)

    def is_nan(self, x: ir.Value) -> ir.Value:
        """|bits| above the exponent mask: a NaN of f16, f32 or f64, by integer compare only."""
        width = {ir.HalfType: 16, ir.FloatType: 32, ir.DoubleType: 64}[type(x.type)]
        ity = ir.IntType(width)
        magnitude = self.and_(self.bitcast(x, ity), ir.Constant(ity, (1 << (width - 1)) - 1))
        exponent_mask = {16: 0x7C00, 32: 0x7F800000, 64: 0x7FF0000000000000}[width]
        return self.icmp_unsigned(">", magnitude, ir.Constant(ity, exponent_mask))

    def sext(self, value, typ, name=""):
        """A sign extension as a zero extension with the sign bit's weight flipped:
        ((x zext) ^ 2^(n-1)) - 2^(n-1). Why: naga (WebGPU) translates OpSConvert of an
        unsigned-declared int as a zero extension (an int32 -1 became 4294967295 as int64)."""
        if isinstance(value.type, ir.VectorType):
            return super().sext(value, typ, name=name)
        bias = ir.Constant(typ, 1 << (value.type.width - 1))
        return self.sub(self.xor(self.zext(value, typ), bias), bias, name=name)

    def call(self, fn, args, name="", cconv=None, tail=False, fastmath=(), attrs=(), arg_attrs=None):
        """llvm.fpto{s,u}i.sat (XLA's float -> int: saturate, NaN -> 0) as compares, selects and
        a plain conversion of an in-range value.

        Why: LLVM's SPIR-V backend emits the .sat intrinsics as a conversion decorated
        SaturatedConversion, which only OpenCL kernels may carry (spirv-val refuses it for
        Vulkan), so no float -> int conversion compiled for the GPU targets before."""
        match = re.fullmatch(r"llvm\.fpto([su])i\.sat\..*", getattr(fn, "name", ""))
        if not match:
            return super().call(fn, args, name=name, cconv=cconv, tail=tail, fastmath=fastmath, attrs=attrs, arg_attrs=arg_attrs)
        (x,), ty = args, fn.function_type.return_type
        signed, bits = match.group(1) == "s", ty.width
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        below = self.fcmp_ordered("<", x, ir.Constant(x.type, float(lo)))
        above = self.fcmp_ordered(">=", x, ir.Constant(x.type, float(hi + 1)))  # a power of two: exact in any float type
        nan = self.is_nan(x)
        outside = self.or_(self.or_(below, above), nan)
        value = (self.fptosi if signed else self.fptoui)(self.select(outside, ir.Constant(x.type, 0.0), x), ty)
        value = self.select(below, ir.Constant(ty, lo), value)
        return self.select(above, ir.Constant(ty, hi), value, name=name)


@dataclass
class SpirvEntry:
    """One compute entry point being built: `builder` sits in its body."""

    module: "SpirvModule"
    name: str
    elements: tuple[str, ...]  # memory element per binding, then "i32" for the dispatch state
    workgroup_size: tuple[int, int, int]
    function: ir.Function
    builder: ir.IRBuilder
    _cache: dict = field(default_factory=dict)

    @property
    def binding_count(self) -> int:
        return len(self.elements) - 1

    def element_pointer(self, slot: int, index: ir.Value) -> ir.Value:
        """Pointer to element `index` (i32, relative to the buffer's start) of binding `slot`."""
        elem = self.elements[slot]
        fn = self.module._placeholder(slot, elem)
        if index.type != I32:
            index = self.builder.trunc(index, I32)
        return self.builder.call(fn, [index])

    def state_word(self, word: int) -> ir.Value:
        """Dispatch-state word `word` (i32), loaded once per entry."""
        if word not in self._cache:
            with self.builder.goto_block(self.function.entry_basic_block):
                # Loads of the state sit in the entry block, before its terminator if any.
                block = self.function.entry_basic_block
                if block.is_terminated:
                    self.builder.position_before(block.terminator)
                ptr = self.element_pointer(self.binding_count, ir.Constant(I32, word))
                self._cache[word] = self.builder.load(ptr, name=f"state{word}")
        return self._cache[word]

    def builtin(self, which: str, dim: int) -> ir.Value:
        """'local' (LocalInvocationId) or 'group' (WorkgroupId) along `dim`, as i32."""
        key = (which, dim)
        if key not in self._cache:
            name = {"local": "llvm.spv.thread.id.in.group.i32", "group": "llvm.spv.group.id.i32", "global": "llvm.spv.thread.id.i32"}[which]
            fn = self.module.module.globals.get(name) or ir.Function(self.module.module, ir.FunctionType(I32, [I32]), name)
            with self.builder.goto_block(self.function.entry_basic_block):
                block = self.function.entry_basic_block
                if block.is_terminated:
                    self.builder.position_before(block.terminator)
                self._cache[key] = self.builder.call(fn, [ir.Constant(I32, dim)])
        return self._cache[key]

    def barrier(self) -> None:
        """Workgroup execution + workgroup-memory barrier (GroupMemoryBarrierWithGroupSync)."""
        name = "llvm.spv.group.memory.barrier.with.group.sync"
        fn = self.module.module.globals.get(name) or ir.Function(self.module.module, ir.FunctionType(ir.VoidType(), []), name)
        self.builder.call(fn, [])

    def local_array(self, name: str, ty: ir.Type, count: int) -> ir.GlobalVariable:
        """A workgroup-shared array of `count` `ty` (index it with `local_pointer`)."""
        gv = ir.GlobalVariable(self.module.module, ir.ArrayType(ty, count), f"{self.name}.{name}", addrspace=3)
        gv.linkage = "internal"
        gv.initializer = ir.Constant(gv.value_type, ir.Undefined)
        return gv

    def local_pointer(self, array: ir.GlobalVariable, index: ir.Value) -> ir.Value:
        return self.builder.gep(array, [ir.Constant(I32, 0), index])


_NONFINITE = re.compile(r"\b0x[7f]ff[0-9a-f]{13}\b")  # a float constant with its exponent all ones: inf, nan
_FLOAT_TYPE = re.compile(r"\b(half|float|double)\b")
_BITS = {"half": (np.float16, np.int16, "i16"), "float": (np.float32, np.int32, "i32"), "double": (np.float64, np.int64, "i64")}


def hoist_nonfinite(text: str) -> str:
    """Every infinite or NaN float constant in a function becomes a bitcast of its integer bits
    at the top of the function.

    Why: WebGPU's shader translator (naga, behind wgpu) refuses a non-finite OpConstant (WGSL
    has no literal for one), while a bitcast of an integer constant is an ordinary instruction;
    Vulkan drivers fold it back, so the Vulkan target pays nothing for taking the same SPIR-V.
    A constant's type is the last float type written before it on its line (LLVM IR writes an
    operand's type once for instructions whose operands share it)."""
    out, body, defs = [], None, {}

    def hoist(line: str) -> str:
        def one(match: re.Match) -> str:
            types = _FLOAT_TYPE.findall(line, 0, match.start())
            if not types:
                return match.group(0)
            key = (types[-1], match.group(0))
            if key not in defs:
                ftype, itype, iname = _BITS[key[0]]
                value = np.array([int(key[1], 16)], np.uint64).view(np.float64).astype(ftype).view(itype)[0]
                defs[key] = (f'%"fg.nonfinite.{len(defs)}"', f"bitcast {iname} {int(value)} to {key[0]}")
            return defs[key][0]

        return _NONFINITE.sub(one, line)

    for line in text.splitlines():
        if line.startswith("define "):
            body, defs = [line], {}
        elif body is not None:
            body.append(line if line.startswith(("{", "}")) else hoist(line))
            if line.startswith("}"):
                at = next((i + 1 for i, b in enumerate(body) if b.rstrip().endswith(":")), 2)  # after the entry label
                body[at:at] = [f"  {name} = {expr}" for name, expr in defs.values()]
                out += body
                body = None
        else:
            out.append(line)
    return "\n".join(out) + "\n"


class SpirvModule:
    """Entry points built one after the other, linked by `text()` and compiled by `compile()`."""

    def __init__(self) -> None:
        self.module = ir.Module()
        self.module.triple = TRIPLE
        self.entries: list[SpirvEntry] = []
        self._marker = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [I32]), "fg.spv.handles")

    def _placeholder(self, slot: int, elem: str) -> ir.Function:
        name = f"fg.spv.ptr.{slot}.{elem}"
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ir.PointerType(_ELEMENTS[elem][0], addrspace=11), [I32]), name)
        return fn

    def entry(self, name: str, binding_dtypes, workgroup_size: tuple[int, int, int]) -> SpirvEntry:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name):
            raise CompileError(f"SPIR-V entry point name {name!r} must be an identifier")
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), []), name)
        b = SpirvBuilder(fn.append_basic_block("entry"))
        b.call(self._marker, [ir.Constant(I32, len(self.entries))])
        elements = tuple(memory_element(d) for d in binding_dtypes) + ("i32",)
        entry = SpirvEntry(self, name, elements, tuple(int(s) for s in workgroup_size), fn, b)
        self.entries.append(entry)
        return entry

    def text(self) -> str:
        """The module as LLVM IR the SPIR-V backend takes (placeholders resolved)."""
        text = widen_bytes(hoist_nonfinite(str(self.module)))
        external = sorted(set(re.findall(r'^declare [^@]*@"?([A-Za-z_][\w.]*)"?\(', text, re.M)) - {"fg.spv.handles"})
        external = [name for name in external if not name.startswith(("llvm.", "fg.spv."))]
        if external:
            raise CompileError(f"SPIR-V: no lowering for C library math {', '.join(external)} (used on the CPU target); "
                               "those ops are not supported on vulkan yet")
        lines, decls, names = [], set(), []
        for line in text.splitlines():
            if 'declare void @"fg.spv.handles"' in line or re.match(r'declare .*@"fg\.spv\.ptr\.', line):
                continue
            marker = re.match(r'\s*call void @"fg\.spv\.handles"\(i32 (\d+)\)', line)
            if marker:
                entry = self.entries[int(marker.group(1))]
                for slot, elem in enumerate(entry.elements):
                    ht, mg = _handle_type(elem), _mangled(elem)
                    gname = f"fg.name.{slot}.{elem}"
                    if gname not in names:
                        names.append(gname)
                    decls.add(f"declare {ht} @llvm.spv.resource.handlefrombinding.{mg}(i32, i32, i32, i32, ptr)")
                    lines.append(f'  %"fg.h{slot}" = call {ht} @llvm.spv.resource.handlefrombinding.{mg}(i32 0, i32 {slot}, i32 1, i32 0, ptr @"{gname}")')
                continue
            call = re.search(r'call (.+?) @"fg\.spv\.ptr\.(\d+)\.(\w+)"\(i32 ([^)]+)\)', line)
            if call:
                slot, elem, index = call.group(2), call.group(3), call.group(4)
                ht, mg = _handle_type(elem), _mangled(elem)
                decls.add(f"declare ptr addrspace(11) @llvm.spv.resource.getpointer.p11.{mg}({ht}, i32)")
                line = line[: call.start()] + f'call ptr addrspace(11) @llvm.spv.resource.getpointer.p11.{mg}({ht} %"fg.h{slot}", i32 {index})' + line[call.end():]
            lines.append(line)
        out = "\n".join(lines) + "\n" + "\n".join(sorted(decls)) + "\n"
        for gname in names:
            label = gname.replace("fg.name.", "b").replace(".", "_")
            out += f'@"{gname}" = private unnamed_addr constant [{len(label) + 1} x i8] c"{label}\\00"\n'
        for i, entry in enumerate(self.entries):
            out = out.replace(f'define void @"{entry.name}"()', f'define void @"{entry.name}"() #{100 + i}', 1)
            x, y, z = entry.workgroup_size
            out += f'attributes #{100 + i} = {{ "hlsl.shader"="compute" "hlsl.numthreads"="{x},{y},{z}" }}\n'
        return out

    def compile(self, validate: bool = True) -> bytes:
        """SPIR-V bytes with one GLCompute entry point per entry (SpirvCompileError on failure)."""
        return compile_spirv(self.text(), validate)

