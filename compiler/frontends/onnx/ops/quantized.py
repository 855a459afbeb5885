"""Quantized integer ops: ConvInteger, QLinearConv and QLinearMatMul.

The integer products are computed exactly in float64 (sums of int8 x int8 products stay far
below 2^53; the backends' float64 convolution and matmul serve unchanged), then requantised as the
ONNX reference does: the multiplier `x_scale * w_scale / y_scale` in the scales' own type, the
accumulator times it in float64, plus the output zero point, rounded half to even and saturated.
"""

from __future__ import annotations

import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of, shape_of
from compiler.frontends.onnx.graph import Ctx
from compiler.frontends.onnx.ops.nn import convolve, matmul

F64 = np.dtype(np.float64)


def _centred(c: Ctx, x: Tensor, zero: Tensor | None, per_channel_shape: list[int] | None = None) -> Tensor:
    """x - zero in float64 (a 1-D zero point laid along `per_channel_shape` when given); known
    operands are computed here, so constant weights stay constants."""
    if zero is not None and per_channel_shape is not None and len(shape_of(zero)) == 1 and shape_of(zero)[0] > 1:
        zero = c.b.reshape(zero, per_channel_shape)
    if isinstance(x, np.ndarray) and (zero is None or isinstance(zero, np.ndarray)):
        return x.astype(F64) - (0 if zero is None else zero.astype(F64))
    y = c.b.convert(x, F64)
    return y if zero is None else c.b.binary("subtract", y, c.b.convert(zero, F64))


def _requantize(c: Ctx, acc: Tensor, multiplier: Tensor, zero: Tensor | None, out: np.dtype) -> Tensor:
    y = c.b.binary("multiply", acc, c.b.convert(multiplier, F64))
    if zero is not None:
        y = c.b.binary("add", y, c.b.convert(zero, F64))
    info = np.iinfo(out)
    y = c.b.unary("round_nearest_even", y)
    y = c.b.binary("minimum", c.b.binary("maximum", y, c.b.scalar(info.min, F64)), c.b.scalar(info.max, F64))
    return c.b.convert(y, out)


def _conv_integer(c: Ctx) -> list[Tensor]:
    x, w = c.input(0), c.input(1)
    rank = len(shape_of(w))
    acc = convolve(c, _centred(c, x, c.optional(2)), _centred(c, w, c.optional(3), [shape_of(w)[0]] + [1] * (rank - 1)), None)
    return [c.b.convert(acc, np.int32)]


def _qlinear_conv(c: Ctx) -> list[Tensor]:
    x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero = (c.optional(i) for i in range(8))
    rank = len(shape_of(w))
    acc = convolve(c, _centred(c, x, x_zero), _centred(c, w, w_zero, [shape_of(w)[0]] + [1] * (rank - 1)),
                   None if c.optional(8) is None else c.b.convert(c.optional(8), F64))
    if len(shape_of(w_scale)) == 1 and shape_of(w_scale)[0] > 1:  # per output channel
        w_scale = c.b.reshape(w_scale, [1, shape_of(w_scale)[0]] + [1] * (rank - 2))
    multiplier = c.b.binary("divide", c.b.binary("multiply", x_scale, w_scale), y_scale)
    return [_requantize(c, acc, multiplier, y_zero, dtype_of(x if y_zero is None else y_zero))]


def _qlinear_matmul(c: Ctx) -> list[Tensor]:
    a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = (c.optional(i) for i in range(8))
    acc = matmul(c, _centred(c, a, a_zero), _centred(c, b, b_zero))
    multiplier = c.b.binary("divide", c.b.binary("multiply", a_scale, b_scale), y_scale)
    return [_requantize(c, acc, multiplier, y_zero, dtype_of(a if y_zero is None else y_zero))]


HANDLERS = {"ConvInteger": _conv_integer, "QLinearConv": _qlinear_conv, "QLinearMatMul": _qlinear_matmul}
