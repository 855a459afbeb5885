"""GEMM with weights pre-packed at compile time (compiler/passes/packing.py, llvm_cpu/matmul.py)
and tiling sized from the host's caches (llvm_cpu/caches.py), against JAX: shapes at tile
edges, odd sizes, batch 1 and skinny batches, fused bias/relu, on both CPU drivers and Vulkan."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from compiler import kernel_ir as kir
from compiler.codegen.llvm_cpu import caches, matmul

jax = pytest.importorskip("jax")

RNG = np.random.default_rng(7)


def _f32(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)


def _dense(w: np.ndarray, bias: np.ndarray | None, relu: bool):
    def f(x):
        y = x @ w
        if bias is not None:
            y = y + bias
        return jax.numpy.maximum(y, 0.0) if relu else y

    return f


SHAPES = [  # (m, k, n): batch 1 and 2-4 (GEMV paths), skinny, edges of NR / tile_n / kc / tile_m
    (1, 784, 1024), (1, 37, 10), (2, 100, 129), (3, 257, 47), (4, 64, 300),
    (17, 33, 49), (64, 784, 1024), (97, 300, 130), (200, 1030, 10), (257, 129, 385),
]


@pytest.mark.parametrize("m,k,n,driver", [(*shape, ("local-sync", "local-task")[i % 2]) for i, shape in enumerate(SHAPES)])
def test_prepacked_dense_layer_matches_jax(m: int, k: int, n: int, driver: str) -> None:
    w, bias, x = _f32(k, n), _f32(n), _f32(m, k)
    f = _dense(w, bias, relu=True)
    module = fg.load(jax.jit(f).lower(x).as_text(), device=driver)
    (dispatch,) = [d for d in module.compiled.program if "matmul" in d.entry]
    packed = [t for t in module.compiled.tensors if t.kind == "constant" and t.value.ndim == 3]
    nr = matmul.panel_width(m, n, k)
    assert len(packed) == 1 and packed[0].shape == (-(-n // nr), k, nr)  # the weights, packed
    np.testing.assert_allclose(module(x), np.asarray(f(x)), rtol=1e-4, atol=1e-4 * np.sqrt(k))


def test_weights_read_elsewhere_or_computed_stay_row_major() -> None:
    """A constant also read by another op, and a B computed at run time, are not packed (the
    run-time packing path), and still match."""
    w = _f32(48, 48)

    def f(x):
        return x @ w + jax.numpy.sum(w, axis=0), x @ (x.T @ x)

    x = _f32(40, 48)
    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-sync")
    assert not any(t.kind == "constant" and t.value.ndim == 3 for t in module.compiled.tensors)
    for got, want in zip(module(x), f(x)):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-4, atol=1e-4)


def test_pack_weights_layout() -> None:
    b = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    packed = matmul.pack_weights(b, 4)
    assert packed.shape == (2, 5, 4)
    np.testing.assert_array_equal(packed[1, 3, :3], b[3, 4:7])
    assert np.all(packed[1, :, 3] == 0)  # the last panel is zero-padded
    assert matmul.packed_size(5, 7, 4) == packed.size


def test_cache_sizes_from_sysfs(tmp_path) -> None:
    for index, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"),
                                                 (2, "Unified", "2048K"), (3, "Unified", "300M")]):
        d = tmp_path / f"index{index}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    assert caches.read(tmp_path) == caches.Caches(l1d=48 << 10, l2=2 << 20)
    assert caches.read(tmp_path / "missing") == caches.FALLBACK


def test_tiling_follows_the_caches() -> None:
    """kc shrinks with L1 (the B panel and A sliver fit 3/4 of it), tile_m with L2."""
    small = matmul.choose_config(1024, 1024, 1024, lanes=16, cache=caches.Caches(32 << 10, 32 << 10))
    large = matmul.choose_config(1024, 1024, 1024, lanes=16, cache=caches.Caches(64 << 10, 2 << 20))
    assert small.kc < large.kc and small.tile_m < large.tile_m
    assert 4 * (small.nr + small.mr) * small.kc <= (32 << 10) * 3 // 4
    skinny = matmul.choose_config(64, 1024, 784, lanes=8, packed=True)
    assert -(-1024 // skinny.tile_n) * -(-64 // skinny.tile_m) >= matmul.MIN_WORKGROUPS // 2


def test_prepacked_weights_on_vulkan() -> None:
    """The packed layout through the SPIR-V target: its tiled matmul (4096+ outputs), the
    portable lowering (smaller), and a 1x1 conv turned matmul."""
    if "vulkan" not in fg.available_drivers():
        pytest.skip("no Vulkan device here")
    device = fg.create_device("vulkan")
    try:
        for m, k, n in [(64, 100, 130), (3, 37, 10)]:
            w, bias, x = _f32(k, n), _f32(n), _f32(m, k)
            f = _dense(w, bias, relu=False)
            module = fg.load(jax.jit(f).lower(x).as_text(), device=device)
            np.testing.assert_allclose(module(x), np.asarray(f(x)), rtol=1e-4, atol=1e-4 * np.sqrt(k))
        w, x = _f32(1, 1, 64, 96), _f32(1, 14, 14, 64)  # a 1x1 conv, run as a packed matmul

        def conv(x):
            return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

        module = fg.load(jax.jit(conv).lower(x).as_text(), device=device)
        np.testing.assert_allclose(module(x), np.asarray(conv(x)), rtol=1e-4, atol=1e-4)
    finally:
        device.close()


@pytest.mark.parametrize("shape,features", [((1, 7, 9, 13), 17), ((2, 14, 14, 64), 128), ((1, 1, 1, 3), 5)])
def test_pointwise_conv_runs_as_a_prepacked_matmul(shape: tuple[int, ...], features: int) -> None:
    """1x1 convolutions (compiler/passes/conv_as_matmul.py), with a bias and relu after."""
    from jax import lax

    w, bias, x = _f32(1, 1, shape[3], features), _f32(features), _f32(*shape)

    def f(x):
        y = lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.numpy.maximum(y + bias, 0.0)

    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-task")
    assert [d.entry for d in module.compiled.program if "conv" in d.entry]
    assert any(t.kind == "constant" and t.value.ndim == 3 for t in module.compiled.tensors)  # packed filter
    np.testing.assert_allclose(module(x), np.asarray(f(x)), rtol=1e-4, atol=1e-4)


def test_strided_and_padded_1x1_convs_stay_convolutions() -> None:
    from jax import lax

    w, x = _f32(1, 1, 8, 6), _f32(1, 9, 9, 8)
    for strides, padding in (((2, 2), "VALID"), ((1, 1), ((1, 0), (0, 1)))):
        def f(x, strides=strides, padding=padding):
            return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))

        module = fg.load(jax.jit(f).lower(x).as_text(), device="local-sync")
        assert not any(isinstance(r.body, kir.MatmulBody) for r in module.compiled.regions)
        np.testing.assert_allclose(module(x), np.asarray(f(x)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("lanes", [8, 16])
def test_batch_1_layers_split_into_enough_panels(lanes: int) -> None:
    """A batch-1 layer 1024 or 4096 wide splits into MIN_WORKGROUPS column tiles of equal
    width, so a worker joining late still takes a share of the weight stream."""
    for n, k in ((1024, 784), (4096, 4096)):
        config = matmul.choose_config(1, n, k, lanes=lanes, packed=True)
        assert n % config.tile_n == 0 and n // config.tile_n >= matmul.MIN_WORKGROUPS


@pytest.mark.parametrize("spatial,channels,batch", [(6, 256, 1), (12, 128, 1), (3, 512, 2), (7, 40, 1)])
def test_late_cnn_stages_spread_over_workgroups(spatial: int, channels: int, batch: int) -> None:
    """A 3x3 conv over few pixels (a CNN's last stages) gets narrower channel tiles so its grid
    has a few workgroups per worker where it has the channels (it was one), and still matches
    JAX on local-task."""
    from jax import lax

    from compiler.codegen.llvm_cpu import conv

    cfg = conv.choose_conv_config(spatial * spatial, channels, channels, lanes=16, images=batch)
    grid = -(-channels // cfg.tile_n) * -(-(spatial * spatial) // cfg.tile_m) * batch
    assert grid >= min(matmul.MIN_WORKGROUPS // 2, -(-channels // (cfg.nv * 16)) * batch)
    w, x = _f32(3, 3, channels, channels), _f32(batch, spatial, spatial, channels)

    def f(x):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-task")
    np.testing.assert_allclose(module(x), np.asarray(f(x)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("driver", ["local-sync", "local-task"])
def test_k_blocked_layers_with_transposed_weights_batches_and_residual_match_jax(driver: str) -> None:
    """K larger than the K block (C's partial sums kept in local memory), odd M and N: a layer
    with transposed constant weights (pre-packed, the next panel prefetched), bias, relu and a
    residual add, and a batched y @ y^T of a run-time operand (B packed per workgroup)."""
    w, bias = _f32(131, 1037), _f32(131)

    def f(x, y, r):
        h = jax.numpy.maximum(x @ w.T + bias, 0.0) + r
        return h, jax.numpy.einsum("bmk,bnk->bmn", y, y)

    args = (_f32(37, 1037), _f32(3, 29, 1100), _f32(37, 131))
    module = fg.load(jax.jit(f).lower(*args).as_text(), device=driver)
    for got, want in zip(module(*args), f(*args)):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-4, atol=1e-4 * np.sqrt(1100))
