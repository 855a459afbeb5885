"""The CUDA kernel ABI: the contract between PTX kernels (compiler/codegen/nvptx) and the CUDA
driver (hal_gpu/cuda), as `hal.spirv_abi` is for Vulkan.

A kernel with n bindings is a PTX `.entry` with n + 1 parameters, each a 64-bit global pointer:

    param 0..n-1     binding i's buffer, at its start (the driver passes the buffer's base)
    param n          the dispatch state: uint32 words laid out exactly as `hal.spirv_abi`'s
                     (workgroup count, status, failing workgroup, binding offsets and lengths in
                     elements, constants)

Why the SPIR-V ABI's state words: the GPU lowering of kernel IR (compiler/codegen/spirv) reads
ids, lengths, offsets and constants through one interface, so PTX kernels come from the same
generators, and a kernel reports a failure the same way (it stores a non-zero status and its
workgroup id in the state). Why the state lives in device memory rather than in kernel
parameters: the generators address it as memory, and a failure must be written somewhere the
host can read back.
"""

from __future__ import annotations

FORMAT = "cuda-sm90"  # executable format tag: PTX for sm_90 (Hopper), this ABI
