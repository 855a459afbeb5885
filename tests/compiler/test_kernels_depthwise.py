"""Depthwise convolution (compiler/codegen/llvm_cpu/depthwise.py, `ConvBody.depthwise`) against
JAX: MobileNet's 3x3 SAME layer, strides, dilation, explicit asymmetric padding, channel counts
that are not a multiple of the vector width or of the channel block, batches, an NCHW layout
transposed into NHWC; on the CPU drivers and Vulkan (the portable lowering)."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from tests.compiler.conftest import run_against_jax

jax = pytest.importorskip("jax")
lax = jax.lax
RNG = np.random.default_rng(31)
NHWC = ("NHWC", "HWIO", "NHWC")


def _depthwise(x_shape, kernel, strides=(1, 1), padding="SAME", dilation=(1, 1), dn=NHWC):
    channels = x_shape[dn[0].index("C")]
    w = (RNG.standard_normal((*kernel, 1, channels)) / 3).astype(np.float32)
    x = RNG.standard_normal(x_shape).astype(np.float32)

    def f(x):
        return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=dn,
                                        feature_group_count=channels)

    return f, x


CASES = {
    "mobilenet_3x3": dict(x_shape=(1, 56, 56, 128), kernel=(3, 3)),
    "stride_2_valid": dict(x_shape=(2, 9, 11, 24), kernel=(3, 3), strides=(2, 2), padding="VALID"),
    "dilated_5x3": dict(x_shape=(1, 12, 10, 20), kernel=(5, 3), dilation=(2, 1)),
    "asymmetric_padding": dict(x_shape=(1, 7, 8, 3), kernel=(3, 2), padding=((0, 2), (1, 0))),
    "many_channels": dict(x_shape=(1, 4, 5, 300), kernel=(3, 3), strides=(1, 2)),
    "wider_than_image": dict(x_shape=(1, 2, 3, 17), kernel=(5, 5), padding="SAME"),
    "nchw": dict(x_shape=(1, 40, 6, 6), kernel=(3, 3), dn=("NCHW", "HWIO", "NCHW")),
}


@pytest.fixture(scope="module", params=["local-sync", "local-task"])
def device(request):
    dev = fg.create_device(request.param)
    yield dev
    dev.close()


@pytest.mark.parametrize("case", list(CASES))
def test_depthwise_against_jax(device, case) -> None:
    f, x = _depthwise(**CASES[case])
    module = run_against_jax(device, f, x)
    assert any(k.name.endswith("_conv") for k in module.compiled.kernels)


@pytest.mark.skipif("vulkan" not in fg.available_drivers(), reason="no Vulkan device here")
def test_depthwise_on_vulkan() -> None:
    dev = fg.create_device("vulkan")
    try:
        for case in ("stride_2_valid", "asymmetric_padding"):
            run_against_jax(dev, *_depthwise(**CASES[case]))
    finally:
        dev.close()
