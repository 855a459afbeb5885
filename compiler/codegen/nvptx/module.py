"""CUDA kernels as llvmlite IR: one `ptx_kernel` function per entry point (hal/ptx_abi.py).

`NvptxEntry` offers the interface the GPU lowering of compiler/codegen/spirv is written against
(`SpirvEntry`: element pointers, dispatch-state words, invocation and workgroup ids, workgroup
memory, barriers), so the portable kernels (compiler/portable.py) and the kernel IR generators
(spirv/kernels.py, spirv/matmul.py) build PTX unchanged. On CUDA a binding is a plain global
pointer: an element pointer is one GEP, and the ids are the NVVM special registers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from llvmlite import ir

from compiler.codegen.nvptx import TRIPLE
from compiler.codegen.spirv.module import _ELEMENTS, memory_element
from compiler.errors import CompileError

I32, I64 = ir.IntType(32), ir.IntType(64)
GLOBAL, SHARED = 1, 3  # NVPTX address spaces
_SREG = {"local": "tid", "group": "ctaid"}


@dataclass
class NvptxEntry:
    """One kernel being built: `builder` sits in its body."""

    module: "NvptxModule"
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
        """Pointer to element `index` (from the buffer's start) of binding `slot`."""
        index = self.builder.zext(index, I64) if index.type != I64 else index
        return self.builder.gep(self.function.args[slot], [index], inbounds=True)

    def _in_entry_block(self, make):
        with self.builder.goto_block(self.function.entry_basic_block):
            block = self.function.entry_basic_block
            if block.is_terminated:
                self.builder.position_before(block.terminator)
            return make()

    def state_word(self, word: int) -> ir.Value:
        """Dispatch-state word `word` (i32), loaded once per kernel, in its entry block."""
        if word not in self._cache:
            self._cache[word] = self._in_entry_block(
                lambda: self.builder.load(self.element_pointer(self.binding_count, ir.Constant(I32, word)), name=f"state{word}"))
        return self._cache[word]

    def builtin(self, which: str, dim: int) -> ir.Value:
        """'local' (thread id in the block) or 'group' (block id) along `dim`, as i32."""
        key = (which, dim)
        if key not in self._cache:
            name = f"llvm.nvvm.read.ptx.sreg.{_SREG[which]}.{'xyz'[dim]}"
            fn = self.module.module.globals.get(name) or ir.Function(self.module.module, ir.FunctionType(I32, []), name)
            self._cache[key] = self._in_entry_block(lambda: self.builder.call(fn, []))
        return self._cache[key]

    def barrier(self) -> None:
        """Block-wide execution and shared-memory barrier (`bar.sync 0`)."""
        name = "llvm.nvvm.barrier0"
        fn = self.module.module.globals.get(name) or ir.Function(self.module.module, ir.FunctionType(ir.VoidType(), []), name)
        self.builder.call(fn, [])

    def local_array(self, name: str, ty: ir.Type, count: int) -> ir.GlobalVariable:
        """A block-shared array of `count` `ty` (index it with `local_pointer`)."""
        gv = ir.GlobalVariable(self.module.module, ir.ArrayType(ty, count), f"{self.name}.{name}", addrspace=SHARED)
        gv.linkage = "internal"
        gv.align = 16
        gv.initializer = ir.Constant(gv.value_type, ir.Undefined)
        return gv

    def local_pointer(self, array: ir.GlobalVariable, index: ir.Value) -> ir.Value:
        return self.builder.gep(array, [ir.Constant(I32, 0), index], inbounds=True)


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
        return str(self.module)

    def compile(self) -> bytes:
        """PTX text (NUL-terminated, as cuModuleLoadData takes it) with one `.entry` per kernel."""
        from compiler.codegen.nvptx.backend import compile_ptx

        return compile_ptx(self.text())
