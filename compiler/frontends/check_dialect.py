"""Check-dialect test files (as iree-check-module and the StableHLO interpreter run them) -> test
cases: one function per test whose checked values are its results.

A file holds tests separated by `// -----` lines; a test is a function with no arguments that
checks values with the `check` dialect, in StableHLO's spelling (`check.expect_eq_const %x,
dense<..> : T`, `expect_almost_eq_const`, `expect_eq`, `expect_almost_eq [, tolerance = t]`,
`expect_close ..., max_ulp_difference = n`) or IREE's (`check.expect_eq_const(%x, dense<..>) : T`,
`expect_almost_eq[_const]`, `expect_true(%x)`, inputs from `util.unfoldable_constant`).

A test checks the kernels, not a constant folder: every constant that feeds computation is
hoisted into an argument of the test function (its value becomes the test's input), except
those an op needs as a shape (the shape operand of `dynamic_reshape` and friends), which stay
constants so the shapes are static.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from compiler.errors import CompileError
from compiler.frontends.mlir import dense_array
from compiler.frontends.stablehlo import StableHLOReader, read_module
from compiler.ir import Function, Module, Op, Value
from compiler.passes.shape_inference import infer_shapes
from common.errors import Error

_SPLIT = re.compile(r"^// -----[ \t]*$", re.MULTILINE)
_CONSTANTS = {"util.unfoldable_constant", "arith.constant"}

SKIPS: tuple[tuple[str, re.Pattern], ...] = (
    ("collectives", re.compile(r"interpreter\.run_parallel|all_gather|all_reduce|all_to_all|collective_"
                               r"|reduce_scatter|stablehlo\.send|stablehlo\.recv")),
    ("infeed/outfeed", re.compile(r"stablehlo\.(infeed|outfeed)")),
    ("replica/partition ids", re.compile(r"replica_id|partition_id")),
    ("probe", re.compile(r"interpreter\.probe|expect_serialized_eq")),
    ("printing (FileCheck of the interpreter's output)",
     re.compile(r"\A(?!.*check\.expect)(?=.*^\s*// CHECK)", re.MULTILINE | re.DOTALL)),
    ("complex", re.compile(r"complex<")),
    ("sub-byte integers", re.compile(r"[x<]u?i[24][>x\s,]")),
    ("f8/f6/f4", re.compile(r"[x<]f[864]E\d")),
)
"""(reason, pattern): a test whose text matches needs what a single-device CPU runtime does not
have, or a type fibergrid does not support (the peer suite's README lists them)."""

# Operands that give a result's shape: they stay constants (a hoisted one would make it dynamic).
_SHAPE_OPERANDS = {"dynamic_broadcast_in_dim": (1,), "dynamic_reshape": (1,), "dynamic_iota": (0,),
                   "real_dynamic_slice": (1, 2, 3), "dynamic_gather": (2,), "dynamic_pad": (2, 3, 4),
                   "dynamic_conv": (2,), "rng": (2,)}


@dataclass
class Check:
    """One check: its kind ('eq', 'almost_eq', 'close', 'true'), the test function's results it
    compares (one, or two for value-against-value checks), the expected constant, its tolerance."""

    kind: str
    results: tuple[int, ...]
    expected: np.ndarray | None = None
    tolerance: float = 1e-4
    relative: float = 0.0
    max_ulps: int = 1
    line: int = 0


@dataclass
class TestCase:
    """One test: its module (the test function rewritten: hoisted constants in, checked values
    out) and inputs, or why it is skipped or could not be read."""

    file: str
    name: str
    line: int
    module: Module | None = None
    inputs: list[np.ndarray] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    skip: str | None = None
    error: str | None = None
    source: str = ""  # the test's text (its part of the file)


class CheckReader(StableHLOReader):
    """StableHLO plus the check dialect's ops (-> 'check' pseudo-ops) and IREE's constants."""

    def operation(self) -> Op:
        t = self.tok
        if t.kind in ("ident", "string") and t.text.strip('"').startswith("check."):
            return self.check_op()
        if t.kind == "value" and self.peek().text == "=" and self.peek(2).text == "util.optimization_barrier":
            name = self.next().text
            self.next()
            return self.renaming_op("util.optimization_barrier", self.next(), [(name, 1)])
        if t.kind == "value" and self.peek().text == "=" and self.peek(2).text in _CONSTANTS:
            name = self.next().text
            self.next()
            head = self.next()
            parts = self.constant_op()
            self.skip_loc()
            return self.build("constant", "stablehlo.constant", head, [(name, 1)], parts)
        return super().operation()

    def check_op(self) -> Op:
        head = self.next()
        kind = head.text.strip('"').removeprefix("check.")
        operands, attrs, literal, literal_type, depth = [], {}, None, None, 0
        while not self.at(":"):
            t = self.tok
            if t.kind == "value":
                operands.append(self.use())
            elif t.text in (",", "(", ")") and t.kind == "punct":
                depth += {"(": 1, ")": -1}.get(self.next().text, 0)
            elif t.text == "dense":  # its type is the op's: `, dense<..> : T` or `(.., dense<..>) : T`
                self.next()
                self.expect("<")
                literal = [] if self.at(">") else self.dense_literal()
                self.expect(">")
                if depth > 0 and self.accept(":"):  # IREE: `(%x, dense<..> : T) : T`
                    literal_type = self.type()
            elif t.text in ("atol", "rtol") and self.peek().kind == "number":  # IREE: `, atol 1.0e-02`
                self.next()
                attrs[t.text] = float(self.next().text)
            elif t.kind == "ident" and self.peek().text == "=":
                self.next()
                self.next()
                attrs[t.text] = self.attr()
            elif t.text == "{":
                attrs.update(self.attr_dict())
            else:
                self.fail(f"unexpected token in {head.text}")
        _, types = self.op_types()
        if self.at("{"):  # `: T {tolerance = 0.1 : f64}`
            attrs.update(self.attr_dict())
        self.skip_loc()
        if literal is not None:
            attrs["expected"] = dense_array(literal, literal_type or types[0], head.where)
        return Op("check", operands, [], {"kind": kind, **attrs}, [], (head.line, head.col))


def _check_of(op: Op, results: list[int]) -> Check:
    kind = op.attrs["kind"]
    base = kind.removeprefix("expect_").removesuffix("_const")
    if base not in ("eq", "almost_eq", "close", "true"):
        raise CompileError(f"unsupported check op 'check.{kind}' at {op.loc[0]}:{op.loc[1]}")
    tolerance = op.attrs.get("tolerance", op.attrs.get("atol", 1e-4))
    return Check(base, tuple(results), op.attrs.get("expected"), float(tolerance), float(op.attrs.get("rtol", 0.0)),
                 int(op.attrs.get("max_ulp_difference", 1)), op.loc[0] if op.loc else 0)


def _uses(ops: list[Op]) -> dict[Value, list[tuple[Op, int]]]:
    """Every value's users (op, operand index), nested regions included."""
    uses: dict[Value, list[tuple[Op, int]]] = {}
    for op in ops:
        for i, v in enumerate(op.operands):
            uses.setdefault(v, []).append((op, i))
        for region in op.regions:
            for v, users in _uses(region.ops).items():
                uses.setdefault(v, []).extend(users)
            for v in region.results:
                uses.setdefault(v, []).append((op, -1))
    return uses


def _shape_values(ops: list[Op]) -> set[Value]:
    """Values an op needs as a shape, and every value they are computed from."""
    producers = {r: op for op in ops for r in op.results}
    todo = [op.operands[i] for op in ops for i in _SHAPE_OPERANDS.get(op.name, ()) if i < len(op.operands)]
    seen: set[Value] = set()
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        if v in producers:
            todo.extend(producers[v].operands)
    return seen


def _as_test(fn: Function) -> tuple[Function, list[np.ndarray], list[Check]]:
    """The test function with its constants hoisted into arguments and its checked values as
    results; the inputs; the checks."""
    checks_ops = [op for op in fn.ops if op.name == "check"]
    ops = [op for op in fn.ops if op.name != "check"]
    results: list[Value] = []
    checks = []
    for op in checks_ops:
        indices = []
        for v in op.operands:
            if v not in results:
                results.append(v)
            indices.append(results.index(v))
        checks.append(_check_of(op, indices))
    uses = _uses(ops)
    keep = _shape_values(ops)
    args, inputs, body = [], [], []
    for op in ops:
        if op.name == "constant" and op.results[0] not in keep and uses.get(op.results[0]):
            args.append(op.results[0])
            inputs.append(np.asarray(op.attrs["value"]))
        else:
            body.append(op)
    return Function(fn.name, args, results, body, True), inputs, checks


def _skip_reason(text: str) -> str | None:
    for reason, pattern in SKIPS:
        if pattern.search(text):
            return reason
    return None


def read_tests(text: str, file: str = "<text>") -> list[TestCase]:
    """Every test of a check-dialect file, in order (never raises for a test's content: a test
    that cannot be read is a TestCase with its `error`)."""
    cases = []
    starts = [0] + [m.end() for m in _SPLIT.finditer(text)]
    ends = [m.start() for m in _SPLIT.finditer(text)] + [len(text)]
    for start, end in zip(starts, ends):
        first_line = text.count("\n", 0, start)
        chunk = "\n" * first_line + text[start:end]  # line numbers as in the file
        names = [(m.group(1), chunk.count("\n", 0, m.start()) + 1)
                 for m in re.finditer(r"func\.func\s+(?:public\s+)?@([\w.$-]+)\s*\(\s*\)", chunk)]
        if not names:
            continue
        skip = _skip_reason(chunk)
        if skip is not None:
            cases.extend(TestCase(file, name, line, skip=skip, source=chunk) for name, line in names)
            continue
        cases.extend(_read_chunk(chunk, file, names))
    return cases


def _read_chunk(chunk: str, file: str, names: list[tuple[str, int]]) -> list[TestCase]:
    try:
        module = read_module(chunk, CheckReader)
    except Error as e:
        return [TestCase(file, name, line, error=str(e), source=chunk) for name, line in names]
    cases = []
    for name, line in names:
        case = TestCase(file, name, line, source=chunk)
        try:
            fn, case.inputs, case.checks = _as_test(module.function(name))
            tests = {n for n, _ in names}
            functions = {n: (fn if n == name else f) for n, f in module.functions.items()
                         if n == name or n not in tests}
            for n, f in functions.items():
                f.public = n == name
            case.module = infer_shapes(Module(functions))
        except Error as e:
            case.error = str(e)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
            case.error = f"malformed test ({type(e).__name__}: {e})"
        cases.append(case)
    return cases
