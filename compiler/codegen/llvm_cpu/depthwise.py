"""Depthwise NHWC conv2d (MobileNet's: one filter per channel, `ConvBody.depthwise`), f32.

Output channel c reads input channel c only, so there is no reduction over channels to block
for: the work is KH*KW multiply-adds per output value, and the kernel is bound by how fast it
moves the image. Channels are contiguous in NHWC, so a vector holds `lanes` neighbouring
channels of one pixel. A workgroup computes one output row in tiles of PIXELS neighbouring
pixels; per tile it runs through its block of channel vectors, keeping the tile's PIXELS
accumulators in registers: each input vector is loaded once for every pixel of the tile that
reads it (a 3x3 stride-1 row of 8 pixels: 3 x 10 input loads, not 72) and each filter vector
once per tile. The image is still read front to back (a tile's 3 x 10 pixels, channel vector
by channel vector), as the hardware prefetchers like (sweeping the row once per channel vector
instead strode 512 bytes a load through the rows and ran 1.3x slower on a 56x56x128 layer).
Against one pixel at a time (9 input and 9 filter loads per output vector): MobileNetV2's
cache-resident layers 1.1-1.8x faster; the 56x56x128 layer, bound by memory, alike when aligned.

Stores: a caller's array bound in place is 16-byte aligned, not 64, and the tile's stores to 8
pixels 512 bytes apart, each split over two lines, ran 1.5x slower than aligned ones (one
pixel's stores in a row did not mind). Where the output lies `shift` lanes past a vector
boundary (the same for every pixel: C % lanes == 0), each channel vector is rotated by `shift`
lanes (vpermps) and stored as a whole aligned vector with the previous one's last `shift`
lanes, each pixel's first and last line masked (lanes of the neighbouring pixel or channel
block are left alone).

Padding costs only at the edges: the row is split, at generation time, into the left columns,
the interior (every tap inside the image: no checks; whole tiles in a loop, then one tile of
what is left) and the right columns, whose column numbers are constants, so that their taps
outside the image are dropped at generation time. A workgroup whose output row reads only
image rows takes a copy of the row without row checks; elsewhere a tap of a row outside the
image is skipped with a select (its load reads a valid row). The channels past the last whole
vector are one masked vector.

The epilogue (`ConvBody.epilogue`: bias, residual, ReLU, ReLU6's minimum) runs on the
accumulator vectors before their one store, as the conv kernel's does.

Bindings: 0 = input N x H x W x C, 1 = filter KH x KW x 1 x C, 2 = output N x OH x OW x C, 3.. =
what the epilogue reads (a bias of C floats, a residual shaped as the output).
workgroup_id = (channel block, output row, image).
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from compiler import kernel_ir as kir

from . import jit
from .abi_builder import I32, I64, entry_alloca, fma, for_range, i32, i64, intrinsic, load_vector, splat, store_vector, vector
from .grid_loops import kernel_entry
from .conv import epilogue_steps
from .matmul import EpilogueSite, GeneratedKernel

BLOCK_VECTORS = 8  # channel vectors per workgroup: 128 channels with AVX-512
PIXELS = 8  # output pixels per register tile (accumulators)


def _output_size(size: int, kernel: int, stride: int, dilation: int, pads: tuple[int, int]) -> int:
    return (size + pads[0] + pads[1] - ((kernel - 1) * dilation + 1)) // stride + 1


def _interior(size: int, kernel: int, stride: int, dilation: int, pad: int, out: int) -> tuple[int, int]:
    """[lo, hi): the output positions whose every tap lies inside the input."""
    lo = -(-pad // stride)
    hi = (size - 1 - (kernel - 1) * dilation + pad) // stride + 1
    lo = min(max(lo, 0), out)
    return lo, min(max(hi, lo), out)


_PERMUTES = {16: ("llvm.x86.avx512.permvar.sf.512", "avx512f"), 8: ("llvm.x86.avx2.permps", "avx2")}  # vpermps


@dataclass(frozen=True)
class _Rotation:
    """Stores of whole aligned vectors to an output `shift` lanes past a vector boundary."""

    shift: ir.Value  # i64, 1 .. lanes-1
    indices: ir.Value  # <lanes x i32>: lane i takes lane (i - shift) mod lanes
    carried: ir.Value  # <lanes x i1>: lanes i < shift, the previous vector's
    permute: ir.Function


def _rotation(b: ir.IRBuilder, out: ir.Value, lanes: int) -> tuple[ir.Value, _Rotation] | None:
    """(i1: `out` lies a whole number of f32 past a vector boundary, not on one; the rotation
    of its vectors), or None where the host has no lane permute with run-time indices for
    `lanes` (vpermps)."""
    name, feature = _PERMUTES.get(lanes, ("", ""))
    if not name or not jit.has_feature(feature):
        return None
    index_type = ir.VectorType(I32, lanes)
    permute = intrinsic(b.module, name, vector(lanes), [vector(lanes), index_type])
    address = b.ptrtoint(out, I64)
    shift = b.and_(b.lshr(address, i64(2)), i64(lanes - 1))
    lane = ir.Constant(index_type, list(range(lanes)))
    shifts = splat(b, b.trunc(shift, I32), lanes)
    indices = b.and_(b.sub(lane, shifts), ir.Constant(index_type, [lanes - 1] * lanes))
    wanted = b.and_(b.icmp_unsigned("==", b.and_(address, i64(3)), i64(0)), b.icmp_unsigned("!=", shift, i64(0)))
    return wanted, _Rotation(shift, indices, b.icmp_unsigned("<", lane, shifts), permute)


def _masked_store(b: ir.IRBuilder, value: ir.Value, ptr: ir.Value, mask: ir.Value) -> None:
    """The lanes of `value` where `mask` (a run-time <lanes x i1>) is set, to `ptr`, vector-aligned."""
    vty = value.type
    fn = intrinsic(b.module, f"llvm.masked.store.v{vty.count}f32.p0", ir.VoidType(), [vty, vty.as_pointer(), I32, mask.type])
    b.call(fn, [value, b.bitcast(ptr, vty.as_pointer()), i32(vty.count * 4), mask])


def generate_depthwise(region: kir.KernelRegion, lanes: int | None = None) -> GeneratedKernel:
    """LLVM IR for a depthwise conv `region`; dispatch it with `kernel.workgroup_count`."""
    body = region.body
    assert isinstance(body, kir.ConvBody) and body.depthwise
    lanes = lanes or jit.vector_width_f32()
    n, h, w, c = body.input_shape
    kh_n, kw_n = body.filter_shape[:2]
    (sh, sw), (dh, dw), ((pt, pb), (pl, pr)) = body.strides, body.dilation, body.padding
    oh_n, ow_n = _output_size(h, kh_n, sh, dh, (pt, pb)), _output_size(w, kw_n, sw, dw, (pl, pr))
    block = BLOCK_VECTORS * lanes
    grid = (-(-c // block), oh_n, n)
    module = ir.Module()
    kb, (image, filt, out, *extra) = kernel_entry(module, region)
    b = kb.builder
    epilogue, per_image = epilogue_steps(body.epilogue, c, oh_n * ow_n * c)
    cb, oh, img = (b.zext(kb.workgroup_id(d), I64) for d in range(3))
    rows_inside = [b.icmp_unsigned("<", b.add(b.mul(oh, i64(sh)), i64(kh * dh - pt)), i64(h)) for kh in range(kh_n)]
    all_rows = rows_inside[0]
    for inside in rows_inside[1:]:
        all_rows = b.and_(all_rows, inside)
    zero = ir.Constant(vector(lanes), [0.0] * lanes)
    col_lo, col_hi = _interior(w, kw_n, sw, dw, pl, ow_n)

    first = b.mul(cb, i64(block))
    end = b.add(first, i64(block))
    whole = c - c % lanes
    end = b.select(b.icmp_unsigned("<", end, i64(whole)), end, i64(whole))
    image_base = b.mul(img, i64(h * w * c))
    out_row = b.mul(b.add(b.mul(img, i64(oh_n)), oh), i64(ow_n * c))
    # the epilogue's operands, a residual at this image (its rows are pixels: row oh * OW + ow)
    extra = [b.gep(x, [b.mul(img, i64(step))], inbounds=True) if step else x for x, step in zip(extra, per_image)]

    def vectors(ow: ir.Value, known: int | None, count: int, c0: ir.Value, valid: int, check_rows: bool) -> list[ir.Value]:
        """out[img, oh, ow:ow+count, c0:c0+valid], epilogue applied: each input vector loaded once
        for the taps of all `count` pixels that read it, each filter vector once for the tile.
        `known`: ow's value when it is a constant (edge tiles: taps outside the image skipped
        here)."""
        accs = [zero] * count
        base = b.mul(b.add(b.mul(ow, i64(sw)), i64(-pl)), i64(c))  # input column ow * SW - PL
        for kh in range(kh_n):
            ih = b.add(b.mul(oh, i64(sh)), i64(kh * dh - pt))
            if check_rows:  # a row outside the image: its taps are skipped, its loads read row 0
                ih = b.select(rows_inside[kh], ih, i64(0))
            row_at = b.add(b.add(image_base, b.mul(ih, i64(w * c))), b.add(base, c0))
            inputs: dict[int, ir.Value] = {}
            for kw in range(kw_n):
                taps = [(o, o * sw + kw * dw) for o in range(count)
                        if known is None or 0 <= (known + o) * sw + kw * dw - pl < w]
                if not taps:
                    continue
                tap = load_vector(b, b.gep(filt, [b.add(i64((kh * kw_n + kw) * c), c0)], inbounds=True), lanes, valid)
                for o, col in taps:
                    if col not in inputs:
                        inputs[col] = load_vector(b, b.gep(image, [b.add(row_at, i64(col * c))], inbounds=True), lanes, valid)
                    product = fma(b, inputs[col], tap, accs[o])
                    accs[o] = b.select(rows_inside[kh], product, accs[o]) if check_rows else product
        if epilogue is not None:
            accs = [epilogue(EpilogueSite(b, b.add(b.mul(oh, i64(ow_n)), b.add(ow, i64(o))), c0, valid, extra), acc)
                    for o, acc in enumerate(accs)]
        return accs

    def at(ow: ir.Value, o: int, c0: ir.Value) -> ir.Value:
        """Where out[img, oh, ow + o, c0] lies."""
        return b.gep(out, [b.add(b.add(out_row, b.mul(b.add(ow, i64(o)), i64(c))), c0)], inbounds=True)

    def tile(ow: ir.Value, known: int | None, count: int, check_rows: bool, rotation: _Rotation | None) -> None:
        """`count` output pixels from column `ow`, for every channel vector of the block."""
        if rotation is None:
            with for_range(b, first, end, step=lanes, name="c") as c0:
                for o, acc in enumerate(vectors(ow, known, count, c0, lanes, check_rows)):
                    store_vector(b, acc, at(ow, o, c0), lanes)
            if c % lanes:
                with b.if_then(b.icmp_unsigned("==", cb, i64(grid[0] - 1))):
                    for o, acc in enumerate(vectors(ow, known, count, i64(whole), c % lanes, check_rows)):
                        store_vector(b, acc, at(ow, o, i64(whole)), c % lanes)
            return
        # Each pixel's channels, `shift` lanes past a vector boundary, stored as whole aligned
        # vectors: lanes rotated by `shift`, the last `shift` lanes of one channel vector and
        # the first of the next; the first and last line of a pixel's block masked.
        previous = [entry_alloca(b, vector(lanes), f"rotated{o}") for o in range(count)]
        for slot in previous:
            b.store(zero, slot)
        first_line = b.not_(rotation.carried)
        every_lane = ir.Constant(rotation.carried.type, [1] * lanes)
        with for_range(b, first, end, step=lanes, name="c") as c0:
            mask = b.select(b.icmp_unsigned("==", c0, first), first_line, every_lane)
            for o, acc in enumerate(vectors(ow, known, count, c0, lanes, check_rows)):
                rotated = b.call(rotation.permute, [acc, rotation.indices])
                line = b.select(rotation.carried, b.load(previous[o]), rotated)
                _masked_store(b, line, b.gep(at(ow, o, c0), [b.neg(rotation.shift)]), mask)
                b.store(rotated, previous[o])
        for o in range(count):  # the last line
            _masked_store(b, b.load(previous[o]), b.gep(at(ow, o, end), [b.neg(rotation.shift)]), rotation.carried)

    def static_tiles(first_col: int, last_col: int, check_rows: bool, rotation: _Rotation | None) -> None:
        for ow in range(first_col, last_col, PIXELS):
            tile(i64(ow), ow, min(PIXELS, last_col - ow), check_rows, rotation)

    def row(check_rows: bool, rotation: _Rotation | None) -> None:
        static_tiles(0, col_lo, check_rows, rotation)
        tiles_end = col_lo + (col_hi - col_lo) // PIXELS * PIXELS
        if tiles_end > col_lo:
            with for_range(b, col_lo, tiles_end, step=PIXELS, name="ow") as ow:
                tile(ow, None, PIXELS, check_rows, rotation)
        if tiles_end < col_hi:
            tile(i64(tiles_end), None, col_hi - tiles_end, check_rows, rotation)
        static_tiles(col_hi, ow_n, check_rows, rotation)

    def rows(rotation: _Rotation | None) -> None:
        with b.if_else(all_rows) as (inside, edge):
            with inside:
                row(False, rotation)
            with edge:
                row(True, rotation)

    rotated = _rotation(b, out, lanes) if c % lanes == 0 else None  # one shift for every pixel
    if rotated is None:
        rows(None)
    else:
        with b.if_else(rotated[0]) as (realign, plain):
            with realign:
                rows(rotated[1])
            with plain:
                rows(None)
    b.ret(i32(0))
    return GeneratedKernel(region.name, str(module), grid, 0, len(region.bindings), None)
