"""Dispatch names and work: each region of a compiled JAX model is named after the StableHLO ops
fused into it (with JAX's Python line where it printed debug locations), and its flops follow
from the kernel IR."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.pipeline import compile_module
from fibergrid.profile.sources import kernel_sources


@pytest.fixture(scope="module")
def jax():
    return pytest.importorskip("jax")


def _sources(jax, f, *args, debug_info=True):
    text = jax.jit(f).lower(*args).as_text(debug_info=debug_info)
    compiled = compile_module(text)
    return compiled, kernel_sources(text, compiled)


def test_regions_are_named_after_their_ops_and_python_lines(jax):
    jnp = jax.numpy
    w = np.ones((8, 16), np.float32)

    def f(x):
        h = jnp.maximum(x @ w + 1.0, 0.0)  # the matmul; add and maximum fold in or follow it
        return jnp.tanh(h).sum(axis=1), jnp.sort(h, axis=1)

    compiled, sources = _sources(jax, f, np.ones((4, 8), np.float32))
    assert set(sources) == {k.name for k in compiled.kernels}
    by_kind = {s.kind: s for s in sources.values()}
    assert by_kind["matmul"].label.startswith("dot_general@")
    assert by_kind["matmul"].flops == 2 * 4 * 8 * 16
    assert "test_sources.py:" in by_kind["matmul"].label  # JAX's location: this file's line
    assert by_kind["sort"].label.startswith("sort@")
    reduction = by_kind["reduction"]
    assert reduction.label.startswith("reduce") and "tanh" in reduction.label
    # one tanh and one add per element of the 4x16 reduced space
    assert reduction.flops == 4 * 16 * 2
    assert all(op.split("@")[0] in {"dot_general", "add", "maximum", "tanh", "reduce", "sort", "constant",
                                    "broadcast_in_dim"} for s in sources.values() for op in s.ops)


def test_without_debug_info_names_carry_source_lines_only(jax):
    compiled, sources = _sources(jax, lambda x: x * 2.0 + 1.0, np.ones((3, 5), np.float32), debug_info=False)
    (source,) = sources.values()
    assert source.label.split("@")[0] in ("multiply+add", "add+multiply") and "(" not in source.label
    assert source.flops == 2 * 15


def test_naming_never_fails_the_profile():
    compiled = type("C", (), {"name": "main", "shapes": ((2,),), "kernels": ()})()
    assert kernel_sources("this is not StableHLO", compiled) == {}


def test_onnx_regions_are_named_after_their_nodes():
    """ONNX ops carry their node's index: regions are named '<op type> <node name>'."""
    from pathlib import Path

    pytest.importorskip("onnx")
    from compiler.pipeline import compile_function, parse

    data = (Path(__file__).resolve().parents[1] / "onnx" / "models" / "resnet_tiny.onnx").read_bytes()
    compiled = compile_function(parse(data), "main", [(1, 3, 32, 32)])
    sources = kernel_sources(data, compiled)
    assert set(sources) == {k.name for k in compiled.kernels}
    convs = [s for s in sources.values() if s.kind == "conv"]
    assert convs and all(s.label.startswith("Conv /inner/resnet/") for s in convs)
    assert all(s.flops and s.flops > 0 for s in convs)
    gemm = [s for s in sources.values() if "Gemm" in s.label]
    assert gemm, sorted(s.label for s in sources.values())
