"""Lowerings the acceptance probe found missing: chlo math ops, popcnt / count_leading_zeros /
reduce_precision, bitcast_convert across widths, f16 and bf16, zero-size tensors and XLA's
denormal flushing; each compared with JAX (conftest.run_against_jax)."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from tests.compiler.conftest import assert_matches, run_against_jax

jax = pytest.importorskip("jax")
jnp, lax = jax.numpy, jax.lax
import jax.scipy.special as jss  # noqa: E402
import ml_dtypes  # noqa: E402  (a jax dependency)

RNG = np.random.default_rng(5)
BF16 = ml_dtypes.bfloat16


@pytest.fixture(scope="module")
def task():
    dev = fg.create_device("local-task", workers=2)
    yield dev
    dev.close()


def _uniform(lo: float, hi: float, *shape: int, dtype=np.float32) -> np.ndarray:
    return RNG.uniform(lo, hi, shape).astype(dtype)


# -- 1. chlo math ops ---------------------------------------------------------------------------

CHLO_UNARY = {
    "atan": (jnp.arctan, -20, 20), "asin": (jnp.arcsin, -1, 1), "acos": (jnp.arccos, -1, 1),
    "sinh": (jnp.sinh, -8, 8), "cosh": (jnp.cosh, -8, 8), "asinh": (jnp.arcsinh, -50, 50),
    "acosh": (jnp.arccosh, 1, 50), "atanh": (jnp.arctanh, -0.99, 0.99),
    "lgamma": (jss.gammaln, 0.01, 30), "digamma": (jss.digamma, 0.01, 30),
    "erf_inv": (jss.erfinv, -0.999, 0.999),
}


@pytest.mark.parametrize("name", sorted(CHLO_UNARY))
def test_chlo_unary(task, name):
    f, lo, hi = CHLO_UNARY[name]
    run_against_jax(task, f, _uniform(lo, hi, 5, 37))  # 37: vector body and scalar tail


def test_chlo_special_values(task):
    """Poles, negative arguments (reflection), the ends of erf_inv's domain."""
    x = np.array([-3.5, -2.25, -0.5, 0.5, 1.0, 2.0, 1e-3, 100.0], np.float32)
    run_against_jax(task, lambda a: (jss.gammaln(a), jss.digamma(a)), x)
    run_against_jax(task, jss.erfinv, np.array([-1.0, 1.0, 0.0, -0.9999, 0.9999, 0.5, -0.25, 0.1], np.float32))
    mod = run_against_jax(task, lambda a: jss.digamma(a), np.array([0.0, -1.0, -2.0, 3.0], np.float32))
    assert np.isnan(mod(np.array([0.0, -1.0, -2.0, 3.0], np.float32))[:3]).all()


def test_next_after(task):
    """chlo.next_after as JAX prints it (pretty `: T, T -> T`), and in generic syntax."""
    a = np.array([0.0, 1.0, 1.0, -1.0, 2.5, 3.0, np.nan, -0.0], np.float32)
    b = np.array([1.0, 2.0, 0.0, -2.0, 2.5, np.inf, 1.0, -1.0], np.float32)
    mod = run_against_jax(task, jnp.nextafter, a, b)
    np.testing.assert_array_equal(mod(a, b), np.nextafter(a, b))
    generic = """
    func.func public @main(%a: tensor<8xf32>, %b: tensor<8xf32>) -> tensor<8xf32> {
      %0 = "chlo.next_after"(%a, %b) : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
      return %0 : tensor<8xf32>
    }"""
    np.testing.assert_array_equal(fg.load(generic, task)(a, b), np.nextafter(a, b))


def test_top_k(task):
    run_against_jax(task, lambda a: lax.top_k(a, 3), _uniform(-1, 1, 16))


# -- 2. popcnt, count_leading_zeros, reduce_precision -------------------------------------------

@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint16, np.uint32])
def test_popcnt_clz(task, dtype):
    info = np.iinfo(dtype)
    x = RNG.integers(info.min, info.max, (3, 33), endpoint=True).astype(dtype)
    x[0, :4] = [0, 1, -1 if info.min < 0 else info.max, info.max]
    run_against_jax(task, lambda a: (lax.population_count(a), lax.clz(a)), x)


@pytest.mark.parametrize("bits", [(5, 10), (8, 7), (4, 3), (8, 23), (11, 0)])
def test_reduce_precision(task, bits):
    x = (RNG.standard_normal((4, 40)) * np.exp(RNG.uniform(-30, 30, (4, 40)))).astype(np.float32)
    x[0, :5] = [np.nan, np.inf, -np.inf, 0.0, 65520.0]
    run_against_jax(task, lambda a: lax.reduce_precision(a, *bits), x)


def test_reduce_precision_f16(task):
    run_against_jax(task, lambda a: lax.reduce_precision(a, 4, 3), _uniform(-300, 300, 64, dtype=np.float16))


# -- 3. bitcast_convert across widths -----------------------------------------------------------

@pytest.mark.parametrize("src, dst, shape", [
    (np.float32, np.uint8, (2,)), (np.int8, np.int32, (2, 4)), (np.float32, np.int16, (3, 17)),
    (np.uint16, np.float32, (5, 2)), (np.int8, np.float32, (3, 4)), (np.float16, np.uint8, (9,)),
    (BF16, np.int8, (7,)),
])
def test_bitcast_across_widths(task, src, dst, shape):
    x = RNG.integers(-100, 100, shape).astype(src) if np.dtype(src).kind in "iu" else \
        RNG.standard_normal(shape).astype(src)
    run_against_jax(task, lambda a: lax.bitcast_convert_type(a, dst) + 0, x)
    run_against_jax(task, lambda a: lax.bitcast_convert_type(a * 2, dst), x)


# -- 4. f16 and bf16 ----------------------------------------------------------------------------

def _exact(task, f, *args) -> None:
    """Bit-exact against JAX (XLA rounds every f16/bf16 op; so does fibergrid)."""
    got = fg.load(jax.jit(f).lower(*args).as_text(), task)(*args)
    got = got if isinstance(got, tuple) else (got,)
    want = [np.asarray(w) for w in jax.tree_util.tree_leaves(jax.jit(f)(*args))]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g.astype(np.float64), w.astype(np.float64))


@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["f16", "bf16"])
def test_narrow_float_elementwise_rounds_every_op(task, dtype):
    x, y = (RNG.standard_normal((8, 37)).astype(dtype) for _ in range(2))
    chain = lambda a, b, c=dtype: ((a * c(3.1) + c(0.7)) * c(1.3) - a) / (b * b + c(0.5)) + a * b * c(7.7)  # noqa: E731
    got = fg.load(jax.jit(chain).lower(x, y).as_text(), task)(x, y)
    # StableHLO rounds every f16/bf16 op; numpy's narrow-float arithmetic does too, so it is the
    # bit-exact reference. XLA may keep excess precision inside a fusion on some CPUs (seen on
    # AVX-512 Xeons for f16): against it, allow a few roundings of the chain's terms (|terms| <= ~20,
    # and the subtraction cancels), so agreement up to rounding, not bits.
    np.testing.assert_array_equal(got.astype(np.float64), chain(x, y).astype(np.float64))
    want = np.asarray(jax.jit(chain)(x, y)).astype(np.float64)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=8 * float(np.finfo(dtype).eps), atol=40 * float(np.finfo(dtype).eps))
    _exact(task, lambda a: (jnp.exp(a), jnp.tanh(a), jnp.log(jnp.abs(a)), jnp.sqrt(jnp.abs(a))), x)
    _exact(task, lambda a: jnp.maximum(a, 0.25).astype(jnp.float32) * 3, x)
    _exact(task, lambda a: (a.astype(jnp.float32) * 3.3).astype(dtype), x)
    _exact(task, lambda a: (a * jnp.arange(37, dtype=dtype), jnp.sort(a, axis=1)), x)
    _exact(task, lambda a: lax.bitcast_convert_type(a, jnp.int16), x)


@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["f16", "bf16"])
def test_narrow_float_folds(task, dtype):
    x, w = RNG.standard_normal((16, 48)).astype(dtype), RNG.standard_normal((48, 24)).astype(dtype)
    run_against_jax(task, lambda a, b: a @ b, x, w)
    run_against_jax(task, lambda a: (jnp.sum(a, axis=1), jnp.max(a, axis=0)), x)
    if dtype == np.float16:  # f32 sums in another order: off by a bf16 ulp now and then
        run_against_jax(task, jax.nn.softmax, x)
    run_against_jax(task, lambda a: a.astype(jnp.float16).astype(BF16), x)


def test_f16_constants_and_converts(task):
    x = RNG.integers(-1000, 1000, (4, 9)).astype(np.int32)
    table = np.linspace(-2, 2, 9).astype(np.float16)
    run_against_jax(task, lambda a: (a.astype(jnp.float16) * table, a.astype(BF16) * 2), x)
    run_against_jax(task, lambda a: (a * 1000).astype(jnp.int32), table)


# -- 5. zero-size tensors -----------------------------------------------------------------------

def test_zero_size(task):
    empty = np.ones((0, 3), np.float32)
    mod = run_against_jax(task, lambda a: a * 2, empty)
    out = mod(empty)
    assert out.shape == (0, 3) and out.dtype == np.float32
    run_against_jax(task, lambda a: (jnp.sum(a, axis=0), jnp.max(a, axis=1), a.T + 1), empty)
    run_against_jax(task, lambda a, b: (a @ b, b.T @ a.T), empty, np.ones((3, 0), np.float32))
    run_against_jax(task, lambda a: (a[:, :0] + 1, jnp.concatenate([a[:0], a[:2]]) * 3, jnp.sort(a[:, :0])),
                    RNG.standard_normal((4, 5)).astype(np.float32))


# -- 6. denormals -------------------------------------------------------------------------------

def test_denormals_flush_like_xla(task):
    x = np.array([1e-40, -1e-40, 5e-42, 1.4e-45, 1.2e-38, 2.0, 0.5, 0.0], np.float32)
    for f in (jnp.log, jnp.log1p, jnp.sqrt, jnp.sign, jnp.tanh, jss.gammaln, lambda a: a * 3,
              lambda a: a > 0, lambda a: jnp.exp(a - 100)):
        got = fg.load(jax.jit(f).lower(x).as_text(), task)(x)
        want = np.asarray(jax.jit(f)(x))
        assert_matches([got], [want])
        if f is not jss.gammaln:  # bit for bit (lgamma: libm's, an ulp from XLA's)
            np.testing.assert_array_equal(got, want)
