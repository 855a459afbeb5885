"""ONNX's narrow element types (float8, float4, int4, int2; compiler/frontends/onnx/narrow.py)
against onnx's reference evaluator: every float16 value and float32/float64 edge cases (ties,
subnormals, overflow, NaN, infinities) cast to each type, saturating or not; every code of each
type cast back; Quantize/DequantizeLinear through them; and data movement on their bytes."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg

onnx = pytest.importorskip("onnx")
ml_dtypes = pytest.importorskip("ml_dtypes")
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN and overflow casts, on purpose

FLOAT8 = ["FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ"]
OTHERS = ["FLOAT4E2M1", "FLOAT8E8M0", "INT4", "UINT4", "INT2", "UINT2"]


def _edges(dtype) -> np.ndarray:
    """Every float16 value, and float32/64 values around each narrow type's rounding boundaries."""
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(dtype)
    rng = np.random.default_rng(0)
    wide = rng.standard_normal(4096) * np.exp2(rng.integers(-30, 30, 4096))
    codes = np.concatenate([np.arange(256, dtype=np.uint8).view(getattr(ml_dtypes, t)).astype(np.float64)
                            for t in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")])
    codes = codes[np.isfinite(codes)]
    mids = (codes[:, None] + codes[None, :64]).ravel() / 2  # ties and near-ties between codes
    near = np.concatenate([np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf), mids])
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, 5e-324, 1e-45, 448, 464, 480, 240, 57344, 61440, 6, 7])
    return np.concatenate([halves, wide.astype(dtype), near.astype(dtype), special.astype(dtype)])


def _run_both(nodes, inputs, outputs, feeds, opset=25):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    expected = ReferenceEvaluator(model).run(None, feeds)
    module = fg.load(model.SerializeToString(), "local-sync")
    raw = [x.view(np.uint8) if x.dtype in _narrow() else x for x in feeds.values()]
    got = module(*raw)
    got = list(got) if isinstance(got, tuple) else [got]
    return expected, got


def _narrow():
    return {np.dtype(getattr(ml_dtypes, n)) for n in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
                                                       "float8_e8m0fnu", "float4_e2m1fn", "int4", "uint4", "int2", "uint2")}


@pytest.mark.parametrize("source", [TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.DOUBLE])
def test_cast_to_narrow_types_bit_exact(source):
    np_type = helper.tensor_dtype_to_np_dtype(source)
    x = _edges(np_type)
    nodes, outputs = [], []
    targets = [(t, s) for t in FLOAT8 for s in (1, 0)] + [(t, 1) for t in OTHERS]
    for k, (target, saturate) in enumerate(targets):
        attrs = {"saturate": saturate} if target in FLOAT8 else {}
        nodes.append(helper.make_node("Cast", ["x"], [f"y{k}"], to=getattr(TensorProto, target), **attrs))
        outputs.append(helper.make_tensor_value_info(f"y{k}", getattr(TensorProto, target), [len(x)]))
    expected, got = _run_both(nodes, [helper.make_tensor_value_info("x", source, [len(x)])], outputs, {"x": x})
    for (target, saturate), e, g in zip(targets, expected, got):
        bits = e.view(np.uint8)
        if target == "FLOAT8E8M0" and source == TensorProto.DOUBLE:
            # e8m0 rounds through float32, and the CPU backend flushes float32 subnormals to zero
            tiny = np.abs(x) < np.finfo(np.float32).tiny
            g, bits, x = g[~tiny], bits[~tiny], x[~tiny]
        wrong = np.flatnonzero(g != bits)
        assert wrong.size == 0, (target, saturate, x[wrong[:5]], g[wrong[:5]], bits[wrong[:5]])


@pytest.mark.parametrize("target", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT8,
                                    TensorProto.FLOAT8E5M2])
def test_cast_from_every_code(target):
    names = FLOAT8 + OTHERS
    feeds, inputs, nodes, outputs = {}, [], [], []
    for k, name in enumerate(names):
        dtype = helper.tensor_dtype_to_np_dtype(getattr(TensorProto, name))
        bits = 8 if "8" in name else 4 if "4" in name else 2
        feeds[f"x{k}"] = np.arange(1 << bits, dtype=np.uint8).view(dtype)
        inputs.append(helper.make_tensor_value_info(f"x{k}", getattr(TensorProto, name), [1 << bits]))
        nodes.append(helper.make_node("Cast", [f"x{k}"], [f"y{k}"], to=target))
        outputs.append(helper.make_tensor_value_info(f"y{k}", target, [1 << bits]))
    with np.errstate(all="ignore"):
        expected, got = _run_both(nodes, inputs, outputs, feeds)
    for name, e, g in zip(names, expected, got):
        if target == TensorProto.FLOAT8E5M2:
            g = g.view(e.dtype)
        if target == TensorProto.INT8:  # a NaN or an out-of-range value is undefined: compare the rest
            finite = np.isfinite(feeds[f"x{names.index(name)}"].astype(np.float64))
            finite &= np.abs(feeds[f"x{names.index(name)}"].astype(np.float64)) < 128
            e, g = e[finite], g[finite]
        np.testing.assert_array_equal(g.astype(np.float64), e.astype(np.float64), err_msg=name)


@pytest.mark.parametrize("target", ["INT4", "UINT4", "INT2", "FLOAT8E4M3FN", "FLOAT8E5M2", "FLOAT4E2M1"])
def test_quantize_dequantize_round_trip(target):
    elem = getattr(TensorProto, target)
    x = np.linspace(-30, 30, 121, dtype=np.float32).reshape(11, 11)
    scale = np.float32(0.37)
    zero = np.zeros((), helper.tensor_dtype_to_np_dtype(elem))
    if target in ("UINT4",):
        zero = np.array(3, helper.tensor_dtype_to_np_dtype(elem))
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("Transpose", ["q"], ["t"]),  # data movement on the bytes
             helper.make_node("DequantizeLinear", ["t", "s", "z"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [11, 11]),
              helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
              helper.make_tensor_value_info("z", elem, [])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [11, 11]),
               helper.make_tensor_value_info("t", elem, [11, 11])]
    expected, got = _run_both(nodes, inputs, outputs, {"x": x, "s": np.asarray(scale), "z": zero})
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1].view(np.uint8))


def test_arithmetic_on_a_narrow_type_is_refused():
    nodes = [helper.make_node("Add", ["x", "x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT8E4M3FN, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT8E4M3FN, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.raises(fg.Error, match="float8_e4m3fn"):
        fg.load(model.SerializeToString(), "local-sync")(np.zeros(4, np.uint8))
