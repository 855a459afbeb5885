"""DeformConv (2-D): a convolution whose taps read the input at positions moved by run-time offsets.

Each kernel tap's sampling positions (the usual strided, dilated, padded grid plus the offsets
of its offset group) are sampled bilinearly with zeros outside the image, as the reference does
through GridSample (align_corners=1), scaled by the optional mask; the samples of all taps form
im2col columns, which a matmul per group multiplies by the weights.
"""

from __future__ import annotations

import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of, shape_of
from compiler.frontends.onnx.graph import Ctx
from compiler.frontends.onnx.ops.grid_sample import F32, gather_taps, taps


def _deform_conv(c: Ctx) -> list[Tensor]:
    x, w, offset, bias, mask = c.input(0), c.input(1), c.input(2), c.optional(3), c.optional(4)
    xs, ws, os_ = shape_of(x), shape_of(w), shape_of(offset)
    if len(xs) != 4:
        raise c.error(f"only 2-D DeformConv is supported (input {xs})")
    n, channels, height, width = xs
    out_channels, per_group, kh, kw = ws
    groups, offset_groups = c.attr("group", 1), c.attr("offset_group", 1)
    oh, ow = os_[2:]
    taps_count = kh * kw
    if channels != per_group * groups or channels % offset_groups or os_[1] != offset_groups * taps_count * 2:
        raise c.error(f"input {xs}, weight {ws} and offset {os_} do not fit group={groups}, offset_group={offset_groups}")
    sh, sw = c.attr("strides", [1, 1])
    dh, dw = c.attr("dilations", [1, 1])
    top, left = c.attr("pads", [0, 0, 0, 0])[:2]
    cg = channels // offset_groups
    dtype = np.float32
    offsets = c.b.reshape(c.b.convert(offset, F32), [n, offset_groups, kh, kw, 2, oh, ow])
    masks = None if mask is None else c.b.reshape(c.b.convert(mask, dtype), [n, offset_groups, kh, kw, oh, ow])
    grouped = c.b.reshape(c.b.convert(x, dtype), [n, offset_groups, cg, height, width])
    rows = c.b.reshape(c.b.transpose(grouped, [0, 1, 3, 4, 2]), [n * offset_groups * height * width, cg])
    points = [n, offset_groups, oh, ow]
    image = c.b.binary("add", c.b.binary("multiply", c.b.iota(points, 0, np.int32), c.b.scalar(offset_groups, np.int32)),
                       c.b.iota(points, 1, np.int32))  # (batch, offset group): one image of cg channels
    first = c.b.binary("multiply", image, c.b.scalar(height * width, np.int32))
    columns = []
    for i in range(kh):
        for j in range(kw):
            moved = []
            along = ((-top, sh, i * dh, height, oh), (-left, sw, j * dw, width, ow))
            for axis, (start, stride, tap, size, count) in enumerate(along):
                grid = (start + stride * np.arange(count) + tap).astype(np.float32)
                grid = grid.reshape([1, 1, count, 1] if axis == 0 else [1, 1, 1, count])
                delta = c.b.reshape(c.b.slice(offsets, [0, 0, i, j, axis, 0, 0],
                                              [n, offset_groups, i + 1, j + 1, axis + 1, oh, ow]), points)
                moved.append(taps(c, c.b.binary("add", delta, grid), size, "linear", "zeros", True))
            sample = gather_taps(c, rows, first, moved, [height, width])  # [n, og, oh, ow, cg]
            if masks is not None:
                weight = c.b.slice(masks, [0, 0, i, j, 0, 0], [n, offset_groups, i + 1, j + 1, oh, ow])
                sample = c.b.binary("multiply", sample, c.b.reshape(weight, [*points, 1]))
            column = c.b.reshape(c.b.transpose(sample, [0, 2, 3, 1, 4]), [n * oh * ow, channels, 1])
            columns.append(column)
    cols = c.b.concat(columns, 2)  # [n*oh*ow, channels, taps]
    per_out = out_channels // groups
    weights = c.b.reshape(c.b.convert(w, dtype), [out_channels, per_group * taps_count])
    outs = []
    for q in range(groups):
        block = c.b.reshape(c.b.slice(cols, [0, q * per_group, 0], [n * oh * ow, (q + 1) * per_group, taps_count]),
                            [n * oh * ow, per_group * taps_count])
        wq = c.b.slice(weights, [q * per_out, 0], [(q + 1) * per_out, per_group * taps_count])
        outs.append(c.b.dot(block, wq, 0, 1, 1))
    y = c.b.transpose(c.b.reshape(c.b.concat(outs, 1), [n, oh, ow, out_channels]), [0, 3, 1, 2])
    if bias is not None:
        y = c.b.binary("add", y, c.b.reshape(c.b.convert(bias, dtype), [out_channels, 1, 1]))
    return [c.b.convert(y, dtype_of(x))]


HANDLERS = {"DeformConv": _deform_conv}
