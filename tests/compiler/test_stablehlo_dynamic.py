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


# --------------------------------------------------------------------------------------------
# Dynamic ops whose attrs are operands: specialize rewrites them into their static forms.

lax = jax.lax
_DYNAMIC_FORMS = {"real_dynamic_slice", "dynamic_gather", "dynamic_reduce_window"}


@pytest.fixture(scope="module")
def task():
    import fibergrid as fg
    dev = fg.create_device("local-task", workers=2)
    yield dev
    dev.close()


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name, f, spec, args_at, source_op, static_ops", [
    ("split", lambda x: jnp.split(x, 2, -1)[1], ["b, 8"],
     lambda b: [_f32(b, 8)], "real_dynamic_slice", {"slice"}),
    ("dynamic_slice_in_dim", lambda x, i: lax.dynamic_slice_in_dim(x, i, 2, 1), ["b, 6", ()],
     lambda b: [_f32(b, 6), np.int32(b + 1)], "real_dynamic_slice", {"dynamic_slice"}),
    ("static_slice", lambda x: x[:, 2:5], ["b, 8"],
     lambda b: [_f32(b, 8)], "dynamic_gather", {"gather"}),
    ("index", lambda x, i: x[:, i], ["b, 6", ()],
     lambda b: [_f32(b, 6), np.int32(-b)], "dynamic_gather", {"gather"}),
    ("half", lambda x: x[:x.shape[0] // 2], ["b, 6"],
     lambda b: [_f32(b, 6)], "dynamic_gather", {"gather"}),
    ("cumsum", lambda x: jnp.cumsum(x, 0), ["n, 2"],
     lambda b: [_f32(b, 2)], "dynamic_reduce_window", {"reduce_window"}),
    ("max_pool_same", lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME"),
     ["b, h, w, 3"], lambda b: [_f32(b, 2 * b + 1, 4, 3)], "dynamic_reduce_window", {"reduce_window"}),
    ("avg_pool_same", lambda x: lax.reduce_window(x, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 2, 1), "SAME"),
     ["b, h, w, 3"], lambda b: [_f32(b, 5, b + 3, 3)], "dynamic_reduce_window", {"reduce_window"}),
])
def test_dynamic_forms_specialize_to_static_ops(task, name, f, spec, args_at, source_op, static_ops):
    import fibergrid as fg
    specs = [jax.ShapeDtypeStruct(export.symbolic_shape(s) if s else (),
                                  jnp.float32 if s else jnp.int32) for s in spec]
    text = export.export(jax.jit(f))(*specs).mlir_module()
    module = parse_stablehlo(text)
    assert source_op in op_names(module)
    loaded = fg.load(text, task)
    for b in (1, 3):
        args = args_at(b)
        want = [np.asarray(w) for w in jax.tree_util.tree_leaves(jax.jit(f)(*args))]
        assert_matches(evaluate(module, "main", args), want)
        static = specialize(module, "main", [np.shape(a) for a in args])
        names = op_names(static)
        assert static_ops <= names and not names & _DYNAMIC_FORMS
        assert_matches(evaluate(static, "main", args), want)
        assert_matches([np.asarray(loaded(*args))], want)


def test_dynamic_reduce_window_reducer_is_not_an_entry_point():
    b = export.symbolic_shape("n")[0]
    text = export.export(jax.jit(lambda x: jnp.cumsum(x, 0)))(
        jax.ShapeDtypeStruct((b, 2), jnp.float32)).mlir_module()
    assert "func.func @reduce_window" in text  # jax.export prints the reducer public
    module = parse_stablehlo(text)
    assert [name for name, fn in module.functions.items() if fn.public] == ["main"]


def test_real_dynamic_slice_with_unknown_sizes_stays_an_error():
    """Starts and limits that are both runtime values: the result size is data dependent."""
    text = """func.func @main(%x: tensor<6xf32>, %s: tensor<1xi32>, %l: tensor<1xi32>) -> tensor<?xf32> {
      %c = stablehlo.constant dense<1> : tensor<1xi32>
      %0 = stablehlo.real_dynamic_slice %x, %s, %l, %c : (tensor<6xf32>, tensor<1xi32>, tensor<1xi32>, tensor<1xi32>) -> tensor<?xf32>
      return %0 : tensor<?xf32>
    }"""
    module = parse_stablehlo(text)
    x = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(evaluate(module, "main", [x, np.int32([1]), np.int32([4])])[0], x[1:4])
    with pytest.raises(Exception, match="still dynamic"):
        specialize(module, "main", [(6,), (1,), (1,)])
