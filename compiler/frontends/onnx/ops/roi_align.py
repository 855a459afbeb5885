"""RoiAlign: per region of interest (given at run time), bins of bilinear samples averaged or maxed.

With a fixed sampling_ratio every bin has the same number of samples, so the output is a static
[rois, C, output_height, output_width]: the sample positions are computed from the rois with
elementwise ops, each sample's four neighbours are gathered from the input laid out as
[N * H * W, C] rows, and the weights, clamping and out-of-image rules are the reference's (which
are ONNX Runtime's). sampling_ratio 0 (samples per bin from each roi's size) is refused: the
sample count would depend on the rois' values.
"""

from __future__ import annotations


import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of, shape_of
from compiler.frontends.onnx.graph import Ctx

F32 = np.dtype(np.float32)


def _axis(c: Ctx, start: Tensor, extent: Tensor, bins: int, grid: int, size: int) -> tuple[Tensor, ...]:
    """Along one axis, for [rois, bins, grid] samples: (low index, high index, low weight, high
    weight, inside the image) as the reference computes them."""
    b = c.b
    k = lambda v: b.scalar(v, F32)  # noqa: E731
    step = b.binary("divide", extent, k(bins))  # [rois]
    frac = ((np.arange(bins)[:, None] + (np.arange(grid)[None, :] + 0.5) / grid)).astype(np.float32)  # [bins, grid]
    rois = shape_of(start)[0]
    pos = b.binary("add", b.reshape(start, [rois, 1, 1]), b.binary("multiply", b.reshape(step, [rois, 1, 1]), frac))
    inside = b.binary("and", b.compare("GE", pos, k(-1)), b.compare("LE", pos, k(size)))
    v = b.binary("maximum", pos, k(0))
    low = b.unary("floor", v)  # (v >= 0: int() truncates to the floor)
    edge = b.compare("GE", low, k(size - 1))
    low = b.select(edge, k(size - 1), low)
    high = b.select(edge, k(size - 1), b.binary("add", low, k(1)))
    v = b.select(edge, low, v)
    w_high = b.binary("subtract", v, low)
    return low, high, b.binary("subtract", k(1), w_high), w_high, inside


def _roi_align(c: Ctx) -> list[Tensor]:
    x, rois, batch = c.input(0), c.input(1), c.input(2)
    n, channels, height, width = shape_of(x)
    count = shape_of(rois)[0]
    oh, ow = c.attr("output_height", 1), c.attr("output_width", 1)
    ratio = c.attr("sampling_ratio", 0)
    if ratio <= 0:
        raise c.error("sampling_ratio 0 (samples per bin from each roi's size, known only at run time) is not supported")
    half = c.attr("coordinate_transformation_mode", "half_pixel") == "half_pixel"
    scale = c.attr("spatial_scale", 1.0)
    r = c.b.binary("subtract", c.b.binary("multiply", c.b.convert(rois, F32), c.b.scalar(scale, F32)),
                   c.b.scalar(0.5 if half else 0.0, F32))
    corner = lambda j: c.b.reshape(c.b.slice(r, [0, j], [count, j + 1]), [count])  # noqa: E731
    extents = []
    for lo, hi in ((1, 3), (0, 2)):  # y, x
        extent = c.b.binary("subtract", corner(hi), corner(lo))
        extents.append(extent if half else c.b.binary("maximum", extent, c.b.scalar(1.0, F32)))
    ys = _axis(c, corner(1), extents[0], oh, ratio, height)  # each [count, oh, ratio]
    xs = _axis(c, corner(0), extents[1], ow, ratio, width)  # each [count, ow, ratio]
    points = [count, oh, ratio, ow, ratio]
    along_y = lambda t: c.b.broadcast(c.b.reshape(t, [count, oh, ratio, 1, 1]), points)  # noqa: E731
    along_x = lambda t: c.b.broadcast(c.b.reshape(t, [count, 1, 1, ow, ratio]), points)  # noqa: E731
    inside = c.b.binary("and", along_y(ys[4]), along_x(xs[4]))
    first = c.b.broadcast(c.b.reshape(c.b.binary("multiply", c.b.convert(batch, np.int32),
                                                 c.b.scalar(height * width, np.int32)), [count, 1, 1, 1, 1]), points)
    rows = c.b.reshape(c.b.transpose(x, [0, 2, 3, 1]), [n * height * width, channels])
    dtype = dtype_of(x)
    values = []
    for yi, wy in ((0, 2), (1, 3)):
        for xi, wx in ((0, 2), (1, 3)):
            index = c.b.binary("add", first, c.b.convert(c.b.binary(
                "add", c.b.binary("multiply", along_y(ys[yi]), c.b.scalar(width, F32)), along_x(xs[xi])), np.int32))
            weight = c.b.select(inside, c.b.binary("multiply", along_y(ys[wy]), along_x(xs[wx])), c.b.scalar(0, F32))
            values.append(c.b.binary("multiply", c.b.take(rows, index, 0),
                                     c.b.reshape(c.b.convert(weight, dtype), [*points, 1])))  # [*points, C]
    if c.attr("mode", "avg") == "max":
        best = values[0]
        for v in values[1:]:
            best = c.b.binary("maximum", best, v)
        out = c.b.reduce(best, [2, 4], "maximum", -np.inf)
    else:
        total = values[0]
        for v in values[1:]:
            total = c.b.binary("add", total, v)
        out = c.b.binary("divide", c.b.reduce(total, [2, 4], "add", 0), c.b.scalar(max(ratio * ratio, 1), dtype))
    return [c.b.transpose(out, [0, 3, 1, 2])]  # [count, oh, ow, C] -> [count, C, oh, ow]


HANDLERS = {"RoiAlign": _roi_align}
