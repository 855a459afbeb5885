"""Depthwise NHWC conv2d (MobileNet's: one filter per channel, `ConvBody.depthwise`), f32.

Output channel c reads input channel c only, so there is no reduction over channels to block
for: the work is KH*KW multiply-adds per output value, and the kernel is bound by how fast it
moves the image. Channels are contiguous in NHWC, so a vector holds `lanes` neighbouring
channels of one pixel. A workgroup sweeps its output row pixel by pixel and, per pixel, its
block of channels: the image is read front to back, as the hardware prefetchers like (sweeping
the row once per channel vector instead, with the filter vectors in registers, strode 512 bytes
a load through the rows and ran 1.3x slower on a 56x56x128 layer); the filter (KH*KW vectors
per channel vector) stays in L1.

Padding costs only at the edges: the row sweep is split, at generation time, into the left
columns, the interior (every tap inside the image: no checks) and the right columns, and a
workgroup whose output row reads only image rows takes a copy of the sweep without row checks.
A tap outside the image is skipped with a select (its load reads a clamped, valid address).
The channels past the last whole vector are one masked vector.

The epilogue (`ConvBody.epilogue`: bias, residual, ReLU, ReLU6's minimum) runs on the
accumulator vector before its one store, as the conv kernel's does.

Bindings: 0 = input N x H x W x C, 1 = filter KH x KW x 1 x C, 2 = output N x OH x OW x C, 3.. =
what the epilogue reads (a bias of C floats, a residual shaped as the output).
workgroup_id = (channel block, output row, image).
"""

from __future__ import annotations

from llvmlite import ir

from compiler import kernel_ir as kir

from . import jit
from .abi_builder import I1, I64, fma, for_range, i32, i64, load_vector, store_vector, vector
from .grid_loops import kernel_entry
from .conv import epilogue_steps
from .matmul import EpilogueSite, GeneratedKernel

BLOCK_VECTORS = 8  # channel vectors per workgroup: 128 channels with AVX-512


def _output_size(size: int, kernel: int, stride: int, dilation: int, pads: tuple[int, int]) -> int:
    return (size + pads[0] + pads[1] - ((kernel - 1) * dilation + 1)) // stride + 1


def _interior(size: int, kernel: int, stride: int, dilation: int, pad: int, out: int) -> tuple[int, int]:
    """[lo, hi): the output positions whose every tap lies inside the input."""
    lo = -(-pad // stride)
    hi = (size - 1 - (kernel - 1) * dilation + pad) // stride + 1
    lo = min(max(lo, 0), out)
    return lo, min(max(hi, lo), out)


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

    def output(ow: ir.Value, c0: ir.Value, valid: int, check_rows: bool, check_cols: bool) -> None:
        """out[img, oh, ow, c0:c0+valid]: KH*KW taps from the input and the filter."""
        acc = zero
        for kh in range(kh_n):
            ih = b.add(b.mul(oh, i64(sh)), i64(kh * dh - pt))
            for kw in range(kw_n):
                iw = b.add(b.mul(ow, i64(sw)), i64(kw * dw - pl))
                ok = rows_inside[kh] if check_rows else ir.Constant(I1, 1)
                if check_cols:  # unsigned: a negative column is out too
                    ok = b.and_(ok, b.icmp_unsigned("<", iw, i64(w)))
                at = b.add(image_base, b.mul(b.add(b.mul(ih, i64(w)), iw), i64(c)))
                if check_rows or check_cols:
                    at = b.select(ok, at, image_base)  # a skipped tap reads pixel (0, 0)
                x = load_vector(b, b.gep(image, [b.add(at, c0)], inbounds=True), lanes, valid)
                tap = load_vector(b, b.gep(filt, [b.add(i64((kh * kw_n + kw) * c), c0)], inbounds=True), lanes, valid)
                product = fma(b, x, tap, acc)
                acc = b.select(ok, product, acc) if check_rows or check_cols else product
        if epilogue is not None:
            acc = epilogue(EpilogueSite(b, b.add(b.mul(oh, i64(ow_n)), ow), c0, valid, extra), acc)
        store_vector(b, acc, b.gep(out, [b.add(b.add(out_row, b.mul(ow, i64(c))), c0)], inbounds=True), valid)

    def sweep(first_col: int, last_col: int, check_rows: bool, check_cols: bool) -> None:
        if first_col >= last_col:
            return
        with for_range(b, first_col, last_col, name="ow") as ow:
            with for_range(b, first, end, step=lanes, name="c") as c0:
                output(ow, c0, lanes, check_rows, check_cols)
            if c % lanes:
                with b.if_then(b.icmp_unsigned("==", cb, i64(grid[0] - 1))):
                    output(ow, i64(whole), c % lanes, check_rows, check_cols)

    def row(check_rows: bool) -> None:
        sweep(0, col_lo, check_rows, True)
        sweep(col_lo, col_hi, check_rows, False)
        sweep(col_hi, ow_n, check_rows, True)

    with b.if_else(all_rows) as (inside, edge):
        with inside:
            row(False)
        with edge:
            row(True)
    b.ret(i32(0))
    return GeneratedKernel(region.name, str(module), grid, 0, len(region.bindings), None)
