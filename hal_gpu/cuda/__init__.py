"""The CUDA driver: hal's model translated to the CUDA driver API (IREE's drivers/cuda layout),
through NVIDIA's `cuda-bindings` (cuda.bindings.driver): device memory and pinned host memory,
one stream per device, events behind timeline semaphores, command buffers recorded as CUDA
graphs and replayed whole. Executables are PTX (hal/ptx_abi.py) from compiler/codegen/nvptx."""

from hal_gpu.cuda.driver import register

__all__ = ["register"]
