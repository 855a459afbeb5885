"""Random numbers: `rng_bit_generator` bit for bit as JAX/XLA (ThreeFry, Philox, DEFAULT;
32-, 16- and 64-bit outputs; the state update), and JAX's "rbg" PRNG built on it."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg

from .conftest import op_names, run_against_jax

jax = pytest.importorskip("jax")
lax = jax.lax

KEY = np.array([1, 2, 3, 0xFFFFFFFF], np.uint32)


@pytest.mark.parametrize("algorithm", ["RNG_DEFAULT", "RNG_THREE_FRY", "RNG_PHILOX"])
@pytest.mark.parametrize("shape,dtype", [((), np.uint32), ((9, 4, 3), np.uint32), ((7,), np.uint16)])
def test_rng_bit_generator_is_bit_exact(algorithm: str, shape, dtype, check) -> None:
    f = lambda k: lax.rng_bit_generator(k, shape, dtype=dtype, algorithm=getattr(lax.RandomAlgorithm, algorithm))  # noqa: E731
    assert "rng_bit_generator" in op_names(check(f, KEY))
    run_against_jax(fg.default_device("local-sync"), f, KEY)


@pytest.mark.parametrize("algorithm", ["RNG_THREE_FRY", "RNG_PHILOX"])
def test_64_bit_outputs_and_state(algorithm: str) -> None:
    with jax.enable_x64():
        f = lambda k: lax.rng_bit_generator(k, (3, 3), dtype=np.uint64, algorithm=getattr(lax.RandomAlgorithm, algorithm))  # noqa: E731
        run_against_jax(fg.default_device("local-sync"), f, np.array([7, 2**64 - 1], np.uint64))


def test_jax_random_with_the_rbg_prng() -> None:
    f = lambda s: jax.random.normal(jax.random.key(s, impl="rbg"), (4, 3))  # noqa: E731
    run_against_jax(fg.default_device("local-task"), f, np.int32(5))


def test_rng_compiled_equals_the_reference_evaluator() -> None:
    from compiler.frontends.stablehlo import parse_stablehlo
    from compiler.reference import evaluate

    text = """func.func @main(%a: tensor<f32>, %b: tensor<f32>) -> tensor<3x7xf32> {
      %shape = stablehlo.constant dense<[3, 7]> : tensor<2xi64>
      %r = stablehlo.rng %a, %b, %shape, distribution = NORMAL : (tensor<f32>, tensor<f32>, tensor<2xi64>) -> tensor<3x7xf32>
      return %r : tensor<3x7xf32>
    }"""
    args = [np.float32(0.5), np.float32(2.0)]
    want = evaluate(parse_stablehlo(text), "main", args)[0]
    np.testing.assert_allclose(fg.load(text, "local-sync")(*args), want, rtol=1e-5, atol=1e-5)
