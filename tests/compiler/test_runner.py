"""The runner behind `fg.load`: argument checks, dynamic dims bound per call (matching JAX),
shape assertions with JAX's message, concurrent calls, progress lines."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from tests.compiler.conftest import assert_matches
from tests.compiler.test_fgx import TWO_FUNCTIONS
from tests.hal.helpers import run_threads

jax = pytest.importorskip("jax")
jnp = jax.numpy
RNG = np.random.default_rng(5)
W1, B1 = RNG.standard_normal((4, 16)).astype(np.float32), RNG.standard_normal(16).astype(np.float32)
W2 = RNG.standard_normal((16, 3)).astype(np.float32)


def _mlp(x):
    return jax.nn.relu(x @ W1 + B1) @ W2


@pytest.fixture(scope="module", params=["local-sync", "local-task"])
def device(request):
    with fg.create_device(request.param, **({"workers": 2} if request.param == "local-task" else {})) as dev:
        yield dev


@pytest.fixture(scope="module")
def dynamic_text() -> str:
    """The MLP exported with a symbolic batch dim: `tensor<?x4xf32>`."""
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 4"), jnp.float32)
    return jax.export.export(jax.jit(_mlp))(spec).mlir_module()


@pytest.fixture(scope="module")
def pair_text() -> str:
    """Two arguments sharing the symbolic dim b: JAX guards it with a shape assertion."""
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 4"), jnp.float32)
    return jax.export.export(jax.jit(lambda x, y: x * 2.0 + y))(spec, spec).mlir_module()


def test_arity_rank_dtype_and_shape_errors_name_the_argument(device) -> None:
    mod = fg.load(TWO_FUNCTIONS, device)
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(fg.InvalidArgument, match=r"^main: takes 2 arguments, got 3$"):
        mod(x, x, x)
    with pytest.raises(fg.InvalidArgument, match=r"^main: argument 1: expected \(2, 3\) float32, got \(6,\) float32$"):
        mod(x, x.reshape(6))
    with pytest.raises(fg.InvalidArgument, match=r"^main: argument 0: expected \(2, 3\) float32, got \(2, 3\) float64$"):
        mod(x.astype(np.float64), x)
    with pytest.raises(fg.InvalidArgument, match=r"^twice: argument 0: expected \(4,\) int32, got \(5,\) int32$"):
        mod.twice(np.zeros(5, np.int32))
    with pytest.raises(fg.InvalidArgument, match="cannot convert"):
        mod.twice(["a", "b", "c", "d"])
    with pytest.raises(fg.InvalidArgument, match=r"no public function 'nope' \(has: main, twice\)"):
        mod["nope"]
    with pytest.raises(AttributeError):
        mod.nope  # noqa: B018
    np.testing.assert_array_equal(mod.twice([1, 2, 3, 4])[0], [2, 4, 6, 8])  # lists take the declared dtype


def test_dynamic_batch_matches_jax_at_several_sizes(device, dynamic_text) -> None:
    mod = fg.load(dynamic_text, device)
    assert mod["main"].signature[0][0] == (None, 4)
    for batch in (1, 7, 2, 7, 64):
        x = RNG.standard_normal((batch, 4)).astype(np.float32)
        assert_matches([mod(x)], [np.asarray(jax.jit(_mlp)(x))])
    with pytest.raises(fg.InvalidArgument, match=r"^main: argument 0: expected \(\?, 4\) float32, got \(3, 5\) float32$"):
        mod(np.zeros((3, 5), np.float32))
    with pytest.raises(fg.InvalidArgument, match="dynamic dims"):
        mod.compiled  # noqa: B018


def test_shape_assertion_fails_with_jax_message(device, pair_text) -> None:
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 4"), jnp.float32)
    exported = jax.export.export(jax.jit(lambda x, y: x * 2.0 + y))(spec, spec)
    x, y = np.ones((2, 4), np.float32), np.ones((3, 4), np.float32)
    with pytest.raises(Exception) as theirs:
        exported.call(x, y)
    mod = fg.load(pair_text, device)
    with pytest.raises(fg.InvalidArgument) as ours:
        mod(x, y)
    assert "Found inconsistency between dimension size args[1].shape[0] (= 3)" in str(ours.value)
    assert str(ours.value) in str(theirs.value)
    np.testing.assert_array_equal(mod(y, y), 3 * y)  # a consistent call still works


def test_concurrent_calls_from_threads(device, dynamic_text) -> None:
    mod = fg.load(dynamic_text, device)
    inputs = [RNG.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(8)]
    want = [np.asarray(jax.jit(_mlp)(x)) for x in inputs]
    mod(inputs[0]), mod(inputs[1]), mod(inputs[2])  # compile the three signatures first

    def worker(i: int) -> None:
        for _ in range(25):
            assert_matches([mod(inputs[i])], [want[i]])

    run_threads(worker, len(inputs))


def test_progress_reports_each_stage(device, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FIBERGRID_CACHE_DIR", str(tmp_path))  # compile afresh, not from the cache
    fg.load(TWO_FUNCTIONS.replace("add", "subtract"), device, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("fibergrid: parse StableHLO: ") and any("@twice: LLVM" in line for line in lines)
