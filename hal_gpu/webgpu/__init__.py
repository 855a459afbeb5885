"""The WebGPU driver: hal's model on wgpu-py (wgpu-native, the Rust WebGPU implementation beside
Dawn), running the Vulkan target's SPIR-V through naga, wgpu's shader translator.

WebGPU is a narrower API than Vulkan, and the driver makes up the difference on the host:
timeline semaphores (WebGPU has none) are host objects signalled when the device sees a
submission finish (semaphore.py); host-visible buffers (WebGPU cannot map a storage buffer
while the GPU may use it) are a host copy uploaded before and read back after the submissions
that use them (buffer.py); byte-granular fills, copies and updates (WebGPU copies whole 4-byte
words) go through built-in WGSL kernels (builtins.py); bool and int8 tensors (WebGPU has no
8-bit type) live in 32-bit words in the SPIR-V target's kernels (compiler/codegen/spirv/bytes.py).
"""

from hal_gpu.webgpu.driver import register

__all__ = ["register"]
