"""The SPIR-V target without a Vulkan device: LLVM's SPIR-V backend in a child process, the
resource linking, the barrier fix, and clear errors (no device needed; spirv-val where installed)."""

from __future__ import annotations

import numpy as np
import pytest
from llvmlite import ir

from compiler import kernel_ir as kir
from compiler.codegen.spirv.backend import SpirvCompileError, compile_spirv, fix_barrier_semantics, spirv_val
from compiler.codegen.spirv.kernels import generate, grid, workgroup_size
from compiler.codegen.spirv.module import SpirvModule
from compiler.errors import CompileError
from compiler.passes.special_math import expand
from compiler.portable import PortableKernel
from compiler.codegen.spirv.invocations import build_spirv

F32 = np.dtype(np.float32)
MAGIC = bytes.fromhex("03022307")


def _words(spirv: bytes) -> np.ndarray:
    return np.frombuffer(spirv, dtype="<u4")


def _barrier_semantics(spirv: bytes) -> list[int]:
    """The memory-semantics constant of every OpControlBarrier."""
    words, constants, out, i = _words(spirv), {}, [], 5
    while i < len(words):
        count, opcode = int(words[i]) >> 16, int(words[i]) & 0xFFFF
        if opcode == 43 and count == 4:
            constants[int(words[i + 2])] = int(words[i + 3])
        if opcode == 224:
            out.append(constants[int(words[i + 3])])
        i += count
    return out


def _elementwise(op: str) -> kir.KernelRegion:
    x = kir.Load(0, (kir.Coord(0),), F32)
    body = kir.ElementwiseBody((100,), (kir.Compute(op, (x,), F32),), (1,), kir.tile_elementwise((100,)))
    return kir.KernelRegion("k", (kir.BindingDecl((100,), F32), kir.BindingDecl((100,), F32, output=True)), body)


def test_elementwise_region_is_valid_spirv() -> None:
    module = SpirvModule()
    generate(module, _elementwise("exponential"))
    spirv = module.compile()  # spirv-val --target-env vulkan1.3 runs inside where installed
    assert spirv[:4] == MAGIC
    assert grid(_elementwise("exponential")) == (2, 1, 1) and workgroup_size(_elementwise("exponential")) == (64, 1, 1)


def test_barriers_order_workgroup_memory() -> None:
    def body(k) -> None:
        arr = k.local_array("x", np.float32, 64)
        k.b.store(ir.Constant(ir.FloatType(), 1.0), k.local_pointer(arr, k.local_id(0)))
        k.barrier()
        k.store(0, k.global_id(0), k.b.load(k.local_pointer(arr, k.b.sub(k.i32(63), k.local_id(0)))))

    spirv = build_spirv([PortableKernel(body, 64, (np.float32,), (), 256, False, "swap")]).compile()
    assert _barrier_semantics(spirv) == [0x108]  # AcquireRelease | WorkgroupMemory
    assert fix_barrier_semantics(spirv) == spirv  # already right: unchanged


def test_special_math_is_expanded_for_spirv() -> None:
    region = _elementwise("erf")
    expanded = expand(region)
    assert "erf" not in repr(expanded.body.outputs[0].op)
    module = SpirvModule()
    generate(module, region)  # the SPIR-V target expands it itself
    assert module.compile()[:4] == MAGIC


def test_unsupported_math_is_a_compile_error() -> None:
    module = SpirvModule()
    generate(module, _elementwise("lgamma"))
    with pytest.raises(CompileError, match="lgamma"):
        module.compile()


def test_backend_abort_is_an_error_not_a_dead_interpreter() -> None:
    bad = '''target triple = "spirv1.6-unknown-vulkan1.3-compute"
@lds = internal addrspace(3) global [64 x float] poison
define void @main() #0 {
  %p = getelementptr float, ptr addrspace(3) @lds, i32 3
  store float 1.0, ptr addrspace(3) %p
  ret void
}
attributes #0 = { "hlsl.shader"="compute" "hlsl.numthreads"="1,1,1" }
'''
    with pytest.raises(SpirvCompileError, match="SPIR-V backend failed"):
        compile_spirv(bad)


@pytest.mark.skipif(spirv_val() is None, reason="spirv-tools is not installed")
def test_spirv_val_rejections_are_errors() -> None:
    with pytest.raises(SpirvCompileError, match="spirv-val"):
        from compiler.codegen.spirv.backend import check

        check(MAGIC + bytes(16))
