"""Resize (and the older Upsample): nearest and linear modes, one axis at a time.

At one shape signature every output coordinate's source position is known, so each resized
axis becomes a `gather` with a constant index table (nearest), or two gathers and a blend with
constant weights (linear) -- data movement and elementwise ops that fuse into one pass. The
coordinate transformations and nearest rounding modes are the ONNX spec's; cubic mode,
antialiasing, tf_crop_and_resize and aspect-ratio policies other than 'stretch' are refused by name.
"""

from __future__ import annotations

import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of, shape_of
from compiler.frontends.onnx.graph import Ctx


def _source_coords(mode: str, n: int, m: int, scale: float) -> np.ndarray:
    """Where output coordinate x of an axis resized n -> m reads in the input (float)."""
    x = np.arange(m, dtype=np.float64)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if m > 1 else np.zeros(m)
    if mode == "asymmetric":
        return x / scale
    if mode == "align_corners":
        return x * (n - 1) / (m - 1) if m > 1 else np.zeros(m)
    if mode == "half_pixel_symmetric":
        adjustment = m / (scale * n)
        offset = n / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    raise ValueError(f"coordinate_transformation_mode '{mode}' is not supported")


def _nearest(coords: np.ndarray, rounding: str, n: int) -> np.ndarray:
    if rounding == "round_prefer_floor":
        idx = np.where(coords - np.floor(coords) == 0.5, np.floor(coords), np.round(coords))
    elif rounding == "round_prefer_ceil":
        idx = np.where(coords - np.floor(coords) == 0.5, np.ceil(coords), np.round(coords))
    elif rounding == "floor":
        idx = np.floor(coords)
    elif rounding == "ceil":
        idx = np.ceil(coords)
    else:
        raise ValueError(f"nearest_mode '{rounding}' is not supported")
    return np.clip(idx, 0, n - 1).astype(np.int64)


def _resize(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    xs = shape_of(x)
    rank = len(xs)
    legacy = c.node.op_type == "Upsample" or c.opset < 11  # asymmetric coordinates, floor rounding
    if legacy:
        scales = np.array(c.attr("scales"), np.float32) if "scales" in c.attrs else c.known(1, "scales")
        sizes = None
    else:
        scales, sizes = c.known(2, "scales"), c.known(3, "sizes")  # roi only matters for tf_crop_and_resize
    mode = c.attr("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise c.error(f"mode '{mode}' is not supported (nearest and linear are)")
    if c.attr("antialias", 0):
        raise c.error("antialias=1 is not supported")
    if c.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise c.error(f"keep_aspect_ratio_policy '{c.attr('keep_aspect_ratio_policy')}' is not supported")
    transform = c.attr("coordinate_transformation_mode", "asymmetric" if legacy else "half_pixel")
    if transform == "tf_crop_and_resize":
        raise c.error("coordinate_transformation_mode 'tf_crop_and_resize' is not supported")
    axes = [c.axis(a, rank) for a in c.attr("axes", list(range(rank)))]
    if sizes is not None and sizes.size:
        out = [int(s) for s in sizes.reshape(-1)]
        factors = [o / xs[a] for o, a in zip(out, axes)]
    elif scales is not None and scales.size:
        factors = [float(s) for s in scales.reshape(-1)]
        out = [int(np.floor(xs[a] * f)) for a, f in zip(axes, factors)]
    else:
        raise c.error("one of 'scales' and 'sizes' must be given")
    if len(factors) != len(axes):
        raise c.error(f"{len(factors)} scales or sizes for {len(axes)} axes")
    for a, m, f in zip(axes, out, factors):
        n = xs[a]
        if m == n and f == 1.0:
            continue
        coords = _source_coords(transform, n, m, f)
        if mode == "nearest":
            rounding = "floor" if legacy else c.attr("nearest_mode", "round_prefer_floor")
            x = c.b.take(x, _nearest(coords, rounding, n), a)
        else:
            coords = np.clip(coords, 0, n - 1)
            low = np.floor(coords).astype(np.int64)
            high = np.minimum(low + 1, n - 1)
            weight = (coords - low).astype(dtype_of(x))
            shape = [m if i == a else 1 for i in range(rank)]
            w = weight.reshape(shape)
            one_minus = (1 - weight).astype(dtype_of(x)).reshape(shape)
            x = c.b.binary("add", c.b.binary("multiply", c.b.take(x, low, a), one_minus),
                           c.b.binary("multiply", c.b.take(x, high, a), w))
        xs = shape_of(x)
    return [x]


HANDLERS = {"Resize": _resize, "Upsample": _resize}
