"""NHWC conv2d (HWIO filter, f32) as a direct convolution on the matmul microkernel.

Per image, the convolution is a matmul whose rows are output pixels (M = OH*OW), whose
columns are output channels (N = F) and whose reduction runs over taps and input channels
(K = KH*KW*C, in the filter's HWIO order). Each workgroup, for each block of K, gathers its
`tile_m` input rows into local memory (zero where the window falls in the padding) and runs the
matmul microkernel against that block of the filter, accumulating in registers and C. No im2col
buffer of the whole image is ever built. A K block is:

- one tap and up to 256 input channels (many channels: the tap's C x F filter slice is the
  B block), or
- with few input channels (a CNN's stem: 3 of them; early 3x3 layers), whole filter rows:
  KW taps x all C channels per kernel row, which lie side by side in the input row, so the
  gather copies them as one run and the microkernel's K loop is KW*C (or a few rows of it)
  long instead of C (3 multiply-adds between reloads of the accumulators).

Two layouts of A need no gather per pixel: with whole kernel rows and unit dilation, a workgroup
of whole output rows copies its input rows once, zero-padded and channels last, into a local
strip, and the microkernels read each pixel's window there in place, as KH segments of KW*C
floats a strip row apart (`strip`); a 1x1, stride-1, unpadded conv reads A straight from the
input (`pointwise`). 3x3 stride-1 layers with enough pixels go by Winograd's F(2x2, 3x3)
instead (winograd.py, `winograd_fits`), on the same strip and microkernel.

The filter is read in place (row-major K x F), or, when it is a constant of the program,
pre-packed at compile time (compiler/passes/conv_packing.py, `filter_panel`) into the NR-wide,
k-major panels the microkernel reads (`matmul.pack_weights` of the K x F matrix): contiguous
streams instead of short rows F floats apart, which is what bounds the late stages of a CNN
(3x3 pixels against a 2.4 MB filter).

Bindings: 0 = input N x H x W x C, 1 = filter KH x KW x C x F (packed: ceil(F/NR) x K x NR),
2 = output N x OH x OW x F, 3.. = extra epilogue inputs (e.g. a bias of F floats).
workgroup_id = (channel tile, pixel tile, image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from llvmlite import ir

from . import caches, jit
from .abi_builder import F32, I64, for_range, i64, internal_function, intrinsic, load_vector, store_vector, vector
from .matmul import (MIN_WORKGROUPS, Epilogue, EpilogueSite, GeneratedKernel,
                     RegisterTile, bias_add, chain, emit_tiled_entry, microkernel, packed_size, register_tile, relu,
                     round_up)
from .winograd import WinogradTiles

F32P = F32.as_pointer()
KC_MAX = 256  # floats of K per gathered block
SMALL_FILTER = 256 << 10  # bytes of a workgroup's filter block that pixel tiles may each re-read
PREFETCH_AHEAD = 4096  # bytes ahead in a filter panel that a streamed filter is prefetched
WINOGRAD_FILTER = 512 << 10  # bytes of transformed filter a Winograd workgroup may make
LOCAL_MAX = 768 << 10  # bytes of local memory a strip or Winograd workgroup may take (the CPU
# driver gives 1 MiB; past that the gathered tiles, a few hundred KiB at most, serve)
WINOGRAD_MIN_BLOCKS = 9  # 2x2 output blocks per image from which a 3x3 layer goes by Winograd
WINOGRAD_BLOCKS = 24  # 2x2 output blocks per Winograd workgroup to aim for


@dataclass(frozen=True)
class ConvConfig:
    lanes: int
    mr: int  # register tile rows (output pixels)
    nv: int  # register tile vectors (output channels = nv * lanes)
    tile_m: int  # output pixels per workgroup
    tile_n: int  # output channels per workgroup
    kc: int  # input channels per gathered block
    window_rows: int = 0  # > 0: few input channels: a block is this many whole filter rows
    strip: bool = False  # (with window_rows) A read in place from the tile's input rows, copied
    # zero-padded and channels last into local memory; tile_m is whole output rows
    prefetch_rows: int = 0  # microkernels prefetch the filter this many k rows ahead (0: none)
    winograd: bool = False  # by F(2x2, 3x3) (winograd.py); tile_m is whole pairs of output rows

    @property
    def nr(self) -> int:
        return self.nv * self.lanes

    def row_floats(self, kw: int) -> int:
        """Floats of one gathered pixel in local memory (the A rows' stride)."""
        return self.window_rows * kw * self.kc if self.window_rows else self.kc


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
    channels_first: bool = False  # the input is N x C x H x W

    def at(self, b: ir.IRBuilder, ih: ir.Value, iw: ir.Value, c: ir.Value | int) -> ir.Value:
        """Offset of input[ih, iw, c] within one image."""
        c = i64(c) if isinstance(c, int) else c
        if self.channels_first:
            return b.add(b.mul(b.add(b.mul(c, i64(self.h)), ih), i64(self.w)), iw)
        return b.add(b.mul(b.add(b.mul(ih, i64(self.w)), iw), i64(self.c)), c)


def _padding(padding: str, size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(output size, pad before) along one axis for "SAME" (XLA/TF: the odd pad goes after)
    or "VALID"."""
    span = (kernel - 1) * dilation + 1
    if padding == "SAME":
        out = -(-size // stride)
        return out, max(0, (out - 1) * stride + span - size) // 2
    return max(0, (size - span) // stride + 1), 0


def choose_conv_config(pixels: int, f: int, c: int, lanes: int | None = None, images: int = 1,
                       kernel: tuple[int, int] = (1, 1), out_width: int = 0) -> ConvConfig:
    """Register tile as for matmul (`register_tile`: 6 x 2 vectors on AVX2; on AVX-512 the
    tile whose panels fit the output channels best, 6 x 4 for 64 of them); 16 register tiles
    of pixels x 8 panels of channels per workgroup keep the gathered block (16 * mr x kc floats)
    in L1/L2 next to the filter block. K blocks: when a kernel row (KW taps x C) fits KC_MAX,
    whole kernel rows, as many per block as fit, in equal blocks (a 7x7 stem over 3 channels: one
    block of 147); else one tap and equal blocks of at most KC_MAX input channels.
    A small layer (the late stages of a CNN: 6x6 or 12x12 pixels) would be one or two such
    workgroups, leaving workers idle: then channel tiles narrow (down to one panel) toward
    MIN_WORKGROUPS over `images`; if that leaves fewer than half of them and the workgroup's
    filter block is small (SMALL_FILTER: an early layer's 3x3 x 32 x 32 is 36 KiB), pixel tiles
    shrink too, down to 4 register tiles (ResNet's 24x24 stage: 3 workgroups for 2 workers, one
    of them idle a third of the time; its stem's 12 keep their 192 pixels: smaller tiles ran a few
    % slower on one thread, and a tile of one register tile streams its filter block for 6
    pixels: 12x12 x 64 -> 128 ran 1.6x slower on one thread). With `out_width` (unit dilation)
    and whole kernel rows, pixel tiles round down to whole output rows, read from a strip.
    A large filter block keeps its pixel tiles: each re-reads it, which on a 3x3 image (2.4 MB of
    filter) cost more than the parallelism won.
    Few pixels (a 3x3 image: 9) that one register tile of more rows covers take that tile (12 x 2
    vectors), so each filter row is read once, not once per 6 pixels and again for the other 3
    (137 vs 159 us on one thread for 3x3 x 256 -> 256). A filter too large to stay in L2 between
    calls (more than a quarter of it: it streams from L3) is prefetched PREFETCH_AHEAD bytes
    ahead in each panel (98 -> 76 us there)."""
    lanes = lanes or jit.vector_width_f32()
    mr, nv = register_tile(f, lanes, pixels)
    nr = nv * lanes
    kh, kw = kernel
    window_rows = 0
    if kh * kw > 1 and kw * c <= KC_MAX:
        per_block = KC_MAX // (kw * c)
        window_rows = -(-kh // -(-kh // per_block))
        kc = c
    else:
        kc = -(-c // -(-c // KC_MAX))
    tile_m = min(pixels, 16 * mr)
    pixel_tiles = -(-pixels // tile_m)
    channel_tiles = -(-MIN_WORKGROUPS // (images * pixel_tiles))  # wanted
    tile_n = min(f, 8 * nr, max(nr, round_up(-(-f // channel_tiles), nr)))
    channel_tiles = -(-f // tile_n)  # made
    if images * pixel_tiles * channel_tiles < MIN_WORKGROUPS // 2 and 4 * kh * kw * c * tile_n <= SMALL_FILTER:
        pixel_tiles = -(-MIN_WORKGROUPS // (images * channel_tiles))  # wanted
        tile_m = min(tile_m, max(4 * mr, round_up(-(-pixels // pixel_tiles), mr)))
    strip = bool(window_rows and out_width)
    if strip:
        tile_m = max(1, tile_m // out_width) * out_width
    streamed = 4 * kh * kw * c * f > caches.host().l2 // 4
    return ConvConfig(lanes, mr, nv, tile_m, tile_n, kc, window_rows, strip,
                      PREFETCH_AHEAD // (4 * nr) if streamed else 0)


def epilogue_steps(steps: Sequence[str], features: int, image_floats: int) -> tuple[Epilogue | None, list[int]]:
    """The epilogue of `ConvBody.epilogue` steps over outputs of `features` channels and, per
    extra binding it reads, its floats per image (a residual) or 0 (shared: a bias)."""
    parts, extras = [], []
    for step in steps:
        if step == "bias_add":
            parts.append(bias_add(len(extras)))
            extras.append(0)
        elif step == "residual_add":
            parts.append(residual_add(len(extras), features))
            extras.append(image_floats)
        elif step == "relu":
            parts.append(relu)
        elif step.startswith("minimum:"):
            parts.append(minimum(float(step.partition(":")[2])))
        else:
            raise ValueError(f"unknown conv epilogue step {step!r}")
    return (chain(*parts) if parts else None), extras


def residual_add(extra_index: int, ld: int) -> Epilogue:
    """out[p, f] += residual[p, f], the residual being extra binding `extra_index`, laid out as
    the output (`ld` floats a pixel; the entry point offsets it per image)."""

    def apply(site: EpilogueSite, values: ir.Value) -> ir.Value:
        b = site.builder
        ptr = b.gep(site.extra[extra_index], [b.add(b.mul(site.row, i64(ld)), site.col)], inbounds=True)
        return b.fadd(values, load_vector(b, ptr, values.type.count, site.valid))

    return apply


def minimum(bound: float) -> Epilogue:
    """min(out, bound) (minnum: one vminps)."""

    def apply(site: EpilogueSite, values: ir.Value) -> ir.Value:
        fn = intrinsic(site.builder.module, f"llvm.minnum.v{values.type.count}f32", values.type, [values.type] * 2)
        return site.builder.call(fn, [values, ir.Constant(values.type, [bound] * values.type.count)])

    return apply


def panel_width(body_input: Sequence[int], body_filter: Sequence[int], pixels: int = 0) -> int:
    """NR of the conv kernel for an NHWC input and HWIO filter (and `pixels` per output image,
    where known: few of them take a taller, narrower register tile): the width of the panels a
    filter pre-packed for it is cut into."""
    return choose_conv_config(pixels or 1, body_filter[3], body_input[3]).nr


class ConvGenerator:
    def __init__(self, g: _Geometry, cfg: ConvConfig, epilogue: Epilogue | None, extra: int,
                 name: str, filter_panel: int) -> None:
        self.g, self.cfg, self.epilogue, self.extra, self.name = g, cfg, epilogue, extra, name
        self.filter_panel = filter_panel
        self.ld = cfg.row_floats(g.kw)  # floats between gathered rows
        self.module = ir.Module()
        self.winograd = WinogradTiles(self) if cfg.winograd else None

    def _copy(self, b: ir.IRBuilder, src: ir.Value, dst: ir.Value, count: int, inside: ir.Value | None) -> None:
        """dst[0:count] = src[0:count], or zeros where `inside` is false."""
        lanes = self.cfg.lanes
        for v in range(0, count, lanes):
            value = load_vector(b, b.gep(src, [i64(v)], inbounds=True), lanes, count - v)
            if inside is not None:
                value = b.select(inside, value, ir.Constant(value.type, [0.0] * lanes))
            store_vector(b, value, b.gep(dst, [i64(v)], inbounds=True), count - v)

    @staticmethod
    def _scalar(b: ir.IRBuilder, image: ir.Value, offset: ir.Value, inside: ir.Value, dst: ir.Value) -> None:
        """*dst = image[offset], or 0 where `inside` is false (reading image[0] instead)."""
        value = b.load(b.gep(image, [b.select(inside, offset, i64(0))], inbounds=True))
        b.store(b.select(inside, value, ir.Constant(F32, 0.0)), dst)

    def _interleave(self, b: ir.IRBuilder, runs: list[ir.Value], dst: ir.Value, kw: int) -> None:
        """dst[x*C + c] = runs[c][x] for x < kw <= lanes: a run of kw floats per channel loaded
        as one (masked) vector, the vectors concatenated and shuffled into pixel-major order."""
        lanes, c = self.cfg.lanes, len(runs)
        vectors = [load_vector(b, run, lanes, kw) for run in runs]
        while len(vectors) > 1:
            if len(vectors) % 2:
                vectors.append(ir.Constant(vectors[0].type, [0.0] * vectors[0].type.count))
            width = 2 * vectors[0].type.count
            mask = ir.Constant(ir.VectorType(ir.IntType(32), width), list(range(width)))
            vectors = [b.shuffle_vector(vectors[i], vectors[i + 1], mask) for i in range(0, len(vectors), 2)]
        order = [ch * lanes + tap for tap in range(kw) for ch in range(c)]
        both = vectors[0]
        mixed = b.shuffle_vector(both, ir.Constant(both.type, ir.Undefined),
                                 ir.Constant(ir.VectorType(ir.IntType(32), len(order)), order))
        b.store(mixed, b.bitcast(dst, ir.VectorType(F32, len(order)).as_pointer())).align = 4

    def _pixel(self, b: ir.IRBuilder, p: ir.Value) -> tuple[ir.Value, ir.Value]:
        """(top row, left column) of output pixel p's window in the input (may be negative)."""
        g = self.g
        oh, ow = b.udiv(p, i64(g.ow)), b.urem(p, i64(g.ow))
        return (b.sub(b.mul(oh, i64(g.stride[0])), i64(g.pad_top)),
                b.sub(b.mul(ow, i64(g.stride[1])), i64(g.pad_left)))

    def gather(self, tm: int, kc: int) -> ir.Function:
        """One tap: copy input[pixel(p0 + r) + tap offset, c0:c0+kc] to local[r*ld ...] for
        r < tm, zeros where the tap reads padding."""
        key = f"{self.name}.gather.{tm}.{kc}"
        if key in self.module.globals:
            return self.module.globals[key]
        g = self.g
        fn, b = internal_function(self.module, key, [("image", F32P), ("local", F32P), ("p0", I64),
                                  ("kh", I64), ("kw", I64), ("c0", I64)], noalias=("image", "local"))
        image, local, p0, kh, kw, c0 = fn.args
        with for_range(b, 0, tm, name="r") as r:
            top, left = self._pixel(b, b.add(p0, r))
            ih = b.add(top, b.mul(kh, i64(g.dilation[0])))
            iw = b.add(left, b.mul(kw, i64(g.dilation[1])))
            # Unsigned compares reject negative coordinates too.
            inside = b.and_(b.icmp_unsigned("<", ih, i64(g.h)), b.icmp_unsigned("<", iw, i64(g.w)))
            dst = b.gep(local, [b.mul(r, i64(self.ld))], inbounds=True)
            if g.channels_first:  # kc planes apart: one value each
                for i in range(kc):
                    self._scalar(b, image, g.at(b, ih, iw, b.add(c0, i64(i))), inside, b.gep(dst, [i64(i)]))
            else:
                # Branch-free: a padding row reads the image's first pixel (always valid) and
                # stores zeros instead.
                src = b.gep(image, [b.select(inside, g.at(b, ih, iw, c0), c0)], inbounds=True)
                self._copy(b, src, dst, kc, inside)
        b.ret_void()
        return fn

    def gather_rows(self, tm: int, kh0: int, rows: int) -> ir.Function:
        """Kernel rows kh0..kh0+rows, all KW taps x C channels each, for pixels p0..p0+tm into
        local[r*ld ...]: a kernel row inside the image is one contiguous run of KW*C floats
        (unit filter dilation), else it goes tap by tap, zeros in the padding. A channels-first
        image has a run of KW floats per channel instead: C loads interleaved into the KW x C
        order of the filter's rows by one shuffle."""
        key = f"{self.name}.gather_rows.{tm}.{kh0}.{rows}"
        if key in self.module.globals:
            return self.module.globals[key]
        g = self.g
        run = g.kw * g.c
        fn, b = internal_function(self.module, key, [("image", F32P), ("local", F32P), ("p0", I64)],
                                  noalias=("image", "local"))
        image, local, p0 = fn.args
        with for_range(b, 0, tm, name="r") as r:
            top, left = self._pixel(b, b.add(p0, r))
            dst_row = b.gep(local, [b.mul(r, i64(self.ld))], inbounds=True)
            for j in range(rows):
                ih = b.add(top, i64((kh0 + j) * g.dilation[0]))
                row_inside = b.icmp_unsigned("<", ih, i64(g.h))
                dst = b.gep(dst_row, [i64(j * run)], inbounds=True)

                def by_tap() -> None:
                    for kw in range(g.kw):
                        iw = b.add(left, i64(kw * g.dilation[1]))
                        inside = b.and_(row_inside, b.icmp_unsigned("<", iw, i64(g.w)))
                        tap = b.gep(dst, [i64(kw * g.c)], inbounds=True)
                        if g.channels_first:
                            for c in range(g.c):
                                self._scalar(b, image, g.at(b, ih, iw, c), inside, b.gep(tap, [i64(c)]))
                        else:
                            src = b.gep(image, [b.select(inside, g.at(b, ih, iw, 0), i64(0))], inbounds=True)
                            self._copy(b, src, tap, g.c, inside)

                if g.dilation[1] != 1 or g.w < g.kw or g.channels_first and g.kw > self.cfg.lanes:
                    by_tap()
                    continue
                whole = b.and_(row_inside, b.icmp_unsigned("<", left, i64(g.w - g.kw + 1)))
                with b.if_else(whole) as (then, otherwise):
                    with then:
                        if g.channels_first:
                            self._interleave(b, [b.gep(image, [g.at(b, ih, left, c)], inbounds=True)
                                                 for c in range(g.c)], dst, g.kw)
                        else:
                            self._copy(b, b.gep(image, [g.at(b, ih, left, 0)], inbounds=True), dst, run, None)
                    with otherwise:
                        by_tap()
        b.ret_void()
        return fn

    @property
    def strip_width(self) -> int:
        """Columns of a strip row: those the windows of one output row span, from -pad_left
        (by Winograd, every 2x2 block's 4: an odd width's last column zeros)."""
        if self.winograd:
            return 2 * self.winograd.blocks_wide + 2
        return (self.g.ow - 1) * self.g.stride[1] + self.g.kw

    def strip_height(self, tm: int) -> int:
        """Input rows the windows of `tm` pixels (whole output rows) span."""
        return (tm // self.g.ow - 1) * self.g.stride[0] + self.g.kh

    @property
    def local_floats(self) -> int:
        if self.winograd:
            return self.winograd.local_floats
        if self.pointwise:
            return 0
        if self.cfg.strip:
            return self.strip_height(self.cfg.tile_m) * self.strip_width * self.g.c
        return self.cfg.tile_m * self.ld

    def _fill(self, b: ir.IRBuilder, dst: ir.Value, count: int, src: ir.Value | None = None) -> None:
        """dst[0:count] = src[0:count], or zeros without `src`: a loop over whole vectors, then
        a masked one."""
        lanes = self.cfg.lanes
        zero = ir.Constant(vector(lanes), [0.0] * lanes)

        def move(at: ir.Value, valid: int) -> None:
            value = zero if src is None else load_vector(b, b.gep(src, [at], inbounds=True), lanes, valid)
            store_vector(b, value, b.gep(dst, [at], inbounds=True), valid)

        whole = count - count % lanes
        if whole > 2 * lanes:
            with for_range(b, 0, whole, step=lanes, name="v") as at:
                move(at, lanes)
        else:
            for at in range(0, whole, lanes):
                move(i64(at), lanes)
        if count % lanes:
            move(i64(whole), count % lanes)

    def strip(self, tm: int) -> ir.Function:
        """The input rows under output rows p0 / OW .. (p0 + tm) / OW into local memory, each
        `strip_width` x C floats, channels last (a channels-first image interleaved a vector of
        pixels at a time), zeros where the windows reach past the image. A pixel's window is then
        KH runs of KW*C floats in place, stride*C floats from the next pixel's: the microkernels
        read it there, with no copy per pixel and tap (the gather of 147 floats a pixel took half
        of a 7x7 stem's time)."""
        key = f"{self.name}.strip.{tm}"
        if key in self.module.globals:
            return self.module.globals[key]
        g, lanes = self.g, self.cfg.lanes
        width = self.strip_width
        left = min(g.pad_left, width)  # columns before the image
        inner = max(0, min(g.w, width - left))  # image columns
        right = width - left - inner  # columns after it
        fn, b = internal_function(self.module, key, [("image", F32P), ("local", F32P), ("p0", I64)],
                                  noalias=("image", "local"))
        image, local, p0 = fn.args
        top = b.sub(b.mul(b.udiv(p0, i64(g.ow)), i64(g.stride[0])), i64(g.pad_top))
        with for_range(b, 0, self.strip_height(tm), name="r") as r:
            ih = b.add(top, r)
            dst = b.gep(local, [b.mul(r, i64(width * g.c))], inbounds=True)
            with b.if_else(b.icmp_unsigned("<", ih, i64(g.h))) as (then, otherwise):
                with then:
                    self._fill(b, dst, left * g.c)
                    mid = b.gep(dst, [i64(left * g.c)], inbounds=True)
                    if g.channels_first:
                        def chunk(x: ir.Value, count: int) -> None:
                            runs = [b.gep(image, [g.at(b, ih, x, c)], inbounds=True) for c in range(g.c)]
                            self._interleave(b, runs, b.gep(mid, [b.mul(x, i64(g.c))], inbounds=True), count)

                        whole = inner - inner % lanes
                        with for_range(b, 0, whole, step=lanes, name="x") as x:
                            chunk(x, lanes)
                        if inner % lanes:
                            chunk(i64(whole), inner % lanes)
                    else:
                        self._fill(b, mid, inner * g.c, b.gep(image, [g.at(b, ih, i64(0), 0)], inbounds=True))
                    self._fill(b, b.gep(mid, [i64(inner * g.c)], inbounds=True), right * g.c)
                with otherwise:
                    self._fill(b, dst, width * g.c)
        b.ret_void()
        return fn

    @property
    def pointwise(self) -> bool:
        """A 1x1 window, unit strides, no padding, NHWC: output pixel p reads input pixel p, so
        the microkernels read A in place (rows C floats apart), with nothing to gather."""
        g = self.g
        return ((g.kh, g.kw, *g.stride, g.pad_top, g.pad_left) == (1, 1, 1, 1, 0, 0) and (g.oh, g.ow) == (g.h, g.w)
                and not g.channels_first)

    def a_tiles(self, b: ir.IRBuilder, rows: tuple[ir.Value, int], tm: int, kh0: int) -> list[tuple[int, int, ir.Value]]:
        """(first pixel in the tile, pixels, A at its first k of kernel row kh0) per register
        tile: MR of the `rows` (the tile's first A row, and the floats between rows) in turn, or
        in a strip MR pixels of one output row at a time."""
        g, cfg = self.g, self.cfg
        base, ld = rows
        if not cfg.strip:
            return [(r, min(cfg.mr, tm - r), b.gep(base, [i64(r * ld)], inbounds=True)) for r in range(0, tm, cfg.mr)]
        tiles = []
        for row in range(tm // g.ow):
            for x in range(0, g.ow, cfg.mr):
                at = ((row * g.stride[0] + kh0) * self.strip_width + x * g.stride[1]) * g.c
                tiles.append((row * g.ow + x, min(cfg.mr, g.ow - x), b.gep(base, [i64(at)], inbounds=True)))
        return tiles

    def multiply(self, b: ir.IRBuilder, args: tuple, kh0: int, rows: int, kc: int, first: ir.Value,
                 last: ir.Value, tm: int, tn: int, k_at: ir.Value | None = None,
                 a_rows: tuple[ir.Value, int] | None = None) -> None:
        """Microkernels over the gathered rows (`a_rows` when A is elsewhere; or the strip's
        kernel rows kh0..kh0+rows) x filter rows k_at..k_at+kc (kh0*KW*C.. when None), all of
        this tile."""
        g, cfg = self.g, self.cfg
        filt, out, extra, local, p0, n0 = args
        nr = cfg.nr
        k = g.kh * g.kw * g.c
        k_at = k_at if k_at is not None else i64(kh0 * g.kw * g.c)
        a_rows = a_rows or (local, self.ld)
        if cfg.strip:  # rows segments of KW*C, a strip row apart
            kc, segments, lda = g.kw * g.c, rows, g.stride[1] * g.c
        else:
            segments, lda = 1, a_rows[1]
        for col in range(0, tn, nr):
            cols = min(nr, tn - col)
            n = b.add(n0, i64(col))
            if self.filter_panel:  # panel n / NR (n0 is a multiple of NR), row k_at
                at = b.add(b.mul(b.udiv(n, i64(nr)), i64(k * nr)), b.mul(k_at, i64(nr)))
            else:
                at = b.add(b.mul(k_at, i64(g.f)), n)
            b_at = b.gep(filt, [at], inbounds=True)
            for r, mr, a_at in self.a_tiles(b, a_rows, tm, kh0):
                shape = RegisterTile(cfg.lanes, mr, cols, lda=lda, ldb=nr if self.filter_panel else g.f, ldc=g.f,
                                     masked_b=not self.filter_panel, segments=segments, prefetch_rows=cfg.prefetch_rows,
                                     segment_lda=self.strip_width * g.c if cfg.strip else 0)
                kernel = microkernel(self.module, self.name, shape, False, self.epilogue, self.extra)
                row = b.add(p0, i64(r))
                c_at = b.gep(out, [b.add(b.mul(row, i64(g.f)), n)], inbounds=True)
                b.call(kernel, [a_at, b_at, c_at, *extra, i64(kc), first, last, row, n])

    def tile(self, tm: int, tn: int) -> ir.Function:
        """Output pixels p0..p0+tm x channels n0..n0+tn of one image: over K blocks, gather
        then run the microkernels."""
        if self.winograd:
            return self.winograd.tile(tm, tn)
        key = f"{self.name}.tile.{tm}x{tn}"
        if key in self.module.globals:
            return self.module.globals[key]
        g, cfg = self.g, self.cfg
        args = [("image", F32P), ("filter", F32P), ("out", F32P),
                *((f"extra{i}", F32P) for i in range(self.extra)), ("local", F32P), ("p0", I64), ("n0", I64)]
        fn, b = internal_function(self.module, key, args, noalias=("image", "filter", "out", "local"))
        image, filt, out, *rest = fn.args
        extra, (local, p0, n0) = rest[:-3], rest[-3:]
        common = (filt, out, extra, local, p0, n0)
        true, false = ir.Constant(ir.IntType(1), 1), ir.Constant(ir.IntType(1), 0)
        if cfg.window_rows:
            if cfg.strip:
                b.call(self.strip(tm), [image, local, p0])
            blocks = [(kh0, min(cfg.window_rows, g.kh - kh0)) for kh0 in range(0, g.kh, cfg.window_rows)]
            for i, (kh0, rows) in enumerate(blocks):
                if not cfg.strip:
                    b.call(self.gather_rows(tm, kh0, rows), [image, local, p0])
                self.multiply(b, common, kh0, rows, rows * g.kw * g.c,
                              true if i == 0 else false, true if i == len(blocks) - 1 else false, tm, tn)
            b.ret_void()
            return fn
        taps = g.kh * g.kw
        with for_range(b, 0, taps, name="tap") as tap:
            kh, kw = b.udiv(tap, i64(g.kw)), b.urem(tap, i64(g.kw))
            for c0 in range(0, g.c, cfg.kc):
                kc = min(cfg.kc, g.c - c0)
                if self.pointwise:
                    a_rows = (b.gep(image, [b.add(b.mul(p0, i64(g.c)), i64(c0))], inbounds=True), g.c)
                else:
                    b.call(self.gather(tm, kc), [image, local, p0, kh, kw, i64(c0)])
                    a_rows = None
                first = b.icmp_unsigned("==", tap, i64(0)) if c0 == 0 else false
                last = b.icmp_unsigned("==", tap, i64(taps - 1)) if c0 + kc == g.c else false
                self.multiply(b, common, 0, 1, kc, first, last, tm, tn, k_at=b.add(b.mul(tap, i64(g.c)), i64(c0)),
                              a_rows=a_rows)
        b.ret_void()
        return fn


def winograd_fits(g: _Geometry, nr: int, filter_panel: int) -> bool:
    """Whether F(2x2, 3x3) (winograd.py) computes this convolution, and pays: 3x3, stride 1,
    unit dilation, one pixel of padding all round, an NHWC input, a pre-packed filter whose
    transform for one NR-wide panel (16 x C x NR floats, made per workgroup) stays in L2
    (WINOGRAD_FILTER), and enough 2x2 blocks (WINOGRAD_MIN_BLOCKS) that their matmuls outweigh
    it: per filter value, 16 x blocks multiply-adds against the direct kernel's 9 x pixels
    (a 3x3 image, 4 blocks for 9 pixels, would lose)."""
    blocks = -(-g.oh // 2) * -(-g.ow // 2)
    return ((g.kh, g.kw, *g.stride, *g.dilation, g.pad_top, g.pad_left) == (3, 3, 1, 1, 1, 1, 1, 1)
            and (g.oh, g.ow) == (g.h, g.w) and not g.channels_first and filter_panel > 0
            and 16 * g.c * nr * 4 <= WINOGRAD_FILTER and blocks >= WINOGRAD_MIN_BLOCKS)


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
    filter_panel: int = 0,
    steps: Sequence[str] = (),
    channels_first: bool = False,
) -> GeneratedKernel:
    """Generate NHWC x HWIO -> NHWC conv2d (feature groups = 1) for static shapes.

    `padding` is "SAME", "VALID" or ((top, bottom), (left, right)); `extra_bindings` as in
    `generate_matmul` (a bias: `(F,)` with `epilogue=bias_add()`). `runtime_batch` > 0: the batch
    is that many times the dynamic dim D (push constant 0; compiler/dynamic.py), which only sizes
    the grid's z and the batched bindings: the kernel checks those lengths against D.
    `filter_panel` > 0: the filter binding is `matmul.pack_weights` of the K x F filter in panels
    that wide, which must be the kernel's NR (`panel_width`). `steps`: the epilogue as
    `ConvBody.epilogue` names it, its bindings (bias, residual) built here, instead of
    `epilogue` and `extra_bindings`. `channels_first`: the input binding is N x C x H x W.
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
    g = _Geometry(h, w, c, kh, kw, f, oh, ow, tuple(strides), tuple(dilation), top, left, channels_first)
    cfg = config or choose_conv_config(oh * ow, f, c, images=n, kernel=(kh, kw),
                                       out_width=ow if tuple(dilation) == (1, 1) else 0)
    if filter_panel and filter_panel != cfg.nr:
        raise ValueError(f"generate_conv2d: filter packed in {filter_panel}-wide panels, the kernel's are {cfg.nr}")
    # per extra binding: (floats per image, or 0 when shared, and how many floats in all)
    extras = [(0, count) for count in extra_bindings]
    if steps:
        epilogue, per_image = epilogue_steps(steps, f, oh * ow * f)
        extras = [(step, n * step if step else f) for step in per_image]
    if config is None and cfg.strip and 4 * ConvGenerator(g, cfg, None, 0, name, 0).local_floats > LOCAL_MAX:
        cfg = choose_conv_config(oh * ow, f, c, images=n, kernel=(kh, kw))  # a wide image: gather tiles
    if config is None and runtime_batch == 0 and winograd_fits(g, cfg.nr, filter_panel):
        # A workgroup: one filter panel x a band of about WINOGRAD_BLOCKS blocks, in equal bands
        # (the filter's transform, made per workgroup, costs as much as the matmuls of ~12
        # blocks: 24x24 x 32 ran 67 us in bands of 12 blocks, 54 in bands of 24, 89 direct); two
        # workgroups at least where the blocks allow
        rows, wide, panels = -(-oh // 2), -(-ow // 2), -(-f // cfg.nr)
        bands = -(-rows // min(rows, -(-WINOGRAD_BLOCKS // wide)))
        if bands * panels * n < 2:
            bands = min(rows, 2)
        band = -(-rows // bands)
        winograd = replace(cfg, winograd=True, tile_m=min(oh, 2 * band) * ow, tile_n=min(f, cfg.nr))
        if 4 * ConvGenerator(g, winograd, None, 0, name, filter_panel).local_floats <= LOCAL_MAX:
            cfg = winograd
    gen = ConvGenerator(g, cfg, epilogue, len(extras), name, filter_panel)
    filter_floats = packed_size(kh * kw * c, f, filter_panel) if filter_panel else kh * kw * c * f
    grid = (-(-f // cfg.tile_n), -(-(oh * ow) // cfg.tile_m), n)
    return emit_tiled_entry(
        gen.module, name, grid, (oh * ow, f), (cfg.tile_m, cfg.tile_n),
        [(n * h * w * c, h * w * c), (filter_floats, 0), (n * oh * ow * f, oh * ow * f),
         *((count, step) for step, count in extras)],
        4 * gen.local_floats,
        gen.tile, cfg,
        per_dim=[runtime_batch * h * w * c, 0, runtime_batch * oh * ow * f] + [runtime_batch * step for step, _ in extras]
        if runtime_batch else (),
    )
