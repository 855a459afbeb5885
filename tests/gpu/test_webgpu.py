"""The WebGPU driver (wgpu-py; lavapipe in CI, any GPU elsewhere). Compiled models on `webgpu`
against JAX at the CPU tests' tolerance (test_vulkan.py's model tests, collected here on this
module's webgpu `device`; the CNN and transformer-block models of test_lowering_models.py and
the HAL conformance suite run on webgpu too, as on every present driver), the CLI, device
choice, and what the driver does to the Vulkan target's SPIR-V for naga. Compare against JAX on
the CPU (tests/conftest.py sets JAX_PLATFORMS=cpu)."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from compiler.codegen.spirv import FORMAT, TRIPLE
from compiler.codegen.spirv.backend import check, compile_spirv
from compiler.codegen.spirv.module import hoist_nonfinite
from hal.spirv_abi import stored_bindings
from tests.compiler.conftest import run_against_jax
from tests.compiler.test_vulkan import (  # noqa: F401  (the Vulkan driver's model tests, collected here on webgpu's `device`)
    test_dynamic_batch, test_gather_and_sort, test_integer_ops, test_mlp, test_special_math, test_tiled_matmul_edges)
from tests.hal import kernels as K

jax = pytest.importorskip("jax")
jnp = jax.numpy
needs_webgpu = pytest.mark.skipif("webgpu" not in fg.available_drivers(), reason="no WebGPU adapter here")


def _spirv(exe: fg.Executable) -> bytes:
    return exe.variants[FORMAT].data()


def _instructions(spirv: bytes) -> list[list[int]]:
    words = np.frombuffer(spirv, "<u4")
    i, seen = 5, []
    while i < len(words):
        seen.append([int(w) for w in words[i: i + (int(words[i]) >> 16)]])
        i += int(words[i]) >> 16
    return seen


@pytest.fixture(scope="module")
def device():
    if "webgpu" not in fg.available_drivers():
        pytest.skip("no WebGPU adapter here")
    dev = fg.create_device("webgpu")
    yield dev
    dev.close()


# --- without an adapter -----------------------------------------------------------------------------


def test_nonfinite_constants_become_bitcasts() -> None:
    text = ('define void @"f"()\n{\nentry:\n  %".2" = fadd float 0xfff0000000000000, 0x7ff8000000000000\n'
            '  %".3" = fptrunc double 0x7ff0000000000000 to half\n  %".4" = fadd float %".2", 0x3ff0000000000000\n  ret void\n}\n')
    out = hoist_nonfinite(text)
    assert "0xfff0000000000000" not in out and "0x7ff" not in out and "0x3ff0000000000000" in out  # finite ones stay
    assert "bitcast i32 -8388608 to float" in out and "bitcast i32 2143289344 to float" in out
    assert "bitcast i64 9218868437227405312 to double" in out
    assert out.index("bitcast") > out.index("entry:")  # at the top of the entry block


def test_stored_bindings_follow_the_stores() -> None:
    n = K.fail_at.entry("fail_at").binding_count
    (fail_at,) = stored_bindings(_spirv(K.fail_at), ["fail_at"])
    assert n in fail_at and 0 in fail_at  # its status (the dispatch state) and its output
    (reverse,) = stored_bindings(_spirv(K.reverse_double), ["reverse_double"])
    assert 1 in reverse and 0 not in reverse  # reads binding 0, writes binding 1
    assert stored_bindings(b"not spir-v", ["x"]) == (None,)


def test_for_naga_keeps_a_valid_module() -> None:
    from hal_gpu.webgpu.executable import for_naga

    original = _spirv(K.saxpy)
    words = np.frombuffer(for_naga(original), "<u4")
    assert len(words) < len(np.frombuffer(original, "<u4"))
    seen = _instructions(for_naga(original))
    assert not [ins for ins in seen if ins[0] & 0xFFFF == 17 and ins[1] == 39]  # no OpCapability Int8
    assert not [ins for ins in seen if ins[0] & 0xFFFF == 21 and ins[2] == 8]  # no 8-bit integer type
    assert not [ins for ins in seen if ins[0] & 0xFFFF == 61 and len(ins) > 4]  # no memory operands on loads
    check(for_naga(original))  # spirv-val still takes it (where installed)


def test_byte_kernels_reach_naga_without_8_bit_types() -> None:
    """bool/int8 kernels keep bytes in 32-bit words (compiler/codegen/spirv/bytes.py), so naga
    gets no 8-bit type; a module that really computes on 8-bit values (not ours) is refused by
    name."""
    from hal_gpu.webgpu.executable import for_naga

    assert 8 not in [ins[2] for ins in _instructions(for_naga(_spirv(K.byte_ops))) if ins[0] & 0xFFFF == 21]  # no OpTypeInt 8
    buffer = 'target("spirv.VulkanBuffer", [0 x i8], 12, 1)'
    text = (f'target triple = "{TRIPLE}"\n@name = private unnamed_addr constant [2 x i8] c"b\\00"\n'
            f'declare {buffer} @llvm.spv.resource.handlefrombinding.tspirv.VulkanBuffer_a0i8_12_1t(i32, i32, i32, i32, ptr)\n'
            f'declare ptr addrspace(11) @llvm.spv.resource.getpointer.p11.tspirv.VulkanBuffer_a0i8_12_1t({buffer}, i32)\n'
            f'define void @"k"() #0 {{\nentry:\n  %h = call {buffer} @llvm.spv.resource.handlefrombinding.tspirv.VulkanBuffer_a0i8_12_1t('
            f'i32 0, i32 0, i32 1, i32 0, ptr @name)\n  %p = call ptr addrspace(11) @llvm.spv.resource.getpointer.p11.tspirv.VulkanBuffer_a0i8_12_1t('
            f'{buffer} %h, i32 1)\n  store i8 7, ptr addrspace(11) %p\n  ret void\n}}\n'
            'attributes #0 = { "hlsl.shader"="compute" "hlsl.numthreads"="1,1,1" }\n')
    with pytest.raises(fg.Unimplemented, match="8-bit"):
        for_naga(compile_spirv(text))


def test_webgpu_is_listed_only_where_it_runs() -> None:
    from hal_gpu.webgpu import driver

    assert ("webgpu" in fg.available_drivers()) == driver.available()
    if not driver.available():
        with pytest.raises(fg.Unavailable, match="webgpu"):
            fg.create_device("webgpu")


# --- on an adapter --------------------------------------------------------------------------------


def test_max_pool_with_infinities(device) -> None:
    """-inf as a reduction's start (a non-finite constant naga refuses as a literal)."""
    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"), jnp.isinf(1.0 / x).astype(jnp.float32)

    x = np.random.default_rng(1).standard_normal((1, 6, 6, 2)).astype(np.float32)
    x[0, 0, 0, 0] = 0.0
    run_against_jax(device, pool, x)


def test_host_writes_after_a_submission_on_the_gpu(device) -> None:
    """A MAPPING buffer the host writes while earlier work that reads it is on the GPU: the
    next submission sees the host's write, the earlier one its own input."""
    n = 256
    src = device.allocator.import_array(np.arange(n, dtype=np.int32))
    first, second = device.allocator.allocate_view((n,), np.int32), device.allocator.allocate_view((n,), np.int32)
    a, b = device.create_semaphore(0), device.create_semaphore(0)
    for out, sem in ((first, a), (second, b)):
        cb = device.create_command_buffer()
        cb.dispatch(K.reverse_double, "reverse_double", -(-n // 16), [], [src, out])
        cb.end()
        if out is first:
            device.queue_execute([cb], signal=[(sem, 1)])
            a.wait(1, 10.0)
            src.buffer.view(np.int32)[:] = 7
        else:
            device.queue_execute([cb], wait=[(a, 1)], signal=[(sem, 1)])
    b.wait(1, 10.0)
    np.testing.assert_array_equal(first.to_numpy(), 2 * np.arange(n, dtype=np.int32)[::-1])
    np.testing.assert_array_equal(second.to_numpy(), np.full(n, 14, np.int32))


def test_a_range_past_one_binding_is_refused_when_recorded(device) -> None:
    """Kernels bind whole buffers; a range past the largest binding cannot be addressed, and
    recording it says so instead of reading past it."""
    limit = device.max_binding_size
    if limit + 8 > device.allocator.max_allocation_size:
        pytest.skip(f"buffers cannot outgrow one binding ({limit} bytes) on {device.name}")
    big = device.allocator.allocate_buffer(limit + 8, fg.BufferUsage.TRANSFER | fg.BufferUsage.DISPATCH_STORAGE)
    cb = device.create_command_buffer()
    cb.dispatch(K.iota, "iota", 1, [], [(big, limit, 8)])
    with pytest.raises(fg.ResourceExhausted, match="binding 0: its range ends at byte"):
        cb.end()
    cb = device.create_command_buffer()
    cb.fill(big, limit + 1, 3, np.uint8(1))
    with pytest.raises(fg.ResourceExhausted, match="fg_fill"):
        cb.end()


def test_8_bit_forms_without_a_32_bit_one_are_refused_by_name() -> None:
    from compiler.codegen.spirv.bytes import widen_bytes
    from compiler.errors import CompileError

    body = 'define void @"f"()\n{\nentry:\n  %".2" = {}\n  ret void\n}\n'
    assert widen_bytes(body.replace("{}", 'add i8 %".1", -1')).count("and i32") == 1  # the sum masked to its byte, -1 as 255
    assert "add i32 %\".1\", 255" in widen_bytes(body.replace("{}", 'add i8 %".1", -1'))
    with pytest.raises(CompileError, match="vector of 8-bit"):
        widen_bytes(body.replace("{}", 'add <4 x i8> %".1", %".1"'))
    with pytest.raises(CompileError, match="no 32-bit form"):
        widen_bytes(body.replace("{}", 'call i8 @"llvm.bitreverse.i8"(i8 %".1")'))
