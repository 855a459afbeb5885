"""A reader of MLIR's textual syntax: tokens, types, attributes, dense literals, regions.

Dialect-neutral: it reads a module's functions, the generic op form (`"d.op"(%a) <{props}> ({regions})
{attrs} : (Ts) -> Us`), builtin attributes (numbers, strings, arrays, `dense<...>` with splats, hex
blobs and hex bit patterns, `array<i64: ...>`, dictionaries, `#dialect<enum V>` and
`#dialect.name<key = value, ...>` structs) and tensor types. A dialect frontend subclasses `Reader`
and supplies `operation()` (its ops' pretty forms and how parts become IR ops); the StableHLO
frontend and the check tool's test reader are two such. Every error is a `CompileError` naming
line:col; every loop consumes a token or fails, so no input hangs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from compiler.errors import CompileError
from compiler.ir import ELEMENT_TYPES, Function, Module, Op, Region, TensorType, Value

# --------------------------------------------------------------------------------------------
# Tokens

TOKEN_RE = re.compile(r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<value>%[\w.$-]+(?:\#\d+)?)
  | (?P<symbol>@[\w.$-]+|@"[^"\\]*(?:\\.[^"\\]*)*")
  | (?P<block>\^[\w.$-]+)
  | (?P<hash>\#[\w.$-]+)
  | (?P<bang>![\w.$-]+)
  | (?P<string>"[^"\\\n]*(?:\\.[^"\\\n]*)*")  # unrolled: one char at a time is ~35x slower
  | (?P<arrow>->)
  | (?P<number>0x[0-9A-Fa-f]+|[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
  | (?P<ident>[A-Za-z_][\w.$]*)
  | (?P<punct>[()\[\]{}<>=,:?*])
""", re.VERBOSE)


@dataclass(frozen=True)
class Token:
    kind: str  # value symbol block hash bang string arrow number ident punct eof
    text: str
    line: int
    col: int

    @property
    def where(self) -> str:
        return f"{self.line}:{self.col}"


def tokenize(text: str) -> list[Token]:
    tokens, pos, line, line_start = [], 0, 1, 0
    while pos < len(text):
        m = TOKEN_RE.match(text, pos)
        if m is None:
            raise CompileError(f"unexpected character {text[pos]!r} at {line}:{pos - line_start + 1}")
        if m.lastgroup != "ws":
            tokens.append(Token(m.lastgroup, m.group(), line, pos - line_start + 1))
        newlines = m.group().count("\n")
        if newlines:
            line += newlines
            line_start = m.start() + m.group().rindex("\n") + 1
        pos = m.end()
    tokens.append(Token("eof", "", line, pos - line_start + 1))
    return tokens



@dataclass(frozen=True)
class Bits:
    """A hex element such as 0x7FC00000: the bit pattern of one element (MLIR prints NaN/inf so)."""

    bits: int


def flatten(literal: Any) -> list[Any]:
    if isinstance(literal, list):
        return [x for item in literal for x in flatten(item)]
    return [literal]


def dense_array(literal: Any, ttype: TensorType, where: str) -> np.ndarray:
    """A `dense<...>` literal (nested lists or a splat, or a "0x..." blob as bytes) -> an array."""
    dtype, shape = ttype.dtype, ttype.shape
    if not ttype.is_static:
        raise CompileError(f"dense constant of dynamic type {ttype} at {where}")
    try:
        if isinstance(literal, bytes):  # raw little-endian element bytes
            arr = np.frombuffer(literal, np.uint8 if dtype == np.bool_ else dtype).astype(dtype)
        else:
            bits_type = np.dtype(f"u{dtype.itemsize}")
            flat = [np.array(x.bits, bits_type).view(dtype) if isinstance(x, Bits) else x
                    for x in flatten(literal)]
            if dtype.kind in "fV":
                arr = np.array(flat, dtype=np.float64).astype(dtype)
            else:  # exact: never through float64 (2**64 - 1 is a ui64, not 0)
                arr = np.array([x.item() if isinstance(x, np.generic) else x for x in flat], dtype=dtype)
        size = int(np.prod(shape))
        if arr.size == 1:
            return np.full(shape, arr.reshape(())[()], dtype)
        if arr.size != size:
            raise ValueError(f"{arr.size} elements")
        return arr.reshape(shape)
    except (ValueError, TypeError, OverflowError) as e:
        raise CompileError(f"dense constant does not match {ttype} at {where}: {e}") from None


def unescape(s: str) -> str:
    r"""MLIR string escapes: \\, \n, \t, \" and \XX (two hex digits)."""
    simple = {"\\": "\\", "n": "\n", "t": "\t", '"': '"'}
    return re.sub(r'\\([0-9A-Fa-f]{2}|\\|n|t|")',
                  lambda m: simple.get(m.group(1)) or chr(int(m.group(1), 16)), s)



def number(text: str) -> int | float | Bits:
    if text.startswith("0x"):
        return Bits(int(text, 16))
    return float(text) if re.search(r"[.eE]", text) else int(text)


SCALAR_TYPE_RE = re.compile(r"(?:[iu]\d+|ui\d+|f\d+|bf16|index)$")


@dataclass(frozen=True)
class TupleType:
    """`tuple<T, ...>`: only ever the type of values a frontend resolves itself (tuples are not
    IR values)."""

    elements: tuple


@dataclass(frozen=True)
class QuantizedType(TensorType):
    """A tensor of `!quant.uniform` elements: `dtype` is the storage type; a value is
    (storage - zero_point) * scale in `expressed`, per `axis` when it is not None. Only the
    frontend sees these: it rewrites quantized ops into ops on the storage and expressed types."""

    expressed: np.dtype = np.dtype(np.float32)
    scales: tuple = ()
    zero_points: tuple = ()
    axis: int | None = None
    storage_min: int = 0
    storage_max: int = 0


@dataclass(frozen=True)
class TupleValue:
    """A tuple's elements (Values or TupleValues), as `stablehlo.tuple` built it."""

    elements: tuple


@dataclass
class OpParts:
    """An op as read, before a dialect turns it into an `Op`."""

    operands: list[Value]
    attrs: dict[str, Any]
    result_types: list[TensorType]
    regions: list[Region]
    enums: list[str]


# --------------------------------------------------------------------------------------------
# The reader

class Reader:
    """Recursive descent over MLIR's syntax; a dialect subclass supplies `operation()`."""

    terminators: frozenset[str] = frozenset({"return", "func.return"})

    def __init__(self, text: str) -> None:
        self.toks = tokenize(text)
        self.i = 0
        self.scopes: list[dict[str, list[Value]]] = []

    # -- token helpers ---------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> Token:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self) -> Token:
        t = self.tok
        if t.kind == "eof":
            raise CompileError(f"unexpected end of input at {t.where}")
        self.i += 1
        return t

    def at(self, text: str) -> bool:
        return self.tok.text == text and self.tok.kind not in ("string", "eof")

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> Token:
        if not self.at(text):
            self.fail(f"expected '{text}'")
        return self.next()

    def expect_kind(self, kind: str) -> Token:
        if self.tok.kind != kind:
            self.fail(f"expected a {kind}")
        return self.next()

    def fail(self, msg: str) -> None:
        t = self.tok
        got = "end of input" if t.kind == "eof" else repr(t.text)
        raise CompileError(f"{msg} at {t.where}, got {got}")

    def comma_list(self, parse: Callable[[], Any], close: str) -> list[Any]:
        """Items separated by ',' up to and including `close`."""
        items = []
        if not self.accept(close):
            items.append(parse())
            while self.accept(","):
                items.append(parse())
            self.expect(close)
        return items

    def skip_balanced(self) -> None:
        """Skip one bracketed group starting at the current token."""
        pairs = {"(": ")", "[": "]", "{": "}", "<": ">"}
        stack = [pairs[self.next().text]]
        while stack:
            t = self.next()
            if t.kind == "punct" and t.text in pairs:
                stack.append(pairs[t.text])
            elif t.kind == "punct" and t.text == stack[-1]:
                stack.pop()

    def skip_loc(self) -> None:
        if self.at("loc") and self.peek().text == "(":
            self.next()
            self.skip_balanced()

    # -- values ----------------------------------------------------------------------------
    def define(self, name: str, values: list[Value]) -> None:
        self.scopes[-1][name] = values

    def use(self) -> Value:
        t = self.expect_kind("value")
        name, _, index = t.text.partition("#")
        for scope in reversed(self.scopes):
            if name in scope:
                values = scope[name]
                k = int(index or 0)
                if k >= len(values):
                    raise CompileError(f"{t.text} has only {len(values)} results at {t.where}")
                return values[k]
        raise CompileError(f"use of undefined value {t.text} at {t.where}")

    # -- types -----------------------------------------------------------------------------
    def element_type(self, name: str, t: Token) -> np.dtype:
        if name not in ELEMENT_TYPES:
            raise CompileError(f"unsupported element type '{name}' at {t.where}")
        return ELEMENT_TYPES[name]

    def type(self) -> TensorType:
        t = self.tok
        if t.kind == "bang" and t.text == "!stablehlo.token":  # ordering only, no data: an empty tuple
            self.next()
            return TupleType(())
        if t.kind == "ident" and t.text == "tuple" and self.peek().text == "<":
            self.next()
            self.next()
            return TupleType(tuple(self.comma_list(self.type, ">")))
        if t.kind == "ident" and SCALAR_TYPE_RE.match(t.text):
            self.next()
            return TensorType((), self.element_type(t.text, t))
        if not (t.kind == "ident" and t.text == "tensor"):
            self.fail("expected a tensor type")
        self.next()
        self.expect("<")
        text, quant = "", None
        while not (self.at(">") or self.at(",")):
            if self.tok.kind == "bang" and self.tok.text == "!quant.uniform":
                quant = self.quant_uniform()
                continue
            text += self.next().text
        if self.at(","):  # an encoding such as #stablehlo.bounds<...>: irrelevant here
            self.next()
            while not self.at(">"):
                if self.tok.text in "([{<" and self.tok.kind == "punct":
                    self.skip_balanced()
                else:
                    self.next()
        self.expect(">")
        if quant is not None:
            m = re.fullmatch(r"((?:(?:\d+|\?)x)*)", text)
            if m is None:
                raise CompileError(f"malformed quantized tensor type at {t.where}")
            dims = tuple(None if d == "?" else int(d) for d in m.group(1).split("x")[:-1])
            return QuantizedType(dims, *quant)
        m = re.fullmatch(r"((?:(?:\d+|\?)x)*)(\w+)", text)
        if m is None:
            raise CompileError(f"malformed tensor type 'tensor<{text}>' at {t.where}")
        dims = tuple(None if d == "?" else int(d) for d in m.group(1).split("x")[:-1])
        return TensorType(dims, self.element_type(m.group(2), t))

    def quant_uniform(self) -> tuple:
        """`!quant.uniform<i8[<min:max>]:f32[:axis], scale[:zero_point]>` or per axis
        `{scale:zp, ...}` -> QuantizedType's fields after the shape."""
        start = self.next()
        self.expect("<")
        storage = self.element_type(self.expect_kind("ident").text, start)
        low, high = (np.iinfo(storage).min, np.iinfo(storage).max) if storage.kind in "iu" else (0, 0)
        if self.accept("<"):  # a storage range
            low = int(self.expect_kind("number").text)
            self.expect(":")
            high = int(self.expect_kind("number").text)
            self.expect(">")
        self.expect(":")
        expressed = self.element_type(self.expect_kind("ident").text, start)
        axis = int(self.expect_kind("number").text) if self.accept(":") else None
        self.expect(",")

        def pair() -> tuple[float, int]:
            scale = float(self.expect_kind("number").text)
            return scale, int(self.expect_kind("number").text) if self.accept(":") else 0

        pairs = self.comma_list(pair, "}") if self.accept("{") else [pair()]
        self.expect(">")
        return storage, expressed, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), axis, low, high

    def tensor_type(self) -> TensorType:
        """A type that must be a tensor (a function's arguments and results)."""
        t = self.tok
        ty = self.type()
        if isinstance(ty, TupleType):
            raise CompileError(f"unsupported type (a tuple or token) at {t.where}: only tensors may be passed")
        return ty

    def type_list(self) -> list[TensorType]:
        if self.accept("("):
            return self.comma_list(self.type, ")")
        return [self.type()]

    def op_types(self) -> tuple[list[TensorType] | None, list[TensorType]]:
        """`: T`, `: T, U`, `: (Ts) -> Us`, `: T -> U` or `: T, U -> V` -> (operand types or None,
        result types)."""
        self.expect(":")
        if self.at("("):
            ins = self.type_list()
            self.expect("->")
            return ins, self.type_list()
        types = [self.type()]
        while self.accept(","):
            types.append(self.type())
        if self.accept("->"):  # `: T -> U` and chlo's `: T, U -> V`
            return types, self.type_list()
        return None, types

    # -- attributes ------------------------------------------------------------------------
    def attr_dict(self) -> dict[str, Any]:
        self.expect("{")
        attrs: dict[str, Any] = {}

        def entry() -> None:
            key = self.next()
            if key.kind not in ("ident", "string"):
                raise CompileError(f"expected an attribute name at {key.where}, got {key.text!r}")
            name = key.text.strip('"')
            attrs[name] = self.attr() if self.accept("=") else True

        self.comma_list(entry, "}")
        return attrs

    def attr(self) -> Any:
        t = self.tok
        if t.kind == "number":
            self.next()
            value = number(t.text)
            value = value.bits if isinstance(value, Bits) else value
            if self.at(":") and SCALAR_TYPE_RE.match(self.peek().text):
                self.next()
                self.next()
            return value
        if t.kind == "string":
            self.next()
            return unescape(t.text[1:-1])
        if t.kind == "symbol":
            self.next()
            return t.text[1:].strip('"')
        if t.text == "[":
            self.next()
            return tuple(self.comma_list(self.attr, "]"))
        if t.text == "{":
            return self.attr_dict()
        if t.kind == "hash":
            return self.hash_attr()
        if t.text == "<" and t.kind == "punct":  # a bare struct such as dot's `algorithm = <...>`
            self.skip_balanced()
            return "<...>"
        if t.kind == "ident":
            if t.text == "dense" and self.peek().text == "<":
                return self.dense_attr()
            if t.text == "array" and self.peek().text == "<":
                self.next()
                self.next()
                self.next()  # element type
                if self.accept(":"):
                    return tuple(self.comma_list(self.attr, ">"))
                self.expect(">")
                return ()
            self.next()
            if self.at("<"):  # affine_map<...> and friends: kept opaque
                self.skip_balanced()
            return {"true": True, "false": False, "unit": True}.get(t.text, t.text)
        self.fail("expected an attribute")

    def hash_attr(self) -> Any:
        """`#alias`, `#dialect<enum VALUE>` (-> 'VALUE'), `#dialect.name<key = value, ...>` (-> a
        dict; a trailing comma is allowed), or what `dialect_attr` reads; others are skipped."""
        t = self.next()
        if not self.at("<"):
            return t.text  # an alias such as #loc3
        special = self.dialect_attr(t)
        if special is not None:
            return special
        if "." not in t.text and self.peek(2).kind == "ident" and self.peek(3).text == ">":
            self.next()
            self.next()
            value = self.next().text  # #stablehlo<comparison_direction LT> -> 'LT'
            self.next()
            return value
        if self.peek().kind == "ident" and self.peek(2).text == "=":
            return self.struct_attr()
        self.skip_balanced()
        return t.text

    def dialect_attr(self, name: Token) -> Any:
        """A dialect's own attribute syntax after `#name` (at its '<'); None: not one of them."""
        return None

    def struct_attr(self) -> dict[str, Any]:
        """`<key = value, ...>` (a trailing comma allowed) -> a dict."""
        self.expect("<")
        return self.struct_fields()

    def struct_fields(self) -> dict[str, Any]:
        """`key = value, ...>`: the fields of a struct attribute up to its closing '>'."""
        fields: dict[str, Any] = {}
        while not self.accept(">"):
            key = self.expect_kind("ident").text
            self.expect("=")
            fields[key] = self.attr()
            if not self.accept(","):
                self.expect(">")
                break
        return fields

    def dense_attr(self) -> np.ndarray:
        start = self.next()
        self.expect("<")
        literal = [] if self.at(">") else self.dense_literal()  # dense<> : a tensor with no elements
        self.expect(">")
        self.expect(":")
        return dense_array(literal, self.type(), start.where)

    def dense_literal(self) -> Any:
        t = self.next()
        if t.text == "[" and t.kind == "punct":
            return self.comma_list(self.dense_literal, "]")
        if t.kind == "string" and t.text.startswith('"0x'):
            return bytes.fromhex(t.text[3:-1])
        if t.kind == "number":
            return number(t.text)
        if t.text in ("true", "false"):
            return t.text == "true"
        raise CompileError(f"unsupported dense element {t.text!r} at {t.where}")

    def module(self) -> Module:
        functions: dict[str, Function] = {}
        while self.tok.kind != "eof":
            if self.tok.kind == "hash" and self.peek().text == "=":  # #loc3 = loc(...)
                self.next()
                self.next()
                self.skip_loc()
            elif self.accept("module"):
                if self.tok.kind == "symbol":
                    self.next()
                if self.accept("attributes"):
                    self.attr_dict()
                self.expect("{")
                while not self.accept("}"):
                    self.function(functions)
                self.skip_loc()
            else:
                self.function(functions)
        if not functions:
            raise CompileError("no functions in input")
        self.finish(functions)
        return Module(functions)

    def finish(self, functions: dict[str, Function]) -> None:
        """A dialect's checks and fix-ups once every function is read."""

    def function(self, functions: dict[str, Function]) -> None:
        self.expect("func.func")
        public = not self.accept("private")
        self.accept("public")
        name_tok = self.expect_kind("symbol")
        name = name_tok.text[1:].strip('"')
        if name in functions:
            raise CompileError(f"function @{name} defined twice at {name_tok.where}")
        self.scopes.append({})
        self.expect("(")

        def arg() -> Value:
            t = self.expect_kind("value")
            self.expect(":")
            v = Value(self.tensor_type(), t.text)
            if self.at("{"):
                self.attr_dict()
            self.skip_loc()
            self.define(t.text, [v])
            return v

        args = self.comma_list(arg, ")")
        if self.accept("->"):
            def result_type() -> TensorType:
                ty = self.tensor_type()
                if self.at("{"):
                    self.attr_dict()
                return ty
            if self.accept("("):
                self.comma_list(result_type, ")")
            else:
                self.tensor_type()
        if self.accept("attributes"):
            self.attr_dict()
        self.expect("{")
        ops, results = self.block_body()
        self.skip_loc()
        self.scopes.pop()
        functions[name] = Function(name, args, results, ops, public)

    def block_body(self) -> tuple[list[Op], list[Value]]:
        """Ops up to the terminator and the closing '}'; returns (ops, returned values)."""
        ops: list[Op] = []
        while True:
            if self.tok.kind in ("ident", "string") and self.tok.text.strip('"') in self.terminators:
                generic = self.next().kind == "string"
                results = []
                if generic:
                    self.expect("(")
                    results = self.comma_list(self.use, ")")
                elif self.tok.kind == "value":
                    results = [self.use()]
                    while self.accept(","):
                        results.append(self.use())
                if any(isinstance(v, TupleValue) for v in results):
                    self.fail("a tuple or token cannot be returned")
                if results or generic:
                    self.op_types()
                self.skip_loc()
                self.expect("}")
                return ops, results
            op = self.operation()
            if isinstance(op, list):  # an op the dialect rewrote into several
                ops.extend(op)
            elif op is not None:  # None: the op only renamed values (a tuple, a barrier)
                ops.append(op)

    def region(self, args: list[Value] | None = None) -> Region:
        self.expect("{")
        self.scopes.append({})
        if self.tok.kind == "block":
            self.next()
            args = []
            if self.accept("("):
                def arg() -> Value:
                    t = self.expect_kind("value")
                    self.expect(":")
                    v = Value(self.tensor_type(), t.text)
                    self.skip_loc()
                    return v
                args = self.comma_list(arg, ")")
            self.expect(":")
        for a in args or []:
            self.define(a.name, [a])
        ops, results = self.block_body()
        self.scopes.pop()
        return Region(list(args or []), ops, results)

    # -- operations ------------------------------------------------------------------------
    def operation(self) -> Op | None:
        """One op (not a terminator); the dialect subclass reads it (None: it defined values
        without an op)."""
        raise NotImplementedError

    def generic_op(self) -> OpParts:
        """`"dialect.op"(%a, %b) <{props}> ({regions}) {attrs} : (Ts) -> Us`."""
        self.expect("(")
        operands = self.comma_list(self.use, ")")
        attrs: dict[str, Any] = {}
        if self.accept("<"):
            attrs.update(self.attr_dict())
            self.expect(">")
        regions = []
        if self.accept("("):
            regions = self.comma_list(self.region, ")")
        if self.at("{"):
            attrs.update(self.attr_dict())
        _, result_types = self.op_types()
        return OpParts(operands, attrs, result_types, regions, [])

