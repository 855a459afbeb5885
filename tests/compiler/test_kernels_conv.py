"""Convolutions through the whole pipeline against JAX: filters that are constants pre-packed at
compile time (compiler/passes/conv_packing.py) on the CPU and through the portable lowering
(Vulkan), a CNN stem (7x7 over 3 channels, stride 2: K blocks of whole kernel rows), and 3x3
layers by Winograd's F(2x2, 3x3) (compiler/codegen/llvm_cpu/winograd.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax import lax

import fibergrid as fg
from compiler import kernel_ir as kir
from compiler.codegen import llvm_cpu

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


# -- epilogues fused into the convolution ------------------------------------------------------
DIMS = ("NHWC", "HWIO", "NHWC")


def _residual_block(w: np.ndarray, bias: np.ndarray):
    """ResNet's: relu(conv(x) + bias + x)."""
    def f(x):
        return jax.nn.relu(lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DIMS) + bias + x)
    return f


def _relu6_depthwise(w: np.ndarray, bias: np.ndarray, strides: tuple[int, int]):
    """MobileNet's: min(max(depthwise(x) + bias, 0), 6)."""
    def f(x):
        y = lax.conv_general_dilated(x, w, strides, "SAME", dimension_numbers=DIMS, feature_group_count=x.shape[3])
        return jax.numpy.minimum(jax.numpy.maximum(y + bias, 0.0), 6.0)
    return f


def _epilogues(module: fg.Module) -> list[tuple[str, ...]]:
    return [r.body.epilogue for r in module.compiled.regions if isinstance(r.body, kir.ConvBody)]


@pytest.mark.parametrize("shape", [(1, 9, 9, 16), (2, 5, 6, 70)])
def test_bias_residual_and_relu_are_the_convs_epilogue(shape: tuple[int, ...]) -> None:
    c = shape[3]
    f = _residual_block(_f32(3, 3, c, c) / np.sqrt(9 * c), _f32(c))
    x = _f32(*shape)
    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-task")
    assert _epilogues(module) == [("bias_add", "residual_add", "relu")]
    assert len(module.compiled.regions) == 1  # no elementwise region before or after
    np.testing.assert_allclose(module(x), np.asarray(f(x)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
def test_relu6_is_the_depthwise_convs_epilogue(strides: tuple[int, int]) -> None:
    c = 40
    f = _relu6_depthwise(_f32(3, 3, 1, c) * 2, _f32(c), strides)
    x = _f32(1, 11, 11, c) * 3
    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-task")
    assert _epilogues(module) == [("bias_add", "relu", "minimum:6.0")]
    got, want = module(x), np.asarray(f(x))
    assert want.max() == 6.0 and want.min() == 0.0  # both bounds are hit
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_pointwise_conv_with_relu6_stays_a_conv() -> None:
    """A 1x1 convolution whose epilogue a matmul lacks (ReLU6) runs as a conv, not a matmul."""
    w, bias, x = _f32(1, 1, 24, 48) / 5, _f32(48), _f32(1, 7, 7, 24) * 3

    def f(x):
        y = lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=DIMS)
        return jax.numpy.minimum(jax.numpy.maximum(y + bias, 0.0), 6.0)

    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-sync")
    assert _epilogues(module) == [("bias_add", "relu", "minimum:6.0")]
    np.testing.assert_allclose(module(x), np.asarray(f(x)), rtol=1e-4, atol=1e-4)


def test_residual_block_with_a_dynamic_batch() -> None:
    """The residual is per image: read at the image's offset for every batch size of one compile."""
    from jax import export

    f = _residual_block(_f32(3, 3, 8, 8) / 8, _f32(8))
    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, 6, 6, 8"), np.float32)
    exported = export.export(jax.jit(f))(spec)
    module = fg.load(exported.mlir_module(), device="local-task")
    assert module.main.dynamic
    x = _f32(5, 6, 6, 8)
    for batch in (1, 2, 5):
        np.testing.assert_allclose(module(x[:batch]), np.asarray(f(x[:batch])), rtol=1e-4, atol=1e-4)


def test_epilogues_on_vulkan() -> None:
    """The fused epilogues through the portable lowering."""
    if "vulkan" not in fg.available_drivers():
        pytest.skip("no Vulkan device here")
    device = fg.create_device("vulkan")
    try:
        x = _f32(1, 7, 7, 16)
        for f in (_residual_block(_f32(3, 3, 16, 16) / 12, _f32(16)), _relu6_depthwise(_f32(3, 3, 1, 16) * 2, _f32(16), (1, 1))):
            module = fg.load(jax.jit(f).lower(x * 3).as_text(), device=device)
            assert all(_epilogues(module))
            np.testing.assert_allclose(module(x * 3), np.asarray(f(x * 3)), rtol=1e-4, atol=1e-4)
    finally:
        device.close()


# -- Winograd F(2x2, 3x3) ----------------------------------------------------------------------
WINOGRAD = [  # input NHWC, output channels, residual
    ((1, 24, 24, 32), 32, True),  # ResNet's first stage
    ((2, 11, 13, 20), 20, True),  # odd sizes (partial 2x2 blocks), a channel tail, two images
    ((1, 12, 12, 48), 80, False),  # two filter panels (a workgroup each), the second partial
    ((1, 6, 6, 128), 128, True),  # ResNet's third stage: 9 blocks, two panels
]


@pytest.mark.parametrize(("xs", "f", "residual"), WINOGRAD)
def test_3x3_layers_go_by_winograd(xs: tuple[int, ...], f: int, residual: bool) -> None:
    c = xs[3]
    w, bias, x = _f32(3, 3, c, f) / np.sqrt(9 * c), _f32(f), _f32(*xs)
    fn = _residual_block(w, bias) if residual else _conv_relu(w, bias, (1, 1), "SAME")
    module = fg.load(jax.jit(fn).lower(x).as_text(), device="local-task")
    regions = [r for r in module.compiled.regions if isinstance(r.body, kir.ConvBody)]
    assert len(regions) == 1 and llvm_cpu.generate(regions[0]).config.winograd
    np.testing.assert_allclose(module(x), np.asarray(fn(x)), rtol=1e-4, atol=1e-4)


def test_small_or_strided_layers_stay_direct() -> None:
    """Few pixels (3x3: 4 blocks of 2x2 for 9 pixels, the transforms would cost more than they
    save) or a stride keep the direct kernel."""
    for xs, ws, strides in (((1, 3, 3, 64), (3, 3, 64, 64), (1, 1)), ((1, 24, 24, 32), (3, 3, 32, 64), (2, 2))):
        w, bias, x = _f32(*ws) / 30, _f32(ws[3]), _f32(*xs)
        fn = _conv_relu(w, bias, strides, ((1, 1), (1, 1)))
        module = fg.load(jax.jit(fn).lower(x).as_text(), device="local-sync")
        region = next(r for r in module.compiled.regions if isinstance(r.body, kir.ConvBody))
        assert not llvm_cpu.generate(region).config.winograd
        np.testing.assert_allclose(module(x), np.asarray(fn(x)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("xs", "f", "residual"), [((2, 5, 7, 300), 40, False), ((1, 6, 6, 40), 40, True)])
def test_pointwise_conv_reads_its_input_in_place(xs: tuple[int, ...], f: int, residual: bool) -> None:
    """A 1x1 convolution that stays a conv (ReLU6, or a residual) reads A straight from the
    input, in K blocks of its channels (300: two of 150), two images."""
    w, bias, x = _f32(1, 1, xs[3], f) / 10, _f32(f), _f32(*xs) * 3

    def fn(x):
        y = lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=DIMS) + bias
        return y + x if residual else jax.numpy.minimum(jax.numpy.maximum(y, 0.0), 6.0)

    module = fg.load(jax.jit(fn).lower(x).as_text(), device="local-task")
    regions = [r for r in module.compiled.regions if isinstance(r.body, kir.ConvBody)]
    assert len(regions) == 1 and llvm_cpu.generate(regions[0]).local_memory_size == 0  # nothing gathered
    np.testing.assert_allclose(module(x), np.asarray(fn(x)), rtol=1e-4, atol=1e-4)


def test_a_wide_image_gathers_its_tiles_instead_of_a_strip() -> None:
    """A strip of whole input rows (1,100 pixels x 85 channels, 1.1 MB for three rows) would pass
    the local memory a workgroup may take: the tiles' pixels are gathered instead."""
    w, bias, x = _f32(3, 3, 85, 8) / 25, _f32(8), _f32(1, 3, 1100, 85)
    fn = _conv_relu(w, bias, (1, 1), "SAME")
    module = fg.load(jax.jit(fn).lower(x).as_text(), device="local-sync")
    region = next(r for r in module.compiled.regions if isinstance(r.body, kir.ConvBody))
    kernel = llvm_cpu.generate(region)
    assert not kernel.config.strip and kernel.config.window_rows and kernel.local_memory_size <= 768 << 10
    np.testing.assert_allclose(module(x), np.asarray(fn(x)), rtol=1e-4, atol=1e-4)


def test_eight_lane_strip_and_winograd(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    """The stem's strip (an NCHW image interleaved 8 pixels at a time) and F(2x2, 3x3) as an AVX2
    host gets them."""
    from compiler.codegen.llvm_cpu import jit

    monkeypatch.setattr(jit, "vector_width_f32", lambda: 8)
    monkeypatch.setenv("FIBERGRID_CACHE_DIR", str(tmp_path))  # not the 16-lane programs
    x = _f32(1, 3, 30, 30)
    stem_w, stem_b = _f32(7, 7, 3, 16) / 10, _f32(16)
    w, bias = _f32(3, 3, 16, 16) / 12, _f32(16)

    def fn(x):
        y = lax.conv_general_dilated(x, stem_w, (2, 2), ((3, 3), (3, 3)), dimension_numbers=("NCHW", "HWIO", "NHWC"))
        y = jax.numpy.maximum(y + stem_b, 0.0)
        return _residual_block(w, bias)(y)

    module = fg.load(jax.jit(fn).lower(x).as_text(), device="local-sync")
    configs = [llvm_cpu.generate(r).config for r in module.compiled.regions if isinstance(r.body, kir.ConvBody)]
    assert [(c.lanes, c.strip, c.winograd) for c in configs] == [(8, True, False), (8, True, True)]
    np.testing.assert_allclose(module(x), np.asarray(fn(x)), rtol=1e-4, atol=1e-4)
