"""Compiled models on the `vulkan` driver (lavapipe in CI, any GPU elsewhere), compared with JAX
at the CPU tests' tolerance: an MLP, a dynamic batch, integer ops, gather and sort (the CNN and
transformer-block models of test_lowering_models.py run on vulkan too). Plus the SPIR-V target's own
checks: every module passes spirv-val, the .fgx keeps one blob per format, and a failure in
LLVM's SPIR-V backend is a CompileError, not a dead interpreter. Skipped where no Vulkan device
is available. Compare against JAX on the CPU (tests/conftest.py sets JAX_PLATFORMS=cpu)."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from compiler import executable, pipeline
from compiler.codegen.spirv import FORMAT
from compiler.codegen.spirv.backend import SpirvCompileError, compile_spirv
from tests.compiler.conftest import assert_matches, run_against_jax

jax = pytest.importorskip("jax")
jnp, lax = jax.numpy, jax.lax
pytestmark = pytest.mark.skipif("vulkan" not in fg.available_drivers(), reason="no Vulkan device here")
RNG = np.random.default_rng(8)


def _f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


@pytest.fixture(scope="module")
def device():
    dev = fg.create_device("vulkan")
    yield dev
    dev.close()


def test_mlp(device) -> None:
    def mlp(x, w1, b1, w2, b2):
        return jax.nn.softmax(jax.nn.relu(x @ w1 + b1) @ w2 + b2, axis=-1)

    run_against_jax(device, mlp, _f32(4, 16), _f32(16, 32, scale=0.3), _f32(32), _f32(32, 10, scale=0.3), _f32(10))


def test_integer_ops(device) -> None:
    def ints(a, b):
        return (a * 3 + b) // 2, a % 7, jnp.bitwise_xor(a, b) >> 1, jnp.maximum(a, b), (a > b).astype(jnp.int32)

    run_against_jax(device, ints, RNG.integers(-50, 50, (5, 7)).astype(np.int32), RNG.integers(1, 50, (5, 7)).astype(np.int32))


def test_gather_and_sort(device) -> None:
    def head(table, tokens, w):
        logits = jnp.take(table, tokens, axis=0).sum(1) @ w
        probs = jax.nn.softmax(logits)
        top3 = jnp.argsort(-probs, axis=-1)[:, :3]
        return jnp.argmax(logits, -1), top3, jnp.cumsum(jnp.sort(probs, axis=-1), axis=-1)

    run_against_jax(device, head, _f32(20, 8), RNG.integers(0, 20, (3, 4)).astype(np.int32), _f32(8, 10))


def test_dynamic_batch(device) -> None:
    from jax import export

    w = _f32(16, 8, scale=0.3)
    b = export.symbolic_shape("batch")[0]
    exp = export.export(jax.jit(lambda x: jnp.tanh(x @ w).sum(-1)))(jax.ShapeDtypeStruct((b, 16), jnp.float32))
    mod = fg.load(exp.mlir_module(), device)
    for batch in (1, 5):
        x = _f32(batch, 16)
        assert_matches([mod(x)], [np.asarray(exp.call(x))])


def test_fgx_holds_one_blob_per_format(tmp_path, device) -> None:
    text = jax.jit(lambda x, y: jnp.exp(x) @ y).lower(_f32(4, 8), _f32(8, 3)).as_text()
    program = executable.build(text, targets=("vulkan",))
    path = tmp_path / "m.fgx"
    path.write_bytes(executable.to_bytes(program))
    loaded = executable.load(path)
    compiled = next(iter(loaded.functions["main"].specializations.values()))
    assert [v.format for v in compiled.variants] == [FORMAT]
    assert compiled.variants[0].blob[:4] == bytes.fromhex("03022307")
    assert set(compiled.executable.formats) == {"cpu-native", FORMAT}
    x, y = _f32(4, 8), _f32(8, 3)
    assert_matches([fg.load(str(path), device)(x, y)], [np.exp(x) @ y])


def test_program_for_uses_the_target_grid() -> None:
    text = jax.jit(lambda x: x * 2.0).lower(_f32(1000, 300)).as_text()
    compiled = pipeline.compile_module(text) if False else next(iter(
        executable.build(text, targets=("vulkan",)).functions["main"].specializations.values()))
    cpu, gpu = compiled.program_for(("cpu-native",)), compiled.program_for((FORMAT,))
    assert cpu == compiled.program
    assert gpu[0].workgroup_count != cpu[0].workgroup_count


def test_backend_failure_is_a_compile_error() -> None:
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
    assert fg.create_device("local-sync") is not None  # the interpreter is alive and well


def test_unsupported_math_is_a_compile_error_naming_it(device) -> None:
    text = jax.jit(lambda x: lax.lgamma(x)).lower(_f32(8)).as_text()
    mod = fg.load(text, device)
    with pytest.raises(fg.InvalidArgument, match="no lowering for C library math"):
        mod(_f32(8))


def test_wrong_format_is_refused(device) -> None:
    text = jax.jit(lambda x: x + 1.0).lower(_f32(8)).as_text()
    compiled = pipeline.compile_module(text)
    with pytest.raises(fg.Unavailable, match="cannot load executable format 'vulkan-spirv1.6'"):
        fg.create_device("local-sync").create_executable(FORMAT, b"", ())
    exe = fg.Executable(compiled.executable.entry_points, "cuda-sm90")
    with pytest.raises(fg.Unavailable, match="cuda-sm90"):
        device.check_executable(exe)


@pytest.mark.parametrize("name", ["erf", "erfc", "expm1", "log1p", "cbrt", "asinh", "acosh", "atanh", "log", "tan", "atan2", "sinh"])
def test_special_math(device, name) -> None:
    fns = {"erf": lax.erf, "erfc": lax.erfc, "expm1": jnp.expm1, "log1p": jnp.log1p, "cbrt": jnp.cbrt,
           "asinh": jnp.arcsinh, "acosh": lambda x: jnp.arccosh(1.0 + jnp.abs(x)), "atanh": lambda x: jnp.arctanh(jnp.tanh(x)),
           "log": lambda x: jnp.log(jnp.abs(x)), "tan": lambda x: jnp.tan(0.35 * x),  # away from the poles
           "atan2": lambda x: jnp.arctan2(x, x[::-1]), "sinh": jnp.sinh}
    x = np.concatenate([np.linspace(-4, 4, 57), [0.0, 1e-6, -1e-7, 0.3, -0.49, 0.51, 30.0]]).astype(np.float32)
    run_against_jax(device, fns[name], x)


@pytest.mark.parametrize("m,k,n,batch", [(64, 64, 64, 1), (100, 37, 130, 1), (65, 200, 64, 3)])
def test_tiled_matmul_edges(device, m, k, n, batch) -> None:
    def f(a, b, bias):
        return jax.nn.relu(jnp.matmul(a, b) + bias)

    shape_a = (batch, m, k) if batch > 1 else (m, k)
    shape_b = (batch, k, n) if batch > 1 else (k, n)
    run_against_jax(device, f, _f32(*shape_a), _f32(*shape_b, scale=0.2), _f32(n))
