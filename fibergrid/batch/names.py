"""Names of a function's inputs and results, read from the StableHLO text JAX prints.

Batch data comes in named columns, and a model's arguments are positional: the compiler keeps no
names (compiler/executable.py's FunctionEntry has a signature only), so they are recovered from
the source text where JAX left them:

- an argument's location, `%arg0: tensor<?x4xf32> loc("x")` (or through an alias,
  `loc(#loc4)` with `#loc4 = loc("x")`), as `jax.jit(f).lower(...)` prints with debug info and
  `jax.export` prints on its wrapped function; older JAX wrote `{jax.arg_info = "x"}`;
- a result's `{jax.result_info = "result['score']"}`: a dict result's keys, a tuple's positions.

Without them (an .fgx of static functions carries no source) inputs are `arg0, arg1, ...` and
results `result` (one) or `result0, result1, ...`, and columns are matched by position.
"""

from __future__ import annotations

import re

_LOC_ALIAS = re.compile(r'^(#loc\d*)\s*=\s*loc\("((?:[^"\\]|\\.)*)"\)\s*$', re.M)
_ARG_START = re.compile(r"%[\w.$-]+\s*:")
_RESULT_KEY = re.compile(r"\['((?:[^'\\]|\\.)*)'\]|\[(\d+)\]|\.(\w+)")


def _balanced(text: str, start: int) -> int:
    """Index just past the bracket group opening at `start` (quotes respected)."""
    pairs = {"(": ")", "<": ">", "{": "}", "[": "]"}
    stack, i, quoted = [], start, False
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c in pairs:
            stack.append(pairs[c])
        elif c in ")>}]" and stack and not (c == ">" and text[i - 1] == "-"):
            stack.pop()
            if not stack:
                return i + 1
        i += 1
    return len(text)


def _split_top(text: str) -> list[str]:
    """`a, b<c, d>, e` -> ['a', 'b<c, d>', 'e']: commas outside brackets and quotes."""
    parts, depth, quoted, start, i = [], 0, False, 0, 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c in "(<{[":
            depth += 1
        elif c in ")>}]" and not (c == ">" and text[i - 1] == "-"):
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if text[start:].strip():
        parts.append(text[start:])
    return [p.strip() for p in parts]


def _header(text: str, function: str, public: bool) -> tuple[list[str], list[str]] | None:
    """(argument declarations, result declarations) of `func.func [public|private] @function`."""
    match = re.search(r"func\.func\s+(?:(public|private)\s+)?@" + re.escape(function) + r"\s*\(", text)
    if match is None or (public and match.group(1) == "private"):
        return None
    open_paren = match.end() - 1
    end_args = _balanced(text, open_paren)
    args = _split_top(text[open_paren + 1 : end_args - 1])
    rest = text[end_args:].lstrip()
    results: list[str] = []
    if rest.startswith("->"):
        rest = rest[2:].lstrip()
        if rest.startswith("("):
            results = _split_top(rest[1 : _balanced(rest, 0) - 1])
        else:
            results = [rest.split("{", 1)[0].strip()]
    return args, results


def _arg_name(decl: str, aliases: dict[str, str]) -> str | None:
    info = re.search(r'jax\.arg_info\s*=\s*"((?:[^"\\]|\\.)*)"', decl)
    if info:
        return info.group(1)
    loc = re.search(r'loc\(\s*(?:"((?:[^"\\]|\\.)*)"|(#loc\d*))\s*\)\s*$', decl)
    if loc:
        return loc.group(1) if loc.group(1) is not None else aliases.get(loc.group(2))
    return None


def _result_name(decl: str) -> str | None:
    info = re.search(r'jax\.result_info\s*=\s*"((?:[^"\\]|\\.)*)"', decl)
    if info is None:
        return None
    path = info.group(1)
    if path == "result":
        return "result"
    keys = [m.group(1) or m.group(2) or m.group(3) for m in _RESULT_KEY.finditer(path)]
    if not keys:
        return path or None
    name = "_".join(keys)
    return f"result{name}" if keys[0].isdigit() else name


def _usable(names: list[str | None]) -> bool:
    return bool(names) and all(names) and len(set(names)) == len(names)


def function_names(text: str | None, function: str, inputs: int, results: int) -> tuple[list[str], list[str], bool]:
    """(input names, result names, named) of `function`; `named` is False when the input names
    are the positional defaults (columns are then matched by position)."""
    positional_in = [f"arg{i}" for i in range(inputs)]
    positional_out = ["result"] if results == 1 else [f"result{i}" for i in range(results)]
    header = _header(text, function, public=True) if text else None
    if header is None:
        return positional_in, positional_out, False
    aliases = dict(_LOC_ALIAS.findall(text))
    args, outs = header
    in_names = [_arg_name(a, aliases) for a in args]
    if not any(in_names):  # jax.export: the names are on the wrapped function, after the dim args
        wrapped = _header(text, f"_wrapped_jax_export_{function}", public=False)
        if wrapped is not None:
            real = [a for a in wrapped[0] if "jax.global_constant" not in a]
            if len(real) == len(args):
                in_names = [_arg_name(a, aliases) for a in real]
    out_names = [_result_name(r) for r in outs]
    named = _usable(in_names) and len(in_names) == inputs
    return (in_names if named else positional_in,
            out_names if _usable(out_names) and len(out_names) == results else positional_out, named)
