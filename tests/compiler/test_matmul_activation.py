"""Activations as matmul epilogues (compiler/passes/matmul_activation.py, llvm_cpu/activation.py):
x @ w + b through the exact GELU, torch's tanh GELU, SiLU and a sigmoid as one region, checked
against JAX on local-sync and local-task (and Vulkan where present, which lowers the fused
region through the portable reduction); shapes with edge tiles, a batched matmul, GEMV rows;
and the cases that must stay two regions (the pre-activation value also a result, or read by
another op, or the activation reading another tensor)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import device_per_driver
from tests.compiler.conftest import run_against_jax

jax = pytest.importorskip("jax")
jnp = jax.numpy
RNG = np.random.default_rng(5)

ACTIVATIONS = {
    "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
}


device = device_per_driver("local-sync", "local-task", "vulkan")


def _kernels(module) -> int:
    return len(module.compiled.kernels)


def _operands(m: int, k: int, n: int) -> list[np.ndarray]:
    return [(RNG.standard_normal((m, k)) * 2).astype(np.float32), (RNG.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32),
            RNG.standard_normal(n).astype(np.float32)]


@pytest.mark.parametrize("m, k, n", [(32, 64, 256), (37, 50, 99), (1, 128, 300), (3, 16, 17)])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_is_the_matmuls_epilogue(device, name, m, k, n) -> None:
    module = run_against_jax(device, lambda x, w, b: ACTIVATIONS[name](x @ w + b), *_operands(m, k, n))
    assert _kernels(module) == 1


def test_batched_matmul_with_gelu(device) -> None:
    x = RNG.standard_normal((3, 20, 24)).astype(np.float32)
    w = RNG.standard_normal((3, 24, 40)).astype(np.float32)
    module = run_against_jax(device, lambda x, w: ACTIVATIONS["gelu_exact"](x @ w), x, w)
    assert _kernels(module) == 1


def test_mlp_block(device) -> None:
    """A transformer's MLP: the GELU in the first matmul, the second reading its output."""
    x, w1, b1 = _operands(16, 32, 128)
    w2 = (RNG.standard_normal((128, 32)) / np.sqrt(128)).astype(np.float32)
    module = run_against_jax(device, lambda x, w1, b1, w2: ACTIVATIONS["gelu_exact"](x @ w1 + b1) @ w2, x, w1, b1, w2)
    assert _kernels(module) == 2


def test_what_stays_two_regions(device) -> None:
    x, w, b = _operands(8, 16, 32)
    gelu = ACTIVATIONS["gelu_exact"]
    also_a_result = run_against_jax(device, lambda x, w, b: (gelu(x @ w + b), x @ w + b), x, w, b)
    assert _kernels(also_a_result) == 2
    other_tensor = run_against_jax(device, lambda x, w, b, y: gelu(x @ w + b) * y, x, w, b,
                                   RNG.standard_normal((8, 32)).astype(np.float32))
    assert _kernels(other_tensor) == 2
    transposed = run_against_jax(device, lambda x, w, b: gelu((x @ w + b).T), x, w, b)
    assert _kernels(transposed) == 2
