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
     "(tensor<2xf32>) -> tensor<2xf32>\n  return %0 : tensor<2xf32>\n}", r"unsupported custom_call @foo at 2:8"),
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


# --------------------------------------------------------------------------------------------
# Regressions from the acceptance probe: each parsed, run by the reference evaluator against
# JAX and, where the op lowers, compiled by fg.load on local-task.

jax = pytest.importorskip("jax")
jnp, lax = jax.numpy, jax.lax
import jax.scipy.special  # noqa: E402
from tests.compiler.conftest import assert_matches, op_names, run_against_jax  # noqa: E402

_RNG = np.random.default_rng(5)


@pytest.fixture(scope="module")
def task():
    import fibergrid as fg
    dev = fg.create_device("local-task", workers=2)
    yield dev
    dev.close()


def _exported(f, *specs) -> str:
    return jax.export.export(jax.jit(f))(*specs).mlir_module()


def _check_exported(device, f, args, specs=None):
    """Export f (at `specs`, default the args' shapes), parse, evaluate (dynamic and specialized)
    and run through fg.load; all compared with jax.jit(f)(*args). Returns the parsed module."""
    import fibergrid as fg
    specs = specs or [jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype) for a in args]
    text = _exported(f, *specs)
    want = [np.asarray(w) for w in jax.tree_util.tree_leaves(jax.jit(f)(*args))]
    module = parse_stablehlo(text)
    assert_matches(evaluate(module, "main", args), want)
    static = shape_inference.specialize(module, "main", [np.shape(a) for a in args])
    assert_matches(evaluate(static, "main", args), want)
    if device is not None:
        got = fg.load(text, device)(*args)
        assert_matches(list(got) if isinstance(got, tuple) else [got], want)
    return module


@pytest.mark.parametrize("f", [
    lambda x: jnp.argmax(x, 1),
    lambda x: jnp.argmin(x, 0),
    lambda x: lax.reduce((x, 2 * x), (0.0, -np.inf), lambda a, b: (a[0] + b[0], jnp.maximum(a[1], b[1])), (1,)),
], ids=["argmax", "argmin", "two_result_reduce"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_loc_on_block_arguments(task, f, dynamic):
    """jax.export prints `reducer(%a: tensor<f32> loc(...), ...)` and `^bb0(%a: ... loc(...))`."""
    x = _RNG.standard_normal((3, 5)).astype(np.float32)
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 5") if dynamic else (3, 5), jnp.float32)
    assert "loc(" in _exported(f, spec)
    _check_exported(task, f, [x], [spec])


def test_loc_on_generic_region_arguments():
    text = """func.func @main(%x: tensor<4xf32>) -> tensor<f32> {
      %c = stablehlo.constant dense<0.0> : tensor<f32>
      %0 = "stablehlo.reduce"(%x, %c) <{dimensions = array<i64: 0>}> ({
      ^bb0(%a: tensor<f32> loc("r"(#loc1)), %b: tensor<f32> loc(#loc1)):
        %s = stablehlo.add %a, %b : tensor<f32>
        stablehlo.return %s : tensor<f32>
      }) : (tensor<4xf32>, tensor<f32>) -> tensor<f32>
      %1 = stablehlo.reduce(%x init: %c) across dimensions = [0] : (tensor<4xf32>, tensor<f32>) -> tensor<f32>
       reducer(%p: tensor<f32> loc(unknown), %q: tensor<f32> loc("q")) {
        %m = stablehlo.maximum %p, %q : tensor<f32>
        stablehlo.return %m : tensor<f32>
      }
      %2 = stablehlo.add %0, %1 : tensor<f32>
      return %2 : tensor<f32>
    }"""
    x = np.array([1, -2, 3, 0.5], np.float32)
    np.testing.assert_allclose(evaluate(parse_stablehlo(text), "main", [x])[0], x.sum() + x.max())


@pytest.mark.parametrize("f", [
    lambda x: jnp.sort(x, 1),
    lambda x: jnp.sort(x, 0)[::-1],
    lambda x: lax.sort((x, jnp.arange(5.0) * x), dimension=1, num_keys=1)[1],
], ids=["sort1", "sort0", "sort_two_operands"])
def test_region_captures_of_constants_are_cloned(task, f):
    """jax.export hoists the comparator's constants out of the region; they are cloned in, so
    the region is self-contained for fusion (which lowers it from its arguments alone)."""
    x = _RNG.standard_normal((3, 5)).astype(np.float32)
    x[0, 1], x[1, 2], x[2, 3] = 0.0, -0.0, np.nan
    module = _check_exported(task, f, [x])

    def regions(ops):
        for op in ops:
            for r in op.regions:
                yield r
                yield from regions(r.ops)

    for fn in module.functions.values():
        for region in regions(fn.ops):
            defined = set(region.args) | {v for op in region.ops for v in op.results}
            assert all(v in defined for op in region.ops for v in op.operands)


def test_region_capturing_a_non_constant_is_a_compile_error():
    text = """func.func @main(%x: tensor<4xf32>, %t: tensor<f32>) -> tensor<4xf32> {
      %0 = "stablehlo.sort"(%x) <{dimension = 0 : i64}> ({
      ^bb0(%a: tensor<f32>, %b: tensor<f32>):
        %s = stablehlo.add %a, %t : tensor<f32>
        %c = stablehlo.compare LT, %s, %b, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
        stablehlo.return %c : tensor<i1>
      }) : (tensor<4xf32>) -> tensor<4xf32>
      return %0 : tensor<4xf32>
    }"""
    with pytest.raises(CompileError, match=r"region of op 'sort' at 2:12 uses %t .* at 4:14"):
        parse_stablehlo(text)


def test_internal_errors_never_escape_as_raw_exceptions():
    """Truncations and corruptions of exported modules (regions, captures, composites, dynamic
    ops) give fibergrid errors, never a KeyError/IndexError/ValueError of the parser's own."""
    from common.errors import Error
    f32, sym = jnp.float32, jax.export.symbolic_shape
    texts = [_exported(lambda x: jnp.sort(x, 1), jax.ShapeDtypeStruct((3, 5), f32)),
             _exported(lambda x: jnp.cumsum(x, 0), jax.ShapeDtypeStruct(sym("n, 2"), f32)),
             _exported(lambda x: lax.top_k(x, 2), jax.ShapeDtypeStruct((4, 5), f32)),
             _exported(lambda x: x[:, 2:5], jax.ShapeDtypeStruct(sym("b, 8"), f32))]
    rng = np.random.default_rng(7)
    for text in texts:
        mutants = [text[:end] for end in range(0, len(text), 37)]  # a cut in the #loc tail parses
        for _ in range(150):
            chars = list(text)
            for pos in rng.integers(0, len(chars), 3):
                chars[pos] = "%{}<>:,(x0@\"#1[]-"[rng.integers(0, 17)]
            mutants.append("".join(chars))
        for mutant in mutants:
            try:
                parse_stablehlo(mutant)
            except Error:
                pass


@pytest.mark.parametrize("f, args", [
    (lambda x, i: jnp.take(x, i, axis=1), (np.arange(12, dtype=np.float32).reshape(3, 4), np.int32(2))),
    (lambda x: jnp.take(x, 2, axis=0), (np.arange(15, dtype=np.float32).reshape(3, 5),)),
    (lambda x: jnp.median(x, 1), (_RNG.standard_normal((3, 5)).astype(np.float32),)),
], ids=["take_axis1", "take_axis0", "median"])
def test_gather_without_index_vector_dim(task, check, f, args):
    """The printer omits `index_vector_dim` when it is 0 (and empty dimension lists)."""
    assert "index_vector_dim" not in jax.jit(f).lower(*args).as_text()
    check(f, *args)
    run_against_jax(task, f, *args)


def test_gather_dimension_number_defaults():
    text = """func.func @main(%x: tensor<3x4xf32>, %i: tensor<1xi32>) -> tensor<3xf32> {
      %0 = "stablehlo.gather"(%x, %i) <{dimension_numbers = #stablehlo.gather<offset_dims = [0], collapsed_slice_dims = [1], start_index_map = [1]>, slice_sizes = array<i64: 3, 1>}> : (tensor<3x4xf32>, tensor<1xi32>) -> tensor<3xf32>
      return %0 : tensor<3xf32>
    }"""
    gather = parse_stablehlo(text).function("main").ops[0]
    assert gather.attrs["index_vector_dim"] == 0
    assert gather.attrs["operand_batching_dims"] == () == gather.attrs["start_indices_batching_dims"]


@pytest.mark.parametrize("f", [
    jax.scipy.special.erf, jnp.arcsin, jnp.arccos, jnp.sinh, jnp.cosh, jnp.arcsinh,
    lambda x: jnp.arccosh(x + 2), jnp.arctanh, lambda x: lax.top_k(x, 2),
], ids=["erf", "arcsin", "arccos", "sinh", "cosh", "arcsinh", "arccosh", "arctanh", "top_k"])
def test_composite_is_a_call_of_its_decomposition(task, f):
    x = _RNG.uniform(-0.9, 0.9, (4, 5)).astype(np.float32)
    text = _exported(f, jax.ShapeDtypeStruct(x.shape, x.dtype))
    assert "stablehlo.composite" in text
    module = _check_exported(task, f, [x])
    assert "call" in op_names(module)


def test_generic_composite():
    text = """func.func @main(%x: tensor<3xf32>) -> tensor<3xf32> {
      %0 = "stablehlo.composite"(%x) <{name = "my.double", decomposition = @twice, version = 1 : i32}> : (tensor<3xf32>) -> tensor<3xf32>
      return %0 : tensor<3xf32>
    }
    func.func private @twice(%a: tensor<3xf32>) -> tensor<3xf32> {
      %0 = stablehlo.add %a, %a : tensor<3xf32>
      return %0 : tensor<3xf32>
    }"""
    x = np.array([1, 2, 3], np.float32)
    np.testing.assert_array_equal(evaluate(parse_stablehlo(text), "main", [x])[0], 2 * x)
    with pytest.raises(CompileError, match="no decomposition"):
        parse_stablehlo(text.replace("decomposition = @twice, ", ""))


def test_big_dense_constants_parse():
    """A 15 MB module (MLP 784-1024-1024-10, weights as hex constants) parses to the right values.
    (Its speed — 0.1 s, from 5.4 s before the string token regex stopped matching hex blobs a
    character at a time — is a benchmark matter, not asserted here.)"""
    ws = [_RNG.standard_normal(s).astype(np.float32) for s in [(784, 1024), (1024, 1024), (1024, 10)]]

    def mlp(x):
        for w in ws[:-1]:
            x = jax.nn.relu(x @ w)
        return x @ ws[-1]

    x = _RNG.standard_normal((2, 784)).astype(np.float32)
    text = jax.jit(mlp).lower(x).as_text()
    assert len(text) > 14e6
    module = parse_stablehlo(text)
    np.testing.assert_allclose(evaluate(module, "main", [x])[0], np.asarray(jax.jit(mlp)(x)), rtol=1e-3, atol=1e-2)


def test_quantized_types_are_rewritten_into_storage_and_expressed_ops() -> None:
    text = """func.func @main(%x: tensor<3xf32>) -> tensor<3xf32> {
      %q = "stablehlo.uniform_quantize"(%x) : (tensor<3xf32>) -> tensor<3x!quant.uniform<i8<-100:100>:f32, 0.5:3>>
      %d = "stablehlo.uniform_dequantize"(%q) : (tensor<3x!quant.uniform<i8<-100:100>:f32, 0.5:3>>) -> tensor<3xf32>
      return %d : tensor<3xf32>
    }"""
    module = parse_stablehlo(text)
    assert "uniform_quantize" not in {op.name for op in module.function("main").ops}
    x = np.array([1.2, -80.0, 7.0], np.float32)  # -80 / 0.5 + 3 = -157 clamps to the range's -100
    np.testing.assert_allclose(evaluate(module, "main", [x])[0], [1.0, -51.5, 7.0])
