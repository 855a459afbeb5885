"""Vector math the CPU kernels compute inline instead of calling the C library lane by lane.

LLVM has no vector math library configured here, so `llvm.exp.v16f32` becomes 16 calls to
`expf` with the lanes taken apart and put back: an elementwise exp over 16M floats ran at
0.6 GB/s (236 ms, 14 ns a value), the softmax that contains it at 0.08 of the memory roofline.
`lower` is the CPU builder's `target_math` hook (expr.py asks it before emitting an intrinsic):
for f32 vectors it returns the inline form, for anything else None (the intrinsic stays).

exp: Cephes' expf: n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts, so r is exact to
an ulp), exp(r) by a degree-6 polynomial on |r| <= ln2/2 (about 1 ulp), times 2^n built in the
exponent bits as two factors (n in [-150, 128] does not fit one f32 exponent), or with AVX-512 by
vscalefps, which needs neither the clamp nor the factors (`_exp_scalef`). Overflow gives
+inf, deep underflow 0 (denormal results flush to zero: kernels run with FTZ/DAZ, as XLA's do),
NaN stays NaN. tanh and log: Cephes' tanhf and logf, vectorised the same way; erf: XLA's f32
rational approximation; erfc: Numerical Recipes' fit over that exp (their docstrings).
"""

from __future__ import annotations

from llvmlite import ir

from compiler.passes.special_math import ERFC_FIT

from . import jit
from .abi_builder import F32, I32, fma, intrinsic

_LOG2E = 1.44269504088896341
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
_EXP_LOW, _EXP_HIGH = -104.0, 89.0  # beyond: 0 (below the smallest denormal) and +inf


def _const(ty: ir.VectorType, value: float | int) -> ir.Constant:
    return ir.Constant(ty, [value] * ty.count)


def _call(b: ir.IRBuilder, name: str, args: list[ir.Value]) -> ir.Value:
    ty = args[0].type
    return b.call(intrinsic(b.module, f"llvm.{name}.v{ty.count}f32", ty, [ty] * len(args)), args)


def exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """e^x for a vector of f32 (module docstring)."""
    ty = x.type
    if ty.count == 16 and jit.has_feature("avx512f"):
        return _exp_scalef(b, x)
    ity = ir.VectorType(I32, ty.count)
    clamped = _call(b, "minnum", [_call(b, "maxnum", [x, _const(ty, _EXP_LOW)]), _const(ty, _EXP_HIGH)])
    n = _call(b, "roundeven", [b.fmul(clamped, _const(ty, _LOG2E))])
    r = fma(b, n, _const(ty, -_LN2_HI), clamped)
    r = fma(b, n, _const(ty, -_LN2_LO), r)
    p = _const(ty, _EXP_POLY[0])
    for c in _EXP_POLY[1:]:
        p = fma(b, p, r, _const(ty, c))
    p = fma(b, p, b.fmul(r, r), b.fadd(r, _const(ty, 1.0)))
    ni = b.fptosi(n, ity)
    half = b.ashr(ni, _const(ity, 1))
    bias = _const(ity, 127)
    scale_a = b.bitcast(b.shl(b.add(half, bias), _const(ity, 23)), ty)
    scale_b = b.bitcast(b.shl(b.add(b.sub(ni, half), bias), _const(ity, 23)), ty)
    result = b.fmul(b.fmul(p, scale_a), scale_b)
    return b.select(b.fcmp_unordered("uno", x, x), x, result)


_ROUNDING_SHIFTER = 1.5 * 2.0 ** 23  # x + this - this rounds x to an integer (|x| < 2^22)
_EXP_R_LIMIT = 0.35  # just above ln2 / 2: |r| never exceeds it for a finite n


def _exp_scalef(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """exp's AVX-512 form, 14 operations instead of 18 (an exp is most of a softmax's compute):
    vscalefps takes p * 2^n in one instruction, overflowing to +inf and underflowing to 0 for
    any n, infinite n included, and NaN for a NaN n. So x needs no clamp: where x is out of
    range (or infinite, or NaN) only r is garbage, and clamping r to +-0.35 keeps p finite and
    positive, which n's scale then sends to inf or 0; a NaN x makes n NaN and so the result.
    n is rounded by the shifter (an FMA and a subtract) instead of a 2-uop vrndscaleps; beyond
    2^22 it is already integral, or as large. p is Horner's 1 + r (1 + r P(r)): two FMAs where
    Cephes' r^2 P + r + 1 takes three operations (1 ulp either way, tested against float64)."""
    ty = x.type
    shifter = _const(ty, _ROUNDING_SHIFTER)
    n = b.fsub(fma(b, x, _const(ty, _LOG2E), shifter), shifter)
    r = fma(b, n, _const(ty, -_LN2_HI), x)
    r = fma(b, n, _const(ty, -_LN2_LO), r)
    r = _call(b, "minnum", [_call(b, "maxnum", [r, _const(ty, -_EXP_R_LIMIT)]), _const(ty, _EXP_R_LIMIT)])
    p = _const(ty, _EXP_POLY[0])
    for c in (*_EXP_POLY[1:], 1.0, 1.0):
        p = fma(b, p, r, _const(ty, c))
    scalef = intrinsic(b.module, "llvm.x86.avx512.mask.scalef.ps.512", ty, [ty, ty, ty, ir.IntType(16), I32])
    return b.call(scalef, [p, n, _const(ty, 0.0), ir.Constant(ir.IntType(16), -1), ir.Constant(I32, 4)])


_TANH_POLY = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1)
_TANH_SMALL = 0.625


def tanh(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """tanh(x) for a vector of f32 (Cephes' tanhf): x + x^3 P(x^2) for |x| < 0.625, else
    sign(x) (1 - 2 / (e^2|x| + 1)) (1 at large |x|, where e^2|x| is +inf); NaN stays NaN."""
    ty = x.type
    magnitude = _call(b, "fabs", [x])
    z = b.fmul(x, x)
    p = _const(ty, _TANH_POLY[0])
    for c in _TANH_POLY[1:]:
        p = fma(b, p, z, _const(ty, c))
    small = fma(b, b.fmul(p, z), x, x)
    two = _const(ty, 2.0)
    large = b.fsub(_const(ty, 1.0), b.fdiv(two, b.fadd(exp(b, b.fmul(magnitude, two)), _const(ty, 1.0))))
    large = _call(b, "copysign", [large, x])
    result = b.select(b.fcmp_ordered("<", magnitude, _const(ty, _TANH_SMALL)), small, large)
    return b.select(b.fcmp_unordered("uno", x, x), x, result)


_SQRT_HALF = 0.707106781186547524
_LOG_POLY = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
             -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)
_LN2_LOG_HI, _LN2_LOG_LO = 0.693359375, -2.12194440e-4


def log(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """ln(x) for a vector of f32 (Cephes' logf): x = m 2^e with m in [sqrt(1/2), sqrt(2)),
    ln(m) = f - f^2/2 + f^3 P(f) with f = m - 1, plus e ln 2 in two parts. 0 (and denormals,
    zero under DAZ) give -inf, negatives NaN, +inf +inf, NaN NaN."""
    ty = x.type
    ity = ir.VectorType(I32, ty.count)
    bits = b.bitcast(x, ity)
    exponent = b.sub(b.lshr(bits, _const(ity, 23)), _const(ity, 126))  # x = m' 2^e, m' in [0.5, 1)
    mantissa = b.bitcast(b.or_(b.and_(bits, _const(ity, 0x807FFFFF)), _const(ity, 0x3F000000)), ty)
    below = b.fcmp_ordered("<", mantissa, _const(ty, _SQRT_HALF))
    e = b.sitofp(b.sub(exponent, b.zext(below, ity)), ty)
    f = b.fsub(b.select(below, b.fadd(mantissa, mantissa), mantissa), _const(ty, 1.0))
    z = b.fmul(f, f)
    p = _const(ty, _LOG_POLY[0])
    for c in _LOG_POLY[1:]:
        p = fma(b, p, f, _const(ty, c))
    y = b.fmul(b.fmul(p, f), z)
    y = fma(b, e, _const(ty, _LN2_LOG_LO), y)
    y = fma(b, z, _const(ty, -0.5), y)
    result = fma(b, e, _const(ty, _LN2_LOG_HI), b.fadd(f, y))
    zero = _const(ty, 0.0)
    result = b.select(b.fcmp_ordered("==", x, zero), _const(ty, float("-inf")), result)
    result = b.select(b.fcmp_ordered("==", x, _const(ty, float("inf"))), x, result)
    nan = _const(ty, float("nan"))
    return b.select(b.fcmp_unordered("ult", x, zero), nan, result)  # negatives and NaN


# erf: odd / even polynomials in x^2 (the rational approximation XLA and Eigen use for f32).
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)


def erf(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """erf(x) for a vector of f32: x P(x^2) / Q(x^2) on x clamped to [-4, 4] (beyond, erf is
    +-1 in f32), the result clamped to [-1, 1]; within 4.2e-7 of erf, 2.2e-7 relative near 0.
    The exact GELU of BERT and ViT computes one per element: the C library's erff lane by lane
    took 14 ns each."""
    ty = x.type
    four = _const(ty, 4.0)
    clamped = _call(b, "minnum", [_call(b, "maxnum", [x, b.fneg(four)]), four])
    z = b.fmul(clamped, clamped)
    p = _const(ty, _ERF_P[0])
    for c in _ERF_P[1:]:
        p = fma(b, p, z, _const(ty, c))
    q = _const(ty, _ERF_Q[0])
    for c in _ERF_Q[1:]:
        q = fma(b, q, z, _const(ty, c))
    one = _const(ty, 1.0)
    result = _call(b, "minnum", [_call(b, "maxnum", [b.fdiv(b.fmul(clamped, p), q), b.fneg(one)]), one])
    return b.select(b.fcmp_unordered("uno", x, x), x, result)


def erfc(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """erfc(x) for a vector of f32: Numerical Recipes' fit (special_math.ERFC_FIT, relative
    error below 1.2e-7 also in the tails, where 1 - erf(x) would be 0) over the inline exp;
    2 - erfc(|x|) for negative x. JAX's exact GELU is 0.5 x erfc(-x / sqrt 2)."""
    ty = x.type
    one = _const(ty, 1.0)
    z = _call(b, "minnum", [_call(b, "fabs", [x]), _const(ty, 10.0)])  # erfc(10) is 0 in f32
    t = b.fdiv(one, fma(b, z, _const(ty, 0.5), one))
    p = _const(ty, ERFC_FIT[-1])
    for c in reversed(ERFC_FIT[:-1]):
        p = fma(b, p, t, _const(ty, c))
    # e^(p - z^2) with the exponent's rounding put back: z^2 = hi + lo exactly (an FMA), and
    # s = p - hi with its error (Knuth's two-sum), so e^s (1 + error - lo) keeps the far tail's
    # relative error near the exp's own instead of ulp(z^2) (1e-5 at x = 9).
    hi = b.fmul(z, z)
    lo = fma(b, z, z, b.fneg(hi))
    s_ = b.fsub(p, hi)
    back = b.fsub(s_, p)
    error = b.fadd(b.fsub(p, b.fsub(s_, back)), b.fsub(b.fneg(hi), back))
    e = exp(b, s_)
    ans = b.fmul(t, fma(b, e, b.fsub(error, lo), e))
    result = b.select(b.fcmp_ordered(">=", x, _const(ty, 0.0)), ans, b.fsub(_const(ty, 2.0), ans))
    return b.select(b.fcmp_unordered("uno", x, x), x, result)


_LOWERINGS = {"exp": exp, "tanh": tanh, "log": log, "erf": erf, "erfc": erfc}


def lower(b: ir.IRBuilder, name: str, args: list[ir.Value]) -> ir.Value | None:
    """The inline vector form of math function `name`, or None where there is none."""
    ty = args[0].type
    if name in _LOWERINGS and isinstance(ty, ir.VectorType) and ty.element == F32:
        return _LOWERINGS[name](b, *args)
    return None
