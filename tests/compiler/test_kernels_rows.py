"""Row fusion (compiler/passes/row_fusion.py, llvm_cpu/rows.py): softmax, log-softmax, layernorm,
RMS norm and mean/variance over the last dim as one dispatch per chain, checked against JAX on
local-sync and local-task (and Vulkan where present): rows that are not a multiple of the vector
width, one row shorter than a vector, leading dims, -inf / huge / NaN values, f16 and bf16,
temporaries read after the chain, a chain a transposed read ends. (Streaming stores:
test_kernels_streaming.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from tests.compiler.conftest import run_against_jax

jax = pytest.importorskip("jax")
jnp, lax = jax.numpy, jax.lax
RNG = np.random.default_rng(12)


def _layernorm(x):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + 1e-5) * 1.5 + 0.25


def _rmsnorm(x):
    return x * lax.rsqrt((x * x).mean(-1, keepdims=True) + 1e-6)


CHAINS = {
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "log_softmax": lambda x: jax.nn.log_softmax(x, axis=-1),
    "layernorm": _layernorm,
    "rmsnorm": _rmsnorm,
    "mean_var": lambda x: (x.mean(-1), x.var(-1)),
}


@pytest.fixture(scope="module", params=["local-sync", "local-task"])
def device(request):
    dev = fg.create_device(request.param, **({"workers": 2} if request.param == "local-task" else {}))
    yield dev
    dev.close()


def _kernels(module) -> int:
    return len(module.compiled.kernels)


@pytest.mark.parametrize("shape", [(64, 1024), (7, 33), (3, 5, 100), (4, 3), (2, 1000)])
@pytest.mark.parametrize("name", list(CHAINS))
def test_chains_are_one_dispatch_and_match_jax(device, name, shape) -> None:
    x = (RNG.standard_normal(shape) * 4).astype(np.float32)
    module = run_against_jax(device, CHAINS[name], x)
    assert _kernels(module) == 1


def test_extreme_values(device) -> None:
    x = (RNG.standard_normal((6, 77)) * 3).astype(np.float32)
    x[0, :] = -np.inf  # a row of -inf: max -inf, every exp NaN, as in JAX
    x[1, 5] = np.inf
    x[2, 70] = np.nan
    x[3, :] = 80.0 + RNG.standard_normal(77).astype(np.float32)  # exp would overflow unshifted
    x[4, :40] = -np.inf
    x[5, :] = 3e38
    for f in (CHAINS["softmax"], CHAINS["log_softmax"], lambda x: (x.max(-1), x.min(-1))):
        run_against_jax(device, f, x)


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16"])
def test_narrow_floats(device, dtype) -> None:
    """Every op rounds to the narrow type, as XLA's CPU backend; the fold's order differs from
    XLA's, so results agree to a few units in the last place, not bit for bit."""
    dtype = jnp.dtype(dtype)
    x = (RNG.standard_normal((9, 130)) * 3).astype(dtype)
    for name in ("softmax", "layernorm"):
        f = CHAINS[name]
        module = fg.load(jax.jit(f).lower(x).as_text(), device)
        got, want = np.asarray(module(x)).astype(np.float64), np.asarray(f(x)).astype(np.float64)
        assert _kernels(module) == 1
        assert np.abs(got - want).max() <= 4 * float(jnp.finfo(dtype).eps) * np.abs(want).max()


def test_division_by_a_row_value(device) -> None:
    """x / s with s one value per row multiplies by 1/s (rows.row_divisors); a row whose s is
    zero, denormal, huge, infinite or NaN divides, so its infinities, NaNs and tiny quotients
    come out as JAX's."""
    x = (RNG.standard_normal((9, 70)) * 3).astype(np.float32)
    s = np.array([2.5, 0.0, 1e-40, 3e38, np.inf, np.nan, -7.0, 2.0 ** -127, 1e-30], np.float32)[:, None]

    def f(x, s):
        e = jnp.exp(x - x.max(-1, keepdims=True))
        return e / (e.sum(-1, keepdims=True) * s), x / s + e / 3.0

    module = run_against_jax(device, f, x, s)
    assert _kernels(module) == 1
    got = np.asarray(module(x, s)[0])
    assert np.isinf(got[1]).all() and np.isnan(got[5]).all() and np.isinf(got[2]).any()


def test_a_quotient_inside_an_output_multiplies() -> None:
    """Layernorm's (x - mean) / sqrt(var + eps) * g + b: the quotient under a multiply and an add
    takes the reciprocal too; one under a rounding, or row-invariant as a whole, does not."""
    from compiler import kernel_ir as kir
    from compiler.codegen.llvm_cpu.rows import row_divisors

    f32 = np.dtype(np.float32)
    x = kir.Load(0, (kir.Coord(0, np.dtype(np.int64)), kir.Coord(1, np.dtype(np.int64))), f32)
    g = kir.Load(1, (kir.Coord(1, np.dtype(np.int64)),), f32)
    s = kir.Compute("sqrt", (kir.Arg(1, f32),), f32)
    quotient = kir.Compute("divide", (kir.Compute("subtract", (x, kir.Arg(0, f32)), f32), s), f32)
    layernorm = kir.Compute("add", (kir.Compute("multiply", (quotient, g), f32), kir.Const(0.5, f32)), f32)
    rounded = kir.Compute("round_nearest_even", (quotient,), f32)
    per_row = kir.Compute("add", (x, kir.Compute("divide", (kir.Arg(0, f32), s), f32)), f32)
    (out, kept_round, kept_row), divisors = row_divisors((layernorm, rounded, per_row), 2, 2)
    assert divisors == [s]
    product = out.operands[0].operands[0]
    assert product.op == "multiply" and product.operands[1].index == 2
    assert kept_round is rounded and kept_row is per_row


def test_layernorm_with_special_row_divisors(device) -> None:
    """A nested quotient whose divisor is zero, denormal, huge, infinite or NaN in some rows
    divides in those rows, as JAX does."""
    x = (RNG.standard_normal((8, 40)) * 3).astype(np.float32)
    s = np.array([2.5, 0.0, 1e-40, 3e38, np.inf, np.nan, -7.0, 2.0 ** -127], np.float32)[:, None]
    w = RNG.standard_normal(40).astype(np.float32)

    def f(x, s):
        return (x - x.mean(-1, keepdims=True)) / s * w + 0.5

    module = run_against_jax(device, f, x, s)
    assert _kernels(module) == 1


def test_a_rounded_quotient_divides(device) -> None:
    """A quotient that feeds a rounding (a quantizer's round(x / scale), ONNX's
    DynamicQuantizeLinear) keeps the IEEE divide: 45.5 * (1/7) is 6.5000005 in f32 and would round
    to 7 where 45.5 / 7 = 6.5 rounds to 6. Checked against numpy: XLA's CPU backend multiplies by
    the reciprocal here and gives 7."""
    x = np.tile(np.array([45.5, -38.5, 0.0, 0.0, 7.0, -7.0], np.float32), (4, 1))  # row sums 7

    def f(x):
        return jnp.round(x / x.sum(-1, keepdims=True))

    module = fg.load(jax.jit(f).lower(x).as_text(), device)
    assert _kernels(module) == 1
    got = np.asarray(module(x))
    assert np.array_equal(got, np.round(x / x.sum(-1, keepdims=True)))
    assert np.array_equal(got[0], [6.0, -6.0, 0.0, 0.0, 1.0, -1.0])


def test_temporaries_read_after_the_chain_are_written(device) -> None:
    def f(x):
        m = x.max(-1, keepdims=True)
        e = jnp.exp(x - m)
        return e / e.sum(-1, keepdims=True), m, e * 2.0  # the max and the exps used outside

    module = run_against_jax(device, f, (RNG.standard_normal((16, 48)) * 2).astype(np.float32))
    assert _kernels(module) == 1


def test_a_transposed_read_ends_the_chain(device) -> None:
    def f(x):
        e = jnp.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True) + e.T  # e read transposed: not row-local

    run_against_jax(device, f, RNG.standard_normal((40, 40)).astype(np.float32))


def test_a_row_too_long_for_the_cache_stays_unfused(device) -> None:
    x = RNG.standard_normal((2, 1 << 20)).astype(np.float32)  # 4 MiB rows: beyond half any L2
    module = run_against_jax(device, CHAINS["softmax"], x)
    assert _kernels(module) == 4  # max, exp, sum, divide


@pytest.mark.skipif("vulkan" not in fg.available_drivers(), reason="no Vulkan device here")
@pytest.mark.parametrize("name", ["softmax", "layernorm", "mean_var"])
def test_vulkan(name) -> None:
    dev = fg.create_device("vulkan")
    try:
        module = run_against_jax(dev, CHAINS[name], (RNG.standard_normal((5, 37)) * 3).astype(np.float32))
        assert _kernels(module) == 1
    finally:
        dev.close()
