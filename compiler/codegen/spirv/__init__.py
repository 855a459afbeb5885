"""SPIR-V backend (Vulkan compute): LLVM IR built with llvmlite, turned into SPIR-V by LLVM's own
SPIR-V target in a child process (`backend`), with Vulkan's resource model spelled out by
`module` (storage buffers, the dispatch-state buffer, workgroup memory, builtins) and generators
from kernel IR in `kernels`."""

from hal.spirv_abi import FORMAT  # noqa: F401  (the format tag lives with the ABI)
TRIPLE = "spirv1.6-unknown-vulkan1.3-compute"
