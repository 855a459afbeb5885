"""What every GPU driver does the same way, run once per driver present: choosing a device by
index or name (hal_gpu/registry.py), refusing a bad executable blob and an impossible
allocation by name, `fibergrid compile --target D` then `run --device D` on a JAX model, and
models on bool, int8 and uint8 tensors against JAX (WebGPU has no 8-bit type: the SPIR-V
kernels keep bytes in 32-bit words, compiler/codegen/spirv/bytes.py)."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from compiler import executable
from hal import ptx_abi, spirv_abi
from tests.compiler.conftest import run_against_jax

jax = pytest.importorskip("jax")
jnp = jax.numpy

# driver -> (what it calls a device, its executable format, a blob it must refuse and why, a size it cannot allocate)
GPU_DRIVERS = {
    "vulkan": ("device", spirv_abi.FORMAT, None, 1 << 60),
    "cuda": ("device", ptx_abi.FORMAT, (b"\x03\x02\x23\x07", "not PTX"), 1 << 50),
    "webgpu": ("adapter", spirv_abi.FORMAT, (b"\x00\x01\x02\x03", "not a SPIR-V module"), 1 << 60),
}


@pytest.fixture(params=sorted(GPU_DRIVERS))
def driver(request) -> str:
    if request.param not in fg.available_drivers():
        pytest.skip(f"no {request.param} device here")
    return request.param


def test_device_choice_errors_name_the_devices(driver) -> None:
    noun, fmt, bad_blob, too_big = GPU_DRIVERS[driver]
    with pytest.raises(fg.InvalidArgument, match=f"{noun} index 99 out of range"):
        fg.create_device(driver, device=99)
    with pytest.raises(fg.InvalidArgument, match=f"no {noun} named like 'no-such-gpu'"):
        fg.create_device(driver, device="no-such-gpu")
    with fg.create_device(driver, device=0) as dev:
        with pytest.raises(fg.ResourceExhausted):
            dev.allocator.allocate_buffer(too_big)
        if bad_blob is not None:
            with pytest.raises(fg.InvalidArgument, match=bad_blob[1]):
                dev.create_executable(fmt, bad_blob[0], ())
    with pytest.raises(fg.FailedPrecondition, match="closed"):
        dev.create_semaphore(0)


def test_cli_compile_for_the_driver_and_run(driver, tmp_path, capsys) -> None:
    from fibergrid import cli

    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    source = tmp_path / "m.mlir"
    source.write_text(jax.jit(lambda x, w: jax.nn.softmax(jnp.tanh(x @ w))).lower(np.ones((2, 3), np.float32), w).as_text())
    np.save(tmp_path / "w.npy", w)
    assert cli.main(["drivers"]) == 0
    assert f"{driver} (" in capsys.readouterr().out
    out = tmp_path / "m.fgx"
    assert cli.main(["compile", str(source), "-o", str(out), "--target", driver]) == 0
    program = executable.load(out)
    assert [v.format for v in next(iter(program.functions["main"].specializations.values())).variants] == [GPU_DRIVERS[driver][1]]
    assert cli.main(["run", str(out), "--device", driver, "--input", "2x3xf32=1", "--input", f"@{tmp_path / 'w.npy'}"]) == 0
    want = np.asarray(jax.nn.softmax(jnp.tanh(np.ones((2, 3), np.float32) @ w)))
    printed = capsys.readouterr().out
    assert printed.startswith("result[0]: 2x4xf32=") and f"{want[0, 0]:.6f}" in printed


def test_byte_tensors_match_jax(driver) -> None:
    """int8 and uint8 arithmetic (wrapping, signed division and shifts), float -> int8
    conversion (saturating), bool masks, a sort and reductions over bytes, every output a byte
    tensor whose neighbouring elements different invocations store."""
    def f(a, b, x):
        mask = (a > b) | (x < 0)
        return (a * 3 + b, a // 3, a % 5, a >> 2, jnp.maximum(a, b), mask, jnp.where(mask, a, b),
                x.astype(jnp.int8), x.astype(jnp.uint8), b.astype(jnp.uint8) // 7, a.astype(jnp.float32) * 0.5,
                jnp.sort(a), jnp.any(mask, axis=1), jnp.sum(a, axis=1, dtype=jnp.int8), ~mask, jax.lax.population_count(b))

    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (7, 37)).astype(np.int8)
    b = rng.integers(-128, 128, (7, 37)).astype(np.int8)
    x = rng.uniform(-128, 128, (7, 37)).astype(np.float32)  # in range for both: JAX's out-of-range conversion is unspecified
    with fg.create_device(driver) as dev:
        run_against_jax(dev, f, a, b, x)
        # Out of range, fibergrid saturates and takes NaN to 0 on every driver (XLA's rule; the CPU drivers' .sat intrinsics)
        x = np.array([-1e30, -300, -128.5, -0.9, np.nan, 0.9, 127.5, 255.5, 300, 1e30, -np.inf, np.inf], np.float32)
        to_int8, to_uint8 = fg.load(jax.jit(lambda x: (x.astype(jnp.int8), x.astype(jnp.uint8))).lower(x).as_text(), dev)(x)
        np.testing.assert_array_equal(to_int8, np.nan_to_num(np.clip(np.trunc(x), -128, 127)).astype(np.int8))
        np.testing.assert_array_equal(to_uint8, np.nan_to_num(np.clip(np.trunc(x), 0, 255)).astype(np.uint8))


def test_bit_counts_and_sign_extension_match_jax(driver) -> None:
    """count_leading_zeros and population_count at 8, 32 and 64 bits (LLVM's SPIR-V backend
    selects no ctlz, and Vulkan's OpBitCount takes 32-bit ints only: spirv/kernels.py counts by
    words), and int32 -> int64 sign extension (naga read OpSConvert of the unsigned-declared ints
    as a zero extension: -1 became 4294967295 on webgpu)."""
    def f(x, b):
        wide = x.astype(jnp.int64)
        return (jax.lax.clz(x), jax.lax.population_count(x), jax.lax.clz(b), jax.lax.population_count(b),
                wide, wide * 3 - 7, jax.lax.clz(wide << 20), jax.lax.population_count(wide * 3))

    x = np.array([0, 1, 2, 3, 255, 256, 2**31 - 1, -1, -2**31, 12345, -7, 1 << 20], np.int32)
    b = np.array([0, 1, 2, 127, 128, 200, 255, 16, 15, 64, 3, 99], np.uint8)
    with jax.enable_x64(), fg.create_device(driver) as dev:
        run_against_jax(dev, f, x, b)


def test_nan_and_rounding_rules_match_jax(driver) -> None:
    """max/min propagate NaN (the backend's FMax/FMin leave it undefined: lavapipe gave
    max(NaN, inf) = inf), round-half-away-from-zero in f32 and f64 (GLSL Round leaves a half's
    direction to the implementation), bf16 arithmetic (its NaN test was an OpUnordered, which
    Vulkan refuses; WebGPU has no 16-bit type at all), and an f64 transcendental refused by name."""
    def f(x, y):
        return jnp.maximum(x, y), jnp.minimum(x, y), jax.lax.round(x), jax.lax.round(x.astype(jnp.float64))

    def bf16(h):
        return h + h * 3, jnp.maximum(h, h * -1)

    x = np.array([np.nan, np.inf, -np.inf, -2.5, 2.5, -0.5, 0.5, 1.49, -0.0, 7.0, np.nan, 3.5], np.float32)
    y = np.array([np.inf, np.nan, 1.0, -2.0, 3.0, 0.0, -0.0, 2.0, 0.0, np.nan, np.nan, -3.5], np.float32)
    with jax.enable_x64(), fg.create_device(driver) as dev:
        run_against_jax(dev, f, x, y)
        if driver != "webgpu":
            run_against_jax(dev, bf16, x.astype(jnp.bfloat16))
        if driver != "cuda":
            with pytest.raises(fg.Error, match="no f64 exp"):
                fg.load(jax.jit(lambda v: jnp.exp(v.astype(jnp.float64))).lower(x).as_text(), dev)(x)
