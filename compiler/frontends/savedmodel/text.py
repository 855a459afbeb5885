"""Edits of the StableHLO text TensorFlow's bridge prints, before the StableHLO frontend reads it.

- `fold_variables`: the bridge passes a SavedModel's resource variables to @main as arguments
  after the signature's inputs; each becomes a `stablehlo.constant` of the variable's value (a hex
  blob, exact), bound to the argument's own name so no use needs rewriting.
- `normalize_legacy_ops`: two ops the bridge prints that the StableHLO frontend does not read,
  each rewritten into the op it is a special case of: `stablehlo.dot` (deprecated in StableHLO in
  favour of `dot_general`: the last dim of lhs contracted with the first of rhs) and `mhlo.copy`
  (an identity: a reshape to its own shape).
- `tf_op_at`: the TF op name (`functional_1/dense/MatMul`) an op's `loc(...)` carries, for errors.
"""

from __future__ import annotations

import re

import numpy as np

from compiler.errors import CompileError

_MAIN_RE = re.compile(r"func\.func @main\(")
_DOT_RE = re.compile(r"= stablehlo\.dot (%[\w.#-]+), (%[\w.#-]+)(.*?) : \(tensor<([^>]*)>, tensor<([^>]*)>\)")
_COPY_RE = re.compile(r"= mhlo\.copy (%[\w.#-]+) : (tensor<[^>]*>)")
_LOC_ALIAS_RE = re.compile(r'^(#loc\d*) = loc\((.*)\)\s*$', re.M)
_LOC_RE = re.compile(r'loc\((#loc\d*|"(?:[^"\\]|\\.)*"|fused\[.*?\])\)\s*$')


def _split_top_level(text: str) -> list[str]:
    """`text` split at commas outside brackets and strings (an argument list)."""
    parts, depth, start, in_string = [], 0, 0, False
    for i, c in enumerate(text):
        if in_string:
            in_string = c != '"' or text[i - 1] == "\\"
        elif c == '"':
            in_string = True
        elif c in "(<[{":
            depth += 1
        elif c in ")>]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _main_arguments(text: str) -> tuple[int, int, list[str]]:
    """(start, end) of @main's argument list in `text` and its arguments."""
    m = _MAIN_RE.search(text)
    if m is None:
        raise CompileError("TensorFlow's StableHLO has no @main")
    depth, i = 1, m.end()
    while depth:
        if i >= len(text):
            raise CompileError("TensorFlow's StableHLO: @main's argument list does not end")
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        i += 1
    return m.end(), i - 1, _split_top_level(text[m.end():i - 1])


def main_result_types(text: str) -> str:
    """@main's result types as printed (`tensor<1x3xf32>` or `(tensor<...>, ...)`)."""
    _, end, _ = _main_arguments(text)
    return text[end + 1:text.index("{", end)].removeprefix(")").strip().removeprefix("->").strip()


def _dense_hex(value: np.ndarray) -> str:
    data = np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
    return f'dense<"0x{data.hex().upper()}">'


def fold_variables(text: str, n_inputs: int, values: list[np.ndarray]) -> str:
    """@main's arguments after the first `n_inputs` replaced by constants of `values`, in order."""
    start, end, args = _main_arguments(text)
    if len(args) != n_inputs + len(values):
        raise CompileError(f"TensorFlow's StableHLO @main takes {len(args)} arguments; expected {n_inputs} "
                           f"inputs and {len(values)} variables")
    constants = []
    for arg, value in zip(args[n_inputs:], values):
        name, _, rest = arg.partition(":")
        ttype = re.match(r"\s*(tensor<[^>]*>)", rest)
        if ttype is None:
            raise CompileError(f"TensorFlow's StableHLO @main argument {arg!r} is not a tensor")
        constants.append(f"    {name.strip()} = stablehlo.constant {_dense_hex(value)} : {ttype.group(1)}\n")
    body = text.index("{", end) + 1
    newline = text.index("\n", body) + 1
    return text[:start] + ", ".join(args[:n_inputs]) + text[end:newline] + "".join(constants) + text[newline:]


def normalize_legacy_ops(text: str) -> str:
    """`stablehlo.dot` -> `stablehlo.dot_general`; `mhlo.copy` -> an identity reshape."""
    def dot(m: re.Match) -> str:
        lhs_rank = len(m.group(4).split("x")) - 1
        contracting = f"contracting_dims = [{lhs_rank - 1}] x [0]"
        rest = m.group(3)
        return f"= stablehlo.dot_general {m.group(1)}, {m.group(2)}, {contracting}{rest} : (tensor<{m.group(4)}>, tensor<{m.group(5)}>)"

    text = _DOT_RE.sub(dot, text)
    return _COPY_RE.sub(lambda m: f"= stablehlo.reshape {m.group(1)} : ({m.group(2)}) -> {m.group(2)}", text)


def tf_op_at(text: str, line: int) -> str | None:
    """The TF op name in the `loc(...)` of `line` (1-based) of `text`, following `#loc` aliases and
    `fused[...]` locations to their first quoted name; None where it carries none."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    aliases = dict(_LOC_ALIAS_RE.findall(text))
    m = _LOC_RE.search(lines[line - 1])
    end, depth, opened = line - 1, 0, False
    while m is None and end < len(lines):  # an op with regions (while) has its loc after them
        depth += lines[end].count("{") - lines[end].count("}")
        opened = opened or depth > 0
        if opened and depth <= 0:
            m = _LOC_RE.search(lines[end])
            break
        end += 1
    loc = m.group(1) if m else None
    for _ in range(8):  # aliases nest a few levels deep at most
        if loc is None:
            return None
        if loc.startswith('"'):
            name = loc[1:-1]
            # "a/b/Softmax;StatefulPartitionedCall/.../Softmax": the part before ';' is the op's own
            return name.split(";")[0] if name not in ("XLA_Args", "XLA_Retvals") else None
        if loc.startswith("fused["):
            names = re.findall(r'"((?:[^"\\]|\\.)*)"|(#loc\d*)', loc)
            loc = next((f'"{q}"' if q else a for q, a in names), None)
            continue
        loc = aliases.get(loc)
    return None
