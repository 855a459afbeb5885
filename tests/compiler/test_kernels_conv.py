"""Convolutions through the whole pipeline against JAX: filters that are constants pre-packed at
compile time (compiler/passes/conv_packing.py) on the CPU and through the portable lowering
(Vulkan), and a CNN stem (7x7 over 3 channels, stride 2: K blocks of whole kernel rows)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax import lax

import fibergrid as fg
from compiler import kernel_ir as kir

RNG = np.random.default_rng(7)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _conv_relu(w: np.ndarray, bias: np.ndarray, strides: tuple[int, int], padding):
    def f(x):
        y = lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.numpy.maximum(y + bias, 0.0)
    return f


CASES = [  # input NHWC, filter HWIO, strides, padding
    ((1, 24, 24, 3), (7, 7, 3, 32), (2, 2), ((3, 3), (3, 3))),
    ((2, 9, 9, 32), (3, 3, 32, 40), (1, 1), "SAME"),
    ((1, 3, 3, 300), (3, 3, 300, 70), (1, 1), "SAME"),
]


def _packed_convs(module: fg.Module) -> list[kir.ConvBody]:
    return [r.body for r in module.compiled.regions if isinstance(r.body, kir.ConvBody) and r.body.filter_panel]


@pytest.mark.parametrize(("xs", "ws", "strides", "padding"), CASES)
def test_constant_filters_are_prepacked(xs, ws, strides, padding) -> None:  # noqa: ANN001
    w, bias, x = _f32(*ws) / np.sqrt(np.prod(ws[:3])), _f32(ws[3]), _f32(*xs)
    f = _conv_relu(w, bias, strides, padding)
    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-task")
    assert len(_packed_convs(module)) == 1
    np.testing.assert_allclose(module(x), np.asarray(f(x)), rtol=1e-4, atol=1e-4)


def test_filter_computed_at_run_time_is_read_in_place() -> None:
    x, w = _f32(1, 8, 8, 4), _f32(3, 3, 4, 6)

    def f(x, w):
        return lax.conv_general_dilated(x, w * 2.0, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    module = fg.load(jax.jit(f).lower(x, w).as_text(), device="local-sync")
    assert not _packed_convs(module)
    np.testing.assert_allclose(module(x, w), np.asarray(f(x, w)), rtol=1e-4, atol=1e-4)


def test_prepacked_filters_on_vulkan() -> None:
    """The packed filter through the portable lowering (library_lowering.conv_as_reduction)."""
    if "vulkan" not in fg.available_drivers():
        pytest.skip("no Vulkan device here")
    device = fg.create_device("vulkan")
    try:
        for xs, ws, strides, padding in CASES[:2]:
            w, bias, x = _f32(*ws) / np.sqrt(np.prod(ws[:3])), _f32(ws[3]), _f32(*xs)
            f = _conv_relu(w, bias, strides, padding)
            module = fg.load(jax.jit(f).lower(x).as_text(), device=device)
            assert _packed_convs(module)
            np.testing.assert_allclose(module(x), np.asarray(f(x)), rtol=1e-4, atol=1e-4)
    finally:
        device.close()
