"""Compilation targets: the one place that knows a machine (DESIGN.md, "Codegen: one kernel IR,
several targets").

A target takes the kernel IR regions of a function and gives a `TargetCode`: its format tag (what
a driver loads), one blob (object code, a SPIR-V module), and per kernel its dispatch metadata and
the workgroup grid it wants. Targets: `cpu` (LLVM's host backend, the tuned matmul/conv kernels)
`vulkan` (LLVM's SPIR-V backend, portable lowerings) and `cuda` (LLVM's NVPTX backend, the same
GPU lowerings). Frontends and passes never see a target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from compiler import kernel_ir as kir
from compiler.errors import CompileError


@dataclass(frozen=True)
class KernelCode:
    """One kernel as a target laid it out."""

    name: str
    workgroup_size: tuple[int, int, int]
    workgroup_count: tuple[int, int, int]
    binding_dtypes: tuple[np.dtype, ...]
    local_memory_size: int = 0


@dataclass(frozen=True)
class TargetCode:
    """A function's kernels for one target: the driver format, the blob and the kernels."""

    format: str
    blob: bytes
    kernels: tuple[KernelCode, ...]

    def kernel(self, name: str) -> KernelCode:
        for k in self.kernels:
            if k.name == name:
                return k
        raise KeyError(name)


@dataclass(frozen=True)
class Target:
    name: str
    format: str
    build: Callable[[Sequence[kir.KernelRegion]], TargetCode]
    # GPU targets: a region's workgroup size and grid without generating it (a device that
    # loads the target's code on first use dispatches it on that grid; compiler/pipeline.py).
    workgroup_size: Callable[[kir.KernelRegion], tuple[int, int, int]] | None = None
    grid: Callable[[kir.KernelRegion], tuple[int, int, int]] | None = None


def _build_gpu(regions: Sequence[kir.KernelRegion], format: str, module, generate) -> TargetCode:
    """A GPU target's build: every region generated into one module (SPIR-V, PTX)."""
    kernels = [generate(module, r) for r in regions]
    blob = module.compile() if kernels else b""
    return TargetCode(format, blob, tuple(KernelCode(k.name, k.workgroup_size, k.workgroup_count, k.binding_dtypes)
                                          for k in kernels))


def _build_vulkan(regions: Sequence[kir.KernelRegion]) -> TargetCode:
    from compiler.codegen.spirv import FORMAT
    from compiler.codegen.spirv.kernels import generate
    from compiler.codegen.spirv.module import SpirvModule

    return _build_gpu(regions, FORMAT, SpirvModule(), generate)


def _build_cuda(regions: Sequence[kir.KernelRegion]) -> TargetCode:
    from compiler.codegen.nvptx import FORMAT
    from compiler.codegen.nvptx.kernels import generate
    from compiler.codegen.nvptx.module import NvptxModule

    return _build_gpu(regions, FORMAT, NvptxModule(), generate)


def _gpu_workgroup_size(region: kir.KernelRegion) -> tuple[int, int, int]:
    """Every GPU target lays regions out as the shared GPU lowering does (codegen/spirv/kernels.py)."""
    from compiler.codegen.spirv.kernels import workgroup_size

    return workgroup_size(region)


def _gpu_grid(region: kir.KernelRegion) -> tuple[int, int, int]:
    from compiler.codegen.spirv.kernels import grid

    return grid(region)


def _build_cpu(regions: Sequence[kir.KernelRegion]) -> TargetCode:
    from compiler.codegen.llvm_cpu import generate, jit
    from hal.executable import CPU_NATIVE_FORMAT

    kernels = [generate(r) for r in regions]
    blob = jit.emit_object(jit.link_ir([k.ir for k in kernels])) if kernels else b""
    return TargetCode(CPU_NATIVE_FORMAT, blob, tuple(
        KernelCode(k.name, (1, 1, 1), k.workgroup_count, tuple(b.dtype for b in r.bindings), k.local_memory_size)
        for k, r in zip(kernels, regions)))


def _vulkan_format() -> str:
    from hal.spirv_abi import FORMAT

    return FORMAT


def _cuda_workgroup_size(region: kir.KernelRegion) -> tuple[int, int, int]:
    """The CUDA target's layout: the shared GPU lowering's, but for its own skinny matmul."""
    from compiler.codegen.nvptx.kernels import workgroup_size

    return workgroup_size(region)


def _cuda_grid(region: kir.KernelRegion) -> tuple[int, int, int]:
    from compiler.codegen.nvptx.kernels import grid

    return grid(region)


def _cuda_format() -> str:
    from hal.ptx_abi import FORMAT

    return FORMAT


TARGETS: dict[str, Callable[[], Target]] = {
    "cpu": lambda: Target("cpu", "cpu-native", _build_cpu),
    "vulkan": lambda: Target("vulkan", _vulkan_format(), _build_vulkan, _gpu_workgroup_size, _gpu_grid),
    "cuda": lambda: Target("cuda", _cuda_format(), _build_cuda, _cuda_workgroup_size, _cuda_grid),
    # The WebGPU driver runs the Vulkan target's SPIR-V (naga translates it): one format, so a
    # device loads it lazily as vulkan's; the name is for `fibergrid compile --target webgpu`.
    "webgpu": lambda: Target("webgpu", _vulkan_format(), _build_vulkan),
}


def gpu_targets() -> list[Target]:
    """Every target a device may load lazily from kernel IR (all but the CPU's)."""
    return [t for t in (make() for make in TARGETS.values()) if t.grid is not None]


def get(name: str) -> Target:
    """The target named `name` (`cpu`, `vulkan`, `cuda`, `webgpu`); CompileError for others."""
    if name not in TARGETS:
        raise CompileError(f"unknown target '{name}' (known: {', '.join(TARGETS)})")
    return TARGETS[name]()
