"""CNN layers as torch.onnx exports them, against onnx's reference evaluator: zero Pads folded
into the next convolution's padding (MobileNetV2's TF-style padding), bias + Clip(0, 6) and
bias + residual Add + Relu fused into the convolutions, max pooling with the channels last."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from compiler import kernel_ir as kir

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

RNG = np.random.default_rng(3)


def _init(name: str, a: np.ndarray) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT64 if a.dtype == np.int64 else TensorProto.FLOAT, a.shape, a.ravel())


def _block(pad_value: float) -> bytes:
    """Pad -> depthwise Conv (stride 2) + bias -> Clip(0, 6) -> Pad -> Conv 3x3 + bias -> Add the
    pooled input -> Relu, over an 8-channel NCHW image."""
    c = 8
    arrays = {
        "pads": np.array([0, 0, 1, 0, 0, 0, 2, 1], np.int64), "zero": np.array(pad_value, np.float32),
        "wd": RNG.standard_normal((c, 1, 3, 3)).astype(np.float32), "bd": RNG.standard_normal(c).astype(np.float32),
        "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
        "pads2": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
        "w": (RNG.standard_normal((c, c, 3, 3)) / 6).astype(np.float32), "b": RNG.standard_normal(c).astype(np.float32),
    }
    nodes = [
        helper.make_node("Pad", ["x", "pads", "zero"], ["xp"]),
        helper.make_node("Conv", ["xp", "wd", "bd"], ["d"], group=c, strides=[2, 2]),
        helper.make_node("Clip", ["d", "lo", "hi"], ["d6"]),
        helper.make_node("Pad", ["d6", "pads2"], ["dp"]),
        helper.make_node("Conv", ["dp", "w", "b"], ["y0"]),
        helper.make_node("MaxPool", ["x"], ["pooled"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["y0", "pooled"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c, 13, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, c, 7, 6])],
                              [_init(k, v) for k, v in arrays.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("pad_value", [0.0, 0.5])
def test_padded_depthwise_relu6_and_residual_block(pad_value: float) -> None:
    data = _block(pad_value)
    x = (RNG.standard_normal((2, 8, 13, 12)) * 3).astype(np.float32)
    want = ReferenceEvaluator(onnx.load_from_string(data)).run(None, {"x": x})[0]
    module = fg.load(data, "local-task")
    np.testing.assert_allclose(module(x), want, rtol=1e-4, atol=1e-4)
    convs = [r.body for r in module.compiled.regions if isinstance(r.body, kir.ConvBody)]
    assert [b.epilogue for b in convs] == [("bias_add", "relu", "minimum:6.0"), ("bias_add", "residual_add", "relu")]
    folded = convs[0].padding == ((1, 2), (0, 1))
    assert folded == (pad_value == 0.0)  # a Pad of other values stays a Pad
    assert convs[1].padding == ((1, 1), (1, 1))  # its Pad has no value: zeros, folded


def _stem() -> bytes:
    """ResNet's stem: Conv 7x7 stride 2 over a 3-channel NCHW image, + bias, Relu."""
    w = (RNG.standard_normal((16, 3, 7, 7)) / 10).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[2, 2], pads=[3, 3, 3, 3]),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 30, 27])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 15, 14])],
                              [_init("w", w), _init("b", RNG.standard_normal(16).astype(np.float32))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("driver", ["local-sync", "vulkan"])
def test_stem_reads_the_nchw_image_in_place(driver: str) -> None:
    """No transpose of the input: the convolution reads the channels-first image itself (the
    portable lowering on Vulkan too)."""
    if driver not in fg.available_drivers():
        pytest.skip(f"no {driver} device here")
    data = _stem()
    x = RNG.standard_normal((1, 3, 30, 27)).astype(np.float32)
    want = ReferenceEvaluator(onnx.load_from_string(data)).run(None, {"x": x})[0]
    device = fg.create_device(driver)
    try:
        module = fg.load(data, device)
        np.testing.assert_allclose(module(x), want, rtol=1e-4, atol=1e-4)
        bodies = [r.body for r in module.compiled.regions]
        assert len(bodies) == 2 and bodies[0].channels_first  # the conv, then the output's transpose
    finally:
        device.close()
