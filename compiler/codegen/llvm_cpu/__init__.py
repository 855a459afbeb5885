"""LLVM CPU backend: host JIT/AOT (`jit`), ABI helpers for llvmlite.ir (`abi_builder`) and the
hand-tiled kernel generators the model compiler lowers its hardest ops to (`matmul`, `conv`)."""

from compiler import kernel_ir as kir
from compiler.codegen.llvm_cpu import matmul
from compiler.codegen.llvm_cpu.elementwise import generate_elementwise


def generate(region: kir.KernelRegion) -> matmul.GeneratedKernel:
    """The llvm_cpu kernel for one region: the only place that picks a generator per body."""
    body = region.body
    if isinstance(body, kir.ElementwiseBody):
        return generate_elementwise(region)
    epilogues = {"bias_add": matmul.bias_add(0), "relu": matmul.relu}
    epilogue = matmul.chain(*(epilogues[e] for e in body.epilogue)) if body.epilogue else None
    extra = (body.n,) if "bias_add" in body.epilogue else ()
    return matmul.generate_matmul(body.m, body.n, body.k, batch=body.batch, epilogue=epilogue,
                                  extra_bindings=extra, name=region.name)
