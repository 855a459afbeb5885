"""Kernel IR regions and portable kernels as PTX: the GPU lowering shared with the SPIR-V target
(compiler/codegen/spirv: grid-stride elementwise, reduction and sort kernels, the tiled matmul,
portable kernel bodies), built on `NvptxEntry`, plus the CUDA target's own kernel for skinny
matmuls (`matvec`). `grid` and `workgroup_size` give a region's layout without generating it."""

from __future__ import annotations

from typing import Sequence

from compiler import kernel_ir as kir
from compiler.codegen.nvptx import matvec
from compiler.codegen.nvptx.module import NvptxModule
from compiler.codegen.spirv import kernels as gpu
from compiler.codegen.spirv.invocations import SpirvContext
from compiler.portable import PortableKernel


def grid(region: kir.KernelRegion) -> tuple[int, int, int]:
    return matvec.grid(region.body) if matvec.applies(region.body) else gpu.grid(region)


def workgroup_size(region: kir.KernelRegion) -> tuple[int, int, int]:
    return matvec.WORKGROUP_SIZE if matvec.applies(region.body) else gpu.workgroup_size(region)


def generate(module: NvptxModule, region: kir.KernelRegion) -> gpu.SpirvKernel:
    """Adds `region`'s kernel to `module`; its name, grid and binding types."""
    if matvec.applies(region.body):
        matvec.generate(module, region)
        return gpu.SpirvKernel(region.name, grid(region), tuple(d.dtype for d in region.bindings), matvec.WORKGROUP_SIZE)
    return gpu.generate(module, region)  # type: ignore[arg-type]  (an NvptxModule's entries are SpirvEntries)


def build_portable(kernels: Sequence[PortableKernel]) -> NvptxModule:
    """One module with a kernel per portable kernel (compiler/portable.py)."""
    module = NvptxModule()
    for kernel in kernels:
        entry = module.entry(kernel.name, kernel.binding_dtypes, kernel.workgroup_size)
        kernel.body(SpirvContext(entry, kernel))  # type: ignore[arg-type]
        if not entry.builder.block.is_terminated:
            entry.builder.ret_void()
    return module
