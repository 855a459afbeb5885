"""Depthwise convolution (compiler/codegen/llvm_cpu/depthwise.py, `ConvBody.depthwise`) against
JAX: MobileNet's 3x3 SAME layer, strides, dilation, explicit asymmetric padding, channel counts
that are not a multiple of the vector width or of the channel block, batches, an NCHW layout
transposed into NHWC, rows that end in a partial tile of pixels, caller arrays bound in place
at every offset from a vector boundary (the realigned stores); on the CPU drivers and Vulkan
(the portable lowering)."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from compiler import kernel_ir as kir
from compiler.codegen.llvm_cpu import depthwise, jit
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
    # interior columns 1..11: one whole tile of pixels and a tail of 3; a column stride of 3
    "pixel_tail": dict(x_shape=(1, 3, 13, 32), kernel=(3, 3)),
    "stride_3_dilated": dict(x_shape=(1, 10, 29, 16), kernel=(3, 3), strides=(2, 3), dilation=(2, 2)),
    "wide_kernel": dict(x_shape=(1, 5, 30, 48), kernel=(1, 7), padding=((0, 0), (4, 2))),
    # workgroups of 16 rows, of two channel blocks (10 vectors + 9 and a masked tail)
    "stride_2_row_groups": dict(x_shape=(1, 64, 64, 64), kernel=(3, 3), strides=(2, 2)),
    "channel_blocks_and_tail": dict(x_shape=(1, 12, 20, 300), kernel=(3, 3)),
    "batch_row_groups": dict(x_shape=(3, 64, 64, 32), kernel=(3, 3)),  # 4 groups of 16 rows an image
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


def _at_offset(shape: tuple[int, ...], floats: int) -> np.ndarray:
    """An empty f32 array `floats` elements past a 64-byte boundary."""
    size = int(np.prod(shape))
    raw = np.empty(size + 32, np.float32)
    start = (-raw.ctypes.data % 64) // 4 + floats
    return raw[start:start + size].reshape(shape)


def _check_off_vector_boundaries(device, offset: int) -> None:
    """Input and output bound in place `offset` floats past a 64-byte boundary, against JAX,
    the floats either side of the output untouched. 160 channels over 16 x 30 pixels: two
    workgroups (5 channel vectors each) share each pixel's middle line; ReLU6 is the epilogue."""
    c = 160
    w = (RNG.standard_normal((3, 3, 1, c)) / 2).astype(np.float32)
    bias = RNG.standard_normal(c).astype(np.float32)

    def f(x):
        y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC, feature_group_count=c)
        return jax.numpy.minimum(jax.numpy.maximum(y + bias, 0.0), 6.0)

    x = _at_offset((1, 16, 30, c), (offset + 4) % 16)
    x[...] = RNG.standard_normal(x.shape) * 3
    module = fg.load(jax.jit(f).lower(x).as_text(), device)
    want = np.asarray(jax.jit(f)(x))
    guard = _at_offset((want.size + 32,), offset)  # the output, with 16 floats either side
    guard[...] = -1.0
    out = guard[16:16 + want.size].reshape(want.shape)
    module(x, out=out)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    assert (guard[:16] == -1.0).all() and (guard[16 + want.size:] == -1.0).all()


@pytest.mark.parametrize("offset", [0, 4, 8, 12])
def test_caller_arrays_off_vector_boundaries(device, offset) -> None:
    """Caller arrays are 16-byte aligned, not 64 (as numpy allocates): the kernel stores whole
    aligned vectors, rotated, with masked first and last lines per pixel."""
    _check_off_vector_boundaries(device, offset)


@pytest.mark.skipif(not jit.has_feature("avx2"), reason="the 8-lane rotation is AVX2's vpermps")
def test_eight_lane_stores_off_vector_boundaries(monkeypatch, tmp_path) -> None:
    """The AVX2 form of the rotated stores (8 lanes: vpermps and a blend), generated here too."""
    monkeypatch.setattr(jit, "vector_width_f32", lambda: 8)
    monkeypatch.setenv("FIBERGRID_CACHE_DIR", str(tmp_path))  # not the 16-lane programs
    dev = fg.create_device("local-sync")
    try:
        for offset in (0, 4, 12):
            _check_off_vector_boundaries(dev, offset)
    finally:
        dev.close()


@pytest.mark.parametrize("bias", [True, False])
def test_bias_residual_and_relu_epilogue(device, bias) -> None:
    """relu(depthwise(x) [+ bias] + x): the bias (when there is one) starts the accumulators,
    and the residual is then the epilogue's first operand."""
    c = 48
    w = (RNG.standard_normal((3, 3, 1, c)) / 2).astype(np.float32)
    b = RNG.standard_normal(c).astype(np.float32)

    def f(x):
        y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC, feature_group_count=c)
        return jax.nn.relu((y + b if bias else y) + x)

    module = run_against_jax(device, f, RNG.standard_normal((2, 7, 10, c)).astype(np.float32))
    epilogues = [r.body.epilogue for r in module.compiled.regions if isinstance(r.body, kir.ConvBody)]
    assert epilogues == [("bias_add",) * bias + ("residual_add", "relu")]


@pytest.mark.parametrize("shape, blocks, rows", [
    ((56, 56, 128), 1, 5),  # 12 workgroups: the rows of 5 x 56 x 128 channels each
    ((32, 32, 64), 1, 16),
    ((24, 24, 96), 1, 24),  # MobileNetV2's late layers: one workgroup, no worker woken for it
    ((6, 6, 288), 1, 6),
    ((16, 30, 160), 2, 16),
    ((12, 20, 300), 2, 12),
])
def test_workgroups_have_work_enough_to_wake_a_worker(shape, blocks, rows) -> None:
    """(channel blocks, rows) per workgroup of a 3x3 layer's output (16 lanes)."""
    h, w, c = shape
    vectors = -(-c // 16)
    block, got_rows = depthwise._workgroups(vectors, h, w, 9)
    assert (-(-vectors // block), got_rows) == (blocks, rows)
