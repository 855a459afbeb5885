"""End to end: StableHLO text from JAX -> fusion -> native kernels -> dispatches on a device,
compared with JAX's own result (tolerance of tests/compiler/conftest.assert_matches)."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from tests.compiler.conftest import run_against_jax

jax = pytest.importorskip("jax")
jnp = jax.numpy
RNG = np.random.default_rng(7)


@pytest.fixture(scope="module", params=["local-sync", "local-task"])
def device(request):
    dev = fg.create_device(request.param, **({"workers": 2} if request.param == "local-task" else {}))
    yield dev
    dev.close()


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)



def test_elementwise_chain_with_broadcasting_is_one_dispatch(device) -> None:
    mod = run_against_jax(device, lambda x, b: jnp.tanh(x * 2.0 + b) + jnp.exp(-x) * jnp.maximum(x, b), _rand(37, 19), _rand(19))
    assert len(mod.compiled.program) == 1


def test_select_compare_and_column_broadcast(device) -> None:
    run_against_jax(device, lambda x, c: jnp.where(x > 0.5, x, c * x - 1.0), _rand(37, 19), _rand(37, 1))


def test_transpose_reshape_and_several_results(device) -> None:
    def f(x, y):
        shared = jnp.exp(x) + 1.0  # used twice: computed once
        return (shared + y.T).reshape(19 * 37) * 0.5, jnp.sqrt(shared)

    run_against_jax(device, f, _rand(37, 19), _rand(19, 37))


def test_long_vector_spans_many_workgroups(device) -> None:
    mod = run_against_jax(device, lambda x: jnp.abs(x) * x + 3.0, _rand(100_003))
    assert mod.compiled.program[0].workgroup_count[0] > 1


def test_integer_and_bool_ops(device) -> None:
    a = RNG.integers(-100, 100, (13, 21)).astype(np.int32)
    b = RNG.integers(-100, 100, (13, 21)).astype(np.int32)
    run_against_jax(device, lambda a, b: ((a + 3 * b) > 0, jnp.maximum(a, b).astype(jnp.float32) / 7.0), a, b)


def test_dense_layer_fuses_bias_into_matmul(device) -> None:
    mod = run_against_jax(device, lambda x, w, b: x @ w + b, _rand(8, 32), _rand(32, 16), _rand(16))
    (only,) = mod.compiled.program
    assert mod.compiled.executable.entry(only.entry).binding_count == 4  # A, B, C, bias


@pytest.mark.parametrize("batch", [1, 2, 64])
def test_mlp_784_64_10(device, batch: int) -> None:
    def mlp(x, w1, b1, w2, b2):
        return jax.nn.relu(x @ w1 + b1) @ w2 + b2

    args = (_rand(batch, 784), _rand(784, 64) * 0.05, _rand(64), _rand(64, 10) * 0.1, _rand(10))
    mod = run_against_jax(device, mlp, *args)
    program = mod.compiled.program
    assert len(program) == 2 and program[1].barrier_before
    first = mod.compiled.executable.entry(program[0].entry)
    assert first.binding_count == 4  # A, B, C, bias: the add and relu became the epilogue


def test_arguments_are_checked(device) -> None:
    mod = fg.load(jax.jit(lambda x, y: x + y).lower(_rand(2, 3), _rand(2, 3)).as_text(), device)
    with pytest.raises(fg.InvalidArgument, match="takes 2 arguments"):
        mod(_rand(2, 3))
    with pytest.raises(fg.InvalidArgument, match=r"argument 1: expected \(2, 3\) float32, got \(3, 2\)"):
        mod(_rand(2, 3), _rand(3, 2))


def test_load_from_mlir_path(tmp_path) -> None:
    path = tmp_path / "f.mlir"
    path.write_text(jax.jit(lambda x: x * x).lower(_rand(5)).as_text())
    x = _rand(5)
    np.testing.assert_allclose(fg.load(str(path), "local-sync")(x), x * x, rtol=1e-6)
