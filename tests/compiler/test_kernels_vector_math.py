"""Inline vector math of the CPU kernels (compiler/codegen/llvm_cpu/vector_math.py) against
numpy and JAX: exp over its whole f32 range, the edges (overflow, underflow, inf, NaN), and
the kernels that use it (softmax, logistic) end to end."""

import ctypes

import numpy as np
import pytest
from llvmlite import ir

from compiler.codegen.llvm_cpu import jit, vector_math
from compiler.codegen.llvm_cpu.abi_builder import F32, I64, for_range, vector

LANES = 16


@pytest.fixture(scope="module")
def vector_exp():
    """void exp_all(float* x, float* y, i64 n): y = exp(x), LANES at a time (n a multiple)."""
    module = ir.Module()
    fp = F32.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [fp, fp, I64]), "exp_all")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vp = vector(LANES).as_pointer()
    with for_range(b, 0, fn.args[2], step=LANES) as i:
        x = b.load(b.bitcast(b.gep(fn.args[0], [i]), vp), align=4)
        b.store(vector_math.exp(b, x), b.bitcast(b.gep(fn.args[1], [i]), vp), align=4)
    b.ret_void()
    compiled = jit.compile_ir(str(module))
    call = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(compiled.address("exp_all"))

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.resize(x.astype(np.float32), -(-x.size // LANES) * LANES))
        y = np.empty_like(x)
        call(x.ctypes.data, y.ctypes.data, x.size)
        run.keep = compiled
        return y

    return run


def test_exp_matches_numpy_to_two_ulp_over_the_normal_range(vector_exp):
    x = np.linspace(-87.0, 88.7, 1 << 20, dtype=np.float32)
    got, want = vector_exp(x)[: x.size], np.exp(x.astype(np.float64))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) <= 2.0


def test_exp_edges(vector_exp):
    x = np.array([0.0, -0.0, 1.0, -1.0, 88.8, 100.0, np.inf, -np.inf, -104.0, -200.0, np.nan, 1e-30,
                  -1e-30, 0.5, 88.72, -87.3], np.float32)
    got = vector_exp(x)
    with np.errstate(over="ignore"):
        want = np.exp(x)
    assert np.isnan(got[10])
    assert got[4] == got[5] == got[6] == np.inf
    assert got[7] == got[8] == got[9] == 0.0
    finite = np.isfinite(want) & (want > np.finfo(np.float32).tiny)
    np.testing.assert_allclose(got[finite], want[finite], rtol=3e-7)


@pytest.mark.parametrize("shape", [(1, 1024), (3, 17), (33, 1000), (2, 5, 16)])
def test_softmax_and_logistic_against_jax(shape):
    import jax

    import fibergrid as fg

    x = (np.random.default_rng(0).standard_normal(shape) * 20).astype(np.float32)
    for f in (lambda x: jax.nn.softmax(x, axis=-1), jax.nn.sigmoid, lambda x: jax.numpy.exp(x) * 0.5):
        got = fg.load(jax.jit(f).lower(x).as_text(), device="local-sync")(x)
        np.testing.assert_allclose(got, np.asarray(f(x)), rtol=2e-6, atol=1e-30)
