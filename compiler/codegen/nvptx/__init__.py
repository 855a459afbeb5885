"""NVPTX backend (CUDA): LLVM IR built with llvmlite, turned into PTX by LLVM's NVPTX target
(`backend`), with the CUDA kernel ABI (hal/ptx_abi.py) spelled out by `module`. The kernels
themselves come from the GPU lowering shared with the SPIR-V target (`kernels`)."""

from hal.ptx_abi import FORMAT  # noqa: F401  (the format tag lives with the ABI)

TRIPLE = "nvptx64-nvidia-cuda"
CPU = "sm_90"
FEATURES = "+ptx80"
