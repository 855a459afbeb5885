"""Whole JAX programs that mix the ops of issue #9 with control flow: jax.random's default
ThreeFry PRNG (its rounds run in a while loop), `.at[].add` inside lax.scan, LAPACK calls
inside fori_loop; compiled and checked against JAX."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg

from .conftest import run_against_jax

jax = pytest.importorskip("jax")
jnp, lax = jax.numpy, jax.lax

PROGRAMS = {
    "normal": (lambda s: jax.random.normal(jax.random.PRNGKey(s), (3, 4)), (np.int32(1),)),
    "uniform_randint": (lambda s: (jax.random.uniform(jax.random.PRNGKey(s), (5,)),
                                   jax.random.randint(jax.random.PRNGKey(s + 1), (7,), 0, 10)), (np.int32(3),)),
    "permutation": (lambda s: jax.random.permutation(jax.random.PRNGKey(s), 8), (np.int32(4),)),
    "dropout": (lambda s, x: jnp.where(jax.random.bernoulli(jax.random.PRNGKey(s), 0.5, x.shape), x / 0.5, 0),
                (np.int32(2), np.arange(12, dtype=np.float32).reshape(3, 4))),
    "scan_with_at_add": (lambda x: lax.scan(lambda c, i: (c.at[i % 3].add(x[i]), c.sum()), jnp.zeros(3), jnp.arange(5))[0],
                         (np.linspace(-1, 1, 5, dtype=np.float32),)),
    "fori_cholesky": (lambda a: lax.fori_loop(0, 2, lambda i, m: jnp.linalg.cholesky(m) @ jnp.linalg.cholesky(m).T + m, a),
                      ((np.eye(3) * 2 + 0.1).astype(np.float32),)),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_jax_program_matches_jax(name: str) -> None:
    f, args = PROGRAMS[name]
    run_against_jax(fg.default_device("local-task"), f, *args)
