"""scatter in the forms JAX emits (`x.at[i].set/add/mul/min/max`, update windows, batching dims
from vmap, out-of-bounds indices dropped), in the reference evaluator and compiled, against JAX."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg

from .conftest import op_names, run_against_jax

jax = pytest.importorskip("jax")
jnp = jax.numpy

X = np.arange(15, dtype=np.float32).reshape(5, 3) - 7
IDX = np.array([0, 2, 2, 4], np.int32)
V = np.linspace(-2, 3, 12, dtype=np.float32).reshape(4, 3)

CASES = {
    "set": lambda x, i, v: x.at[i[:2]].set(v[:2]),
    "add_duplicates": lambda x, i, v: x.at[i].add(v),
    "mul": lambda x, i, v: x.at[i].multiply(v),
    "min": lambda x, i, v: x.at[i].min(v),
    "max": lambda x, i, v: x.at[i].max(v),
    "scalar_index_window": lambda x, i, v: x.at[1].set(v[0] * i[1]),
    "element": lambda x, i, v: x.at[i, 1].add(v[:, 0]),
    "out_of_bounds_dropped": lambda x, i, v: x.at[i + 3].add(v, mode="drop"),
    "2d_window": lambda x, i, v: jax.lax.dynamic_update_slice(x, v[:2, :2], (i[3] - 1, i[0] + 1)),
    "vmapped": lambda x, i, v: jax.vmap(lambda r, j, u: r.at[j].add(u))(x[:4], i % 3, v[:, 0]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_scatter_matches_jax(name: str, check) -> None:
    module = check(CASES[name], X, IDX, V)
    assert "scatter" in op_names(module) or name == "2d_window"
    run_against_jax(fg.default_device("local-task"), CASES[name], X, IDX, V)


def test_integer_scatter_with_a_general_update_computation(check) -> None:
    f = lambda x, i: x.at[i].apply(lambda a: a * 3 - 1)  # noqa: E731
    x, i = np.arange(6, dtype=np.int32), np.array([1, 1, 4], np.int32)
    check(f, x, i)
    run_against_jax(fg.default_device("local-sync"), f, x, i)


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_max_pool_gradient_is_select_and_scatter(padding: str, check) -> None:
    lax = jax.lax
    x = np.random.default_rng(0).standard_normal((2, 7, 6, 3)).astype(np.float32)
    f = jax.grad(lambda x: (lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), padding) ** 2).sum())
    assert "select_and_scatter" in op_names(check(f, x))
    run_against_jax(fg.default_device("local-task"), f, x)
