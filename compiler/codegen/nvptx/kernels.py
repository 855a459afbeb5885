"""Kernel IR regions and portable kernels as PTX: the GPU lowering shared with the SPIR-V target
(compiler/codegen/spirv: grid-stride elementwise, reduction and sort kernels, the tiled matmul,
portable kernel bodies), built on `NvptxEntry`. Same workgroup sizes and grids as that target, so
a compiled function's host program is the same for both (`grid`, `workgroup_size`)."""

from __future__ import annotations

from typing import Sequence

from compiler import kernel_ir as kir
from compiler.codegen.nvptx.module import NvptxModule
from compiler.codegen.spirv import kernels as gpu
from compiler.codegen.spirv.invocations import SpirvContext
from compiler.portable import PortableKernel

grid = gpu.grid
workgroup_size = gpu.workgroup_size


def generate(module: NvptxModule, region: kir.KernelRegion) -> gpu.SpirvKernel:
    """Adds `region`'s kernel to `module`; its name, grid and binding types."""
    return gpu.generate(module, region)  # type: ignore[arg-type]  (NvptxModule offers SpirvModule's entry interface)


def build_portable(kernels: Sequence[PortableKernel]) -> NvptxModule:
    """One module with a kernel per portable kernel (compiler/portable.py)."""
    module = NvptxModule()
    for kernel in kernels:
        entry = module.entry(kernel.name, kernel.binding_dtypes, kernel.workgroup_size)
        kernel.body(SpirvContext(entry, kernel))  # type: ignore[arg-type]
        if not entry.builder.block.is_terminated:
            entry.builder.ret_void()
    return module
