"""NHWC conv2d (HWIO filter, f32) as a direct convolution on the matmul microkernel.

Per image, the convolution is a matmul whose rows are output pixels (M = OH*OW), whose
columns are output channels (N = F) and whose reduction runs over taps and input channels
(K = KH*KW*C). For one tap (kh, kw) the filter slice HWIO[kh, kw] is already a row-major
C x F matrix, and the A rows are the input pixels that tap reads: so each workgroup, for each
tap and block of input channels, gathers its `tile_m` input rows into local memory (zero rows
where the tap falls in the padding) and runs the matmul microkernel against the filter slice,
accumulating in registers and C. No im2col buffer of the whole image is ever built.

Bindings: 0 = input N x H x W x C, 1 = filter KH x KW x C x F, 2 = output N x OH x OW x F,
3.. = extra epilogue inputs (e.g. a bias of F floats). workgroup_id = (channel tile, pixel
tile, image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llvmlite import ir

from . import jit
from .abi_builder import F32, I64, for_range, i64, internal_function, load_vector, store_vector
from .matmul import MIN_WORKGROUPS, Epilogue, GeneratedKernel, RegisterTile, round_up, emit_tiled_entry, microkernel, register_tile

F32P = F32.as_pointer()


@dataclass(frozen=True)
class ConvConfig:
    lanes: int
    mr: int  # register tile rows (output pixels)
    nv: int  # register tile vectors (output channels = nv * lanes)
    tile_m: int  # output pixels per workgroup
    tile_n: int  # output channels per workgroup
    kc: int  # input channels per gathered block


@dataclass(frozen=True)
class _Geometry:
    h: int
    w: int
    c: int
    kh: int
    kw: int
    f: int
    oh: int
    ow: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad_top: int
    pad_left: int


def _padding(padding: str, size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(output size, pad before) along one axis for "SAME" (XLA/TF: the odd pad goes after)
    or "VALID"."""
    span = (kernel - 1) * dilation + 1
    if padding == "SAME":
        out = -(-size // stride)
        return out, max(0, (out - 1) * stride + span - size) // 2
    return max(0, (size - span) // stride + 1), 0


def choose_conv_config(pixels: int, f: int, c: int, lanes: int | None = None, images: int = 1) -> ConvConfig:
    """Register tile as for matmul (`register_tile`: 6 x 2 vectors on AVX2; on AVX-512 the
    tile whose panels fit the output channels best, 6 x 4 for 64 of them); 16 register tiles
    of pixels x 8 panels of channels per workgroup keep the gathered block (16 * mr x kc floats)
    in L1/L2 next to the filter slice; input channels are split into equal blocks of at most 256.
    A small layer (the late stages of a CNN: 6x6 or 12x12 pixels) would be one or two such
    workgroups, leaving workers idle: then channel tiles narrow (down to one panel) toward
    MIN_WORKGROUPS over `images`. Pixel tiles do not shrink for it: each row tile re-reads and
    re-packs its filter slice, which on a 3x3 image cost more than the parallelism won."""
    lanes = lanes or jit.vector_width_f32()
    mr, nv = register_tile(f, lanes)
    nr = nv * lanes
    kc = -(-c // -(-c // 256))
    tile_m = min(pixels, 16 * mr)
    pixel_tiles = -(-pixels // tile_m)
    channel_tiles = -(-MIN_WORKGROUPS // (images * pixel_tiles))  # wanted
    tile_n = min(f, 8 * nr, max(nr, round_up(-(-f // channel_tiles), nr)))
    return ConvConfig(lanes, mr, nv, tile_m, tile_n, kc)


class _ConvGenerator:
    def __init__(self, g: _Geometry, cfg: ConvConfig, epilogue: Epilogue | None, extra: int,
                 name: str) -> None:
        self.g, self.cfg, self.epilogue, self.extra, self.name = g, cfg, epilogue, extra, name
        self.module = ir.Module()

    def gather(self, tm: int, kc: int) -> ir.Function:
        """Copy input[pixel(p0 + r) + tap offset, c0:c0+kc] to local[r*cfg.kc ...] for r < tm,
        zeros where the tap reads padding."""
        key = f"{self.name}.gather.{tm}.{kc}"
        if key in self.module.globals:
            return self.module.globals[key]
        g, lanes = self.g, self.cfg.lanes
        fn, b = internal_function(self.module, key, [("image", F32P), ("local", F32P), ("p0", I64),
                                  ("kh", I64), ("kw", I64), ("c0", I64)], noalias=("image", "local"))
        image, local, p0, kh, kw, c0 = fn.args
        with for_range(b, 0, tm, name="r") as r:
            p = b.add(p0, r)
            oh, ow = b.udiv(p, i64(g.ow)), b.urem(p, i64(g.ow))
            ih = b.sub(b.add(b.mul(oh, i64(g.stride[0])), b.mul(kh, i64(g.dilation[0]))), i64(g.pad_top))
            iw = b.sub(b.add(b.mul(ow, i64(g.stride[1])), b.mul(kw, i64(g.dilation[1]))), i64(g.pad_left))
            # Unsigned compares reject negative coordinates too.
            inside = b.and_(b.icmp_unsigned("<", ih, i64(g.h)), b.icmp_unsigned("<", iw, i64(g.w)))
            dst = b.gep(local, [b.mul(r, i64(self.cfg.kc))], inbounds=True)
            # Branch-free: a padding row reads the image's first pixel (always valid) and
            # stores zeros instead.
            offset = b.add(b.mul(b.add(b.mul(ih, i64(g.w)), iw), i64(g.c)), c0)
            src = b.gep(image, [b.select(inside, offset, c0)], inbounds=True)
            for v in range(0, kc, lanes):
                value = load_vector(b, b.gep(src, [i64(v)], inbounds=True), lanes, kc - v)
                zero = ir.Constant(value.type, [0.0] * lanes)
                store_vector(b, b.select(inside, value, zero), b.gep(dst, [i64(v)], inbounds=True), kc - v)
        b.ret_void()
        return fn

    def tile(self, tm: int, tn: int) -> ir.Function:
        """Output pixels p0..p0+tm x channels n0..n0+tn of one image: over taps and channel
        blocks, gather then run the microkernels."""
        key = f"{self.name}.tile.{tm}x{tn}"
        if key in self.module.globals:
            return self.module.globals[key]
        g, cfg = self.g, self.cfg
        args = [("image", F32P), ("filter", F32P), ("out", F32P),
                *((f"extra{i}", F32P) for i in range(self.extra)), ("local", F32P), ("p0", I64), ("n0", I64)]
        fn, b = internal_function(self.module, key, args, noalias=("image", "filter", "out", "local"))
        image, filt, out, *rest = fn.args
        extra, (local, p0, n0) = rest[:-3], rest[-3:]
        nr = cfg.nv * cfg.lanes
        row_blocks = [(r, min(cfg.mr, tm - r)) for r in range(0, tm, cfg.mr)]
        col_blocks = [(c, min(nr, tn - c)) for c in range(0, tn, nr)]
        channel_blocks = [(c0, min(cfg.kc, g.c - c0)) for c0 in range(0, g.c, cfg.kc)]
        taps = g.kh * g.kw
        with for_range(b, 0, taps, name="tap") as tap:
            kh, kw = b.udiv(tap, i64(g.kw)), b.urem(tap, i64(g.kw))
            for c0, kc in channel_blocks:
                b.call(self.gather(tm, kc), [image, local, p0, kh, kw, i64(c0)])
                first = b.icmp_unsigned("==", tap, i64(0)) if c0 == 0 else ir.Constant(ir.IntType(1), 0)
                last = (b.icmp_unsigned("==", tap, i64(taps - 1)) if c0 + kc == g.c
                        else ir.Constant(ir.IntType(1), 0))
                slice_at = b.mul(b.add(b.mul(tap, i64(g.c)), i64(c0)), i64(g.f))
                for col, cols in col_blocks:
                    n = b.add(n0, i64(col))
                    b_at = b.gep(filt, [b.add(slice_at, n)], inbounds=True)
                    for r, mr in row_blocks:
                        # The filter slice is read in place: it is small and reused by every
                        # workgroup, so it stays in L2 and packing it would not pay.
                        shape = RegisterTile(cfg.lanes, mr, cols, lda=cfg.kc, ldb=g.f, ldc=g.f, masked_b=True)
                        kernel = microkernel(self.module, self.name, shape, False, self.epilogue, self.extra)
                        row = b.add(p0, i64(r))
                        a_at = b.gep(local, [i64(r * cfg.kc)], inbounds=True)
                        c_at = b.gep(out, [b.add(b.mul(row, i64(g.f)), n)], inbounds=True)
                        b.call(kernel, [a_at, b_at, c_at, *extra, i64(kc), first, last, row, n])
        b.ret_void()
        return fn


def generate_conv2d(
    input_shape: Sequence[int],
    filter_shape: Sequence[int],
    *,
    strides: Sequence[int] = (1, 1),
    padding: str | Sequence[tuple[int, int]] = "VALID",
    dilation: Sequence[int] = (1, 1),
    epilogue: Epilogue | None = None,
    extra_bindings: Sequence[int] = (),
    config: ConvConfig | None = None,
    name: str = "conv2d",
    runtime_batch: int = 0,
) -> GeneratedKernel:
    """Generate NHWC x HWIO -> NHWC conv2d (feature groups = 1) for static shapes.

    `padding` is "SAME", "VALID" or ((top, bottom), (left, right)); `extra_bindings` as in
    `generate_matmul` (a bias: `(F,)` with `epilogue=bias_add()`). `runtime_batch` > 0: the batch
    is that many times the dynamic dim D (push constant 0; compiler/dynamic.py), which only sizes
    the grid's z and the batched bindings: the kernel checks those lengths against D.
    """
    n, h, w, c = input_shape
    kh, kw, c_f, f = filter_shape
    if c_f != c:
        raise ValueError(f"generate_conv2d: filter has {c_f} input channels, input has {c}")
    if min(n, h, w, c, kh, kw, f, *strides, *dilation) < 1:
        raise ValueError(f"generate_conv2d: sizes must be >= 1: input {tuple(input_shape)}, filter {tuple(filter_shape)}")
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            raise ValueError(f"generate_conv2d: padding must be SAME, VALID or pairs, got {padding!r}")
        oh, top = _padding(padding, h, kh, strides[0], dilation[0])
        ow, left = _padding(padding, w, kw, strides[1], dilation[1])
    else:
        (top, bottom), (left, right) = padding
        oh = (h + top + bottom - ((kh - 1) * dilation[0] + 1)) // strides[0] + 1
        ow = (w + left + right - ((kw - 1) * dilation[1] + 1)) // strides[1] + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"generate_conv2d: empty output {oh}x{ow} for input {tuple(input_shape)}")
    g = _Geometry(h, w, c, kh, kw, f, oh, ow, tuple(strides), tuple(dilation), top, left)
    cfg = config or choose_conv_config(oh * ow, f, c, images=n)
    gen = _ConvGenerator(g, cfg, epilogue, len(extra_bindings), name)
    grid = (-(-f // cfg.tile_n), -(-(oh * ow) // cfg.tile_m), n)
    return emit_tiled_entry(
        gen.module, name, grid, (oh * ow, f), (cfg.tile_m, cfg.tile_n),
        [(n * h * w * c, h * w * c), (kh * kw * c * f, 0), (n * oh * ow * f, oh * ow * f),
         *((count, 0) for count in extra_bindings)],
        4 * cfg.tile_m * cfg.kc,
        gen.tile, cfg,
        per_dim=[runtime_batch * h * w * c, 0, runtime_batch * oh * ow * f] + [0] * len(extra_bindings) if runtime_batch else (),
    )
