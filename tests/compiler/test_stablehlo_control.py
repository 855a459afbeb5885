"""Control flow in the frontend: `case`, `if`, `while` and `call` in the forms JAX and the
StableHLO suite print, typed by shape inference and run by the reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.errors import CompileError
from compiler.frontends.stablehlo import parse_stablehlo
from compiler.reference import evaluate

from .conftest import op_names

GENERIC = """\
func.func @main(%p: tensor<i1>, %i: tensor<i32>, %x: tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>, tensor<i64>) {
  %r = "stablehlo.if"(%p) ({
    %0 = stablehlo.add %x, %x : tensor<2xf32>
    "stablehlo.return"(%0) : (tensor<2xf32>) -> ()
  }, {
    stablehlo.return %x : tensor<2xf32>
  }) : (tensor<i1>) -> tensor<2xf32>
  %s = "stablehlo.case"(%i) ({
    %0 = stablehlo.negate %r : tensor<2xf32>
    stablehlo.return %0 : tensor<2xf32>
  }, {
    stablehlo.return %r : tensor<2xf32>
  }) : (tensor<i32>) -> tensor<2xf32>
  %zero = stablehlo.constant dense<0> : tensor<i64>
  %n = "stablehlo.while"(%zero) ({
  ^bb0(%k: tensor<i64>):
    %ten = stablehlo.constant dense<10> : tensor<i64>
    %c = stablehlo.compare LT, %k, %ten : (tensor<i64>, tensor<i64>) -> tensor<i1>
    stablehlo.return %c : tensor<i1>
  }, {
  ^bb0(%k: tensor<i64>):
    %one = func.call @one() : () -> tensor<i64>
    %k1 = stablehlo.add %k, %one : tensor<i64>
    stablehlo.return %k1 : tensor<i64>
  }) : (tensor<i64>) -> tensor<i64>
  return %r, %s, %n : tensor<2xf32>, tensor<2xf32>, tensor<i64>
}
func.func private @one() -> tensor<i64> {
  %0 = stablehlo.constant dense<1> : tensor<i64>
  return %0 : tensor<i64>
}
"""


@pytest.mark.parametrize("pred", [True, False])
@pytest.mark.parametrize("index", [-1, 0, 1, 7])
def test_generic_if_case_while_and_call_run_in_the_reference(pred: bool, index: int) -> None:
    module = parse_stablehlo(GENERIC)
    assert {"if", "case", "while", "call"} <= op_names(module)
    x = np.array([1.5, -2.0], np.float32)
    r, s, n = evaluate(module, "main", [np.bool_(pred), np.int32(index), x])
    np.testing.assert_array_equal(r, 2 * x if pred else x)
    np.testing.assert_array_equal(s, -r if index == 0 else r)  # out of range: the last branch
    assert n == 10


def test_branches_must_yield_the_declared_types() -> None:
    text = GENERIC.replace("stablehlo.return %x : tensor<2xf32>", "%y = stablehlo.convert %x : (tensor<2xf32>) -> tensor<2xi32>\n stablehlo.return %y : tensor<2xi32>")
    with pytest.raises(CompileError, match=r"op 'if' at \d+:\d+: region 1 yields \(tensor<2xi32>\)"):
        parse_stablehlo(text)


def test_if_needs_a_boolean_predicate() -> None:
    text = GENERIC.replace('"stablehlo.if"(%p)', '"stablehlo.if"(%i)').replace("(tensor<i1>) -> tensor<2xf32>", "(tensor<i32>) -> tensor<2xf32>")
    with pytest.raises(CompileError, match=r"op 'if' at \d+:\d+: needs a tensor<i1> predicate"):
        parse_stablehlo(text)


def test_jax_cond_switch_fori_loop_and_scan(check, jax_modules) -> None:
    _, jnp, lax = jax_modules

    def f(x, i):
        y = lax.cond(x[0] > 0, lambda x: x * 2, lambda x: x - 1, x)
        z = lax.switch(i, [lambda x: x + 1, lambda x: x * 3, lambda x: -x], y)
        w = lax.fori_loop(0, 5, lambda k, c: c + k, z)
        return w, lax.scan(lambda c, a: (c + a, c * a), 0.0, x)

    x = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    for xx in (x, -x):
        for i in (-3, 0, 1, 2, 9):
            module = check(f, xx, np.int32(i))
    assert {"case", "while", "call"} <= op_names(module)


TUPLES = """func.func @main(%x: tensor<2xf32>, %i: tensor<i64>) -> (tensor<2xf32>, tensor<i64>) {
  %t = stablehlo.tuple %x, %i : tuple<tensor<2xf32>, tensor<i64>>
  %u = "stablehlo.tuple"(%t) : (tuple<tensor<2xf32>, tensor<i64>>) -> tuple<tuple<tensor<2xf32>, tensor<i64>>>
  %inner = "stablehlo.get_tuple_element"(%u) <{index = 0 : i32}> : (tuple<tuple<tensor<2xf32>, tensor<i64>>>) -> tuple<tensor<2xf32>, tensor<i64>>
  %a = stablehlo.get_tuple_element %inner[0] : (tuple<tensor<2xf32>, tensor<i64>>) -> tensor<2xf32>
  %b = stablehlo.get_tuple_element %inner[1] : (tuple<tensor<2xf32>, tensor<i64>>) -> tensor<i64>
  %token = stablehlo.after_all : !stablehlo.token
  %c, %d = stablehlo.optimization_barrier %a, %b : tensor<2xf32>, tensor<i64>
  return %c, %d : tensor<2xf32>, tensor<i64>
}"""


def test_tuples_tokens_and_barriers_only_rename_values() -> None:
    module = parse_stablehlo(TUPLES)
    assert module.function("main").ops == []
    x, i = np.array([1.0, 2.0], np.float32), np.int64(7)
    np.testing.assert_array_equal(evaluate(module, "main", [x, i])[0], x)


@pytest.mark.parametrize("text,message", [
    ("func.func @main(%t: !stablehlo.token) -> tensor<f32> {\n  return %t : tensor<f32>\n}", r"unsupported type \(a tuple or token\) at 1:21"),
    ("func.func @main(%x: tensor<f32>) -> tensor<f32> {\n  %t = stablehlo.tuple %x : tuple<tensor<f32>>\n  return %t : tensor<f32>\n}", "a tuple or token cannot be returned"),
    ("func.func @main(%x: tensor<f32>) -> tensor<f32> {\n  %t = stablehlo.tuple %x : tuple<tensor<f32>>\n  %y = stablehlo.add %t, %t : tensor<f32>\n  return %y : tensor<f32>\n}", "takes a tuple operand"),
    ("func.func @main(%x: tensor<f32>) -> tensor<f32> {\n  %t = stablehlo.tuple %x : tuple<tensor<f32>>\n  %y = stablehlo.get_tuple_element %t[3] : (tuple<tensor<f32>>) -> tensor<f32>\n  return %y : tensor<f32>\n}", "index in range"),
])
def test_tuple_misuse_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(CompileError, match=message):
        parse_stablehlo(text)
