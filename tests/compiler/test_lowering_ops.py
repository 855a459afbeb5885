"""Every op family of the acceptance list lowered to native kernels (fg.load on local-task, a
few on local-sync too), compared with JAX (tolerance of conftest.assert_matches)."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from tests.compiler.conftest import run_against_jax

jax = pytest.importorskip("jax")
jnp, lax = jax.numpy, jax.lax
import jax.scipy.special  # noqa: E402  (erfc)
RNG = np.random.default_rng(11)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _i32(low: int, high: int, *shape: int) -> np.ndarray:
    return RNG.integers(low, high, shape).astype(np.int32)


@pytest.fixture(scope="module")
def task():
    dev = fg.create_device("local-task", workers=2)
    yield dev
    dev.close()


@pytest.fixture(scope="module")
def sync():
    dev = fg.create_device("local-sync")
    yield dev
    dev.close()



def _dispatches(mod) -> int:
    return len(mod.compiled.program)


X = _f32(5, 12)
IDX = np.array([1, 4, 0, -2, 3], np.int32)

CASES = {
    # reductions
    "sum_all": (lambda x: jnp.sum(x), _f32(37, 19)),
    "sum_rows_horizontal": (lambda x: jnp.sum(x * x, axis=1), _f32(7, 45)),
    "sum_cols": (lambda x: jnp.sum(x, axis=0), _f32(37, 19)),
    "max_middle": (lambda x: jnp.max(x, axis=1), _f32(3, 9, 10)),
    "mean_prod": (lambda x: (jnp.mean(x, (0, 2)), jnp.prod(x, -1)), _f32(3, 9, 10)),
    "argmax_argmin": (lambda x: (jnp.argmax(x, 1), jnp.argmin(x, 0)), _f32(6, 11)),
    "int_and_bool": (lambda a: (jnp.max(a, 1), jnp.sum(a, 0), jnp.any(a > 3, 1), jnp.all(a > -9)),
                     _i32(-9, 9, 4, 13)),
    "softmax": (lambda x: jax.nn.softmax(x), _f32(6, 33)),
    "logsumexp": (lambda x: jax.nn.logsumexp(x, axis=0), _f32(6, 33)),
    # data movement
    "transpose_3d": (lambda x: jnp.transpose(x, (2, 0, 1)) + 1.0, _f32(3, 4, 5)),
    "slice_strided_reverse": (lambda x: x[::2, 1:10:3] * x[::-2, ::-4][:, :3], X),
    "pad_edge_interior_negative": (lambda x: lax.pad(x, 0.5, ((1, -1, 1), (2, 0, 2))), X),
    "jnp_pad": (lambda x: jnp.pad(x, ((1, 2), (3, 0)), mode="edge"), X),
    "concatenate": (lambda x: (jnp.concatenate([x, 2 * x, x[:, :3]], 1), jnp.concatenate([x, -x], 0)), X),
    "iota_and_convert": (lambda x: x + jnp.arange(12.0) - jnp.arange(5)[:, None].astype(jnp.float32), X),
    "split_leading_slice": (lambda h: [a.reshape(2, 3, 2) for a in jnp.split(h, 3, axis=-1)], _f32(2, 3, 6)),
    "broadcast_reshape_unit": (lambda x, y: x.reshape(5, 1, 12) * y[None, :, None], X, _f32(3)),
    "dynamic_slice": (lambda x, i: lax.dynamic_slice(x, (i, i + 7), (2, 8)), X, np.int32(2)),
    "dynamic_update_slice": (lambda x, i: lax.dynamic_update_slice(x, jnp.ones((2, 3)), (i, i)), X, np.int32(4)),
    # gather
    "take_rows": (lambda x, i: jnp.take(x, i, axis=0), X, IDX),
    "take_columns": (lambda x, i: x[:, i], X, IDX),
    "take_along_axis": (lambda x, i: jnp.take_along_axis(x, i, axis=1), X, _i32(0, 12, 5, 4)),
    "embedding": (lambda w, i: w[i], _f32(10, 6), _i32(0, 10, 2, 3)),
    # dot_general
    "einsum_batched_transposed": (lambda q, k: jnp.einsum("bqd,bkd->bqk", q, k), _f32(2, 5, 8), _f32(2, 7, 8)),
    "einsum_outer_batch": (lambda a, b: jnp.einsum("ijb,kjb->bik", a, b), _f32(3, 4, 2), _f32(5, 4, 2)),
    "dot_vector": (lambda a, b: jnp.dot(a, b), _f32(9), _f32(9)),
    "dot_int": (lambda a, b: a @ b, _i32(-5, 5, 4, 6), _i32(-5, 5, 6, 3)),
    # convolution and windows
    "conv_nchw_strided_same": (lambda x, w: lax.conv(x, w, (2, 2), "SAME"), _f32(2, 3, 9, 9), _f32(4, 3, 3, 3)),
    "conv_nhwc_dilated": (lambda x, w: lax.conv_general_dilated(
        x, w, (1, 1), ((1, 2), (0, 1)), rhs_dilation=(2, 1), dimension_numbers=("NHWC", "HWIO", "NHWC")),
        _f32(1, 8, 7, 3), _f32(2, 3, 3, 5)),
    "conv_feature_groups": (lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "VALID", feature_group_count=2),
                            _f32(2, 4, 6, 6), _f32(6, 2, 3, 3)),
    "conv_depthwise_1d": (lambda x, w: lax.conv_general_dilated(x, w, (1,), "SAME", feature_group_count=3),
                          _f32(2, 3, 10), _f32(3, 1, 3)),
    "conv_lhs_dilation": (lambda x, w: lax.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)), lhs_dilation=(2, 2)), _f32(1, 2, 5, 5), _f32(3, 2, 2, 2)),
    "conv_batch_groups": (lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "VALID", batch_group_count=2),
                          _f32(4, 3, 5, 5), _f32(4, 3, 2, 2)),
    "max_pool_same": (lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME"),
                      _f32(2, 7, 7, 3)),
    "avg_pool_dilated": (lambda x: lax.reduce_window(x, 0.0, lax.add, (1, 2, 2), (1, 1, 2), "VALID",
                                                     window_dilation=(1, 2, 1), base_dilation=(1, 1, 2)),
                         _f32(2, 6, 5)),
    "cumsum_cumprod": (lambda x: (jnp.cumsum(x, 1), jnp.cumprod(x, 0)), _f32(4, 9)),
    "cummax_int": (lambda a: lax.cummax(a, axis=1), _i32(-9, 9, 3, 11)),
    # sort
    "sort_rows": (lambda x: jnp.sort(x, axis=1), _f32(3, 40)),
    "argsort_axis0_long": (lambda x: jnp.argsort(x, axis=0), _f32(100, 3)),
    "argsort_ties_stable": (lambda a: jnp.argsort(a, axis=1, stable=True), _i32(0, 3, 4, 37)),
    "sort_two_keys": (lambda a, b: lax.sort((a, b), num_keys=1), _i32(0, 4, 21), _f32(21)),
    # elementwise ops without LLVM intrinsics, and integer edge semantics
    "libm_and_sign": (lambda x: (jnp.sign(x), jnp.expm1(x), jnp.log1p(jnp.abs(x)), jnp.cbrt(x), jnp.tan(x),
                                 jnp.arctan2(x, x + 1.0), jnp.round(x * 3), jnp.isfinite(x / (x > 0)),
                                 lax.erf(x)), X),
    "gelu_exact_erfc": (lambda x: (jax.nn.gelu(x, approximate=False), jax.scipy.special.erfc(x)), X),
    "int_division_and_shifts": (lambda a, b: (a % b, a // b, a >> 2, a << b, lax.shift_right_logical(a, b)),
                                _i32(-50, 50, 4, 9), _i32(-3, 9, 4, 9)),
    "float_to_int_saturates": (lambda x: (x * 1e10).astype(jnp.int32), X),
}


@pytest.mark.parametrize("name", CASES)
def test_op_matches_jax(task, name: str) -> None:
    f, *args = CASES[name]
    run_against_jax(task, f, *args)


@pytest.mark.parametrize("name", ["softmax", "argmax_argmin", "take_columns", "conv_feature_groups",
                                  "argsort_axis0_long", "cumsum_cumprod"])
def test_op_matches_jax_on_local_sync(sync, name: str) -> None:
    f, *args = CASES[name]
    run_against_jax(sync, f, *args)


def test_data_movement_and_producers_fuse_into_one_dispatch(task) -> None:
    """pad, slice, concatenate, iota, gather and a reduce's producers cost no dispatch."""
    assert _dispatches(run_against_jax(task, lambda x: jnp.pad(x, ((1, 2), (0, 1)))[::2, 1:5] + jnp.arange(4.0), X)) == 1
    assert _dispatches(run_against_jax(task, lambda x: jnp.concatenate([x.T, x.T[::-1]], 1) * 2.0, X)) == 1
    assert _dispatches(run_against_jax(task, lambda x: jnp.sum(jnp.exp(x.T) * 2.0, axis=1), X)) == 1
    assert _dispatches(run_against_jax(task, lambda x, i: jnp.take(x, i, axis=1, mode="clip") * 3.0, X, IDX)) == 1
    assert _dispatches(run_against_jax(task, lambda x: jnp.mean(x, 1) * 2.0 + 1.0, X)) == 1  # consumers join the fold
