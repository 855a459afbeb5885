"""The model compiler's driver: StableHLO text -> native kernels + a host program.

    parse -> specialize (static shapes) -> fusion (kernel IR regions) -> llvm_cpu codegen
          -> one LLVM module -> JitModule -> hal Executable (one entry point per region)

The host program is data, not code: the function's buffers (`Tensor`s: inputs, constants,
temporaries) and an ordered list of `DispatchRecord`s saying which entry point runs on how many
workgroups with which buffers in which binding slots, and whether a barrier must come before it
(it reads or overwrites a buffer that a dispatch since the last barrier writes). A runtime
(fibergrid/module.py) turns it into one command buffer per call; nothing here touches a device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler import kernel_ir as kir
from compiler.codegen.llvm_cpu import generate, jit
from compiler.codegen.llvm_cpu.matmul import GeneratedKernel
from compiler.errors import CompileError
from compiler.frontends.stablehlo import parse_stablehlo
from compiler.passes.fusion import Tensor, partition
from compiler.passes.shape_inference import specialize
from hal.executable import CPU_NATIVE_FORMAT, EntryPoint, Executable


@dataclass(frozen=True)
class DispatchRecord:
    """One dispatch of the host program; `tensors[i]` is the Tensor id bound to slot i."""

    entry: str
    workgroup_count: tuple[int, int, int]
    tensors: tuple[int, ...]
    barrier_before: bool


@dataclass(frozen=True)
class CompiledFunction:
    """A compiled entry function: the executable and the host program that drives it."""

    name: str
    executable: Executable
    inputs: tuple[tuple[tuple[int, ...], np.dtype], ...]  # (shape, dtype) per argument
    tensors: tuple[Tensor, ...]
    program: tuple[DispatchRecord, ...]
    results: tuple[tuple[int, tuple[int, ...]], ...]  # (tensor id, shape) per result


def _program(dispatches, kernels: list[GeneratedKernel]) -> list[DispatchRecord]:
    """Dispatch records with barriers only where a dispatch depends on one since the last
    barrier (independent dispatches share a barrier region and may run at once)."""
    records, written = [], set()
    for d, kernel in zip(dispatches, kernels):
        barrier = bool(written & set(d.tensors))
        if barrier:
            written = set()
        written |= {t for t, decl in zip(d.tensors, d.region.bindings) if decl.output}
        records.append(DispatchRecord(kernel.name, kernel.workgroup_count, d.tensors, barrier))
    return records


def compile_module(text: str, function: str = "main") -> CompiledFunction:
    """Compile `function` of a static-shape StableHLO module (as `jax.jit(f).lower(x).as_text()`
    prints it). Raises CompileError for dynamic shapes or ops without a lowering."""
    module = parse_stablehlo(text)
    fn = module.function(function)
    for i, arg in enumerate(fn.args):
        if not arg.type.is_static:
            raise CompileError(f"@{function} input {i} has dynamic type {arg.type}: only static shapes are compiled")
    static = specialize(module, function, [a.type.shape for a in fn.args])
    part = partition(static, function)
    kernels = [generate(d.region) for d in part.dispatches]
    jit_module = jit.compile_ir(jit.link_ir([k.ir for k in kernels])) if kernels else None
    entries = tuple(
        EntryPoint(k.name, jit_module.address(k.name), (1, 1, 1), k.binding_count, 0,
                   tuple(b.dtype for b in d.region.bindings), (), k.local_memory_size)
        for k, d in zip(kernels, part.dispatches))
    return CompiledFunction(
        function, Executable(entries, CPU_NATIVE_FORMAT, keepalive=jit_module),
        tuple((tuple(a.type.shape), a.type.dtype) for a in fn.args), tuple(part.tensors),
        tuple(_program(part.dispatches, kernels)), tuple(part.results))
