"""Portable kernels: one Python source, built for every target (CPU native code and SPIR-V).

A portable kernel is written the way a GPU runs it: the body runs once per *invocation*, and a
workgroup is `workgroup_size` invocations. The body is a Python function that emits LLVM IR
through a `KernelContext` (the builder `k.b` plus the few things that differ per target:
invocation and workgroup ids, binding access, constants, workgroup-local arrays, barriers,
failing). Each target supplies a context:

- CPU (`compiler.codegen.llvm_cpu.invocations`): the CPU ABI entry (hal/abi.py) loops over the
  workgroup's invocations, so one native call still runs one workgroup; local arrays live in
  the worker's local memory; a failure returns the kernel status.
- SPIR-V (`compiler.codegen.spirv.invocations`; PTX for CUDA builds the same context on
  `compiler.codegen.nvptx`): one GLCompute entry, invocations are real GPU
  invocations, local arrays are Workgroup memory; a failure stores the status in the dispatch
  state (hal/spirv_abi.py) for the driver to report.

`kernel(...)` returns a hal Executable in the CPU format whose `variants` hold the SPIR-V form,
compiled on first use by a Vulkan device; a Vulkan-only program uses `spirv_executable`.

Barriers: the CPU context runs invocations one after the other, so `k.barrier()` is only
allowed there with one invocation per workgroup (where it is a no-op); kernels that need one
(shared-memory tiling) are GPU kernels.
"""

from __future__ import annotations

import abc
import hashlib
import inspect
import textwrap
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
from llvmlite import ir

from compiler.errors import CompileError
from hal.executable import CPU_NATIVE_FORMAT, EntryPoint, Executable, ExecutableCache, Variant

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F32, F64 = ir.FloatType(), ir.DoubleType()
KERNEL_RAISED = -1  # status of an out-of-bounds access with boundscheck on (as @fg.kernel)


def llvm_type(dtype: np.dtype) -> ir.Type:
    """Register type of an element of `dtype` (bool is a byte, as in memory)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return {2: ir.HalfType(), 4: F32, 8: F64}[dtype.itemsize]
    return ir.IntType(8 * dtype.itemsize)


class KernelContext(abc.ABC):
    """What a portable kernel body sees. Ids, counts, lengths and indices are i32."""

    b: ir.IRBuilder
    workgroup_size: tuple[int, int, int]
    binding_dtypes: tuple[np.dtype, ...]
    constant_types: tuple[np.dtype, ...]
    boundscheck: bool

    def i32(self, v: int) -> ir.Constant:
        return ir.Constant(I32, v)

    @abc.abstractmethod
    def local_id(self, dim: int) -> ir.Value: ...

    @abc.abstractmethod
    def workgroup_id(self, dim: int) -> ir.Value: ...

    @abc.abstractmethod
    def workgroup_count(self, dim: int) -> ir.Value: ...

    def global_id(self, dim: int) -> ir.Value:
        return self.b.add(self.b.mul(self.workgroup_id(dim), self.i32(self.workgroup_size[dim])), self.local_id(dim))

    def local_index(self) -> ir.Value:
        """The invocation's linear index in its workgroup (x fastest)."""
        x, y, z = (self.local_id(d) for d in range(3))
        sx, sy, _ = self.workgroup_size
        return self.b.add(x, self.b.mul(self.i32(sx), self.b.add(y, self.b.mul(self.i32(sy), z))))

    @abc.abstractmethod
    def length(self, slot: int) -> ir.Value:
        """Elements visible through binding `slot`."""

    @abc.abstractmethod
    def _pointer(self, slot: int, index: ir.Value) -> ir.Value: ...

    def load(self, slot: int, index: ir.Value) -> ir.Value:
        """Element `index` of binding `slot`. With boundscheck, an index past the end fails the
        kernel (KERNEL_RAISED) and reads element 0 instead."""
        if self.boundscheck:
            outside = self.b.icmp_unsigned(">=", index, self.length(slot))
            self.fail_if(outside, KERNEL_RAISED)
            index = self.b.select(outside, self.i32(0), index)
        return self.b.load(self._pointer(slot, index), typ=llvm_type(self.binding_dtypes[slot]))

    def store(self, slot: int, index: ir.Value, value: ir.Value) -> None:
        """Stores element `index`; with boundscheck, past the end fails the kernel instead."""
        if not self.boundscheck:
            self.b.store(value, self._pointer(slot, index))
            return
        outside = self.b.icmp_unsigned(">=", index, self.length(slot))
        self.fail_if(outside, KERNEL_RAISED)
        with self.b.if_then(self.b.not_(outside)):
            self.b.store(value, self._pointer(slot, index))

    @abc.abstractmethod
    def constant_word(self, j: int) -> ir.Value:
        """Constant `j` as its i32 word."""

    def constant(self, j: int) -> ir.Value:
        """Constant `j` as its declared type (f32, i32 or u32 -> float / i32)."""
        word = self.constant_word(j)
        return self.b.bitcast(word, F32) if self.constant_types[j] == np.float32 else word

    @abc.abstractmethod
    def fail_if(self, condition: ir.Value, status: int | ir.Value) -> None:
        """Fails the kernel with `status` (non-zero) when `condition` holds: the submission fails,
        naming the kernel. The invocation carries on (SPIR-V for Vulkan needs structured control
        flow, so there is no early return): guard what must not happen after a failure."""

    @abc.abstractmethod
    def local_array(self, name: str, dtype, count: int) -> object:
        """A workgroup-local array (index it with `local_pointer`)."""

    @abc.abstractmethod
    def local_pointer(self, array: object, index: ir.Value) -> ir.Value: ...

    @abc.abstractmethod
    def barrier(self) -> None: ...

    @contextmanager
    def loop(self, start: ir.Value | int, stop: ir.Value | int, step: ir.Value | int = 1, name: str = "i") -> Iterator[ir.Value]:
        """`for (i32 i = start; i < stop; i += step)` (signed compare; step may be a value)."""
        b = self.b
        start = self.i32(start) if isinstance(start, int) else start
        stop = self.i32(stop) if isinstance(stop, int) else stop
        before = b.block
        header, body, after = (b.append_basic_block(f"{name}.{s}") for s in ("header", "body", "end"))
        b.branch(header)
        b.position_at_end(header)
        index = b.phi(I32, name=name)
        index.add_incoming(start, before)
        b.cbranch(b.icmp_signed("<", index, stop), body, after)
        b.position_at_end(body)
        yield index
        index.add_incoming(b.add(index, self.i32(step) if isinstance(step, int) else step), b.block)
        b.branch(header)
        b.position_at_end(after)


Body = Callable[[KernelContext], None]


class PortableKernel:
    """A kernel's declaration and body, before any target built it."""

    def __init__(self, body: Body, workgroup_size: Sequence[int] | int, bindings: Sequence, constants: Sequence | int,
                 local_memory: int, boundscheck: bool, name: str | None = None) -> None:
        size = (workgroup_size,) if isinstance(workgroup_size, int) else tuple(workgroup_size)
        self.workgroup_size = tuple(int(s) for s in size) + (1,) * (3 - len(size))
        self.binding_dtypes = tuple(np.dtype(d) for d in bindings)
        self.constant_types = (np.dtype(np.uint32),) * constants if isinstance(constants, int) else tuple(np.dtype(c) for c in constants)
        for dt in self.constant_types:
            if dt not in (np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.uint32)):
                raise CompileError(f"kernel constant type {dt} must be float32, int32 or uint32 (constants are 32-bit words)")
        self.local_memory = int(local_memory)
        self.boundscheck = boundscheck
        self.body = body
        self.name = name or body.__name__

    def entry_point(self, function: int = 0) -> EntryPoint:
        return EntryPoint(self.name, function, self.workgroup_size, len(self.binding_dtypes), len(self.constant_types),
                          self.binding_dtypes, self.constant_types, self.local_memory)

    def key(self) -> str:
        try:
            source = textwrap.dedent(inspect.getsource(self.body))
        except (OSError, TypeError):
            source = repr(self.body)
        return hashlib.sha256(repr((source, self.name, self.workgroup_size, self.binding_dtypes, self.constant_types,
                                    self.local_memory, self.boundscheck)).encode()).hexdigest()


def cpu_executable(kernels: Sequence[PortableKernel]) -> tuple[object, tuple[EntryPoint, ...]]:
    """Native code for the host (JIT) and the entry points with their addresses."""
    from compiler.codegen.llvm_cpu import jit
    from compiler.codegen.llvm_cpu.invocations import build_cpu

    module = jit.compile_ir(build_cpu(kernels))
    return module, tuple(k.entry_point(module.address(k.name)) for k in kernels)


def spirv_blob(kernels: Sequence[PortableKernel]) -> bytes:
    """One SPIR-V module with an entry point per kernel."""
    from compiler.codegen.spirv.invocations import build_spirv

    return build_spirv(kernels).compile()


def ptx_blob(kernels: Sequence[PortableKernel]) -> bytes:
    """One PTX module with a kernel per portable kernel (CUDA)."""
    from compiler.codegen.nvptx.kernels import build_portable

    return build_portable(kernels).compile()


_cache = ExecutableCache()


# The format of an executable with no code of its own, only variants (GPU-only kernels).
GPU_ONLY_FORMAT = "portable-gpu-only"


def executable(kernels: Sequence[PortableKernel], cpu: bool = True) -> Executable:
    """The kernels as one hal Executable: CPU native code, with the SPIR-V and PTX forms as
    variants compiled when a Vulkan or CUDA device first loads them. `cpu=False`: no CPU code (kernels that need
    barriers among many invocations), so only GPU drivers load it."""
    from compiler.codegen.nvptx import FORMAT as PTX_FORMAT
    from compiler.codegen.spirv import FORMAT

    key = "|".join(k.key() for k in kernels) + f"|cpu={cpu}"

    def create() -> Executable:
        gpu_entries = tuple(k.entry_point() for k in kernels)
        variants = {FORMAT: Variant(lambda: spirv_blob(kernels), gpu_entries), PTX_FORMAT: Variant(lambda: ptx_blob(kernels), gpu_entries)}
        if not cpu:
            return Executable(gpu_entries, GPU_ONLY_FORMAT, variants=variants)
        module, entries = cpu_executable(kernels)
        return Executable(entries, CPU_NATIVE_FORMAT, keepalive=module, variants=variants)

    return _cache.get_or_create(key, create)


def kernel(workgroup_size: Sequence[int] | int = (1, 1, 1), bindings: Sequence = (), constants: Sequence | int = (),
           local_memory: int = 0, boundscheck: bool = True, cpu: bool = True) -> Callable[[Body], Executable]:
    """`@kernel(...)` over a body `f(k)`: an Executable (one entry point named after `f`) that
    runs on every driver (with `cpu=False`, on GPU drivers only). Declarations as
    `fibergrid.kernel`'s."""
    def decorate(body: Body) -> Executable:
        return executable([PortableKernel(body, workgroup_size, bindings, constants, local_memory, boundscheck)], cpu)

    return decorate
