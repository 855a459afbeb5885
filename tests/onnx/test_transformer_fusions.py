"""What torch.onnx exports of transformers become (compiler/passes/fusion.py, row_fusion.py,
matmul_activation.py): a vision transformer's patch embedding as a matmul whose output the
embedding reads in place, a layernorm whose output the next Gemm takes as a matrix in one row
region, a fused QKV projection's Split -> Reshape -> Transpose head split as one copy, BERT's
GELU as its matmul's epilogue. Each checked against the ONNX reference evaluator
on both CPU drivers (and Vulkan where present), and the dispatches counted."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from tests.conftest import device_per_driver

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

RNG = np.random.default_rng(3)


device = device_per_driver("local-sync", "local-task", "vulkan")


def _model(nodes, inputs: dict[str, tuple[int, ...]], outputs: dict[str, int], weights: dict[str, np.ndarray]) -> bytes:
    """A graph of `nodes` with float inputs of these shapes, outputs of these ranks."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in inputs.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, [None] * rank) for k, rank in outputs.items()],
        [helper.make_tensor(k, TensorProto.INT64 if v.dtype == np.int64 else TensorProto.FLOAT, v.shape, v.ravel())
         for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _run(device, data: bytes, feeds: dict[str, np.ndarray]) -> list[str]:
    """Runs the model against the reference evaluator; returns its kernels' names (their kind
    is the last word: matmul, conv, elementwise...)."""
    from onnx.reference import ReferenceEvaluator
    module = fg.load(data, device)
    got = module.named(**feeds)
    want = ReferenceEvaluator(onnx.load_from_string(data)).run(None, feeds)
    for (name, value), ref in zip(got.items(), want):
        assert value.shape == ref.shape, name
        np.testing.assert_allclose(value, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())), err_msg=name)
    return [k.name for k in module.compiled.kernels]


@pytest.mark.parametrize("size, patch", [((16, 16), 4), ((18, 17), 4), ((12, 12), 3)])
def test_patch_embedding_is_a_matmul(device, size, patch) -> None:
    """Conv with strides = kernel (ViT's patch embedding; an input that the patches do not
    tile exactly leaves its last rows and columns unread, as the convolution does)."""
    w = RNG.standard_normal((24, 3, patch, patch)).astype(np.float32)
    b = RNG.standard_normal(24).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[patch, patch], strides=[patch, patch])]
    data = _model(nodes, {"x": (2, 3, *size)}, {"y": 4}, {"w": w, "b": b})
    kernels = _run(device, data, {"x": RNG.standard_normal((2, 3, *size)).astype(np.float32)})
    assert not any(k.endswith("conv") for k in kernels) and sum(k.endswith("matmul") for k in kernels) == 1


def test_vit_embedding_reads_the_patch_matmul_in_place(device) -> None:
    """Conv -> Flatten(2) -> Transpose(1, 2) -> + position: the flatten merges the NCHW view of
    the matmul's NHWC output, so the sum reads it in place: patches, matmul, sum."""
    w = RNG.standard_normal((24, 3, 4, 4)).astype(np.float32)
    weights = {"w": w, "b": RNG.standard_normal(24).astype(np.float32),
               "pos": RNG.standard_normal((1, 16, 24)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Reshape", ["y", "flat"], ["f"]),
             helper.make_node("Transpose", ["f"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Add", ["t", "pos"], ["e"])]
    weights["flat"] = np.array([1, 24, 16], np.int64)
    kernels = _run(device, _model(nodes, {"x": (1, 3, 16, 16)}, {"e": 3}, weights),
                   {"x": RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)})
    assert len(kernels) == 3


def test_overlapping_windows_stay_a_convolution(device) -> None:
    w = RNG.standard_normal((8, 3, 4, 4)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[4, 4], strides=[2, 2])]
    kernels = _run(device, _model(nodes, {"x": (1, 3, 10, 10)}, {"y": 4}, {"w": w}),
                   {"x": RNG.standard_normal((1, 3, 10, 10)).astype(np.float32)})
    assert any(k.endswith("conv") for k in kernels)


def _layernorm_gemm() -> bytes:
    """GPT-2's ln -> Conv1D: LayerNormalization over (1, 6, 16), reshaped to (6, 16) for a Gemm."""
    weights = {"g": RNG.standard_normal(16).astype(np.float32), "beta": RNG.standard_normal(16).astype(np.float32),
               "w": RNG.standard_normal((16, 48)).astype(np.float32), "c": RNG.standard_normal(48).astype(np.float32),
               "flat": np.array([-1, 16], np.int64)}
    nodes = [helper.make_node("Add", ["x", "r"], ["h"]),
             helper.make_node("LayerNormalization", ["h", "g", "beta"], ["n"], axis=-1, epsilon=1e-5),
             helper.make_node("Reshape", ["n", "flat"], ["m"]),
             helper.make_node("Gemm", ["m", "w", "c"], ["y"])]
    return _model(nodes, {"x": (1, 6, 16), "r": (1, 6, 16)}, {"y": 2, "h": 3}, weights)


def test_layernorm_read_as_a_matrix_is_one_row_region(device) -> None:
    """The residual sum (also a result) and the layernorm as one row region, the Gemm reading
    its output in place: two kernels."""
    feeds = {k: RNG.standard_normal((1, 6, 16)).astype(np.float32) for k in ("x", "r")}
    kernels = _run(device, _layernorm_gemm(), feeds)
    assert len(kernels) == 2 and kernels[-1].endswith("matmul")


def _head_split(heads: int, dim: int) -> bytes:
    """GPT-2's c_attn output (1, 5, 3 * heads * dim) Split into q, k, v, each Reshape'd to
    (1, 5, heads, dim) and transposed to (1, heads, 5, dim)."""
    width = heads * dim
    weights = {"split": np.array([width] * 3, np.int64), "shape": np.array([1, 5, heads, dim], np.int64)}
    nodes = [helper.make_node("Split", ["x", "split"], ["q", "k", "v"], axis=2)]
    for name in "qkv":
        nodes += [helper.make_node("Reshape", [name, "shape"], [f"{name}4"]),
                  helper.make_node("Transpose", [f"{name}4"], [f"{name}t"], perm=[0, 2, 1, 3])]
    return _model(nodes, {"x": (1, 5, 3 * width)}, {"qt": 4, "kt": 4, "vt": 4}, weights)


def test_split_heads_is_one_copy_each(device) -> None:
    kernels = _run(device, _head_split(3, 8), {"x": RNG.standard_normal((1, 5, 72)).astype(np.float32)})
    assert len(kernels) == 3


def test_reshape_merging_dims_of_an_expression() -> None:
    """A reshape that merges dims a load reads out of order (no affine index for it) still goes
    through a buffer; one that merges them in order reads the buffer in place; a split after a
    transpose stays right."""
    weights = {"merge": np.array([6, 20], np.int64), "split": np.array([3, 2, 4, 5], np.int64),
               "inorder": np.array([2, 60], np.int64)}
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
             helper.make_node("Relu", ["t"], ["r"]),
             helper.make_node("Reshape", ["r", "merge"], ["m"]),
             helper.make_node("Reshape", ["t", "split"], ["s"]),
             helper.make_node("Sigmoid", ["x"], ["g"]),
             helper.make_node("Reshape", ["g", "inorder"], ["o"])]
    data = _model(nodes, {"x": (2, 3, 20)}, {"m": 2, "s": 4, "o": 2}, weights)
    _run(fg.create_device("local-sync"), data, {"x": RNG.standard_normal((2, 3, 20)).astype(np.float32)})


def test_bert_mlp_gelu_joins_its_matmul(device) -> None:
    """BERT's intermediate dense + exact GELU as torch exports it (Div, Erf, Add, Mul, Mul)
    then the output dense: the GELU is the first matmul's epilogue: two kernels."""
    weights = {"w1": (RNG.standard_normal((16, 64)) / 4).astype(np.float32), "b1": RNG.standard_normal(64).astype(np.float32),
               "w2": (RNG.standard_normal((64, 16)) / 8).astype(np.float32), "sqrt2": np.array(np.sqrt(2), np.float32),
               "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m"]), helper.make_node("Add", ["b1", "m"], ["h"]),
             helper.make_node("Div", ["h", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["h", "a"], ["p"]),
             helper.make_node("Mul", ["p", "half"], ["g"]), helper.make_node("MatMul", ["g", "w2"], ["y"])]
    kernels = _run(device, _model(nodes, {"x": (2, 6, 16)}, {"y": 3}, weights),
                   {"x": RNG.standard_normal((2, 6, 16)).astype(np.float32)})
    assert len(kernels) == 2

