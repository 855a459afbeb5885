"""Symbolic shapes from jax.export: parsing `?` dims, evaluating at several sizes, specializing to a
static module, and shape assertions failing with JAX's message."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.errors import ShapeAssertionError
from compiler.frontends.stablehlo import parse_stablehlo
from compiler.passes.shape_inference import specialize
from compiler.reference import evaluate
from tests.compiler.conftest import assert_matches, op_names

jax = pytest.importorskip("jax")
jnp = jax.numpy
from jax import export  # noqa: E402

RNG = np.random.default_rng(1)
W = RNG.standard_normal((8, 3)).astype(np.float32)


def _model(x, y):
    h = jnp.tanh(x @ W) + jnp.arange(x.shape[0], dtype=jnp.float32)[:, None]
    return h.reshape(-1), jnp.concatenate([y, y]), h.sum(0), x.reshape(2, -1)


@pytest.fixture(scope="module")
def exported():
    b = export.symbolic_shape("b")[0]
    exp = export.export(jax.jit(_model))(jax.ShapeDtypeStruct((2 * b, 8), jnp.float32),
                                         jax.ShapeDtypeStruct((b,), jnp.int32))
    return exp, parse_stablehlo(exp.mlir_module())


def test_parses_dynamic_dims(exported):
    _, module = exported
    main = module.function("main")
    assert main.args[0].type.shape == (None, 8) and main.args[1].type.shape == (None,)
    assert {"get_dimension_size", "custom_call", "dynamic_broadcast_in_dim", "dynamic_iota",
            "dynamic_reshape"} <= op_names(module)


@pytest.mark.parametrize("b", [1, 3])
def test_evaluate_and_specialize(exported, b):
    exp, module = exported
    x = RNG.standard_normal((2 * b, 8)).astype(np.float32)
    y = np.arange(b, dtype=np.int32)
    want = exp.call(x, y)
    assert_matches(evaluate(module, "main", [x, y]), want)
    static = specialize(module, "main", [x.shape, y.shape])
    names = op_names(static)
    assert not names & {"get_dimension_size", "dynamic_broadcast_in_dim", "dynamic_iota",
                        "dynamic_reshape", "custom_call"}
    for fn in static.functions.values():
        assert all(a.type.is_static for a in fn.args)
        assert all(r.type.is_static for op in fn.ops for r in op.results)
    assert [r.type.shape for r in static.function("main").results] == [w.shape for w in want]
    assert_matches(evaluate(static, "main", [x, y]), want)


def test_shape_assertion_fails_with_jax_message(exported):
    exp, module = exported
    x = np.zeros((6, 8), np.float32)  # 2*b = 6 -> b = 3, but y says b = 2
    y = np.zeros((2,), np.int32)
    with pytest.raises(ShapeAssertionError, match="Found inconsistency between dimension size") as ours:
        evaluate(module, "main", [x, y])
    with pytest.raises(Exception) as theirs:
        exp.call(x, y)
    assert str(ours.value) in str(theirs.value)
    with pytest.raises(ShapeAssertionError, match=r"args\[0\].shape\[0\]"):
        specialize(module, "main", [x.shape, y.shape])
    with pytest.raises(ShapeAssertionError, match="Division had remainder 1"):
        specialize(module, "main", [(5, 8), (2,)])


def test_specialize_rejects_static_mismatch(exported):
    _, module = exported
    with pytest.raises(Exception, match="does not fit"):
        specialize(module, "main", [(4, 7), (2,)])
