"""Inline vector math of the CPU kernels (compiler/codegen/llvm_cpu/vector_math.py) against
numpy and JAX: exp, tanh and log over their f32 ranges, the edges (overflow, underflow, zero,
negatives, inf, NaN), and the kernels that use them (softmax, logistic, GELU) end to end."""

import ctypes

import numpy as np
import pytest
from llvmlite import ir

from compiler.codegen.llvm_cpu import jit, vector_math
from compiler.codegen.llvm_cpu.abi_builder import F32, I64, for_range, vector

LANES = 16


def _compiled(name: str):
    """`name` over an array through `void f(float* x, float* y, i64 n)`, LANES at a time."""
    module = ir.Module()
    fp = F32.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [fp, fp, I64]), name)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vp = vector(LANES).as_pointer()
    with for_range(b, 0, fn.args[2], step=LANES) as i:
        x = b.load(b.bitcast(b.gep(fn.args[0], [i]), vp), align=4)
        b.store(getattr(vector_math, name)(b, x), b.bitcast(b.gep(fn.args[1], [i]), vp), align=4)
    b.ret_void()
    compiled = jit.compile_ir(str(module))
    call = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(compiled.address(name))

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.resize(x.astype(np.float32), -(-x.size // LANES) * LANES))
        y = np.empty_like(x)
        call(x.ctypes.data, y.ctypes.data, x.size)
        run.keep = compiled
        return y

    return run


@pytest.fixture(scope="module", params=["host", "no-avx512"])
def vector_exp(request):
    """exp as the host's kernels compute it (vscalefps where AVX-512 is here), and the portable
    form (the exponent built in the bits) that AVX2 hosts get."""
    if request.param == "host":
        return _compiled("exp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jit, "has_feature", lambda name: False)
        return _compiled("exp")


def test_exp_matches_numpy_to_two_ulp_over_the_normal_range(vector_exp):
    x = np.linspace(-87.0, 88.7, 1 << 20, dtype=np.float32)
    got, want = vector_exp(x)[: x.size], np.exp(x.astype(np.float64))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) <= 2.0


def test_exp_near_one_ulp_at_random_points(vector_exp):
    x = np.random.default_rng(3).uniform(-87.0, 88.7, 1 << 20).astype(np.float32)
    assert _max_ulp(vector_exp(x)[: x.size], np.exp(x.astype(np.float64))) <= 1.5  # 0.5: correctly rounded


def test_exp_edges(vector_exp):
    x = np.array([0.0, -0.0, 1.0, -1.0, 88.8, 100.0, np.inf, -np.inf, -104.0, -200.0, np.nan, 1e-30,
                  -1e-30, 0.5, 88.72, -87.3, 1e30, 3e38, -1e30, -3e38, 5e6, -5e6, -np.nan], np.float32)
    got = vector_exp(x)[: x.size]
    with np.errstate(over="ignore"):
        want = np.exp(x)
    assert np.isnan(got[10]) and np.isnan(got[22])
    assert got[4] == got[5] == got[6] == got[16] == got[17] == got[20] == np.inf
    assert got[7] == got[8] == got[9] == got[18] == got[19] == got[21] == 0.0
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


def _max_ulp(got: np.ndarray, want: np.ndarray) -> float:
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    return float(np.max(np.abs(got.astype(np.float64) - want) / ulp))


def test_tanh_to_a_few_ulp_and_edges():
    tanh = _compiled("tanh")
    x = np.concatenate([np.linspace(-12, 12, 1 << 18, dtype=np.float32), np.geomspace(1e-30, 0.7, 4096, dtype=np.float32)])
    got = tanh(x)[: x.size]
    assert _max_ulp(got, np.tanh(x.astype(np.float64))) <= 3.0
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 100.0, -100.0, 0.625, -0.625] + [0.0] * 7, np.float32)
    got = tanh(edges)
    assert got[0] == 0 and got[2] == 1 and got[3] == -1 and np.isnan(got[4]) and got[5] == 1 and got[6] == -1
    np.testing.assert_allclose(got[7:9], np.tanh(edges[7:9]), rtol=3e-7)


def test_log_to_a_few_ulp_and_edges():
    log = _compiled("log")
    x = np.concatenate([np.geomspace(np.finfo(np.float32).tiny, 3e38, 1 << 18, dtype=np.float32),
                        np.linspace(0.5, 2.0, 4096, dtype=np.float32)])
    got, want = log(x)[: x.size], np.log(x.astype(np.float64))
    assert np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-3) / np.finfo(np.float32).eps) <= 3.0
    edges = np.array([0.0, -0.0, -1.0, np.inf, -np.inf, np.nan, 1.0, np.e] + [1.0] * 8, np.float32)
    got = log(edges)
    assert got[0] == got[1] == -np.inf and np.isnan(got[2]) and got[3] == np.inf
    assert np.isnan(got[4]) and np.isnan(got[5]) and got[6] == 0.0
    assert abs(got[7] - 1.0) <= 1.2e-7


def test_chains_with_tanh_and_log_against_jax():
    import jax

    import fibergrid as fg

    x = np.random.default_rng(1).standard_normal((7, 300)).astype(np.float32) * 4
    for f in (jax.numpy.tanh, lambda x: jax.nn.log_softmax(x, axis=-1), lambda x: jax.numpy.log(jax.numpy.abs(x) + 1e-3),
              lambda x: jax.nn.gelu(x, approximate=True)):
        got = fg.load(jax.jit(f).lower(x).as_text(), device="local-sync")(x)
        np.testing.assert_allclose(got, np.asarray(f(x)), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("width", [15, 16, 33, 64, 100, 1024])
def test_row_reductions_at_chain_edges_against_jax(width):
    """Sums, maxima and products along rows whose width is below, at and past the CHAINS x
    lanes step of the vectorised fold (reduction.py), with a tail."""
    import jax

    import fibergrid as fg

    x = np.random.default_rng(width).standard_normal((5, width)).astype(np.float32)
    f = lambda x: (x.sum(-1), x.max(-1), jax.numpy.prod(1 + x / 64, axis=-1), x.min(-1))  # noqa: E731
    got = fg.load(jax.jit(f).lower(x).as_text(), device="local-sync")(x)
    for g, w in zip(got, f(x)):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-5, atol=1e-5)


def test_erf_within_its_bound_and_edges():
    import math

    erf = _compiled("erf")
    x = np.concatenate([np.linspace(-6, 6, 1 << 18, dtype=np.float32), np.geomspace(1e-30, 0.5, 4096, dtype=np.float32)])
    got = erf(x)[: x.size].astype(np.float64)
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert np.max(np.abs(got - want)) <= 4.5e-7
    small = np.abs(x) < 0.5
    assert np.max(np.abs(got[small] - want[small]) / np.abs(want[small])) <= 2.5e-7
    assert np.max(np.abs(got)) <= 1.0
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 4.0, -4.0, 100.0] + [0.0] * 8, np.float32)
    got = erf(edges)
    assert got[0] == 0 and got[2] == 1 and got[3] == -1 and np.isnan(got[4]) and got[7] == 1


def test_exact_gelu_against_jax():
    """The exact (erf) GELU of BERT and ViT: the inline erf, not the C library's per lane."""
    import jax

    import fibergrid as fg

    x = np.random.default_rng(2).standard_normal((9, 333)).astype(np.float32) * 3
    for f in (lambda x: jax.nn.gelu(x, approximate=False), jax.scipy.special.erf):
        got = fg.load(jax.jit(f).lower(x).as_text(), device="local-sync")(x)
        np.testing.assert_allclose(got, np.asarray(f(x)), rtol=2e-6, atol=5e-7)


def test_erfc_relative_error_also_in_the_tails():
    import math

    erfc = _compiled("erfc")
    x = np.linspace(-6, 9.5, 1 << 18, dtype=np.float32)
    got = erfc(x)[: x.size].astype(np.float64)
    want = np.array([math.erfc(v) for v in x.astype(np.float64)])
    normal = want > 1e-30  # x < 8.1: away from f32's denormals (flushed)
    assert np.max(np.abs(got[normal] - want[normal]) / want[normal]) <= 5e-7
    edges = np.array([0.0, np.inf, -np.inf, np.nan, 30.0, -30.0] + [0.0] * 10, np.float32)
    got = erfc(edges)
    tiny = np.finfo(np.float32).tiny  # below: a denormal, zero in kernels (they run with FTZ)
    assert abs(got[0] - 1) <= 2e-7 and got[1] < tiny and got[2] == 2 and np.isnan(got[3]) and got[4] < tiny and got[5] == 2
