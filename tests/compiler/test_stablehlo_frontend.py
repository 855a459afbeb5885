"""The parser itself: MLIR syntax forms, the IR it builds, and malformed input."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import reference
from compiler.errors import CompileError
from compiler.frontends.stablehlo import parse_stablehlo
from compiler.ir import SUPPORTED_OPS
from compiler.passes import shape_inference
from compiler.reference import evaluate

GENERIC = """\
#loc1 = loc("x.py":1:2)
module @m attributes {mhlo.num_partitions = 1 : i32} {
  func.func public @main(%arg0: tensor<2x3xf32> {jax.arg_info = "x"} loc("x"), %arg1: tensor<2x3xf32>) -> (tensor<3xf32> {jax.result_info = "r"}, tensor<2x3xf32>) {
    %0 = "stablehlo.add"(%arg0, %arg1) : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32> loc(#loc1)
    %1 = stablehlo.logistic %0 : tensor<2x3xf32>
    %cst = "stablehlo.constant"() <{value = dense<0.000000e+00> : tensor<f32>}> : () -> tensor<f32>
    %2 = "stablehlo.reduce"(%1, %cst) <{dimensions = array<i64: 0>}> ({
    ^bb0(%a: tensor<f32> loc(unknown), %b: tensor<f32>):
      %s = "stablehlo.add"(%a, %b) : (tensor<f32>, tensor<f32>) -> tensor<f32>
      "stablehlo.return"(%s) : (tensor<f32>) -> ()
    }) : (tensor<2x3xf32>, tensor<f32>) -> tensor<3xf32>
    %3 = "stablehlo.compare"(%arg0, %arg1) <{comparison_direction = #stablehlo<comparison_direction LT>, compare_type = #stablehlo<comparison_type FLOAT>}> : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xi1>
    %4 = "stablehlo.select"(%3, %arg0, %arg1) : (tensor<2x3xi1>, tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    %5 = "stablehlo.dot_general"(%4, %arg1) <{dot_dimension_numbers = #stablehlo.dot<lhs_contracting_dimensions = [1], rhs_contracting_dimensions = [1]>}> : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x2xf32>
    %6 = stablehlo.dot_general %5, %4, contracting_dims = [1] x [0] : (tensor<2x2xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %2, %6 : tensor<3xf32>, tensor<2x3xf32>
  } loc(#loc1)
} loc(#loc1)
"""


def test_generic_syntax_and_hand_written_ops():
    module = parse_stablehlo(GENERIC)
    main = module.function("main")
    assert [op.name for op in main.ops] == ["add", "logistic", "constant", "reduce", "compare", "select",
                                            "dot_general", "dot_general"]
    reduce = main.ops[3]
    assert reduce.attrs == {"dimensions": (0,)} and len(reduce.regions) == 1
    assert [op.name for op in reduce.regions[0].ops] == ["add"]
    assert main.ops[4].attrs == {"comparison_direction": "LT", "compare_type": "FLOAT"}
    assert main.ops[0].loc == (4, 10)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 6
    y = np.full((2, 3), 0.5, np.float32)
    r, d = evaluate(module, "main", [x, y])
    np.testing.assert_allclose(r, (1 / (1 + np.exp(-(x + y)))).sum(0), rtol=1e-6)
    s = np.where(x < y, x, y)
    np.testing.assert_allclose(d, (s @ y.T) @ s, rtol=1e-6)


def test_ir_attrs_are_plain_values():
    text = """func.func @main(%x: tensor<1x5x5x2xf32>, %k: tensor<3x3x2x4xf32>) -> tensor<1x3x3x4xf32> {
      %0 = stablehlo.convolution(%x, %k) dim_numbers = [b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f], window = {stride = [2, 2], pad = [[1, 1], [1, 1]]} {batch_group_count = 1 : i64, feature_group_count = 1 : i64} : (tensor<1x5x5x2xf32>, tensor<3x3x2x4xf32>) -> tensor<1x3x3x4xf32>
      return %0 : tensor<1x3x3x4xf32>
    }"""
    conv = parse_stablehlo(text).function("main").ops[0]
    assert conv.attrs["window_strides"] == (2, 2) and conv.attrs["padding"] == ((1, 1), (1, 1))
    assert conv.attrs["input_spatial_dimensions"] == (1, 2) and conv.attrs["kernel_output_feature_dimension"] == 3
    assert conv.attrs["lhs_dilation"] == (1, 1) and conv.attrs["feature_group_count"] == 1


def test_hex_constants():
    text = """func.func @main() -> (tensor<3xf32>, tensor<2xi16>, tensor<f32>) {
      %0 = stablehlo.constant dense<"0x0000803F000000400000C07F"> : tensor<3xf32>
      %1 = stablehlo.constant dense<[-3, 0x7FFF]> : tensor<2xi16>
      %2 = stablehlo.constant dense<0xFF800000> : tensor<f32>
      return %0, %1, %2 : tensor<3xf32>, tensor<2xi16>, tensor<f32>
    }"""
    a, b, c = evaluate(parse_stablehlo(text), "main", [])
    np.testing.assert_array_equal(a, np.array([1, 2, np.nan], np.float32))
    np.testing.assert_array_equal(b, np.array([-3, 32767], np.int16))
    assert c == -np.inf


def test_every_supported_op_has_a_shape_rule_and_an_implementation():
    assert SUPPORTED_OPS <= set(shape_inference.RULES)
    assert SUPPORTED_OPS <= set(reference._OPS)


# --------------------------------------------------------------------------------------------
# Malformed input: always a CompileError naming line:col, never a crash or a hang

@pytest.mark.parametrize("text, message", [
    ("func.func @main(%a: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = stablehlo.foo %a : tensor<2xf32>\n"
     "  return %0 : tensor<2xf32>\n}", r"unsupported op 'stablehlo.foo' at 2:8"),
    ('func.func @main(%a: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = "stablehlo.fft"(%a) : '
     '(tensor<2xf32>) -> tensor<2xf32>\n  return %0 : tensor<2xf32>\n}', r"unsupported op 'stablehlo.fft' at 2:8"),
    ("func.func @main(%a: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = stablehlo.custom_call @foo(%a) : "
     "(tensor<2xf32>) -> tensor<2xf32>\n  return %0 : tensor<2xf32>\n}", r"custom_call @foo' at 2:8"),
    ("func.func @main(%a: tensor<2xf32>) -> tensor<2xf32> {\n  return %b : tensor<2xf32>\n}",
     r"undefined value %b at 2:10"),
    ("func.func @main(%a: tensor<2xc64>) -> tensor<2xf32> {", r"element type 'c64' at 1:21"),
    ("func.func @main(%a: tensor<2xf32>) -> tensor<3xf32> {\n  %0 = stablehlo.add %a, %a : "
     "(tensor<2xf32>, tensor<2xf32>) -> tensor<3xf32>\n  return %0 : tensor<3xf32>\n}",
     r"op 'add' at 2:8: result type tensor<3xf32> does not match"),
    ("module {\n  func.func @main() {\n", r"end of input"),
    ("\x00\x01garbage", r"unexpected character '\\x00' at 1:1"),
    ("hello world", r"expected 'func.func' at 1:1"),
    ("", r"no functions"),
])
def test_malformed_input(text, message):
    with pytest.raises(CompileError, match=message):
        parse_stablehlo(text)


def test_truncations_and_mutations_never_crash():
    """Every prefix (at a stride) of a real module, and a few corruptions, give CompileError."""
    for end in range(0, len(GENERIC) - 3, 7):
        with pytest.raises(CompileError):
            parse_stablehlo(GENERIC[:end])
    rng = np.random.default_rng(3)
    for _ in range(200):
        chars = list(GENERIC)
        for pos in rng.integers(0, len(chars), 3):
            chars[pos] = "%{}<>:,(x0@\"#"[rng.integers(0, 13)]
        try:
            parse_stablehlo("".join(chars))
        except CompileError:
            pass


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(CompileError):
        parse_stablehlo("func.func @main() attributes {a = " + "[" * 100000 + "]" * 100000 + "} {}")


def test_specialize_and_evaluate_reject_wrong_inputs():
    module = parse_stablehlo(GENERIC)
    with pytest.raises(CompileError, match="takes 2 inputs"):
        evaluate(module, "main", [np.zeros((2, 3), np.float32)])
    with pytest.raises(CompileError, match="does not fit"):
        evaluate(module, "main", [np.zeros((2, 4), np.float32)] * 2)
    with pytest.raises(CompileError, match="no function 'nope'"):
        shape_inference.specialize(module, "nope", [])
