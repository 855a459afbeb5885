"""Special math expanded into plain arithmetic, once, above the targets.

The CPU target calls the C library for erf, expm1, log1p, cbrt, asinh, acosh, atanh, tan (their
results then match XLA's to an ulp); a target without a C library (SPIR-V for Vulkan) asks
this pass to rewrite those ops in kernel IR into ops every target has (exp, log, sqrt,
arithmetic, compares, selects), so each expansion is written once for every such target.
Accuracy: relative error around 1e-7 in f32 (erf/erfc: Numerical Recipes' erfc Chebyshev fit,
1.2e-7, with a Taylor series near 0), well inside the model tests' tolerance. Narrow floats are
expanded in f32 and rounded once at the end. lgamma and erf_inv are not expanded: a target
without them refuses them with a CompileError naming the op.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from compiler import kernel_ir as kir

F32 = np.dtype(np.float32)
BOOL = np.dtype(np.bool_)
# Numerical Recipes' erfc: t = 1 / (1 + |x|/2), erfc(|x|) = t e^(-x^2 + P(t)), P's coefficients
# from t^0 up; fractional error below 1.2e-7 everywhere (the CPU's vector erfc uses it too).
ERFC_FIT = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
            -1.13520398, 1.48851587, -0.82215223, 0.17087277)
EXPANDED = frozenset({"erf", "erfc", "exponential_minus_one", "log_plus_one", "cbrt", "asinh", "acosh", "atanh", "tan"})


class _Math:
    """Expression builders in one float dtype."""

    def __init__(self, dtype: np.dtype) -> None:
        self.t = dtype

    def c(self, v: float) -> kir.Expr:
        return kir.Const(v, self.t)

    def op(self, name: str, *xs: kir.Expr) -> kir.Expr:
        return kir.Compute(name, xs, self.t)

    def cmp(self, a: kir.Expr, b: kir.Expr, direction: str) -> kir.Expr:
        return kir.Compute("compare", (a, b), BOOL, direction)

    def select(self, cond: kir.Expr, a: kir.Expr, b: kir.Expr) -> kir.Expr:
        return kir.Compute("select", (cond, a, b), self.t)

    def poly(self, x: kir.Expr, coefficients: list[float]) -> kir.Expr:
        """coefficients[0] + x * (coefficients[1] + x * (...)) (Horner)."""
        out = self.c(coefficients[-1])
        for k in reversed(coefficients[:-1]):
            out = self.op("add", self.c(k), self.op("multiply", x, out))
        return out

    def small(self, x: kir.Expr, limit: float) -> kir.Expr:
        return self.cmp(self.op("abs", x), self.c(limit), "LT")

    # -- the expansions --------------------------------------------------------------------

    def expm1(self, x: kir.Expr) -> kir.Expr:
        """Kahan: u = e^x; (u - 1) * x / log(u), exact at u == 1; plain e^x - 1 beyond |x| 0.5."""
        u = self.op("exponential", x)
        um1 = self.op("subtract", u, self.c(1.0))
        kahan = self.select(self.cmp(u, self.c(1.0), "EQ"), x,
                            self.op("divide", self.op("multiply", um1, x), self.op("log", u)))
        return self.select(self.small(x, 0.5), kahan, um1)

    def log1p(self, x: kir.Expr) -> kir.Expr:
        """Kahan: u = 1 + x; log(u) * x / (u - 1), exact at u == 1; plain log(u) beyond |x| 0.5."""
        u = self.op("add", self.c(1.0), x)
        kahan = self.select(self.cmp(u, self.c(1.0), "EQ"), x,
                            self.op("divide", self.op("multiply", self.op("log", u), x), self.op("subtract", u, self.c(1.0))))
        return self.select(self.small(x, 0.5), kahan, self.op("log", u))

    def erfc(self, x: kir.Expr) -> kir.Expr:
        z = self.op("abs", x)
        t = self.op("divide", self.c(1.0), self.op("add", self.c(1.0), self.op("multiply", self.c(0.5), z)))
        p = self.poly(t, list(ERFC_FIT))
        ans = self.op("multiply", t, self.op("exponential", self.op("add", self.op("negate", self.op("multiply", z, z)), p)))
        return self.select(self.cmp(x, self.c(0.0), "GE"), ans, self.op("subtract", self.c(2.0), ans))

    def erf(self, x: kir.Expr) -> kir.Expr:
        x2 = self.op("multiply", x, x)
        series = self.op("multiply", self.op("multiply", self.c(2 / math.sqrt(math.pi)), x),
                         self.poly(x2, [1.0, -1 / 3, 1 / 10, -1 / 42, 1 / 216, -1 / 1320]))
        return self.select(self.small(x, 0.5), series, self.op("subtract", self.c(1.0), self.erfc(x)))

    def cbrt(self, x: kir.Expr) -> kir.Expr:
        a = self.op("abs", x)
        y = self.op("exponential", self.op("divide", self.op("log", a), self.c(3.0)))
        y2 = self.op("multiply", y, y)
        y = self.op("subtract", y, self.op("divide", self.op("subtract", self.op("multiply", y2, y), a),
                                           self.op("multiply", self.c(3.0), y2)))  # one Newton step
        signed = self.select(self.cmp(x, self.c(0.0), "LT"), self.op("negate", y), y)
        special = self.kir_or(self.cmp(a, self.c(0.0), "EQ"), self.cmp(a, self.c(math.inf), "EQ"))
        return self.select(special, x, signed)

    def kir_or(self, a: kir.Expr, b: kir.Expr) -> kir.Expr:
        return kir.Compute("or", (a, b), BOOL)

    def asinh(self, x: kir.Expr) -> kir.Expr:
        a = self.op("abs", x)
        a2 = self.op("multiply", a, a)
        near = self.log1p(self.op("add", a, self.op("divide", a2, self.op("add", self.c(1.0), self.op("sqrt", self.op("add", a2, self.c(1.0)))))))
        far = self.op("add", self.op("log", a), self.c(math.log(2.0)))
        r = self.select(self.cmp(a, self.c(1e18), "GT"), far, near)
        return self.select(self.cmp(x, self.c(0.0), "LT"), self.op("negate", r), r)

    def acosh(self, x: kir.Expr) -> kir.Expr:
        near = self.op("log", self.op("add", x, self.op("sqrt", self.op("subtract", self.op("multiply", x, x), self.c(1.0)))))
        far = self.op("add", self.op("log", x), self.c(math.log(2.0)))
        return self.select(self.cmp(x, self.c(1e18), "GT"), far, near)

    def tan(self, x: kir.Expr) -> kir.Expr:
        return self.op("divide", self.op("sine", x), self.op("cosine", x))

    def atanh(self, x: kir.Expr) -> kir.Expr:
        return self.op("multiply", self.c(0.5), self.op("subtract", self.log1p(x), self.log1p(self.op("negate", x))))


_BUILDERS: dict[str, Callable[[_Math, kir.Expr], kir.Expr]] = {
    "erf": _Math.erf, "erfc": _Math.erfc, "exponential_minus_one": _Math.expm1, "log_plus_one": _Math.log1p,
    "cbrt": _Math.cbrt, "asinh": _Math.asinh, "acosh": _Math.acosh, "atanh": _Math.atanh, "tan": _Math.tan,
}


def _rewrite(node: kir.Expr, native: frozenset[str], memo: dict[int, kir.Expr]) -> kir.Expr:
    if id(node) in memo:
        return memo[id(node)]
    out = node
    if isinstance(node, kir.Load):
        index = tuple(_rewrite(x, native, memo) for x in node.index)
        out = dataclasses.replace(node, index=index) if any(a is not b for a, b in zip(index, node.index)) else node
    elif isinstance(node, kir.Compute):
        operands = tuple(_rewrite(x, native, memo) for x in node.operands)
        if node.op in EXPANDED and node.op not in native and kir.is_float(node.dtype):
            x = operands[0]
            wide = node.dtype if node.dtype.kind == "f" and node.dtype.itemsize >= 4 else F32
            if wide != node.dtype:
                x = kir.Compute("convert", (x,), wide)
            out = _BUILDERS[node.op](_Math(wide), x)
            if wide != node.dtype:
                out = kir.Compute("convert", (out,), node.dtype)
        elif any(a is not b for a, b in zip(operands, node.operands)):
            out = dataclasses.replace(node, operands=operands)
    memo[id(node)] = out
    return out


def expand(region: kir.KernelRegion, native: frozenset[str] = frozenset()) -> kir.KernelRegion:
    """`region` with the ops of EXPANDED that are not in `native` written in plain arithmetic."""
    memo: dict[int, kir.Expr] = {}
    body = region.body
    fields = {f.name: getattr(body, f.name) for f in dataclasses.fields(body)}
    changed = {}
    for name, value in fields.items():
        if isinstance(value, tuple) and value and all(isinstance(x, (kir.Load, kir.Const, kir.Coord, kir.Arg, kir.Compute)) for x in value):
            new = tuple(_rewrite(x, native, memo) for x in value)
            if any(a is not b for a, b in zip(new, value)):
                changed[name] = new
        elif isinstance(value, (kir.Load, kir.Compute)):
            new = _rewrite(value, native, memo)
            if new is not value:
                changed[name] = new
    if not changed:
        return region
    return dataclasses.replace(region, body=dataclasses.replace(body, **changed))
