"""The ai.onnx.ml ops that are plain tensor ops: Binarizer and ArrayFeatureExtractor (the
reference's semantics, which are ONNX Runtime's: a 1-D input gives one row)."""

from __future__ import annotations

import math

import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of, shape_of
from compiler.frontends.onnx.graph import Ctx
from compiler.frontends.onnx.ops.tensor import normalize_indices


def _binarizer(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    return [c.b.convert(c.b.compare("GT", x, c.b.scalar(c.attr("threshold", 0.0), dtype_of(x))), dtype_of(x))]


def _array_feature_extractor(c: Ctx) -> list[Tensor]:
    x, idx = c.input(0), c.input(1)
    xs = shape_of(x)
    count = math.prod(shape_of(idx))
    flat = normalize_indices(c, c.b.reshape(idx, [count]), xs[-1])
    if isinstance(x, np.ndarray) and isinstance(flat, np.ndarray):
        y = np.take(x, flat, len(xs) - 1)
    else:
        y = c.b.take(x, flat, len(xs) - 1)
    return [c.b.reshape(y, [1, count] if len(xs) == 1 else [*xs[:-1], count])]


HANDLERS = {"ai.onnx.ml.Binarizer": _binarizer, "ai.onnx.ml.ArrayFeatureExtractor": _array_feature_extractor}
