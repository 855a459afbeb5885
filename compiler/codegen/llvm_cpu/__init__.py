"""LLVM CPU backend: host JIT/AOT (`jit`), ABI helpers for llvmlite.ir (`abi_builder`) and the
hand-tiled kernel generators the model compiler lowers its hardest ops to (`matmul`, `conv`)."""
