"""ONNX's narrow element types -- float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e8m0), float4e2m1,
int4/uint4, int2/uint2 -- held as their storage bytes, as ONNX Runtime holds them.

The kernel IR has no such types and needs none: nothing computes on them except the ops that
convert (Cast, CastLike, QuantizeLinear, DequantizeLinear); everything else only moves them
(Identity, Reshape, Transpose, Slice, Concat...). So during conversion a narrow tensor keeps its
ml_dtypes dtype (the bit layout `onnx.numpy_helper` and the reference evaluator use: one element
per byte, a 4- or 2-bit value in the low bits of its byte), handlers that move data need no change,
and `to_storage` then retypes every such value to uint8, checking that only data movement touched
them. Conversions are exact bit manipulation with existing IR ops:

- from a narrow type: a lookup in a table of all 2^bits values (at most 256), computed at compile
  time with ml_dtypes, the types' definition; indexed by the storage byte.
- to a narrow float: round-to-nearest-even on the source's IEEE bits (normal and subnormal results,
  carry into the exponent), then overflow (saturate to the largest finite value, or inf / NaN as
  the type has), NaN, and the sign of zero where the type has one (ml_dtypes' conversion).
- to a narrow integer: a float truncates (out of range -> 0, as ml_dtypes does), an integer wraps.
- float8e8m0 (a power of two): the exponent field, rounded up / to nearest / down (round_mode).

A graph input or output of a narrow type is uint8 in the compiled signature: callers pass and
receive the raw bytes (`array.view(np.uint8)`, and back with `.view(ml_dtype)`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.errors import CompileError
from compiler.frontends.onnx.builder import Builder, Tensor, dtype_of, shape_of
from compiler.ir import Function, Op, Region, TensorType, Value

STORAGE = np.dtype(np.uint8)


@dataclass(frozen=True)
class Format:
    """One narrow type: its ml_dtypes dtype, width, and for floats the codes of its special values
    (derived from ml_dtypes, so they follow its definition)."""

    dtype: np.dtype
    bits: int
    is_float: bool
    float8: bool = False  # one of the four float8 types ONNX's `saturate` applies to
    mantissa: int = 0
    bias: int = 0
    max_code: int = 0
    overflow_codes: tuple[int, int] = (0, 0)  # (+, -): what a non-saturating overflow gives
    nan_codes: tuple[int, int] = (0, 0)
    negative_zero: bool = True


def _code(value: float, dtype: np.dtype) -> int:
    with np.errstate(all="ignore"):
        return int(np.array([value], np.float32).astype(dtype).view(np.uint8)[0])


@functools.cache
def formats() -> dict[np.dtype, Format]:
    """The narrow types by ml_dtypes dtype."""
    import ml_dtypes
    table: dict[np.dtype, Format] = {}
    for name in ("int4", "uint4", "int2", "uint2"):
        dt = np.dtype(getattr(ml_dtypes, name))
        table[dt] = Format(dt, 4 if "4" in name else 2, False)
    for name in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float4_e2m1fn",
                 "float8_e8m0fnu"):
        dt = np.dtype(getattr(ml_dtypes, name))
        info = ml_dtypes.finfo(dt)
        table[dt] = Format(
            dt, 4 if name.startswith("float4") else 8, True, float8=name[-2:] != "nu" and name.startswith("float8"),
            mantissa=int(info.nmant), bias=1 - int(info.minexp), max_code=_code(float(info.max), dt),
            overflow_codes=(_code(np.inf, dt), _code(-np.inf, dt)),
            nan_codes=(_code(np.nan, dt), _code(-np.nan, dt)), negative_zero=_code(-0.0, dt) != 0)
    return table


def is_narrow(dtype: Any) -> bool:
    return np.dtype(dtype) in formats()


def storage(dtype: np.dtype) -> np.dtype:
    """The dtype a value of `dtype` has in the IR and at the module's boundary."""
    return STORAGE if is_narrow(dtype) else dtype


def _bits(b: Builder, x: Tensor) -> Tensor:
    """The storage byte of a narrow tensor (high bits cleared: a caller's raw bytes may have any)."""
    fmt = formats()[dtype_of(x)]
    raw = b.emit("bitcast_convert", [x], shape_of(x), STORAGE)
    return b.binary("and", raw, b.scalar((1 << fmt.bits) - 1, STORAGE)) if fmt.bits < 8 else raw


def _to_narrow(b: Builder, bits: Tensor, dtype: np.dtype) -> Tensor:
    return b.emit("bitcast_convert", [b.convert(bits, STORAGE)], shape_of(bits), dtype)


def cast(b: Builder, x: Tensor, to: Any, saturate: bool = True, round_mode: str = "up") -> Tensor:
    """ONNX Cast of `x` to `to` for any pair of types, narrow ones included."""
    to = np.dtype(to)
    src = dtype_of(x)
    if src == to and not (saturate and is_narrow(to) and formats()[to].float8):  # (saturating clips infinities)
        return x
    if is_narrow(src):
        if is_narrow(to):
            return cast(b, cast(b, x, np.float32), to, saturate, round_mode)
        return _decode(b, x, to)
    if not is_narrow(to):
        return b.convert(x, to)
    fmt = formats()[to]
    if not fmt.is_float:
        return _encode_int(b, x, fmt)
    if fmt.mantissa == 0:
        return _encode_e8m0(b, x, fmt, saturate, round_mode)
    return _encode_float(b, x, fmt, saturate and fmt.float8)


def _decode(b: Builder, x: Tensor, to: np.dtype) -> Tensor:
    fmt = formats()[dtype_of(x)]
    with np.errstate(all="ignore"):
        table = np.arange(1 << fmt.bits, dtype=np.uint8).view(fmt.dtype).astype(to)
    return b.take(table, b.convert(_bits(b, x), np.int32), 0)


def _encode_int(b: Builder, x: Tensor, fmt: Format) -> Tensor:
    """ml_dtypes' conversion: floats truncate, out of range (NaN included) becoming 0; integers wrap."""
    src = dtype_of(x)
    if src.kind in "fV":
        info = _iinfo(fmt)
        f = np.float64 if src == np.float64 else np.float32
        v = b.convert(x, f)
        inside = b.binary("and", b.compare("GT", v, b.scalar(info[0] - 1, f)), b.compare("LT", v, b.scalar(info[1] + 1, f)))
        x = b.convert(b.select(inside, v, b.scalar(0, f)), np.int32)
    wide = b.convert(x, np.int64 if src.itemsize == 8 else np.int32)
    mask = b.binary("and", wide, b.scalar((1 << fmt.bits) - 1, dtype_of(wide)))
    return _to_narrow(b, mask, fmt.dtype)


def _iinfo(fmt: Format) -> tuple[int, int]:
    signed = fmt.dtype.name.startswith("int")
    return (-(1 << (fmt.bits - 1)), (1 << (fmt.bits - 1)) - 1) if signed else (0, (1 << fmt.bits) - 1)


def integer_range(dtype: np.dtype) -> tuple[int, int]:
    """(min, max) of an integer type, narrow ones included."""
    return _iinfo(formats()[dtype]) if is_narrow(dtype) else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))


def _rne_shift(b: Builder, v: Tensor, s: Tensor) -> Tensor:
    """v >> s rounded to nearest, ties to even (0 < s < bit width of v)."""
    u = dtype_of(v)
    one = b.scalar(1, u)
    half_minus_one = b.binary("subtract", b.binary("shift_left", one, b.binary("subtract", s, one)), one)
    odd = b.binary("and", b.binary("shift_right_logical", v, s), one)
    return b.binary("shift_right_logical", b.binary("add", b.binary("add", v, half_minus_one), odd), s)


def _ieee(b: Builder, x: Tensor) -> tuple[Tensor, type, int, int]:
    """x as the bits of an IEEE float wide enough to hold it exactly: (bits, uint type, mantissa
    bits, exponent bias)."""
    if dtype_of(x) == np.float64 or (dtype_of(x).kind in "iu" and dtype_of(x).itemsize >= 4):
        return b.emit("bitcast_convert", [b.convert(x, np.float64)], shape_of(x), np.uint64), np.uint64, 52, 1023
    return b.emit("bitcast_convert", [b.convert(x, np.float32)], shape_of(x), np.uint32), np.uint32, 23, 127


def _encode_float(b: Builder, x: Tensor, fmt: Format, saturate: bool) -> Tensor:
    bits, u, sm, sb = _ieee(b, x)
    width = np.dtype(u).itemsize * 8
    c = lambda v: b.scalar(v, u)  # noqa: E731
    a = b.binary("and", bits, c((1 << (width - 1)) - 1))
    neg = b.binary("shift_right_logical", bits, c(width - 1))
    e = b.binary("shift_right_logical", a, c(sm))
    drop = sm - fmt.mantissa
    rebias = sb - fmt.bias
    # a normal result: the exponent rebiased in place, the mantissa rounded (its carry moves the exponent)
    normal = _rne_shift(b, b.binary("subtract", a, c(rebias << sm)), c(drop))
    # a subnormal one: the significand with its implicit bit, shifted by how far below normal it is
    significand = b.binary("or", b.binary("and", a, c((1 << sm) - 1)), c(1 << sm))
    shift = b.binary("minimum", b.binary("subtract", c(drop + 1 + rebias), e), c(width - 1))
    sub = _rne_shift(b, significand, shift)
    magnitude = b.select(b.compare("GT", e, c(rebias)), normal, sub)
    inf_bits = ((1 << (width - 1 - sm)) - 1) << sm
    sign = b.binary("shift_left", neg, c(fmt.bits - 1))
    out = b.binary("or", magnitude, sign)
    if not fmt.negative_zero:
        out = b.select(b.compare("EQ", magnitude, c(0)), c(0), out)
    overflow = b.binary("or", b.compare("GT", magnitude, c(fmt.max_code)), b.compare("EQ", a, c(inf_bits)))
    is_neg = b.compare("NE", neg, c(0))
    if saturate:
        limit = b.binary("or", c(fmt.max_code), sign)
    else:
        limit = b.select(is_neg, c(fmt.overflow_codes[1]), c(fmt.overflow_codes[0]))
    out = b.select(overflow, limit, out)
    out = b.select(b.compare("GT", a, c(inf_bits)), b.select(is_neg, c(fmt.nan_codes[1]), c(fmt.nan_codes[0])), out)
    return _to_narrow(b, out, fmt.dtype)


def _encode_e8m0(b: Builder, x: Tensor, fmt: Format, saturate: bool, round_mode: str) -> Tensor:
    """onnx.numpy_helper.to_float8e8m0: the float32 exponent field (sign ignored), rounded."""
    bits = b.emit("bitcast_convert", [b.convert(x, np.float32)], shape_of(x), np.uint32)
    c = lambda v: b.scalar(v, np.uint32)  # noqa: E731
    exponent = b.binary("and", b.binary("shift_right_logical", bits, c(23)), c(0xFF))
    special = b.compare("EQ", exponent, c(0xFF))
    if round_mode == "up":
        up = b.compare("NE", b.binary("and", bits, c(0x7FFFFF)), c(0))
    elif round_mode == "nearest":
        guard = b.compare("NE", b.binary("and", bits, c(0x400000)), c(0))
        rest = b.binary("or", b.compare("NE", b.binary("and", bits, c(0x3FFFFF)), c(0)), b.compare("GT", exponent, c(0)))
        up = b.binary("and", guard, rest)
    elif round_mode == "down":
        up = None
    else:
        raise CompileError(f"Cast: unknown round_mode '{round_mode}' (up, nearest or down)")
    if up is not None:
        if saturate:
            up = b.binary("and", up, b.compare("NE", exponent, c(0xFE)))
        exponent = b.binary("add", exponent, b.convert(up, np.uint32))
    return _to_narrow(b, b.select(special, c(0xFF), exponent), fmt.dtype)


# -- the IR's view: narrow values become their storage bytes ---------------------------------------

MOVES = frozenset({"constant", "bitcast_convert", "reshape", "transpose", "broadcast_in_dim", "slice",
                   "dynamic_slice", "dynamic_update_slice", "concatenate", "gather", "pad", "reverse",
                   "select", "copy", "while", "if", "case", "call", "optimization_barrier"})
"""IR ops that only move elements: the only ones a narrow value may meet."""


def to_storage(function: Function) -> None:
    """Retypes every narrow value of `function` (regions included) to its storage byte, in place;
    CompileError when an op other than data movement would compute on one."""
    original: dict[int, np.dtype] = {}  # id of a retyped value -> its narrow type

    def retype(v: Value) -> None:
        if id(v) not in original and is_narrow(v.type.dtype):
            original[id(v)] = v.type.dtype
            v.type = TensorType(v.type.shape, STORAGE)

    def walk(args: list[Value], ops: list[Op], results: list[Value]) -> None:
        for v in args + results:
            retype(v)
        for op in ops:
            for v in op.operands + op.results:
                retype(v)
            narrow = [v for v in op.operands + op.results if id(v) in original]
            if narrow and op.name not in MOVES:
                raise CompileError(f"op '{op.name}' would compute on element type {original[id(narrow[0])]} "
                                   f"(only Cast, CastLike, QuantizeLinear, DequantizeLinear and data movement take it)")
            if op.name == "constant" and is_narrow(op.attrs["value"].dtype):
                op.attrs["value"] = op.attrs["value"].view(STORAGE)
            for r in op.regions:
                walk_region(r)

    def walk_region(r: Region) -> None:
        walk(r.args, r.ops, r.results)

    walk(function.args, function.ops, function.results)
