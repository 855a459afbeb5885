"""ONNX graphs with a dim_param batch reuse the dynamic-dim mechanism (compiler/dynamic.py):
compiled once for every batch size where the body does not need the batch's value (shape
subgraphs folded into a Reshape included), per batch size where it does."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(11)
W1 = RNG.standard_normal((16, 32)).astype(np.float32)
B1 = RNG.standard_normal(32).astype(np.float32)
W2 = RNG.standard_normal((32, 10)).astype(np.float32)


def _model(nodes, output_shape) -> bytes:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        [numpy_helper.from_array(a, n) for a, n in ((W1, "w1"), (B1, "b1"), (W2, "w2"))]
        + [numpy_helper.from_array(np.array(v, np.int64), n) for v, n in ((0, "zero"), ([0], "axes0"), ([-1], "minus1"))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_dim_param_batch_compiles_once(compiles) -> None:
    """MLP, then a Shape -> Gather -> Concat -> Reshape chain (folded per size: the same
    reshape at every size), then Softmax."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m"]), helper.make_node("Add", ["m", "b1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["z"]),
        helper.make_node("Shape", ["z"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["z", "shape"], ["z2"]), helper.make_node("Softmax", ["z2"], ["y"], axis=-1),
    ]
    module = fg.load(_model(nodes, ["batch", 10]), "local-task")
    assert module.main.dynamic and compiles[0] == 1
    for batch in [1, 2, 3, 5, 8, 13, 21, 34, 55, 89]:
        x = RNG.standard_normal((batch, 16)).astype(np.float32)
        want = _softmax(np.maximum(x @ W1 + B1, 0) @ W2)
        np.testing.assert_allclose(module(x=x), want, rtol=1e-5, atol=1e-6)
    assert compiles[0] == 1


def test_batch_as_a_value_compiles_per_batch(compiles) -> None:
    """y = x @ w1 * batch: the body needs the batch's value, so it is compiled per batch size."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m"]), helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Cast", ["n"], ["f"], to=TensorProto.FLOAT), helper.make_node("Mul", ["m", "f"], ["y"]),
    ]
    module = fg.load(_model(nodes, ["batch", 32]), "local-task")
    assert not module.main.dynamic and "changes with the dynamic dim" in module.main.dynamic_fallback
    for batch in (1, 4, 4, 6):
        x = RNG.standard_normal((batch, 16)).astype(np.float32)
        np.testing.assert_allclose(module(x=x), x @ W1 * batch, rtol=1e-5, atol=1e-5)
    assert compiles[0] == 3
