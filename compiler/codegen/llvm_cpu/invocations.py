"""Portable kernels (compiler/portable.py) on the CPU ABI: one native call runs one workgroup,
looping over its invocations (z, y, x), so GPU-style kernels run unchanged on local-task."""

from __future__ import annotations

from typing import Sequence

from llvmlite import ir

from compiler.codegen.llvm_cpu.abi_builder import KernelBuilder
from compiler.errors import CompileError
from compiler.portable import I32, I64, KernelContext, PortableKernel, llvm_type


class CpuContext(KernelContext):
    def __init__(self, module: ir.Module, kernel: PortableKernel) -> None:
        self.kb = KernelBuilder(module, kernel.name)
        self.b = self.kb.builder
        self.workgroup_size = kernel.workgroup_size
        self.binding_dtypes = kernel.binding_dtypes
        self.constant_types = kernel.constant_types
        self.boundscheck = kernel.boundscheck
        self.local_memory = kernel.local_memory
        self._local_ids: list[ir.Value] = [self.i32(0)] * 3
        self._local_used = 0
        b = self.b
        self._wg = [self.kb.workgroup_id(d) for d in range(3)]
        self._count = [self.kb.workgroup_count(d) for d in range(3)]
        self._ptrs = [self.kb.binding_ptr(i, llvm_type(dt)) for i, dt in enumerate(kernel.binding_dtypes)]
        self._lengths = [b.trunc(b.udiv(self.kb.binding_length(i), ir.Constant(I64, dt.itemsize)), I32)
                         for i, dt in enumerate(kernel.binding_dtypes)]
        self._constants = [self.kb.constant_i32(j) for j in range(len(kernel.constant_types))]
        self._local_base = self.kb.local_memory(ir.IntType(8))
        self.status = b.alloca(I32, name="status")  # the first failure's status, returned at the end
        b.store(self.i32(0), self.status)

    def local_id(self, dim: int) -> ir.Value:
        return self._local_ids[dim]

    def workgroup_id(self, dim: int) -> ir.Value:
        return self._wg[dim]

    def workgroup_count(self, dim: int) -> ir.Value:
        return self._count[dim]

    def length(self, slot: int) -> ir.Value:
        return self._lengths[slot]

    def _pointer(self, slot: int, index: ir.Value) -> ir.Value:
        return self.b.gep(self._ptrs[slot], [self.b.zext(index, I64)])

    def constant_word(self, j: int) -> ir.Value:
        return self._constants[j]

    def fail_if(self, condition: ir.Value, status) -> None:
        status = self.i32(status) if isinstance(status, int) else status
        with self.b.if_then(condition, likely=False):
            self.b.store(status, self.status)

    def local_array(self, name: str, dtype, count: int) -> tuple[int, ir.Type]:
        ty = llvm_type(dtype)
        size = count * dtype_size(dtype)
        offset = -(-self._local_used // 16) * 16
        self._local_used = offset + size
        if self._local_used > self.local_memory:
            raise CompileError(f"kernel local arrays need {self._local_used} bytes; it declared local_memory={self.local_memory}")
        return offset, ty

    def local_pointer(self, array, index: ir.Value) -> ir.Value:
        offset, ty = array
        base = self.b.bitcast(self.b.gep(self._local_base, [ir.Constant(I64, offset)]), ty.as_pointer())
        return self.b.gep(base, [self.b.zext(index, I64)])

    def barrier(self) -> None:
        if self.workgroup_size != (1, 1, 1):
            raise CompileError("barrier(): the CPU target runs a workgroup's invocations one after another; "
                               "kernels with barriers and several invocations are GPU-only")


def dtype_size(dtype) -> int:
    import numpy as np

    return np.dtype(dtype).itemsize


def build_cpu(kernels: Sequence[PortableKernel]) -> str:
    """LLVM IR (host triple) with one CPU-ABI function per kernel."""
    module = ir.Module()
    for kernel in kernels:
        k = CpuContext(module, kernel)
        sx, sy, sz = kernel.workgroup_size
        if (sx, sy, sz) == (1, 1, 1):
            kernel.body(k)
        else:
            with k.loop(0, sz, name="lz") as z, k.loop(0, sy, name="ly") as y, k.loop(0, sx, name="lx") as x:
                k._local_ids = [x, y, z]
                kernel.body(k)
        if not k.b.block.is_terminated:
            k.b.ret(k.b.load(k.status))
    return str(module)
