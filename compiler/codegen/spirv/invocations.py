"""Portable kernels (compiler/portable.py) as SPIR-V compute entry points (hal/spirv_abi.py)."""

from __future__ import annotations

from typing import Sequence

from llvmlite import ir

from compiler.codegen.spirv.module import SpirvEntry, SpirvModule
from compiler.portable import KernelContext, PortableKernel, llvm_type
from hal import spirv_abi


class SpirvContext(KernelContext):
    def __init__(self, entry: SpirvEntry, kernel: PortableKernel) -> None:
        self.entry = entry
        self.b = entry.builder
        self.workgroup_size = kernel.workgroup_size
        self.binding_dtypes = kernel.binding_dtypes
        self.constant_types = kernel.constant_types
        self.boundscheck = kernel.boundscheck
        self.n = len(kernel.binding_dtypes)

    def local_id(self, dim: int) -> ir.Value:
        return self.entry.builtin("local", dim) if self.workgroup_size[dim] > 1 else self.i32(0)

    def workgroup_id(self, dim: int) -> ir.Value:
        return self.entry.builtin("group", dim)

    def workgroup_count(self, dim: int) -> ir.Value:
        return self.entry.state_word(spirv_abi.WORKGROUP_COUNT + dim)

    def length(self, slot: int) -> ir.Value:
        return self.entry.state_word(spirv_abi.binding_length_word(slot))

    def _pointer(self, slot: int, index: ir.Value) -> ir.Value:
        offset = self.entry.state_word(spirv_abi.binding_offset_word(slot))
        return self.entry.element_pointer(slot, self.b.add(offset, index))

    def constant_word(self, j: int) -> ir.Value:
        return self.entry.state_word(spirv_abi.constant_word(self.n, j))

    def fail_if(self, condition: ir.Value, status) -> None:
        status = self.i32(status) if isinstance(status, int) else status
        with self.b.if_then(condition, likely=False):
            self.b.store(status, self.entry.element_pointer(self.n, self.i32(spirv_abi.STATUS)))
            for d in range(3):
                self.b.store(self.workgroup_id(d), self.entry.element_pointer(self.n, self.i32(spirv_abi.FAILED_WORKGROUP + d)))

    def local_array(self, name: str, dtype, count: int) -> ir.GlobalVariable:
        return self.entry.local_array(name, llvm_type(dtype), count)

    def local_pointer(self, array, index: ir.Value) -> ir.Value:
        return self.entry.local_pointer(array, index)

    def barrier(self) -> None:
        self.entry.barrier()


def build_spirv(kernels: Sequence[PortableKernel]) -> SpirvModule:
    module = SpirvModule()
    for kernel in kernels:
        entry = module.entry(kernel.name, kernel.binding_dtypes, kernel.workgroup_size)
        kernel.body(SpirvContext(entry, kernel))
        if not entry.builder.block.is_terminated:
            entry.builder.ret_void()
    return module
