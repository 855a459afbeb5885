"""SPIR-V backend (Vulkan compute): LLVM IR built with llvmlite, turned into SPIR-V by LLVM's own
SPIR-V target in a child process (`backend`), with Vulkan's resource model spelled out by
`module` (storage buffers, the dispatch-state buffer, workgroup memory, builtins) and generators
from kernel IR in `kernels`."""

FORMAT = "vulkan-spirv1.6"
TRIPLE = "spirv1.6-unknown-vulkan1.3-compute"
