"""Elementwise ONNX ops: arithmetic, comparisons, logic, activations, Cast, Where, Clip.

Each maps onto the IR's elementwise ops (compiler/ir.py ELEMENTWISE) with numpy broadcasting made
explicit (`broadcast_in_dim`); activations are written as the formulas the ONNX spec gives.
"""

from __future__ import annotations

import numpy as np

from compiler.frontends.onnx import narrow
from compiler.frontends.onnx.builder import Tensor, dtype_of, shape_of
from compiler.frontends.onnx.graph import Ctx, Handler
from compiler.ir import Value


def _unary(name: str) -> Handler:
    return lambda c: [c.b.unary(name, c.input(0))]


def _binary(name: str) -> Handler:
    def handler(c: Ctx) -> list[Tensor]:
        a, b = c.input(0), c.input(1)
        if dtype_of(a) != dtype_of(b):
            raise c.error(f"operand types differ: {dtype_of(a)} and {dtype_of(b)}")
        if name == "add":
            biased = _bias_add(c, a, b) if isinstance(a, Value) else None
            if biased is None and isinstance(b, Value):
                biased = _bias_add(c, b, a)
            if biased is not None:
                return [biased]
        return [c.b.binary(name, a, b)]
    return handler


def _bias_add(c: Ctx, product: Value, bias: Tensor) -> Tensor | None:
    """MatMul + bias vector: the add on the MatMul's 2-D rows (see Builder.matmul_rows)."""
    rows = c.b.matmul_rows.get(product)
    if rows is None or shape_of(bias) not in ((shape_of(product)[-1],), (1, shape_of(product)[-1])):
        return None
    n = shape_of(product)[-1]
    return c.b.view(c.b.binary("add", rows, c.b.reshape(bias, [n])), shape_of(product))


def _variadic(name: str) -> Handler:
    def handler(c: Ctx) -> list[Tensor]:
        xs = [x for x in c.inputs if x is not None]
        out = xs[0]
        for x in xs[1:]:
            out = c.b.binary(name, out, x)
        return [out]
    return handler


def _mean(c: Ctx) -> list[Tensor]:
    xs = [x for x in c.inputs if x is not None]
    total = _variadic("add")(c)[0]
    return [c.b.binary("divide", total, c.b.scalar(len(xs), dtype_of(total)))]


def _compare(direction: str) -> Handler:
    return lambda c: [c.b.compare(direction, c.input(0), c.input(1))]


def _logic(name: str) -> Handler:
    return lambda c: [c.b.binary(name, c.input(0), c.input(1))]


def _const(c: Ctx, value: float, like: Tensor) -> np.ndarray:
    return c.b.scalar(value, dtype_of(like))


def _pow(c: Ctx) -> list[Tensor]:
    x, y = c.input(0), c.input(1)
    if isinstance(y, np.ndarray) and y.size == 1 and dtype_of(x).kind == "f" and not isinstance(x, np.ndarray):
        e = float(y.reshape(-1)[0])  # small constant exponents (GPT-2's x ** 3) as products:
        if e in (1.0, 2.0, 3.0, 4.0):  # a general pow costs an exp and a log per element
            out = x
            for _ in range(int(e) - 1):
                out = c.b.binary("multiply", out, x)
            return [c.b.broadcast(out, np.broadcast_shapes(shape_of(x), y.shape))]
        if e == 0.5:
            return [c.b.broadcast(c.b.unary("sqrt", x), np.broadcast_shapes(shape_of(x), y.shape))]
    if dtype_of(x).kind in "iu":  # the backend's power is float-only: exact in float64 for int32 ranges
        p = c.b.binary("power", c.b.convert(x, np.float64), c.b.convert(y, np.float64))
        return [c.b.convert(c.b.unary("round_nearest_even", p), dtype_of(x))]
    return [c.b.binary("power", x, c.b.convert(y, dtype_of(x)))]


def _mod(c: Ctx) -> list[Tensor]:
    a, b = c.input(0), c.input(1)
    r = c.b.binary("remainder", a, b)
    if c.attr("fmod", 0):
        return [r]
    # Python's (numpy's) mod: the remainder takes the divisor's sign
    zero = _const(c, 0, r)
    fix = c.b.binary("and", c.b.compare("NE", r, zero),
                     c.b.compare("NE", c.b.compare("LT", r, zero), c.b.compare("LT", b, zero)))
    return [c.b.select(fix, c.b.binary("add", r, b), r)]


def _reciprocal(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    return [c.b.binary("divide", _const(c, 1, x), x)]


def _relu(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    return [c.b.binary("maximum", x, _const(c, 0, x))]


def _leaky_relu(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    alpha = _const(c, c.attr("alpha", 0.01), x)
    return [c.b.select(c.b.compare("GE", x, _const(c, 0, x)), x, c.b.binary("multiply", x, alpha))]


def _prelu(c: Ctx) -> list[Tensor]:
    x, slope = c.input(0), c.input(1)
    return [c.b.select(c.b.compare("GE", x, _const(c, 0, x)), x, c.b.binary("multiply", x, slope))]


def _elu(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    neg = c.b.binary("multiply", c.b.unary("exponential_minus_one", x), _const(c, c.attr("alpha", 1.0), x))
    return [c.b.select(c.b.compare("GT", x, _const(c, 0, x)), x, neg)]


def _selu(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    alpha, gamma = c.attr("alpha", 1.67326319217681884765625), c.attr("gamma", 1.05070102214813232421875)
    neg = c.b.binary("multiply", c.b.unary("exponential_minus_one", x), _const(c, alpha, x))
    return [c.b.binary("multiply", c.b.select(c.b.compare("GT", x, _const(c, 0, x)), x, neg), _const(c, gamma, x))]


def _celu(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    alpha = _const(c, c.attr("alpha", 1.0), x)
    neg = c.b.binary("multiply", c.b.unary("exponential_minus_one", c.b.binary("divide", x, alpha)), alpha)
    return [c.b.binary("add", c.b.binary("maximum", x, _const(c, 0, x)), c.b.binary("minimum", neg, _const(c, 0, x)))]


def _thresholded_relu(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    return [c.b.select(c.b.compare("GT", x, _const(c, c.attr("alpha", 1.0), x)), x, _const(c, 0, x))]


def softplus(c: Ctx, x: Tensor) -> Tensor:
    """log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|))."""
    tail = c.b.unary("log_plus_one", c.b.unary("exponential", c.b.unary("negate", c.b.unary("abs", x))))
    return c.b.binary("add", c.b.binary("maximum", x, _const(c, 0, x)), tail)


def _softsign(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    return [c.b.binary("divide", x, c.b.binary("add", c.b.unary("abs", x), _const(c, 1, x)))]


def _hard_sigmoid(c: Ctx, x: Tensor, alpha: float, beta: float) -> Tensor:
    y = c.b.binary("add", c.b.binary("multiply", x, _const(c, alpha, x)), _const(c, beta, x))
    return c.b.binary("minimum", c.b.binary("maximum", y, _const(c, 0, x)), _const(c, 1, x))


def _mish(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    return [c.b.binary("multiply", x, c.b.unary("tanh", softplus(c, x)))]


def gelu(c: Ctx, x: Tensor, approximate: str) -> Tensor:
    if approximate == "tanh":
        inner = c.b.binary("multiply", c.b.binary("add", x, c.b.binary(
            "multiply", _const(c, 0.044715, x), c.b.binary("multiply", x, c.b.binary("multiply", x, x)))),
            _const(c, np.sqrt(2 / np.pi), x))
        half = c.b.binary("add", c.b.unary("tanh", inner), _const(c, 1, x))
    else:
        half = c.b.binary("add", c.b.unary("erf", c.b.binary("multiply", x, _const(c, 1 / np.sqrt(2), x))), _const(c, 1, x))
    return c.b.binary("multiply", c.b.binary("multiply", x, _const(c, 0.5, x)), half)


def _clip(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    lo, hi = c.optional(1), c.optional(2)
    if c.opset < 11:  # attributes then
        lo = c.b.scalar(c.attr("min", -np.inf), dtype_of(x))
        hi = c.b.scalar(c.attr("max", np.inf), dtype_of(x))
    if lo is not None:
        x = c.b.binary("maximum", x, lo)
    if hi is not None:
        x = c.b.binary("minimum", x, hi)
    return [x]


def _cast(c: Ctx) -> list[Tensor]:
    from compiler.frontends.onnx.model import element_type
    to = element_type(c.attr("to"), c.where)
    # float -> int truncates (out of range is undefined in ONNX); narrow types: narrow.py
    return [narrow.cast(c.b, c.input(0), to, bool(c.attr("saturate", 1)), c.attr("round_mode", "up"))]


def _cast_like(c: Ctx) -> list[Tensor]:
    return [narrow.cast(c.b, c.input(0), dtype_of(c.input(1)), bool(c.attr("saturate", 1)), c.attr("round_mode", "up"))]


def _where(c: Ctx) -> list[Tensor]:
    return [c.b.select(c.input(0), c.input(1), c.input(2))]


def _is_nan(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    return [c.b.compare("NE", x, x)]


def _is_inf(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    pos, neg = c.attr("detect_positive", 1), c.attr("detect_negative", 1)
    out = c.b.full(False, shape_of(x), np.bool_)
    if pos:
        out = c.b.binary("or", out, c.b.compare("EQ", x, _const(c, np.inf, x)))
    if neg:
        out = c.b.binary("or", out, c.b.compare("EQ", x, _const(c, -np.inf, x)))
    return [out]


def _not(c: Ctx) -> list[Tensor]:
    return [c.b.unary("not", c.input(0))]


def _bit_shift(c: Ctx) -> list[Tensor]:
    x = c.input(0)  # signed types (newer opsets) shift right arithmetically, as numpy does
    name = "shift_left" if c.attr("direction") == "LEFT" else (
        "shift_right_arithmetic" if dtype_of(x).kind == "i" else "shift_right_logical")
    return [c.b.binary(name, c.input(0), c.input(1))]


def _sign(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    if dtype_of(x).kind == "u":
        return [c.b.convert(c.b.compare("NE", x, _const(c, 0, x)), dtype_of(x))]
    return [c.b.unary("sign", x)]


def _round(c: Ctx) -> list[Tensor]:
    return [c.b.unary("round_nearest_even", c.input(0))]


def _shrink(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    bias, lambd = _const(c, c.attr("bias", 0.0), x), _const(c, c.attr("lambd", 0.5), x)
    low = c.b.select(c.b.compare("LT", x, c.b.unary("negate", lambd)), c.b.binary("add", x, bias), _const(c, 0, x))
    return [c.b.select(c.b.compare("GT", x, lambd), c.b.binary("subtract", x, bias), low)]


def _bit_cast(c: Ctx) -> list[Tensor]:
    from compiler.frontends.onnx.model import element_type
    x = c.input(0)
    to = element_type(c.attr("to"), c.where)
    if to.itemsize != dtype_of(x).itemsize:
        raise c.error(f"cannot bit-cast {dtype_of(x)} to {to}: the widths differ")
    if np.dtype(np.bool_) in (to, dtype_of(x)):  # a bool's byte is 0 or 1 (the backend has no i1 bitcast)
        return [c.b.convert(x, to)]
    return [c.b.emit("bitcast_convert", [x], shape_of(x), to)]


def _per_axis(c: Ctx, v: Tensor, x: Tensor) -> Tensor:
    """A quantization scale or zero point shaped to broadcast over x: a scalar as is, a 1-D one
    along `axis`, a blocked one (`block_size`) repeated block_size times along `axis`."""
    rank = len(shape_of(x))
    if not shape_of(v) or rank == 0:
        return c.b.reshape(v, [])
    axis = c.axis(c.attr("axis", 1), rank)
    block = c.attr("block_size", 0)
    if block:
        index = np.arange(shape_of(x)[axis]) // block
        return c.b.take(v, index.astype(np.int64), axis)
    return c.b.reshape(v, [shape_of(v)[0] if i == axis else 1 for i in range(rank)])


def _quantize(c: Ctx) -> list[Tensor]:
    from compiler.frontends.onnx.model import element_type
    x, scale, zero = c.input(0), c.input(1), c.optional(2)
    if zero is not None:
        to = dtype_of(zero)
    elif c.attr("output_dtype", 0):
        to = element_type(c.attr("output_dtype"), c.where)
    else:
        to = np.dtype(np.uint8)
    f = np.float32 if dtype_of(x) != np.float64 else np.float64
    y = c.b.binary("divide", c.b.convert(x, f), c.b.convert(_per_axis(c, scale, x), f))
    if to.kind not in "iu" and not narrow.is_narrow(to):
        raise c.error(f"quantizing to {to} is not supported (integer, float8 and float4 types are)")
    if narrow.is_narrow(to) and narrow.formats()[to].is_float:  # float8: a saturating cast; float4 adds its zero
        if zero is not None and not narrow.formats()[to].float8:
            y = c.b.binary("add", y, narrow.cast(c.b, _per_axis(c, zero, x), f))
        return [narrow.cast(c.b, y, to, bool(c.attr("saturate", 1)))]
    y = c.b.unary("round_nearest_even", y)
    if zero is not None:
        y = c.b.binary("add", y, narrow.cast(c.b, _per_axis(c, zero, x), f))
    low, high = narrow.integer_range(to)
    y = c.b.binary("minimum", c.b.binary("maximum", y, c.b.scalar(low, f)), c.b.scalar(high, f))
    return [narrow.cast(c.b, c.b.convert(y, np.int32), to)]


def _dequantize(c: Ctx) -> list[Tensor]:
    from compiler.frontends.onnx.model import element_type
    x, scale, zero = c.input(0), c.input(1), c.optional(2)
    out = element_type(c.attr("output_dtype"), c.where) if c.attr("output_dtype", 0) else dtype_of(scale)
    f = np.float64 if out == np.float64 else np.float32
    y = narrow.cast(c.b, x, f)
    if zero is not None and not (narrow.is_narrow(dtype_of(x)) and narrow.formats()[dtype_of(x)].is_float):
        y = c.b.binary("subtract", y, narrow.cast(c.b, _per_axis(c, zero, x), f))  # (float8/4: no zero point)
    return [c.b.convert(c.b.binary("multiply", y, c.b.convert(_per_axis(c, scale, x), f)), out)]


HANDLERS: dict[str, Handler] = {
    **{op: _unary(ir) for op, ir in {
        "Abs": "abs", "Neg": "negate", "Exp": "exponential", "Log": "log", "Sqrt": "sqrt", "Floor": "floor",
        "Ceil": "ceil", "Sin": "sine", "Cos": "cosine", "Tan": "tan", "Asin": "asin", "Acos": "acos",
        "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh", "Asinh": "asinh", "Acosh": "acosh", "Atanh": "atanh",
        "Tanh": "tanh", "Sigmoid": "logistic", "Erf": "erf", "BitwiseNot": "not"}.items()},
    **{op: _binary(ir) for op, ir in {"Add": "add", "Sub": "subtract", "Mul": "multiply", "Div": "divide",
                                      "BitwiseAnd": "and", "BitwiseOr": "or", "BitwiseXor": "xor"}.items()},
    **{op: _logic(ir) for op, ir in {"And": "and", "Or": "or", "Xor": "xor"}.items()},
    **{op: _compare(d) for op, d in {"Equal": "EQ", "Less": "LT", "Greater": "GT", "LessOrEqual": "LE",
                                     "GreaterOrEqual": "GE"}.items()},
    "Max": _variadic("maximum"), "Min": _variadic("minimum"), "Sum": _variadic("add"), "Mean": _mean,
    "Pow": _pow, "Mod": _mod, "Reciprocal": _reciprocal, "Relu": _relu, "LeakyRelu": _leaky_relu,
    "PRelu": _prelu, "Elu": _elu, "Selu": _selu, "Celu": _celu, "ThresholdedRelu": _thresholded_relu,
    "Softplus": lambda c: [softplus(c, c.input(0))], "Softsign": _softsign,
    "HardSigmoid": lambda c: [_hard_sigmoid(c, c.input(0), c.attr("alpha", 0.2), c.attr("beta", 0.5))],
    "HardSwish": lambda c: [c.b.binary("multiply", c.input(0), _hard_sigmoid(c, c.input(0), 1 / 6, 0.5))],
    "Mish": _mish, "Gelu": lambda c: [gelu(c, c.input(0), c.attr("approximate", "none"))],
    "Clip": _clip, "Cast": _cast, "CastLike": _cast_like, "Where": _where, "IsNaN": _is_nan, "IsInf": _is_inf,
    "Not": _not, "BitShift": _bit_shift, "Sign": _sign, "Round": _round,
    "Identity": lambda c: [c.input(0)], "Shrink": _shrink, "BitCast": _bit_cast,
    "QuantizeLinear": _quantize, "DequantizeLinear": _dequantize,
}
