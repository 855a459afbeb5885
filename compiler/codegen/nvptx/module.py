"""CUDA kernels as llvmlite IR: one `ptx_kernel` function per entry point (hal/ptx_abi.py).

`NvptxEntry` is a `SpirvEntry`, the interface the GPU lowering of compiler/codegen/spirv is
written against (element pointers, dispatch-state words, invocation and workgroup ids, workgroup
memory, barriers), so the portable kernels (compiler/portable.py) and the kernel IR generators
(spirv/kernels.py, spirv/matmul.py) build PTX unchanged. On CUDA a binding is a plain global
pointer: an element pointer is one GEP, and the ids are the NVVM special registers.
"""

from __future__ import annotations

import re

from llvmlite import ir

from compiler.codegen.nvptx import TRIPLE
from compiler.codegen.spirv.module import _ELEMENTS, SpirvEntry, memory_element
from compiler.errors import CompileError

I32, I64 = ir.IntType(32), ir.IntType(64)
GLOBAL = 1  # NVPTX's global address space (workgroup arrays: 3, shared, as SPIR-V's Workgroup)
_SREG = {"local": "tid", "group": "ctaid"}


class NvptxEntry(SpirvEntry):
    """One kernel being built: `builder` sits in its body. What differs from a SPIR-V entry
    point: element pointers, ids and the barrier; dispatch-state words and workgroup arrays are
    built the same way (the arrays in the shared address space)."""

    def element_pointer(self, slot: int, index: ir.Value) -> ir.Value:
        """Pointer to element `index` (from the buffer's start) of binding `slot`."""
        index = self.builder.zext(index, I64) if index.type != I64 else index
        return self.builder.gep(self.function.args[slot], [index], inbounds=True)

    def builtin(self, which: str, dim: int) -> ir.Value:
        """'local' (thread id in the block) or 'group' (block id) along `dim`, as i32."""
        key = (which, dim)
        if key not in self._cache:
            name = f"llvm.nvvm.read.ptx.sreg.{_SREG[which]}.{'xyz'[dim]}"
            fn = self.module.module.globals.get(name) or ir.Function(self.module.module, ir.FunctionType(I32, []), name)
            with self.builder.goto_block(self.function.entry_basic_block):
                block = self.function.entry_basic_block
                if block.is_terminated:
                    self.builder.position_before(block.terminator)
                self._cache[key] = self.builder.call(fn, [])
        return self._cache[key]

    def barrier(self) -> None:
        """Block-wide execution and shared-memory barrier (`bar.sync 0`)."""
        name = "llvm.nvvm.barrier0"
        fn = self.module.module.globals.get(name) or ir.Function(self.module.module, ir.FunctionType(ir.VoidType(), []), name)
        self.builder.call(fn, [])


class NvptxModule:
    """Kernels built one after the other, compiled together to one PTX module by `compile()`."""

    def __init__(self) -> None:
        self.module = ir.Module()
        self.module.triple = TRIPLE
        self.entries: list[NvptxEntry] = []

    def entry(self, name: str, binding_dtypes, workgroup_size: tuple[int, int, int]) -> NvptxEntry:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise CompileError(f"PTX kernel name {name!r} must be an identifier (letters, digits, '_')")
        elements = tuple(memory_element(d) for d in binding_dtypes) + ("i32",)
        params = [ir.PointerType(_ELEMENTS[e][0], addrspace=GLOBAL) for e in elements]
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), params), name)
        fn.calling_convention = "ptx_kernel"
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        entry = NvptxEntry(self, name, elements, tuple(int(s) for s in workgroup_size), fn, b)
        self.entries.append(entry)
        return entry

    def text(self) -> str:
        """The module as LLVM IR, floating-point multiplies and adds marked `contract`: the
        NVPTX backend then fuses them into FMAs (one instruction, one rounding), as nvcc does
        by default; without the flag it must keep `mul.rn` and `add.rn` apart."""
        return re.sub(r"= (fmul|fadd|fsub) (?!contract)", r"= \1 contract ", str(self.module))

    def compile(self) -> bytes:
        """PTX text (NUL-terminated, as cuModuleLoadData takes it) with one `.entry` per kernel."""
        from compiler.codegen.nvptx.backend import compile_ptx

        return compile_ptx(self.text())
