"""The CUDA target and driver. Without a GPU (CI): the PTX the NVPTX backend writes for the
suite's portable kernels and for compiled models, the driver's scan of the parameters a kernel
writes, and the .fgx's cuda blob. With an sm_90+ GPU (the H200): compiled models on `cuda`
against JAX at the CPU tests' tolerance (test_vulkan.py's model tests, run here on this module's
cuda `device`; math through libdevice; both matmul kernels), the CLI, device choice. (The HAL
conformance suite and the models of tests/compiler/test_lowering_models.py run on cuda too, as
on every present driver.) Compare against JAX on the CPU (tests/conftest.py sets
JAX_PLATFORMS=cpu)."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from compiler import executable
from compiler.codegen.nvptx import FORMAT
from compiler.codegen.nvptx.backend import PtxCompileError, compile_ptx, libdevice_path
from hal_gpu.cuda.executable import written
from tests.compiler.conftest import run_against_jax
from tests.compiler.test_vulkan import (  # noqa: F401  (the Vulkan driver's model tests, collected here on cuda's `device`)
    test_dynamic_batch, test_gather_and_sort, test_integer_ops, test_mlp, test_tiled_matmul_edges)
from tests.hal import kernels as K

jax = pytest.importorskip("jax")
jnp, lax = jax.numpy, jax.lax
needs_gpu = pytest.mark.skipif("cuda" not in fg.available_drivers(), reason="no CUDA device (sm_90+) here")
RNG = np.random.default_rng(13)


def _f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _ptx(exe: fg.Executable) -> str:
    return exe.variants[FORMAT].data().decode()


# --- without a GPU ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["saxpy", "write_ids", "matmul", "fail_at", "busy", "use_local"])
def test_portable_kernels_become_ptx(name) -> None:
    ptx = _ptx(getattr(K, name))
    assert ".target sm_90" in ptx and f".visible .entry {name}(" in ptx
    entry = getattr(K, name).entry(name)
    assert ptx.count(f"{name}_param_") >= entry.binding_count + 1  # bindings, then the dispatch state


def test_written_parameters_are_found_in_the_ptx() -> None:
    """Per parameter (bindings, then the dispatch state) whether the kernel stores through it:
    the state's flag is "may fail"."""
    def scan(exe: fg.Executable, ptx: str | None = None):
        return written(ptx if ptx is not None else _ptx(exe), exe.variants[FORMAT].entry_points)[0]

    assert scan(K.fail_at) == (True, True)
    assert scan(K.saxpy) == (False, True, True)  # y written; boundscheck on x can fail
    assert scan(K.iota) == (True, False)  # only guarded stores: never fails
    assert scan(K.reverse_double) == (False, True, True)
    assert scan(K.iota, "not ptx") == (True, True)


def test_model_compiles_to_ptx_with_libdevice_math(tmp_path) -> None:
    if libdevice_path() is None:
        pytest.skip("no libdevice here (pip install nvidia-cuda-nvcc)")
    text = jax.jit(lambda x, y: jnp.tanh(jnp.exp(x) @ y)).lower(_f32(4, 8), _f32(8, 3)).as_text()
    program = executable.build(text, targets=("cuda",))
    path = tmp_path / "m.fgx"
    path.write_bytes(executable.to_bytes(program))
    compiled = next(iter(executable.load(path).functions["main"].specializations.values()))
    assert [v.format for v in compiled.variants] == [FORMAT]
    ptx = compiled.variants[0].blob.decode()
    assert ".target sm_90" in ptx and "ex2.approx" in ptx and "__nv_" not in ptx.split(".entry")[0]
    assert set(compiled.executable.formats) >= {"cpu-native", FORMAT}


def test_backend_failures_are_compile_errors() -> None:
    with pytest.raises(PtxCompileError, match="malformed"):
        compile_ptx('target triple = "nvptx64-nvidia-cuda"\ndefine ptx_kernel void @k() {\n  ret i32 0\n}\n')
    with pytest.raises(PtxCompileError, match="no lowering for mystery"):
        compile_ptx('target triple = "nvptx64-nvidia-cuda"\ndeclare float @mystery(float)\n'
                    'define ptx_kernel void @k(ptr addrspace(1) %p) {\n  %v = call float @mystery(float 1.0)\n'
                    '  store float %v, ptr addrspace(1) %p\n  ret void\n}\n')


def test_cuda_is_listed_only_where_it_runs() -> None:
    from hal_gpu.cuda import driver

    assert ("cuda" in fg.available_drivers()) == driver.available()
    if not driver.available():
        with pytest.raises(fg.Unavailable, match="cuda"):
            fg.create_device("cuda")


# --- on a GPU -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def device():
    if "cuda" not in fg.available_drivers():
        pytest.skip("no CUDA device (sm_90+) here")
    dev = fg.create_device("cuda")
    yield dev
    dev.close()


@pytest.mark.parametrize("name", ["erf", "expm1", "log1p", "asinh", "log", "tan", "atan2", "sinh", "lgamma", "pow"])
def test_math(device, name) -> None:
    fns = {"erf": lax.erf, "expm1": jnp.expm1, "log1p": jnp.log1p, "asinh": jnp.arcsinh, "log": lambda x: jnp.log(jnp.abs(x)),
           "tan": lambda x: jnp.tan(0.35 * x), "atan2": lambda x: jnp.arctan2(x, x[::-1]), "sinh": jnp.sinh,
           "lgamma": lambda x: lax.lgamma(jnp.abs(x) + 0.5), "pow": lambda x: jnp.abs(x) ** 1.7}
    x = np.concatenate([np.linspace(-4, 4, 57), [0.0, 1e-6, -1e-7, 0.3, -0.49, 0.51, 30.0]]).astype(np.float32)
    run_against_jax(device, fns[name], x)


@pytest.mark.parametrize("m,k,n,constant", [(1, 784, 1024, False), (1, 784, 1000, True), (64, 1024, 10, True), (600, 50, 1100, False)])
def test_matmul_kernels(device, m, k, n, constant) -> None:
    """The skinny-matmul kernel (codegen/nvptx/matvec.py: the first three) and the tiled one
    (over 132 tiles, with partial edge tiles); weights as inputs, or as constants (pre-packed
    in panels at compile time)."""
    from compiler import kernel_ir as kir
    from compiler.codegen.nvptx import matvec

    assert matvec.applies(kir.MatmulBody(m, n, k)) == (m < 600)
    w = _f32(k, n, scale=0.1)
    if constant:
        run_against_jax(device, lambda a, bias: jax.nn.relu(a @ w + bias), _f32(m, k), _f32(n))
    else:
        run_against_jax(device, lambda a, w, bias: jax.nn.relu(a @ w + bias), _f32(m, k), w, _f32(n))
