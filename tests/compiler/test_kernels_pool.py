"""Window pools over NHWC (a CNN's MaxPool) on the direct pooling kernel
(compiler/codegen/llvm_cpu/pooling.py), against JAX: the regions compiler/passes/window_pools.py
recognises, and ones it must leave to the generic reduction."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import fibergrid as fg
from compiler import kernel_ir as kir
from compiler.passes.window_pools import window_pool

RNG = np.random.default_rng(11)


def _pools(module: fg.Module) -> list:
    return [window_pool(r) for r in module.compiled.regions if isinstance(r.body, kir.ReductionBody)]


def _max_pool(window: tuple[int, int], strides: tuple[int, int], padding):
    def f(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), padding)
    return f


CASES = [  # input NHWC, window, strides, padding
    ((1, 48, 48, 32), (3, 3), (2, 2), ((0, 0), (1, 1), (1, 1), (0, 0))),  # ResNet's, after the stem
    ((2, 9, 11, 20), (3, 2), (1, 2), ((0, 0), (2, 0), (0, 1), (0, 0))),  # channel tail, uneven pads
    ((1, 7, 7, 300), (2, 2), (2, 2), "VALID"),  # several channel blocks, no padding
    ((1, 5, 5, 3), (5, 5), (1, 1), ((0, 0), (2, 2), (2, 2), (0, 0))),  # every window clipped
]


@pytest.mark.parametrize(("xs", "window", "strides", "padding"), CASES)
def test_max_pool_runs_on_the_pooling_kernel(xs, window, strides, padding) -> None:  # noqa: ANN001
    f = _max_pool(window, strides, padding)
    x = RNG.standard_normal(xs).astype(np.float32)
    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-task")
    pools = _pools(module)
    assert len(pools) == 1 and pools[0] is not None and pools[0].window == window and pools[0].strides == strides
    np.testing.assert_array_equal(module(x), np.asarray(f(x)))


def test_max_pool_propagates_nan_and_keeps_signed_zeros() -> None:
    f = _max_pool((3, 3), (2, 2), ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = RNG.standard_normal((1, 8, 8, 16)).astype(np.float32)
    x[0, 3, 3, 5] = np.nan
    x[0, 0:2, 0:2, 7] = -1.0
    x[0, 0, 0, 7], x[0, 1, 1, 7] = -0.0, 0.0
    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-sync")
    assert _pools(module)[0] is not None
    got, want = module(x), np.asarray(f(x))
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[0, 1:3, 1:3, 5]).all() and np.signbit(got[0, 0, 0, 7]) == np.signbit(want[0, 0, 0, 7])


def test_sum_pool_from_zero() -> None:
    def f(x):
        return lax.reduce_window(x, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))

    x = RNG.standard_normal((1, 6, 6, 24)).astype(np.float32)
    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-sync")
    assert _pools(module)[0] is not None and _pools(module)[0].fold == "add"
    np.testing.assert_allclose(module(x), np.asarray(f(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["dilated", "channels-first", "computed"])
def test_other_windows_keep_the_generic_reduction(case: str) -> None:
    """A window dilation, a pool over the last two dims (NCHW) and a pool of values computed in
    the region are not what the kernel does: the generic reduction computes them, right."""
    x = RNG.standard_normal((1, 8, 8, 8)).astype(np.float32)
    if case == "dilated":
        def f(x):
            return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 1, 1, 1), "VALID", window_dilation=(1, 2, 2, 1))
    elif case == "channels-first":
        def f(x):
            return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 3, 3), (1, 1, 2, 2), "SAME")
    else:
        def f(x):
            return lax.reduce_window(jnp.abs(x), -jnp.inf, lax.max, (1, 2, 2, 1), (1, 1, 1, 1), "SAME")
    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-sync")
    assert _pools(module) == [None]
    np.testing.assert_allclose(module(x), np.asarray(f(x)), rtol=1e-5, atol=1e-5)


def test_eight_lane_pool(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    """The kernel as an AVX2 host gets it (8 lanes: 20 channels are two vectors and a tail of 4)."""
    from compiler.codegen.llvm_cpu import jit

    monkeypatch.setattr(jit, "vector_width_f32", lambda: 8)
    monkeypatch.setenv("FIBERGRID_CACHE_DIR", str(tmp_path))  # not the 16-lane programs
    xs, window, strides, padding = CASES[1]
    f = _max_pool(window, strides, padding)
    x = RNG.standard_normal(xs).astype(np.float32)
    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-sync")
    assert _pools(module)[0] is not None
    np.testing.assert_array_equal(module(x), np.asarray(f(x)))
