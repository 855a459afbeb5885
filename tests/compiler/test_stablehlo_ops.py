"""Every supported op, lowered by JAX, parsed, and run by the reference evaluator vs JAX."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compiler.conftest import op_names

jax = pytest.importorskip("jax")
jnp, lax = jax.numpy, jax.lax

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 8)).astype(np.float32)
POS = (np.abs(X) + 0.1).astype(np.float32)
I = RNG.integers(-50, 50, (4, 8)).astype(np.int32)
J = RNG.integers(1, 9, (4, 8)).astype(np.int32)


def test_unary_float(check):
    def f(x, p):
        return (jnp.exp(x), jnp.expm1(x), jnp.log(p), jnp.log1p(p), lax.logistic(x), jnp.sqrt(p),
                lax.rsqrt(p), jnp.cbrt(x), jnp.tanh(x), jnp.sin(x), jnp.cos(x), jnp.tan(x),
                jnp.floor(x * 3), jnp.ceil(x * 3), jnp.round(x * 3), lax.round(x * 3), jnp.sign(x),
                jnp.abs(x), -x, jnp.isfinite(x / 0), lax.erf(x), jnp.square(x), lax.is_finite(x))
    module = check(f, X, POS)
    assert {"exponential", "log_plus_one", "rsqrt", "cbrt", "round_nearest_afz", "tan",
            "round_nearest_even", "is_finite", "erf"} <= op_names(module)


def test_binary_float_compare_select_clamp(check):
    def f(x, y):
        cmp = (x < y, x <= y, x > y, x >= y, x == y, x != y)
        return (x + y, x - y, x * y, x / y, lax.rem(x, y), jnp.power(jnp.abs(x), y),
                jnp.maximum(x, y), jnp.minimum(x, y), jnp.arctan2(x, y), *cmp,
                jnp.where(x > 0, x, y), lax.clamp(-0.5, x, 0.5), jnp.clip(x, y, 1.0))
    check(f, X, POS[::-1])


def test_integer_ops(check):
    def f(a, b):
        return (a + b, a - b, a * b, a // b, lax.div(a, b), lax.rem(a, b), jnp.maximum(a, b),
                a & b, a | b, a ^ b, ~a, a << 3, lax.shift_right_logical(a, 2),
                lax.shift_right_arithmetic(a, 2), jnp.abs(a), -a, jnp.sign(a), a < b,
                a.astype(jnp.float32) / 3, (X * 10).astype(jnp.int32), lax.clamp(-5, a, 5))
    check(f, I, J)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int8", "uint8", "uint32", "bool"])
def test_dtypes(check, dtype):
    x = (X * 8).astype(jnp.dtype(dtype))
    y = (POS * 4).astype(jnp.dtype(dtype))

    def f(a, b):
        if a.dtype == jnp.bool_:
            return a & b, a | ~b, a != b, a.astype(jnp.float32)
        return a + b, jnp.maximum(a, b), a * b, a >= b, a.astype(jnp.float32), a.sum(0)

    check(f, x, y)


def test_convert_bitcast_and_constants(check):
    table = RNG.standard_normal((6, 5)).astype(np.float32)

    def f(x):
        return (lax.bitcast_convert_type(x, jnp.int32), lax.bitcast_convert_type(x, jnp.uint8),
                x.astype(jnp.bfloat16), x.astype(jnp.int8), x.astype(jnp.bool_),
                jnp.asarray(table) * 2, jnp.array([1.5, -2.0, np.inf, -np.inf, np.nan], jnp.float32),
                jnp.array([[True, False], [False, True]]), jnp.full((3,), -7, jnp.int32),
                jnp.asarray(np.arange(300, dtype=np.int32)))
    check(f, X)


def test_shape_ops(check):
    def f(x):
        return (jnp.arange(6).reshape(2, 3), jnp.broadcast_to(x[:, None, :], (4, 3, 8)), x.T,
                x.reshape(2, 16), x[1:4:2, ::3], jnp.flip(x, 1), jnp.concatenate([x, x * 2], 0),
                jnp.pad(x, ((1, 2), (0, 3))), lax.pad(x, 0.5, ((1, -1, 1), (-2, 0, 0))),
                lax.dynamic_slice(x, (1, 5), (2, 4)),
                lax.dynamic_update_slice(x, jnp.ones((2, 2)), (3, 7)), jnp.expand_dims(x, 0))
    check(f, X)


def test_dynamic_slice_runtime_indices(check):
    check(lambda x, i: (lax.dynamic_slice(x, (i, i), (2, 3)),
                        lax.dynamic_update_slice(x, jnp.zeros((2, 2)), (i, 0))),
          X, np.int32(3))


def test_dot_general(check):
    a = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    b = RNG.standard_normal((2, 4, 5)).astype(np.float32)
    check(lambda a, b, x, i: (a @ b, jnp.einsum("bij,bkj->bik", a, a), x @ x.T, jnp.dot(x[0], x[1]),
                              i @ i.T, jnp.einsum("bij,bjk->kib", a, b)), a, b, X, I)


CONVS = {
    "nhwc_same_stride": dict(lhs=(2, 7, 7, 3), rhs=(3, 3, 3, 4), window_strides=(2, 2), padding="SAME",
                             dimension_numbers=("NHWC", "HWIO", "NHWC")),
    "nchw_valid": dict(lhs=(2, 3, 6, 5), rhs=(4, 3, 2, 3), window_strides=(1, 1), padding="VALID"),
    "depthwise": dict(lhs=(1, 6, 6, 4), rhs=(3, 3, 1, 8), window_strides=(1, 1), padding=((1, 0), (2, 1)),
                      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=4),
    "dilated": dict(lhs=(1, 3, 9, 9), rhs=(2, 3, 3, 3), window_strides=(1, 2), padding=((2, 1), (1, 3)),
                    lhs_dilation=(2, 1), rhs_dilation=(1, 2)),
    "batch_group": dict(lhs=(4, 2, 5, 5), rhs=(6, 2, 2, 2), window_strides=(1, 1), padding="VALID",
                        batch_group_count=2),
    "conv1d": dict(lhs=(2, 10, 3), rhs=(3, 3, 5), window_strides=(1,), padding="SAME",
                   dimension_numbers=("NWC", "WIO", "NWC")),
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_convolution(check, name):
    kw = dict(CONVS[name])
    lhs = RNG.standard_normal(kw.pop("lhs")).astype(np.float32)
    rhs = RNG.standard_normal(kw.pop("rhs")).astype(np.float32)
    module = check(lambda a, b: lax.conv_general_dilated(a, b, **kw), lhs, rhs)
    assert "convolution" in op_names(module)


def test_reduce(check):
    b = X > 0
    check(lambda x, b, i: (x.sum(0), x.max(1), x.min(), x.prod(1), x.mean(), jnp.argmax(x, 1),
                           jnp.argmin(x, 0), b.any(1), b.all(0), i.sum(1), jnp.var(x, 1),
                           jax.nn.logsumexp(x, 1)), X, b, I)


def test_reduce_window(check):
    img = RNG.standard_normal((2, 7, 6, 3)).astype(np.float32)

    def f(img, x):
        return (lax.reduce_window(img, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME"),
                lax.reduce_window(img, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 2, 1), "VALID"),
                lax.reduce_window(img, 0.0, lax.add, (1, 2, 2, 1), (1, 1, 1, 1),
                                  ((0, 0), (1, 1), (2, 0), (0, 0)), window_dilation=(1, 2, 1, 1)),
                jnp.cumsum(x, 1), jnp.cumprod(x, 0), lax.cummax(x, 1), jnp.cumsum(I, 0))
    module = check(f, img, X)
    assert "reduce_window" in op_names(module)


def test_gather(check):
    idx = np.array([3, 0, -1, 2], np.int32)
    idx2 = RNG.integers(0, 8, (4, 3)).astype(np.int32)
    module = check(lambda x, i, j: (jnp.take(x, i, axis=0), x[i], x[:, i], x[i, i],
                                    jnp.take_along_axis(x, j, 1), x[1:3][:, j[0]]), X, idx, idx2)
    assert "gather" in op_names(module)


def test_sort(check):
    module = check(lambda x, i: (jnp.sort(x, 1), jnp.argsort(x, 0), jnp.sort(i, 0)[::-1],
                                 lax.sort((x[0], i[0]), num_keys=1), jnp.argsort(-x, 1, stable=True)),
                   X, I % 3)
    assert "sort" in op_names(module)


def test_while_loop(check):
    module = check(lambda x: (lax.fori_loop(0, 3, lambda k, c: c * 2 + k, x),
                              lax.while_loop(lambda c: c[0] < 10, lambda c: (c[0] + 3, c[1] + 1.0),
                                             (0, x))), X)
    assert "while" in op_names(module)


def test_nested_calls(check):
    @jax.jit
    def inner(x):
        return jnp.tanh(x) * 2

    @jax.jit
    def middle(x):
        return inner(x) + inner(x * 2)

    module = check(lambda x: middle(x) - inner(x), X)
    assert "call" in op_names(module) and len(module.functions) >= 2


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_top_k_ties_and_nan_as_jax(dtype, check, jax_modules) -> None:
    import fibergrid as fg

    from .conftest import run_against_jax

    _, _, lax = jax_modules
    x = np.array([[3, 1, 4, 1, 5, 9, 2, 6], [2, 2, 7, 7, 1, 1, 0, 0]], dtype)
    if dtype == np.float32:
        x[1, 4] = np.nan
    f = lambda x: lax.top_k(x, 3)  # noqa: E731
    assert "top_k" in op_names(check(f, x))
    run_against_jax(fg.default_device("local-sync"), f, x)
