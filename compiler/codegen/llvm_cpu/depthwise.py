"""Depthwise NHWC conv2d (MobileNet's: one filter per channel, `ConvBody.depthwise`), f32.

Output channel c reads input channel c only, so there is no reduction over channels to block
for: the work is KH*KW multiply-adds per output value, and the kernel is bound by how fast it
moves the image. Channels are contiguous in NHWC, so a vector holds `lanes` neighbouring
channels of one pixel. A workgroup computes a few output rows, each in tiles of 8 (AVX-512) or 4
neighbouring pixels; per tile it runs through its block of channel vectors, keeping the tile's
accumulators in registers: each input vector is loaded once for every pixel of the tile
that reads it (a 3x3 stride-1 row of 8 pixels: 3 x 10 input loads, not 72) and each filter
vector once per tile. The image is still read front to back (a tile's 3 x 10 pixels, channel
vector by channel vector), as the hardware prefetchers like (sweeping the row once per channel
vector instead strode 512 bytes a load through the rows and ran 1.3x slower on a 56x56x128
layer). Against one pixel at a time (9 input and 9 filter loads per output vector):
MobileNetV2's cache-resident layers 1.1-1.8x faster; the 56x56x128 layer, bound by memory, alike
when aligned.

Stores: a caller's array bound in place is 16-byte aligned, not 64, and the tile's stores to 8
pixels 512 bytes apart, each split over two lines, ran 1.5x slower than aligned ones (one
pixel's stores in a row did not mind). Where the output lies `shift` lanes past a vector
boundary (the same for every pixel: C % lanes == 0), the aligned line between two channel
vectors, the last `shift` lanes of one and the first of the next, is one permute (vpermt2ps;
with AVX2, vpermps of the next and a blend) and one whole aligned store, each pixel's first
and last line masked (lanes of the neighbouring pixel or channel block are left alone). The
kernel alone, one thread, 56x56x128 with the output 16 bytes off: 1.5x -> 1.07x the aligned
time. (Loads split the same way cost less, 1.03-1.07x: two aligned masked loads and a
vpermt2ps per input vector instead gained nothing.)

Padding costs only at the edges: the row is split, at generation time, into the left columns,
the interior (every tap inside the image: no checks; whole tiles in a loop, then one tile of
what is left) and the right columns, whose column numbers are constants, so that their taps
outside the image are dropped at generation time. A kernel row outside the image reads a row
of zeros (a zero-initialised global of W x C floats), chosen once per workgroup: no tap is
checked for rows (with the bias start below: MobileNetV2's 6x6x192 layer 1.6 -> 1.2 us, as
it had a select on every tap of its edge rows). The
channels past the last whole vector are one masked vector; the channel blocks of a workgroup
are of (nearly) equal size (288 channels: 3 x 96, not 128 + 128 + 32).

The epilogue (`ConvBody.epilogue`: bias, residual, ReLU, ReLU6's minimum) runs on the
accumulator vectors before their one store, as the conv kernel's does; a leading bias is the
accumulators' starting value instead (one add less per output vector).

Bindings: 0 = input N x H x W x C, 1 = filter KH x KW x 1 x C, 2 = output N x OH x OW x C, 3.. =
what the epilogue reads (a bias of C floats, a residual shaped as the output).
workgroup_id = (channel block, group of output rows, image).

Workgroups: as many per image as it has MIN_WORKGROUP_FMAS of work (~3 us of FMAs), up to one
per output row and block of BLOCK_VECTORS channel vectors. One workgroup per row made
MobileNetV2's late layers (6x6, a microsecond of work) 12 workgroups on the two workers, and
its depthwise dispatches spent more time at barriers and wakes than computing; now each of its
17 is one workgroup. Traces of the model (`fibergrid profile --trace`, busy VM, 3 runs each,
against the one-pixel kernel with a workgroup per row): the depthwise regions' wall time 147-183
-> 70-97 us a call, the gaps between regions 69-83 -> 48-64 us. (A minimum of 2048 or 4096
FMAs, which splits the 24x24 and 48x48 layers in 2-7, measured between the two.) The 56x56x128
layer is 12 workgroups of 5 rows (same-process A/B on two workers: 165 -> 154 us).
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from compiler import kernel_ir as kir

from . import jit
from .abi_builder import F32, I32, I64, entry_alloca, fma, for_range, i32, i64, intrinsic, load_vector, splat, store_vector, vector
from .grid_loops import clipped, kernel_entry
from .streaming import both
from .conv import epilogue_steps
from .matmul import EpilogueSite, GeneratedKernel

BLOCK_VECTORS = 8  # channel vectors per workgroup at most: 128 channels with AVX-512
MIN_WORKGROUP_FMAS = 16384  # vector FMAs a workgroup at least has (where the image has them)
# Output pixels per register tile (its accumulators), with 32 vector registers (AVX-512) and
# with 16 (AVX2: 8 accumulators, 9 filter vectors and a row's inputs spilled 64 times a kernel)
PIXELS_32_REGISTERS, PIXELS_16_REGISTERS = 8, 4


def _output_size(size: int, kernel: int, stride: int, dilation: int, pads: tuple[int, int]) -> int:
    return (size + pads[0] + pads[1] - ((kernel - 1) * dilation + 1)) // stride + 1


def _interior(size: int, kernel: int, stride: int, dilation: int, pad: int, out: int) -> tuple[int, int]:
    """[lo, hi): the output positions whose every tap lies inside the input."""
    lo = -(-pad // stride)
    hi = (size - 1 - (kernel - 1) * dilation + pad) // stride + 1
    lo = min(max(lo, 0), out)
    return lo, min(max(hi, lo), out)


# vpermt2ps (two vectors' lanes by run-time indices) with AVX-512, vpermps (one vector's) with AVX2
_PERMUTES = {16: ("llvm.x86.avx512.vpermi2var.ps.512", "avx512f", 2), 8: ("llvm.x86.avx2.permps", "avx2", 1)}


@dataclass(frozen=True)
class _Rotation:
    """Stores of whole aligned vectors to an output `shift` lanes past a vector boundary: the
    line at a vector boundary holds the last `shift` lanes of one vector, then the first of the
    next."""

    shift: ir.Value  # i64, 1 .. lanes-1
    indices: ir.Value  # <lanes x i32> for `permute`
    carried: ir.Value  # <lanes x i1>: lanes i < shift, the previous vector's
    permute: ir.Function
    sources: int  # vectors `permute` reads

    def carry(self, b: ir.IRBuilder, v: ir.Value) -> ir.Value:
        """What the next vector's line needs of `v`."""
        return v if self.sources == 2 else b.call(self.permute, [v, self.indices])

    def line(self, b: ir.IRBuilder, carried: ir.Value, v: ir.Value) -> ir.Value:
        if self.sources == 2:  # lane i: lane i + lanes - shift of (carried, v)
            return b.call(self.permute, [carried, self.indices, v])
        return b.select(self.carried, carried, b.call(self.permute, [v, self.indices]))


def _rotation(b: ir.IRBuilder, out: ir.Value, lanes: int) -> tuple[ir.Value, _Rotation] | None:
    """(i1: `out` lies a whole number of f32 past a vector boundary, not on one; the rotation
    of its vectors), or None where the host has no lane permute with run-time indices for
    `lanes`."""
    name, feature, sources = _PERMUTES.get(lanes, ("", "", 0))
    if not name or not jit.has_feature(feature):
        return None
    index_type = ir.VectorType(I32, lanes)
    permute = intrinsic(b.module, name, vector(lanes), [vector(lanes), index_type] + [vector(lanes)] * (sources - 1))
    address = b.ptrtoint(out, I64)
    shift = b.and_(b.lshr(address, i64(2)), i64(lanes - 1))
    lane = ir.Constant(index_type, list(range(lanes)))
    shifts = splat(b, b.trunc(shift, I32), lanes)
    if sources == 2:
        indices = b.sub(b.add(lane, ir.Constant(index_type, [lanes] * lanes)), shifts)
    else:  # lane i takes lane (i - shift) mod lanes
        indices = b.and_(b.sub(lane, shifts), ir.Constant(index_type, [lanes - 1] * lanes))
    wanted = b.and_(b.icmp_unsigned("==", b.and_(address, i64(3)), i64(0)), b.icmp_unsigned("!=", shift, i64(0)))
    return wanted, _Rotation(shift, indices, b.icmp_unsigned("<", lane, shifts), permute, sources)


def _masked_store(b: ir.IRBuilder, value: ir.Value, ptr: ir.Value, mask: ir.Value) -> None:
    """The lanes of `value` where `mask` (a run-time <lanes x i1>) is set, to `ptr`, vector-aligned."""
    vty = value.type
    fn = intrinsic(b.module, f"llvm.masked.store.v{vty.count}f32.p0", ir.VoidType(), [vty, vty.as_pointer(), I32, mask.type])
    b.call(fn, [value, b.bitcast(ptr, vty.as_pointer()), i32(vty.count * 4), mask])


@dataclass(frozen=True)
class _Row:
    """An output row of a workgroup's image: where it and its kernel rows' inputs lie."""

    oh: ir.Value  # i64
    inputs: list[ir.Value]  # per kernel row, f32* to its first pixel (a row of zeros outside)
    out: ir.Value  # i64 offset of its first pixel in the output


def _workgroups(vectors_n: int, oh_n: int, ow_n: int, taps: int) -> tuple[int, int]:
    """(channel vectors per workgroup, output rows per workgroup) for one image: as many
    workgroups as the image has MIN_WORKGROUP_FMAS of work, up to one per output row and block
    of BLOCK_VECTORS, blocks of (nearly) equal size (288 channels: 3 x 96, not 128 + 128 + 32)."""
    parts = max(1, oh_n * ow_n * vectors_n * taps // MIN_WORKGROUP_FMAS)
    blocks = min(-(-vectors_n // BLOCK_VECTORS), parts)
    block = -(-vectors_n // blocks)
    groups = max(1, min(oh_n, parts // -(-vectors_n // block)))
    return block, -(-oh_n // groups)


def generate_depthwise(region: kir.KernelRegion, lanes: int | None = None) -> GeneratedKernel:
    """LLVM IR for a depthwise conv `region`; dispatch it with `kernel.workgroup_count`."""
    body = region.body
    assert isinstance(body, kir.ConvBody) and body.depthwise
    lanes = lanes or jit.vector_width_f32()
    n, h, w, c = body.input_shape
    kh_n, kw_n = body.filter_shape[:2]
    (sh, sw), (dh, dw), ((pt, pb), (pl, pr)) = body.strides, body.dilation, body.padding
    oh_n, ow_n = _output_size(h, kh_n, sh, dh, (pt, pb)), _output_size(w, kw_n, sw, dw, (pl, pr))
    block_vectors, rows = _workgroups(-(-c // lanes), oh_n, ow_n, kh_n * kw_n)
    block = block_vectors * lanes
    pixels = PIXELS_32_REGISTERS if lanes >= 16 else PIXELS_16_REGISTERS  # as matmul.register_tile
    grid = (-(-c // block), -(-oh_n // rows), n)
    module = ir.Module()
    kb, (image, filt, out, *extra) = kernel_entry(module, region)
    b = kb.builder
    # a leading bias is each accumulator's starting value, not an add after the taps
    bias_first = body.epilogue[:1] == ("bias_add",)
    epilogue, per_image = epilogue_steps(body.epilogue[bias_first:], c, oh_n * ow_n * c)
    bias, extra = (extra[0], extra[1:]) if bias_first else (None, extra)
    cb, group, img = (b.zext(kb.workgroup_id(d), I64) for d in range(3))
    zero = ir.Constant(vector(lanes), [0.0] * lanes)
    col_lo, col_hi = _interior(w, kw_n, sw, dw, pl, ow_n)
    image_base = b.mul(img, i64(h * w * c))
    first_row, end_row = clipped(b, group, rows, i64(oh_n))
    whole = c - c % lanes
    first, end = clipped(b, cb, block, i64(whole))
    # the epilogue's operands, a residual at this image (its rows are pixels: row oh * OW + ow)
    extra = [b.gep(x, [b.mul(img, i64(step))], inbounds=True) if step else x for x, step in zip(extra, per_image)]
    # the input rows of kernel rows outside the image (some output rows' `kh`)
    outside = [kh * dh - pt < 0 or (oh_n - 1) * sh + kh * dh - pt >= h for kh in range(kh_n)]
    if any(outside):
        zeros = ir.GlobalVariable(module, ir.ArrayType(F32, w * c), f"{region.name}.zero_row")
        zeros.linkage, zeros.align, zeros.initializer = "internal", 64, ir.Constant(zeros.value_type, None)

    def start_row(oh: ir.Value) -> _Row:
        inputs = []
        for kh in range(kh_n):
            ih = b.add(b.mul(oh, i64(sh)), i64(kh * dh - pt))
            at = b.gep(image, [b.add(image_base, b.mul(ih, i64(w * c)))])
            if outside[kh]:
                at = b.select(b.icmp_unsigned("<", ih, i64(h)), at, zeros.gep([i64(0), i64(0)]))
            inputs.append(at)
        return _Row(oh, inputs, b.mul(b.add(b.mul(img, i64(oh_n)), oh), i64(ow_n * c)))

    def vectors(r: _Row, ow: ir.Value, known: int | None, count: int, c0: ir.Value, valid: int) -> list[ir.Value]:
        """out[img, oh, ow:ow+count, c0:c0+valid], epilogue applied: each input vector loaded once
        for the taps of all `count` pixels that read it, each filter vector once for the tile.
        `known`: ow's value when it is a constant (edge tiles: taps outside the image skipped
        here)."""
        start = zero if bias is None else load_vector(b, b.gep(bias, [c0], inbounds=True), lanes, valid)
        accs = [start] * count
        column = b.add(b.mul(b.add(b.mul(ow, i64(sw)), i64(-pl)), i64(c)), c0)  # input column ow * SW - PL
        for kh in range(kh_n):
            row_at = b.gep(r.inputs[kh], [column])
            inputs: dict[int, ir.Value] = {}
            for kw in range(kw_n):
                taps = [(o, o * sw + kw * dw) for o in range(count)
                        if known is None or 0 <= (known + o) * sw + kw * dw - pl < w]
                if not taps:
                    continue
                tap = load_vector(b, b.gep(filt, [b.add(i64((kh * kw_n + kw) * c), c0)], inbounds=True), lanes, valid)
                for o, col in taps:
                    if col not in inputs:
                        inputs[col] = load_vector(b, b.gep(row_at, [i64(col * c)]), lanes, valid)
                    accs[o] = fma(b, inputs[col], tap, accs[o])
        if epilogue is not None:
            accs = [epilogue(EpilogueSite(b, b.add(b.mul(r.oh, i64(ow_n)), b.add(ow, i64(o))), c0, valid, extra), acc)
                    for o, acc in enumerate(accs)]
        return accs

    def at(r: _Row, ow: ir.Value, o: int, c0: ir.Value) -> ir.Value:
        """Where out[img, oh, ow + o, c0] lies."""
        return b.gep(out, [b.add(b.add(r.out, b.mul(b.add(ow, i64(o)), i64(c))), c0)], inbounds=True)

    def tile(r: _Row, ow: ir.Value, known: int | None, count: int, rotation: _Rotation | None) -> None:
        """`count` output pixels from column `ow`, for every channel vector of the block."""
        if rotation is None:
            with for_range(b, first, end, step=lanes, name="c") as c0:
                for o, acc in enumerate(vectors(r, ow, known, count, c0, lanes)):
                    store_vector(b, acc, at(r, ow, o, c0), lanes)
            if c % lanes:
                with b.if_then(b.icmp_unsigned("==", cb, i64(grid[0] - 1))):
                    for o, acc in enumerate(vectors(r, ow, known, count, i64(whole), c % lanes)):
                        store_vector(b, acc, at(r, ow, o, i64(whole)), c % lanes)
            return
        # Each pixel's channels, `shift` lanes past a vector boundary, stored as whole aligned
        # lines: the last `shift` lanes of one channel vector and the first of the next; the
        # first and last line of a pixel's block masked.
        previous = [entry_alloca(b, vector(lanes), f"carried{o}") for o in range(count)]
        for slot in previous:
            b.store(zero, slot)
        first_line = b.not_(rotation.carried)
        every_lane = ir.Constant(rotation.carried.type, [1] * lanes)
        with for_range(b, first, end, step=lanes, name="c") as c0:
            mask = b.select(b.icmp_unsigned("==", c0, first), first_line, every_lane)
            for o, acc in enumerate(vectors(r, ow, known, count, c0, lanes)):
                line = rotation.line(b, b.load(previous[o]), acc)
                _masked_store(b, line, b.gep(at(r, ow, o, c0), [b.neg(rotation.shift)]), mask)
                b.store(rotation.carry(b, acc), previous[o])
        for o in range(count):  # the last line
            line = rotation.line(b, b.load(previous[o]), zero)
            _masked_store(b, line, b.gep(at(r, ow, o, end), [b.neg(rotation.shift)]), rotation.carried)

    def static_tiles(r: _Row, first_col: int, last_col: int, rotation: _Rotation | None) -> None:
        for ow in range(first_col, last_col, pixels):
            tile(r, i64(ow), ow, min(pixels, last_col - ow), rotation)

    def output_rows(rotation: _Rotation | None) -> None:
        with for_range(b, first_row, end_row, name="oh") as oh:
            r = start_row(oh)
            static_tiles(r, 0, col_lo, rotation)
            tiles_end = col_lo + (col_hi - col_lo) // pixels * pixels
            if tiles_end > col_lo:
                with for_range(b, col_lo, tiles_end, step=pixels, name="ow") as ow:
                    tile(r, ow, None, pixels, rotation)
            if tiles_end < col_hi:
                tile(r, i64(tiles_end), None, col_hi - tiles_end, rotation)
            static_tiles(r, col_hi, ow_n, rotation)

    rotated = _rotation(b, out, lanes) if c % lanes == 0 else None  # one shift for every pixel
    if rotated is None:
        output_rows(None)
    else:
        both(b, rotated[0], lambda rotate: output_rows(rotated[1] if rotate else None))
    b.ret(i32(0))
    return GeneratedKernel(region.name, str(module), grid, 0, len(region.bindings), None)
