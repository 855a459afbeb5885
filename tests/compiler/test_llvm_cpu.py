"""Correctness of the LLVM CPU backend's toolkit and kernels against numpy.

Kernels run without the scheduler: `_dispatch` fills a DispatchState and one WorkgroupState
(numpy structured arrays from hal.abi) and calls the kernel through ctypes per workgroup.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest
from llvmlite import ir

from compiler.codegen.llvm_cpu import abi_builder, conv, jit, matmul
from hal import abi

RNG = np.random.default_rng(1234)


def _dispatch(kernel: matmul.GeneratedKernel, arrays: list[np.ndarray], local_bytes: int | None = None,
              module: jit.JitModule | None = None) -> int:
    """Run every workgroup of `kernel` on `arrays` (its bindings); the first non-zero return
    code, or 0."""
    module = module or jit.compile_ir(kernel.ir)
    fn = abi.KERNEL_CFUNCTYPE(module.address(kernel.name))
    ptrs = np.array([a.ctypes.data for a in arrays], np.uint64)
    lens = np.array([a.nbytes for a in arrays], np.uint64)
    ds = np.zeros((), abi.DISPATCH_STATE_DTYPE)
    ds["workgroup_count"] = kernel.workgroup_count
    ds["binding_count"] = len(arrays)
    ds["binding_ptrs"] = ptrs.ctypes.data
    ds["binding_lengths"] = lens.ctypes.data
    local_bytes = kernel.local_memory_size if local_bytes is None else local_bytes
    local = np.zeros(local_bytes // 4 + 16, np.float32)
    ws = np.zeros((), abi.WORKGROUP_STATE_DTYPE)
    ws["local_memory"] = (local.ctypes.data + 63) // 64 * 64
    ws["local_memory_size"] = local_bytes
    gx, gy, gz = kernel.workgroup_count
    for z in range(gz):
        for y in range(gy):
            for x in range(gx):
                ws["workgroup_id"] = (x, y, z)
                rc = fn(ds.ctypes.data, ws.ctypes.data)
                if rc:
                    return rc
    return abi.KERNEL_OK


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _close(got: np.ndarray, want: np.ndarray, k: int) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1, k) ** 0.5 * 4)


# -- jit -------------------------------------------------------------------------------------
ADD = "define i32 @add(i32 %a, i32 %b) {\n  %c = add i32 %a, %b\n  ret i32 %c\n}\n"
ADD_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32, ctypes.c_int32)


def test_jit_compile_and_object_round_trip() -> None:
    module = jit.compile_ir(ADD)
    assert ADD_TYPE(module.address("add"))(2, 3) == 5
    loaded = jit.load_object(jit.emit_object(ADD))
    assert ADD_TYPE(loaded.address("add"))(40, 2) == 42
    with pytest.raises(KeyError):
        module.address("missing")


def test_jit_modules_outlive_each_other_and_compile_concurrently() -> None:
    results: list[int] = []

    def work() -> None:
        for _ in range(3):
            module = jit.compile_ir(ADD)
            results.append(ADD_TYPE(module.address("add"))(1, 1))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [2] * 12


def test_format_tag_names_host() -> None:
    assert jit.format_tag() == f"cpu-{jit.host_triple().split('-')[0]}-{jit.host_cpu()}"
    assert jit.vector_width_f32() in (4, 8, 16)


# -- abi_builder -----------------------------------------------------------------------------
def test_kernel_builder_reads_every_abi_field() -> None:
    """A kernel that writes what it read from the ABI structs into binding 0."""
    module = ir.Module()
    kb = abi_builder.KernelBuilder(module, "probe")
    b = kb.builder
    out = kb.binding_ptr(0, abi_builder.I32)
    values = [kb.workgroup_id(d) for d in range(3)] + [kb.workgroup_count(d) for d in range(3)]
    values += [kb.workgroup_size(0), kb.constant_i32(1), b.fptosi(kb.constant_f32(0), abi_builder.I32),
               b.trunc(kb.binding_length(1), abi_builder.I32), kb.local_memory_size(),
               b.load(kb.local_memory(abi_builder.I32))]
    for i, value in enumerate(values):
        b.store(value, b.gep(out, [abi_builder.i64(i)]))
    b.ret(abi_builder.i32(0))
    jm = jit.compile_ir(str(module))
    fn = abi.KERNEL_CFUNCTYPE(jm.address("probe"))

    out_arr = np.zeros(16, np.int32)
    other = np.zeros(10, np.float32)
    ptrs = np.array([out_arr.ctypes.data, other.ctypes.data], np.uint64)
    lens = np.array([out_arr.nbytes, other.nbytes], np.uint64)
    consts = np.array([np.float32(7.0).view(np.uint32), 99], np.uint32)
    local = np.array([1234] * 16, np.int32)
    ds = np.zeros((), abi.DISPATCH_STATE_DTYPE)
    ds["workgroup_size"] = (8, 1, 1)
    ds["workgroup_count"] = (4, 5, 6)
    ds["constant_count"], ds["binding_count"] = 2, 2
    ds["constants"], ds["binding_ptrs"], ds["binding_lengths"] = consts.ctypes.data, ptrs.ctypes.data, lens.ctypes.data
    ws = np.zeros((), abi.WORKGROUP_STATE_DTYPE)
    ws["workgroup_id"] = (1, 2, 3)
    ws["local_memory"], ws["local_memory_size"] = local.ctypes.data, 64
    assert fn(ds.ctypes.data, ws.ctypes.data) == 0
    assert out_arr[:12].tolist() == [1, 2, 3, 4, 5, 6, 8, 99, 7, 40, 64, 1234]


# -- matmul ----------------------------------------------------------------------------------
SHAPES = [
    (1, 1, 1), (1, 10, 784), (1, 1024, 784), (1, 33, 1), (2, 50, 9), (3, 17, 40), (4, 65, 7),
    (5, 5, 5), (6, 16, 1), (7, 23, 300), (13, 100, 64), (64, 64, 64), (97, 257, 129),
    (128, 300, 513), (200, 130, 257),
]


@pytest.mark.parametrize(("m", "n", "k"), SHAPES)
def test_matmul_matches_numpy(m: int, n: int, k: int) -> None:
    a, b, c = _rand(m, k), _rand(k, n), np.full((m, n), np.nan, np.float32)
    kernel = matmul.generate_matmul(m, n, k)
    assert _dispatch(kernel, [a, b, c]) == 0
    _close(c, a @ b, k)


@pytest.mark.parametrize("config", [
    matmul.MatmulConfig(8, 6, 2, 30, 40, 17, pack_b=True),  # edge tiles, K tail, edge panels
    matmul.MatmulConfig(8, 4, 3, 8, 48, 64, pack_b=False, prefetch_rows=4),
    matmul.MatmulConfig(8, 1, 1, 1, 20, 9, pack_b=False, stream_rows=3),
    matmul.MatmulConfig(4, 3, 2, 9, 16, 8, pack_b=True),  # 4-lane (SSE-width) vectors
    matmul.MatmulConfig(16, 8, 3, 16, 48, 20, pack_b=True),  # the AVX-512 shape (legalised here)
], ids=["packed-edges", "unpacked-prefetch", "stream", "sse", "avx512-shape"])
def test_matmul_configs(config: matmul.MatmulConfig) -> None:
    m = 1 if config.stream_rows else 41
    a, b, c = _rand(m, 50), _rand(50, 45), np.zeros((m, 45), np.float32)
    assert _dispatch(matmul.generate_matmul(m, 45, 50, config=config), [a, b, c]) == 0
    _close(c, a @ b, 50)


@pytest.mark.parametrize("m", [1, 3, 70])
def test_matmul_bias_relu_epilogue_and_accumulate(m: int) -> None:
    n, k = 37, 29
    a, b, bias = _rand(m, k), _rand(k, n), _rand(n)
    c0 = _rand(m, n)
    c = c0.copy()
    kernel = matmul.generate_matmul(m, n, k, accumulate=True, epilogue=matmul.chain(matmul.bias_add(), matmul.relu),
                                    extra_bindings=(n,))
    assert kernel.binding_count == 4
    assert _dispatch(kernel, [a, b, c, bias]) == 0
    _close(c, np.maximum(c0 + a @ b + bias, 0), k)


@pytest.mark.parametrize("m", [1, 20])
def test_matmul_batched(m: int) -> None:
    batch, n, k = 3, 19, 33
    a, b, c = _rand(batch, m, k), _rand(batch, k, n), np.zeros((batch, m, n), np.float32)
    kernel = matmul.generate_matmul(m, n, k, batch=batch)
    assert kernel.workgroup_count[2] == batch
    assert _dispatch(kernel, [a, b, c]) == 0
    _close(c, a @ b, k)


@pytest.mark.parametrize("b_packed", [True, False], ids=["prepacked-b", "b-packed-per-workgroup"])
@pytest.mark.parametrize("lanes", [8, 16])
def test_matmul_local_c_and_panel_prefetch(lanes: int, b_packed: bool) -> None:
    """C's partial sums kept in local memory between K blocks and the next panel prefetched,
    at every edge: row tiles of 30 (11 left), column tiles of two
    panels (22 columns left), K blocks of 64 (44 left), a batch, C += A @ B with bias and relu."""
    m, n, k, batch = 41, 150, 300, 2
    config = matmul.MatmulConfig(lanes, 6, 32 // lanes, 30, 64, 64, pack_b=not b_packed,
                                 prefetch_next=2 if b_packed else 0, c_local=True)
    a, w, bias = _rand(batch, m, k), _rand(k, n), _rand(n)
    c0 = _rand(batch, m, n)
    c = c0.copy()
    kernel = matmul.generate_matmul(m, n, k, batch=batch, accumulate=True, extra_bindings=(n,),
                                    epilogue=matmul.chain(matmul.bias_add(), matmul.relu), config=config,
                                    b_panel=config.nr if b_packed else 0)
    b = matmul.pack_weights(w, config.nr) if b_packed else np.stack([w] * batch)
    assert kernel.local_memory_size >= 4 * 30 * (64 + 16)  # C's partial sums, rows padded
    assert _dispatch(kernel, [a, b, c, bias]) == 0
    _close(c, np.maximum(c0 + a @ w + bias, 0), k)


def test_blocked_tiling_keeps_c_local_over_k_blocks_and_prefetches_packed_panels() -> None:
    wide = matmul.choose_config(256, 1024, 1024, lanes=16, packed=True)
    assert wide.c_local and wide.prefetch_next == wide.nr * 4 // 64
    narrow = matmul.choose_config(256, 256, 64, lanes=16)
    assert not (narrow.c_local or narrow.prefetch_next)  # one K block, B not pre-packed


def test_matmul_rejects_short_binding_and_local_memory() -> None:
    m = n = k = 64
    kernel = matmul.generate_matmul(m, n, k)
    a, b, c = _rand(m, k), _rand(k, n), np.zeros((m, n), np.float32)
    assert _dispatch(kernel, [a, b[:-1], c]) == matmul.ERROR_BINDING_TOO_SHORT
    assert kernel.local_memory_size > 0
    assert _dispatch(kernel, [a, b, c], local_bytes=kernel.local_memory_size - 4) == matmul.ERROR_LOCAL_MEMORY
    with pytest.raises(ValueError):
        matmul.generate_matmul(0, 1, 1)


def test_matmul_object_code_round_trip() -> None:
    kernel = matmul.generate_matmul(9, 20, 11)
    a, b, c = _rand(9, 11), _rand(11, 20), np.zeros((9, 20), np.float32)
    assert _dispatch(kernel, [a, b, c], module=jit.load_object(jit.emit_object(kernel.ir))) == 0
    _close(c, a @ b, 11)


# -- conv ------------------------------------------------------------------------------------
def _conv_reference(x: np.ndarray, w: np.ndarray, strides: tuple[int, int], pads: tuple[tuple[int, int], ...],
                    dilation: tuple[int, int], oh: int, ow: int) -> np.ndarray:
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]), np.float64)
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            rows = xp[:, i * dilation[0]: i * dilation[0] + (oh - 1) * strides[0] + 1: strides[0],
                      j * dilation[1]: j * dilation[1] + (ow - 1) * strides[1] + 1: strides[1], :]
            out += rows.astype(np.float64) @ w[i, j].astype(np.float64)
    return out.astype(np.float32)


CONVS = [
    # input NHWC, filter HWIO, strides, padding, dilation, expected pads
    ((1, 8, 8, 3), (3, 3, 3, 5), (1, 1), "SAME", (1, 1), ((1, 1), (1, 1))),
    ((2, 9, 7, 4), (3, 2, 4, 17), (2, 1), "SAME", (1, 1), ((1, 1), (0, 1))),
    ((1, 10, 11, 6), (3, 3, 6, 8), (1, 2), "VALID", (2, 1), ((0, 0), (0, 0))),
    ((1, 6, 6, 2), (1, 1, 2, 3), (1, 1), ((1, 0), (2, 1)), (1, 1), ((1, 0), (2, 1))),
    ((1, 14, 14, 40), (3, 3, 40, 24), (1, 1), "SAME", (1, 1), ((1, 1), (1, 1))),
    # a stem: 7x7 over 3 channels, stride 2 (one K block of whole kernel rows)
    ((2, 20, 19, 3), (7, 7, 3, 32), (2, 2), ((3, 3), (3, 3)), (1, 1), ((3, 3), (3, 3))),
    # whole kernel rows, dilated along the width (gathered tap by tap)
    ((1, 9, 9, 5), (2, 3, 5, 7), (1, 1), "SAME", (1, 2), ((0, 1), (2, 2))),
    # many channels: one tap and two blocks of 150 channels per K block
    ((1, 6, 5, 300), (3, 3, 300, 20), (1, 1), "SAME", (1, 1), ((1, 1), (1, 1))),
]


@pytest.mark.parametrize("packed", [False, True], ids=["in-place", "packed"])
@pytest.mark.parametrize(("xs", "ws", "strides", "padding", "dilation", "pads"), CONVS)
def test_conv2d_matches_reference(xs, ws, strides, padding, dilation, pads, packed) -> None:  # noqa: ANN001
    x, w = _rand(*xs), _rand(*ws)
    nr = conv.panel_width(xs, ws) if packed else 0
    kernel = conv.generate_conv2d(xs, ws, strides=strides, padding=padding, dilation=dilation, filter_panel=nr)
    spans = [(ws[i] - 1) * dilation[i] + 1 for i in range(2)]
    oh, ow = ((xs[1 + i] + sum(pads[i]) - spans[i]) // strides[i] + 1 for i in range(2))
    out = np.full((xs[0], oh, ow, ws[3]), np.nan, np.float32)
    filt = matmul.pack_weights(w.reshape(-1, ws[3]), nr) if packed else w
    assert _dispatch(kernel, [x, filt, out]) == 0
    _close(out, _conv_reference(x, w, strides, pads, dilation, oh, ow), ws[0] * ws[1] * ws[2])
    assert _dispatch(kernel, [x, filt[:-1], out]) == matmul.ERROR_BINDING_TOO_SHORT


@pytest.mark.parametrize(("xs", "ws", "strides", "padding", "dilation", "pads"), CONVS)
def test_conv2d_channels_first_input(xs, ws, strides, padding, dilation, pads) -> None:  # noqa: ANN001
    """An N x C x H x W input read in place (a stem over an NCHW image), packed filter."""
    x, w = _rand(*xs), _rand(*ws)
    nr = conv.panel_width(xs, ws)
    kernel = conv.generate_conv2d(xs, ws, strides=strides, padding=padding, dilation=dilation, filter_panel=nr,
                                  channels_first=True)
    spans = [(ws[i] - 1) * dilation[i] + 1 for i in range(2)]
    oh, ow = ((xs[1 + i] + sum(pads[i]) - spans[i]) // strides[i] + 1 for i in range(2))
    out = np.full((xs[0], oh, ow, ws[3]), np.nan, np.float32)
    planes = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    assert _dispatch(kernel, [planes, matmul.pack_weights(w.reshape(-1, ws[3]), nr), out]) == 0
    _close(out, _conv_reference(x, w, strides, pads, dilation, oh, ow), ws[0] * ws[1] * ws[2])


def test_conv2d_blocks_of_k() -> None:
    """Few input channels: K blocks of whole kernel rows up to KC_MAX floats (a 7x7 stem over
    3 channels is one block); many: one tap per block."""
    assert conv.choose_conv_config(100, 32, 3, lanes=16, kernel=(7, 7)).window_rows == 7
    cfg = conv.choose_conv_config(100, 32, 32, lanes=16, kernel=(3, 3))
    assert cfg.window_rows == 2 and cfg.row_floats(3) == 192
    assert conv.choose_conv_config(100, 64, 128, lanes=16, kernel=(3, 3)).window_rows == 0
    with pytest.raises(ValueError):
        conv.generate_conv2d((1, 5, 5, 8), (3, 3, 8, 20), filter_panel=3)


def test_conv2d_pixel_tiles_shrink_only_for_small_filters() -> None:
    """A 24x24 x 32 layer (a 36 KiB filter) splits its pixels toward MIN_WORKGROUPS, in tiles of
    4 register tiles at least; a 3x3 image against a 2.4 MB filter keeps one pixel tile (each
    would re-read its filter block)."""
    small = conv.choose_conv_config(24 * 24, 32, 32, lanes=16, kernel=(3, 3))
    assert -(-24 * 24 // small.tile_m) >= matmul.MIN_WORKGROUPS // 2 and small.tile_m == 4 * small.mr
    large = conv.choose_conv_config(9, 256, 256, lanes=16, kernel=(3, 3))
    assert large.tile_m == 9


def test_conv2d_bias_relu() -> None:
    xs, ws = (1, 5, 5, 8), (3, 3, 8, 20)
    x, w, bias = _rand(*xs), _rand(*ws), _rand(20)
    kernel = conv.generate_conv2d(xs, ws, padding="SAME", epilogue=matmul.chain(matmul.bias_add(), matmul.relu),
                                  extra_bindings=(20,))
    out = np.zeros((1, 5, 5, 20), np.float32)
    assert _dispatch(kernel, [x, w, out, bias]) == 0
    want = _conv_reference(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), 5, 5)
    _close(out, np.maximum(want + bias, 0), 72)
