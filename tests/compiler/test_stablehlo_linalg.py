"""Linear algebra JAX lowers to LAPACK custom calls on CPU (`lapack_?potrf_ffi` for
jnp.linalg.cholesky, `lapack_?trsm_ffi` for solve_triangular) and StableHLO's own
`triangular_solve`/`cholesky`: compiled through passes/decompose.py and checked against JAX;
other LAPACK routines are one clear error."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from compiler.errors import CompileError
from compiler.frontends.stablehlo import parse_stablehlo

from .conftest import run_against_jax

jax = pytest.importorskip("jax")
jnp = jax.numpy


def _spd(n: int, batch: tuple[int, ...] = (), dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(n)
    m = rng.standard_normal(batch + (n, n))
    return (m @ np.swapaxes(m, -1, -2) + n * np.eye(n)).astype(dtype)


@pytest.mark.parametrize("n,batch", [(1, ()), (5, ()), (12, (2,))])
def test_cholesky_matches_jax(n: int, batch: tuple[int, ...]) -> None:
    run_against_jax(fg.default_device("local-task"), jnp.linalg.cholesky, _spd(n, batch))


def test_cholesky_of_a_matrix_that_is_not_positive_definite_is_nan_where_jax_is() -> None:
    run_against_jax(fg.default_device("local-sync"), jnp.linalg.cholesky, -np.eye(3, dtype=np.float32))


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("trans", [0, 1])
@pytest.mark.parametrize("unit", [False, True])
def test_solve_triangular_matches_jax(lower: bool, trans: int, unit: bool) -> None:
    a = _spd(6) / 6
    b = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    f = lambda a, b: jax.scipy.linalg.solve_triangular(a, b, lower=lower, trans=trans, unit_diagonal=unit)  # noqa: E731
    run_against_jax(fg.default_device("local-task"), f, a, b)


def test_lax_triangular_solve_right_side_float64_batched() -> None:
    with jax.enable_x64():
        a = _spd(4, (3,), np.float64) / 4
        b = np.random.default_rng(2).standard_normal((3, 5, 4))
        f = lambda a, b: jax.lax.linalg.triangular_solve(a, b, left_side=False, lower=True, transpose_a=True)  # noqa: E731
        run_against_jax(fg.default_device("local-sync"), f, a, b)


def test_other_lapack_calls_are_a_clear_error() -> None:
    a = _spd(3)
    with pytest.raises(CompileError, match=r"unsupported custom_call @lapack_sgetrf_ffi at \d+:\d+"):
        fg.load(jax.jit(jnp.linalg.inv).lower(a).as_text(), "local-sync")


def test_custom_call_without_results_is_a_clear_error() -> None:
    text = """func.func @main(%a: tensor<2xf32>) -> tensor<2xf32> {
      stablehlo.custom_call @side_effect(%a) : (tensor<2xf32>) -> ()
      return %a : tensor<2xf32>
    }"""
    with pytest.raises(CompileError, match=r"unsupported custom_call @side_effect at 2:7"):
        parse_stablehlo(text)


def test_unsigned_64_bit_constants_keep_every_bit() -> None:
    text = """func.func @main() -> tensor<3xui64> {
      %0 = stablehlo.constant dense<[18446744073709551615, 9223372036854775808, 1]> : tensor<3xui64>
      return %0 : tensor<3xui64>
    }"""
    value = parse_stablehlo(text).function("main").ops[0].attrs["value"]
    np.testing.assert_array_equal(value, np.array([2**64 - 1, 2**63, 1], np.uint64))
