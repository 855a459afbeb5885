"""The compiler's tensor IR: an SSA graph of ops on tensors, as produced by the frontends.

Shape of the IR (deliberately close to StableHLO so a frontend is a translation, not a redesign):

- `Module` holds `Function`s by name; the entry points are the public ones.
- A `Function` (and a `Region`, an op's nested body such as a reduce's reducer) has argument
  `Value`s, a list of `Op`s in execution order, and the `Value`s it returns. There is no
  terminator op: the returned values are the `results` field.
- An `Op` has a `name` (the StableHLO op name without the `stablehlo.` prefix: 'add',
  'dot_general', 'reduce', ...), operand and result `Value`s, `attrs` (plain Python values:
  int, float, bool, str, tuples of them, numpy arrays for constants) and nested `regions`.
- A `Value` is defined exactly once (a function/region argument or an op result) and compares by
  identity. Its `TensorType` may have dynamic dims: None (unknown) or a str (a symbolic name such as
  'b', shared by all dims known to be equal).

Element types: every integer width signed and unsigned, i1, f16, bf16, f32 and f64. float64 is
computed in float64 end to end (no demotion to f32, unlike IREE's --iree-input-demote-f64-to-f32:
the CPU has native f64 and JAX's x64 programs expect its precision); complex, sub-byte integers and
f8/f6/f4 are not supported (a clear error naming the type).

`ELEMENTWISE` is the single table of elementwise ops: the parser uses it to accept them, shape
inference to type them and the reference evaluator to run them (its numpy function gives the
semantics; codegen keys its emitters on the same names).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import numpy as np

from compiler.errors import CompileError

Dim = Union[int, str, None]


def _element_types() -> dict[str, np.dtype]:
    types = {
        "i1": np.bool_, "i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64,
        "ui8": np.uint8, "ui16": np.uint16, "ui32": np.uint32, "ui64": np.uint64,
        "f16": np.float16, "f32": np.float32, "f64": np.float64, "index": np.int64,
    }
    try:  # bf16 has no numpy dtype of its own; ml_dtypes (a jax dependency) provides one
        import ml_dtypes
        types["bf16"] = ml_dtypes.bfloat16
    except ImportError:
        pass
    return {name: np.dtype(t) for name, t in types.items()}


ELEMENT_TYPES: dict[str, np.dtype] = _element_types()
"""MLIR element type name -> numpy dtype ('index' is the int64 of shape computations)."""

_ELEMENT_TYPE_NAMES = {dt: name for name, dt in ELEMENT_TYPES.items() if name != "index"}


@dataclass(frozen=True)
class TensorType:
    """A ranked tensor type; `shape` dims are ints, or None / a symbolic name when dynamic."""

    shape: tuple[Dim, ...]
    dtype: np.dtype

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def __str__(self) -> str:
        dims = ["?" if d is None else str(d) for d in self.shape]
        return "tensor<" + "x".join(dims + [_ELEMENT_TYPE_NAMES.get(self.dtype, str(self.dtype))]) + ">"


@dataclass(eq=False)
class Value:
    """An SSA value. `name` is the name it had in the source text, for messages only."""

    type: TensorType
    name: str = ""

    def __repr__(self) -> str:
        return f"{self.name}: {self.type}"


@dataclass(eq=False)
class Region:
    """A nested body (reducer, comparator, loop body): arguments, ops, returned values."""

    args: list[Value]
    ops: list[Op]
    results: list[Value]


@dataclass(eq=False)
class Op:
    """One operation. `loc` is the (line, col) of the op in the source text, when parsed."""

    name: str
    operands: list[Value]
    results: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    regions: list[Region] = field(default_factory=list)
    loc: tuple[int, int] | None = None

    def where(self) -> str:
        """'op NAME at LINE:COL', for error messages."""
        return f"op '{self.name}'" + (f" at {self.loc[0]}:{self.loc[1]}" if self.loc else "")


@dataclass(eq=False)
class Function:
    """A function; `public` ones are entry points, private ones are only reached by 'call' ops."""

    name: str
    args: list[Value]
    results: list[Value]
    ops: list[Op]
    public: bool = True


@dataclass(eq=False)
class Module:
    functions: dict[str, Function]

    def function(self, name: str) -> Function:
        if name not in self.functions:
            raise CompileError(f"module has no function '{name}' (has: {', '.join(self.functions)})")
        return self.functions[name]


# ---------------------------------------------------------------------------------------------
# Elementwise ops


@dataclass(frozen=True)
class Elementwise:
    """An elementwise op: operand count, numpy semantics, and whether it yields i1."""

    arity: int
    fn: Callable[..., np.ndarray]
    bool_result: bool = False


def _is_int(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.integer)


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not _is_int(a):
        return np.divide(a, b)
    safe = np.where(b == 0, 1, b)
    q = np.where((a % safe != 0) & ((a < 0) != (safe < 0)), a // safe + 1, a // safe)
    return np.where(b == 0, -1, q)  # XLA: integer x / 0 == -1; truncation toward zero otherwise


def _shift(a: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
    bits = a.dtype.itemsize * 8
    out_of_range = (b < 0) | (b >= bits)
    b = np.clip(b, 0, bits - 1).astype(a.dtype)
    if kind == "left":
        return np.where(out_of_range, 0, np.left_shift(a, b))
    if kind == "arithmetic":
        return np.where(out_of_range, np.where(a < 0, -1, 0), np.right_shift(a, b)).astype(a.dtype)
    unsigned = a.view(np.dtype(f"u{a.dtype.itemsize}"))
    return np.where(out_of_range, 0, np.right_shift(unsigned, b.astype(unsigned.dtype))).astype(a.dtype)


def _round_afz(x: np.ndarray) -> np.ndarray:
    t = np.trunc(x)
    return t + np.where(np.abs(x - t) >= 0.5, np.sign(x), 0).astype(x.dtype)


_erf = np.vectorize(math.erf, otypes=[np.float64])
_erfc = np.vectorize(math.erfc, otypes=[np.float64])
_lgamma_scalar = np.vectorize(lambda x: math.lgamma(x) if not (x <= 0 and x == math.floor(x)) else math.inf,
                              otypes=[np.float64])


def _lgamma(x: np.ndarray) -> np.ndarray:
    return _lgamma_scalar(x).astype(np.result_type(x.dtype, np.float32))


def _digamma(x: np.ndarray) -> np.ndarray:
    """psi(x): reflection below 1/2, six recurrence steps, then the asymptotic series; NaN at
    the poles (0 and the negative integers), as XLA's chlo.digamma."""
    x64 = np.asarray(x, np.float64)
    pole = (x64 <= 0) & (x64 == np.floor(x64))
    reflect = x64 < 0.5
    z = np.where(reflect, 1 - x64, x64)
    acc = np.zeros_like(z)
    for k in range(6):
        acc -= 1 / (z + k)
    z = z + 6
    z2 = 1 / (z * z)
    series = z2 * (1 / 12 - z2 * (1 / 120 - z2 * (1 / 252 - z2 * (1 / 240 - z2 * (1 / 132)))))
    psi = acc + np.log(z) - 0.5 / z - series
    with np.errstate(all="ignore"):
        psi = np.where(reflect, psi - np.pi / np.tan(np.pi * x64), psi)
    return np.where(pole, np.nan, psi).astype(np.result_type(x.dtype, np.float32))


def _erf_inv(x: np.ndarray) -> np.ndarray:
    """erf^-1 by Newton's method on math.erf from a rough start; +-inf at +-1, NaN outside."""
    x64 = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        inside = np.abs(x64) < 1
        t = np.where(inside, x64, 0.0)
        w = -np.log((1 - t) * (1 + t))
        y = np.sign(t) * np.sqrt(np.sqrt((2 / (np.pi * 0.147) + w / 2) ** 2 - w / 0.147) - (2 / (np.pi * 0.147) + w / 2))
        for _ in range(4):
            y = y - (_erf(y) - t) / (2 / math.sqrt(math.pi) * np.exp(-y * y))
        y = np.where(inside, y, np.where(np.abs(x64) == 1, np.sign(x64) * np.inf, np.nan))
    return y.astype(np.result_type(x.dtype, np.float32))


def _mulhi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The high half of the double-width product (chlo.mulhi), exact through Python ints."""
    bits = a.dtype.itemsize * 8
    a, b = np.broadcast_arrays(a, b)
    high = [(int(x) * int(y)) >> bits for x, y in zip(a.reshape(-1).tolist(), b.reshape(-1).tolist())]
    unsigned = np.array([h & ((1 << bits) - 1) for h in high], np.dtype(f"u{a.dtype.itemsize}"))
    return unsigned.view(a.dtype).reshape(a.shape)


def _power(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Floats: pow. Integers: wrapping repeated multiplication; a negative exponent gives 0
    except for bases 1 and -1, as XLA (numpy refuses those)."""
    if not _is_int(a):
        return np.power(a, b)
    a, b = np.broadcast_arrays(a, b)
    negative = b < 0
    with np.errstate(over="ignore"):
        out = np.power(a, np.where(negative, 0, b))
    odd = (b % 2) != 0
    sign = np.where(odd, a, np.ones_like(a))
    return np.where(negative, np.where(np.abs(a.astype(np.int64)) == 1, sign, 0), out).astype(a.dtype)


def _popcnt(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x).astype(x.dtype)


def _count_leading_zeros(x: np.ndarray) -> np.ndarray:
    bits = x.dtype.itemsize * 8
    u = x.view(np.dtype(f"u{x.dtype.itemsize}")).astype(np.uint64)
    out = np.full(x.shape, bits, np.int64)
    for k in range(bits):
        out = np.where((u >> np.uint64(k)) & np.uint64(1) != 0, bits - 1 - k, out)
    return out.astype(x.dtype)


def float_layout(dtype: np.dtype) -> tuple[int, int]:
    """(mantissa bits, exponent bits) of a float dtype (bf16 included)."""
    mantissa = {2: 10, 4: 23, 8: 52}[dtype.itemsize] if dtype.kind == "f" else 7  # bf16: 7
    return mantissa, dtype.itemsize * 8 - 1 - mantissa


def reduce_precision_format(attrs: dict) -> tuple[int, int]:
    """(exponent_bits, mantissa_bits) of a reduce_precision op: generic syntax attrs, or the
    pretty syntax's `format = eXmY`."""
    if "exponent_bits" in attrs and "mantissa_bits" in attrs:
        return int(attrs["exponent_bits"]), int(attrs["mantissa_bits"])
    import re
    match = re.fullmatch(r"e(\d+)m(\d+)", str(attrs.get("format", "")).strip('"'))
    if not match:
        raise CompileError(f"reduce_precision: cannot read its format from {attrs}")
    return int(match.group(1)), int(match.group(2))


def _reduce_precision(x: np.ndarray, exponent_bits: int | None = None, mantissa_bits: int | None = None) -> np.ndarray:
    """StableHLO reduce_precision (round the mantissa to nearest even, clamp the exponent
    range: overflow -> inf, underflow -> zero; NaN kept, even with no mantissa bits, as XLA
    does; StableHLO's interpreter makes it inf there), on x's own bits."""
    if exponent_bits is None or mantissa_bits is None:
        raise CompileError("reduce_precision needs exponent_bits and mantissa_bits")
    x = np.asarray(x, order="C")  # (ascontiguousarray makes a 0-d array 1-d)
    src_mant, src_exp = float_layout(x.dtype)
    nbits = x.dtype.itemsize * 8
    u = np.dtype(f"u{x.dtype.itemsize}")
    bits = x.view(u).astype(np.uint64)
    mask = (1 << nbits) - 1
    if mantissa_bits < src_mant:
        shift = src_mant - mantissa_bits
        last = np.uint64(1 << shift)
        bias = (bits & last) >> np.uint64(shift)
        bits = ((bits + bias + np.uint64((1 << (shift - 1)) - 1)) & np.uint64(~((1 << shift) - 1) & mask))
    if exponent_bits < src_exp:
        sign = np.uint64(1 << (nbits - 1))
        exp_mask = np.uint64(((1 << src_exp) - 1) << src_mant)
        bias_src = (1 << (src_exp - 1)) - 1
        bias_dst = (1 << (exponent_bits - 1)) - 1
        exponent = bits & exp_mask
        overflow = exponent > np.uint64((bias_src + bias_dst) << src_mant)
        underflow = exponent <= np.uint64((bias_src - bias_dst) << src_mant)
        signed_zero = bits & sign
        bits = np.where(overflow, signed_zero | exp_mask, np.where(underflow, signed_zero, bits))
    out = (bits & np.uint64(mask)).astype(u).view(x.dtype).reshape(x.shape)
    return np.where(np.isnan(x.astype(np.float32)), x, out).astype(x.dtype)  # NaN kept, as XLA

ELEMENTWISE: dict[str, Elementwise] = {
    "add": Elementwise(2, np.add),
    "subtract": Elementwise(2, np.subtract),
    "multiply": Elementwise(2, np.multiply),
    "divide": Elementwise(2, _divide),
    "remainder": Elementwise(2, np.fmod),
    "power": Elementwise(2, _power),
    "maximum": Elementwise(2, np.maximum),
    "minimum": Elementwise(2, np.minimum),
    "atan2": Elementwise(2, np.arctan2),
    "and": Elementwise(2, np.bitwise_and),
    "or": Elementwise(2, np.bitwise_or),
    "xor": Elementwise(2, np.bitwise_xor),
    "shift_left": Elementwise(2, lambda a, b: _shift(a, b, "left")),
    "shift_right_logical": Elementwise(2, lambda a, b: _shift(a, b, "logical")),
    "shift_right_arithmetic": Elementwise(2, lambda a, b: _shift(a, b, "arithmetic")),
    "negate": Elementwise(1, np.negative),
    "abs": Elementwise(1, np.abs),
    "sign": Elementwise(1, np.sign),
    "not": Elementwise(1, lambda a: np.logical_not(a) if a.dtype == np.bool_ else np.invert(a)),
    "exponential": Elementwise(1, np.exp),
    "exponential_minus_one": Elementwise(1, np.expm1),
    "log": Elementwise(1, np.log),
    "log_plus_one": Elementwise(1, np.log1p),
    "logistic": Elementwise(1, lambda x: 1 / (1 + np.exp(-x))),
    "sqrt": Elementwise(1, np.sqrt),
    "rsqrt": Elementwise(1, lambda x: 1 / np.sqrt(x)),
    "cbrt": Elementwise(1, np.cbrt),
    "tanh": Elementwise(1, np.tanh),
    "sine": Elementwise(1, np.sin),
    "cosine": Elementwise(1, np.cos),
    "tan": Elementwise(1, np.tan),
    "floor": Elementwise(1, np.floor),
    "ceil": Elementwise(1, np.ceil),
    "round_nearest_even": Elementwise(1, np.rint),
    "round_nearest_afz": Elementwise(1, _round_afz),
    "erf": Elementwise(1, _erf),  # from chlo.erf (lax.erf)
    "erfc": Elementwise(1, _erfc),  # from chlo.erfc (jax.nn.gelu(approximate=False))
    # chlo math ops (jnp.arctan, jax.scipy.special.gammaln, ...), named as their chlo op
    "atan": Elementwise(1, np.arctan),
    "asin": Elementwise(1, np.arcsin),
    "acos": Elementwise(1, np.arccos),
    "sinh": Elementwise(1, np.sinh),
    "cosh": Elementwise(1, np.cosh),
    "asinh": Elementwise(1, np.arcsinh),
    "acosh": Elementwise(1, np.arccosh),
    "atanh": Elementwise(1, np.arctanh),
    "lgamma": Elementwise(1, _lgamma),
    "digamma": Elementwise(1, _digamma),
    "erf_inv": Elementwise(1, _erf_inv),
    "next_after": Elementwise(2, np.nextafter),
    "mulhi": Elementwise(2, _mulhi),  # chlo.mulhi; lowered by passes/decompose.py
    "popcnt": Elementwise(1, _popcnt),
    "count_leading_zeros": Elementwise(1, _count_leading_zeros),
    # attrs exponent_bits / mantissa_bits (pretty syntax: format = eXmY); the reference
    # evaluator passes them as keywords
    "reduce_precision": Elementwise(1, _reduce_precision),
    "is_finite": Elementwise(1, np.isfinite, bool_result=True),
    "select": Elementwise(3, np.where),
    "clamp": Elementwise(3, lambda lo, x, hi: np.minimum(np.maximum(x, lo), hi)),
}

STRUCTURAL_OPS: frozenset[str] = frozenset({
    "constant", "iota", "compare", "convert", "bitcast_convert", "broadcast_in_dim", "reshape",
    "transpose", "reverse", "slice", "dynamic_slice", "dynamic_update_slice", "pad", "concatenate",
    "dot_general", "convolution", "reduce", "reduce_window", "gather", "sort", "while", "case", "if", "call",
    "get_dimension_size", "dynamic_broadcast_in_dim", "dynamic_reshape", "dynamic_iota",
    "custom_call", "real_dynamic_slice", "dynamic_gather", "dynamic_reduce_window",
    "dynamic_pad", "dynamic_conv", "triangular_solve", "cholesky", "map", "scatter", "scan",
    "select_and_scatter", "top_k", "rng_bit_generator", "rng",
    "batch_norm_inference", "batch_norm_training", "batch_norm_grad", "ragged_dot",
})
"""Every non-elementwise op of the IR. 'custom_call' is only the jax.export `shape_assertion`.
'while' (regions cond, body over the carried values), 'case' (operand: the branch index; one
region per branch, an index out of range runs the last) and 'if' (operand: an i1; regions then,
else) have regions without arguments or with the carried values, which may use values of the
enclosing scope.
'real_dynamic_slice' (operands x, starts, limits, strides), 'dynamic_gather' (x, indices,
slice_sizes) and 'dynamic_reduce_window' (inputs, inits, window_dimensions, window_strides,
base_dilations, window_dilations, padding; from jax.export's custom_call of that name) take as
operands what their static forms take as attrs (so do 'dynamic_pad' and 'dynamic_conv'); `specialize`
rewrites them into the static forms. 'triangular_solve' (a, b; attrs left_side, lower, unit_diagonal,
transpose_a) and 'cholesky' (a; attr lower; from LAPACK's potrf also a second result, LAPACK's
info) work on the trailing two dims, the others being batch dims; passes/decompose.py lowers them,
and 'scan' (chlo.scan: inputs, inits; attrs dimension, is_reverse; its region maps (elements...,
carries...) to (outputs..., carries...)) and 'top_k' (chlo.top_k: attr k; the k largest along the
last dim, in IEEE total order, ties to the lower index, and their i32 indices) and 'ragged_dot'
(chlo.ragged_dot: lhs, rhs, group_sizes; dot_general's dimension numbers plus lhs_ragged_dimensions
and rhs_group_dimensions: the rows of lhs's ragged dim go, group by group, with rhs's groups).
'map' applies its region elementwise."""

SUPPORTED_OPS: frozenset[str] = STRUCTURAL_OPS | frozenset(ELEMENTWISE)
