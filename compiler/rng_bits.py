"""`rng_bit_generator`'s algorithms, bit for bit as XLA computes them on CPU (so a JAX program
using `lax.rng_bit_generator` or the "rbg" PRNG gets JAX's numbers): ThreeFry2x32 (20 rounds) and
Philox4x32 (10 rounds; also DEFAULT), with XLA's counter layout and state update.

The state is ui64[2] (key, counter) or ui64[3] (key, 128-bit counter, low word first; with
two words Philox's counter is (counter, key), as XLA's RngBitGeneratorExpander reads it). Written
once over a small array interface, `Ops`, that the reference evaluator implements on numpy and
passes/decompose.py on IR ops, so the two cannot drift apart; JAX checks both (tests).
"""

from __future__ import annotations

import math
from typing import Any, Protocol, Sequence

import numpy as np

U32, U64 = np.dtype(np.uint32), np.dtype(np.uint64)


class Ops(Protocol):
    """Elementwise ops on arrays of one shape (scalars broadcast), wrapping unsigned ints."""

    def const(self, value: int, dtype: np.dtype) -> Any: ...
    def iota(self, n: int) -> Any: ...                       # ui64[n]: 0, 1, ..., n-1
    def binary(self, op: str, a: Any, b: Any) -> Any: ...    # add subtract multiply remainder maximum xor or shifts
    def less(self, a: Any, b: Any) -> Any: ...
    def select(self, p: Any, a: Any, b: Any) -> Any: ...
    def convert(self, x: Any, dtype: np.dtype) -> Any: ...
    def bitcast(self, x: Any, dtype: np.dtype) -> Any: ...
    def reshape(self, x: Any, shape: Sequence[int]) -> Any: ...
    def concat(self, xs: list, dim: int) -> Any: ...
    def slice(self, x: Any, starts: Sequence[int], limits: Sequence[int]) -> Any: ...
    def element(self, x: Any, i: int) -> Any: ...            # x[i] of a vector, as a scalar
    def unary(self, op: str, x: Any) -> Any: ...             # log sqrt sine cosine


def _rotl(o: Ops, v, distance: int):
    return o.binary("or", o.binary("shift_left", v, o.const(distance, U32)),
                    o.binary("shift_right_logical", v, o.const(32 - distance, U32)))


def _split64(o: Ops, x) -> tuple:
    return o.convert(x, U32), o.convert(o.binary("shift_right_logical", x, o.const(32, U64)), U32)


def _join64(o: Ops, low, high):
    return o.binary("or", o.convert(low, U64), o.binary("shift_left", o.convert(high, U64), o.const(32, U64)))


def threefry2x32(o: Ops, x: list, key: list) -> list:
    rotations = (13, 15, 26, 6, 17, 29, 16, 24)
    ks = [key[0], key[1], o.binary("xor", o.binary("xor", o.const(0x1BD11BDA, U32), key[0]), key[1])]
    x = [o.binary("add", x[0], ks[0]), o.binary("add", x[1], ks[1])]
    for block in range(5):
        for r in rotations[4 * (block % 2):4 * (block % 2) + 4]:
            x0 = o.binary("add", x[0], x[1])
            x = [x0, o.binary("xor", x0, _rotl(o, x[1], r))]
        x = [o.binary("add", x[0], ks[(block + 1) % 3]),
             o.binary("add", o.binary("add", x[1], ks[(block + 2) % 3]), o.const(block + 1, U32))]
    return x


def philox4x32(o: Ops, x: list, key: list) -> list:
    def mul_hi_lo(v, k: int):
        product = o.binary("multiply", o.convert(v, U64), o.const(k, U64))
        return _split64(o, product)[::-1]  # (high, low)

    for _ in range(10):
        hi0, lo0 = mul_hi_lo(x[0], 0xD2511F53)
        hi1, lo1 = mul_hi_lo(x[2], 0xCD9E8D57)
        x = [o.binary("xor", o.binary("xor", hi1, x[1]), key[0]), lo1,
             o.binary("xor", o.binary("xor", hi0, x[3]), key[1]), lo0]
        key = [o.binary("add", key[0], o.const(0x9E3779B9, U32)), o.binary("add", key[1], o.const(0xBB67AE85, U32))]
    return x


def _split_shape(shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """XLA's SplitShapeIntoHalves: (half shape, the dim of the pair in it)."""
    if not shape:
        return (1,), 0
    split = next((i for i, d in enumerate(shape) if d % 2 == 0), None)
    if split is None:
        split = max(range(len(shape)), key=lambda i: (shape[i], -i))
    half = shape[:split] + (-(-shape[split] // 2), 1) + shape[split + 1:]
    return half, split + 1


def _combine(o: Ops, pair: list, shape: tuple[int, ...], half: tuple[int, ...], dim: int):
    if not shape:
        return o.reshape(pair[0], ())
    joined = o.concat(pair, dim)
    split = dim - 1
    rounded = list(shape)
    rounded[split] = -(-shape[split] // 2) * 2
    joined = o.reshape(joined, rounded)
    if rounded[split] != shape[split]:
        joined = o.slice(joined, [0] * len(shape), shape)
    return joined


def _threefry(o: Ops, key, counter, shape: tuple[int, ...], bits: int) -> tuple:
    """(bits of `shape`, the counter after them): counter + row-major index as the input."""
    half, dim = (shape, None) if bits == 64 else _split_shape(shape)
    n = math.prod(half)
    inputs = o.reshape(o.binary("add", o.iota(n), counter), half)
    x = threefry2x32(o, list(_split64(o, inputs)), list(_split64(o, key)))
    value = _join64(o, *x) if bits == 64 else _combine(o, x, shape, half, dim)
    return value, [o.binary("add", counter, o.const(n, U64))]


def _philox(o: Ops, key, counter: list, shape: tuple[int, ...], bits: int) -> tuple:
    """(bits of `shape`, the 128-bit counter after them): four words per counter value."""
    n = math.prod(shape) * (2 if bits == 64 else 1)
    vectors = -(-n // 4)
    low, high = counter
    new_low = o.binary("add", o.iota(vectors), low)
    new_high = o.select(o.less(new_low, low), o.binary("add", high, o.const(1, U64)), high)
    x = philox4x32(o, [*_split64(o, new_low), *_split64(o, new_high)], list(_split64(o, key)))
    if bits == 64:
        words, count = [_join64(o, x[0], x[1]), _join64(o, x[2], x[3])], -(-math.prod(shape) // 2)
    else:
        words, count = x, vectors
    columns = o.concat([o.reshape(w, (count, 1)) for w in words], 1)
    flat = o.reshape(columns, (count * len(words),))
    value = o.reshape(o.slice(flat, [0], [math.prod(shape)]), shape)
    end = o.binary("add", low, o.const(vectors, U64))
    return value, [end, o.select(o.less(end, low), o.binary("add", high, o.const(1, U64)), high)]


def generate(o: Ops, algorithm: str, state, state_size: int, shape: tuple[int, ...], dtype: np.dtype) -> tuple:
    """(new state ui64[state_size], random bits of `shape` as `dtype`) for an algorithm of
    StableHLO's rng_bit_generator (DEFAULT is Philox, as on XLA's CPU backend)."""
    key = o.element(state, 0)
    counter = [o.element(state, i) for i in range(1, state_size)]
    bits = 64 if dtype.itemsize == 8 else 32
    if algorithm == "THREE_FRY":
        value, counter = _threefry(o, key, counter[0], shape, bits)
    else:  # a two-word state's counter is (state[1], state[0]) (XLA), and only its low word is kept
        value, counter = _philox(o, key, counter if state_size > 2 else [counter[0], key], shape, bits)
        counter = counter[:state_size - 1]
    new_state = o.concat([o.reshape(v, (1,)) for v in [key] + counter], 0)
    unsigned = np.dtype(f"u{dtype.itemsize}")
    if dtype.itemsize < 4:
        value = o.convert(value, unsigned)
    return new_state, o.bitcast(value, dtype) if dtype != (U64 if bits == 64 else unsigned) else value


def distribution(o: Ops, kind: str, a, b, shape: tuple[int, ...], dtype: np.dtype):
    """StableHLO's `rng`: UNIFORM in [a, b) or NORMAL (mean a, deviation b) numbers of `shape`
    from ThreeFry bits of a fixed state (the spec leaves the generator to the implementation),
    through XLA's conversions (a mantissa's worth of bits; Box-Muller)."""
    n = math.prod(shape)
    count = n + n % 2 if kind == "NORMAL" else n
    word = U64 if dtype.itemsize == 8 else U32
    state = o.concat([o.reshape(o.const(v, U64), (1,)) for v in (0x5EED, 0)], 0)
    _, bits = generate(o, "THREE_FRY", state, 2, (count,), word)
    if dtype.kind in "iu":  # a + bits % (b - a), the difference taken unsigned
        unsigned = np.dtype(f"u{dtype.itemsize}")
        span = o.binary("subtract", o.bitcast(b, unsigned), o.bitcast(a, unsigned))
        offset = o.binary("remainder", o.convert(bits, unsigned), span)
        return o.reshape(o.binary("add", a, o.bitcast(offset, dtype)), shape)
    mantissa = np.finfo(dtype).nmant if dtype.kind == "f" else 7
    wide = np.dtype(np.float64 if dtype.itemsize == 8 else np.float32)
    top = o.binary("shift_right_logical", bits, o.const(8 * word.itemsize - mantissa, word))
    unit = o.binary("multiply", o.convert(top, wide), o.const(2.0 ** -mantissa, wide))  # [0, 1)
    low, scale = o.convert(a, wide), o.convert(b, wide)
    if kind == "UNIFORM":
        value = o.binary("add", o.binary("multiply", unit, o.binary("subtract", scale, low)), low)
        return o.convert(o.reshape(value, shape), dtype)
    half = count // 2
    u1 = o.binary("maximum", o.slice(unit, [0], [half]), o.const(1e-7, wide))
    angle = o.binary("multiply", o.slice(unit, [half], [count]), o.const(2 * math.pi, wide))
    radius = o.unary("sqrt", o.binary("multiply", o.unary("log", u1), o.const(-2.0, wide)))
    normal = o.concat([o.binary("multiply", o.unary("sine", angle), radius),
                       o.binary("multiply", o.unary("cosine", angle), radius)], 0)
    value = o.binary("add", o.binary("multiply", o.slice(normal, [0], [n]), scale), low)
    return o.convert(o.reshape(value, shape), dtype)


class NumpyOps:
    """`Ops` on numpy arrays (the reference evaluator's)."""

    def const(self, value: int, dtype: np.dtype):
        return np.array(value, dtype)

    def iota(self, n: int):
        return np.arange(n, dtype=U64)

    def binary(self, op: str, a, b):
        fn = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "xor": np.bitwise_xor,
              "or": np.bitwise_or, "shift_left": np.left_shift, "shift_right_logical": np.right_shift,
              "maximum": np.maximum, "remainder": np.fmod}[op]
        with np.errstate(all="ignore"):
            return np.asarray(fn(a, b.astype(a.dtype) if b.dtype != a.dtype else b)).astype(a.dtype)

    def less(self, a, b):
        return np.less(a, b)

    def select(self, p, a, b):
        return np.where(p, a, b).astype(np.result_type(a, b))

    def convert(self, x, dtype):
        return np.asarray(x).astype(dtype)

    def bitcast(self, x, dtype):
        return np.ascontiguousarray(x).view(dtype)

    def reshape(self, x, shape):
        return np.reshape(x, shape)

    def concat(self, xs, dim):
        return np.concatenate([np.asarray(x) for x in xs], dim)

    def slice(self, x, starts, limits):
        return x[tuple(slice(a, b) for a, b in zip(starts, limits))]

    def element(self, x, i):
        return np.asarray(x[i])

    def unary(self, op: str, x):
        return {"log": np.log, "sqrt": np.sqrt, "sine": np.sin, "cosine": np.cos}[op](x).astype(x.dtype)
