"""Malformed inputs made from valid ones: StableHLO texts from JAX with random edits, .fgx files
with flipped, dropped or inserted bytes, and strings in the CLI's input syntax.

Each strategy draws from what a broken file looks like in practice (a truncated download, an
editor slip, a wrong type in one op) rather than from uniform noise, which a parser rejects at
the first byte."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

# Fragments an edit may splice into StableHLO text: types, shapes, names, numbers and syntax.
TOKENS = ["tensor<", "tensor<4xf32>", "tensor<?x4xf32>", "tensor<0xi32>", "x", "4", "0", "-1", "7", "2147483648",
          "99999999999999999999", "f32", "f16", "i1", "i64", "ui64", "bf16", "complex<f32>", "%0", "%1", "%arg0",
          "%arg9", "(", ")", "{", "}", "[", "]", ",", ":", "=", "->", '"', "\n", "stablehlo.add", "stablehlo.dot_general",
          "stablehlo.reshape", "stablehlo.while", "dense<1.0>", "dense<[1, 2]>", "dense<>", ">", "?", "#", "@main",
          "func.func", "return", "loc(", "0x7FC00000", "nan", "inf", "dims = [0]", "dimensions = [1, 0]"]


@st.composite
def edits(draw, text: str) -> str:
    """1-3 edits of `text`: delete, duplicate or replace a span, splice a token, truncate."""
    for _ in range(draw(st.integers(1, 3))):
        n = len(text)
        if n == 0:
            break
        at = draw(st.integers(0, n - 1))
        span = draw(st.integers(1, 40))
        kind = draw(st.sampled_from(["delete", "duplicate", "replace", "token", "truncate", "swap_digit"]))
        if kind == "delete":
            text = text[:at] + text[at + span:]
        elif kind == "duplicate":
            text = text[:at] + text[at:at + span] + text[at:]
        elif kind == "replace":
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at + span:]
        elif kind == "token":
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at:]
        elif kind == "truncate":
            text = text[:at]
        else:  # change one digit: shapes, dims, constants stay plausible
            digits = [i for i, ch in enumerate(text) if ch.isdigit()]
            if digits:
                i = draw(st.sampled_from(digits))
                text = text[:i] + str(draw(st.integers(0, 9))) + text[i + 1:]
    return text


@st.composite
def byte_edits(draw, data: bytes) -> bytes:
    """Flip, drop, insert bytes or truncate: a damaged file."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "drop", "insert", "truncate"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "drop":
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = bytes(draw(st.lists(st.integers(0, 255), min_size=1, max_size=16)))
        else:
            del data[at:]
    return bytes(data)


DTYPES = ["f32", "f16", "bf16", "f64", "i1", "i8", "i32", "i64", "ui8", "ui32", "ui64", "c64", "xf32", "", "f3"]
input_specs = st.one_of(
    st.text(max_size=40),
    st.builds(lambda dims, dtype, values: f"{'x'.join(dims)}{'x' if dims else ''}{dtype}{values}",
              st.lists(st.sampled_from(["0", "1", "2", "3", "-1", "?", "a", "99999999999"]), max_size=4),
              st.sampled_from(DTYPES),
              st.one_of(st.just(""), st.sampled_from(["=1", "=[1 2][3 4]", "=nan", "=0x7f", "=[1 2", "=1,2", "=[[]]",
                                                      "=1e999", "=-", "=true", "=@x.npy"]))),
    st.builds(lambda p: "@" + p, st.sampled_from(["", "/nonexistent.npy", "/dev/null", "/etc/passwd", "/tmp"])),
)

# Arguments a caller might pass instead of the declared arrays.
wrong_arguments = st.one_of(
    st.none(), st.integers(), st.floats(), st.text(max_size=5), st.lists(st.floats(), max_size=3),
    st.sampled_from([np.zeros((4,), np.float64), np.zeros((4, 1), np.float32), np.zeros((0,), np.float32),
                     np.zeros((4,), np.int32), np.array(["a"]), np.zeros((4,), object), np.zeros((2, 2), np.complex64),
                     np.zeros((8,), np.float32)[::2], np.float32(1.0)]),
)
