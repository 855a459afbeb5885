"""Resize (and the older Upsample): nearest, linear and cubic modes, antialiasing, every coordinate
transformation (tf_crop_and_resize with its extrapolation value included), exclude_outside and
the aspect-ratio policies; one axis at a time, as the ONNX reference resizes (it is separable).

At one shape signature every output coordinate's neighbours and their weights are known: each
resized axis becomes, per tap, a `gather` with a constant index table times a constant weight
column, summed (nearest: a single gather) -- data movement and elementwise ops that fuse into
one pass. Coordinates, taps and weights follow the spec's reference implementation
(onnx/reference/ops/op_resize.py): the same neighbour choice, edge clamping and normalisation.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of, shape_of
from compiler.frontends.onnx.graph import Ctx


def _source_coords(mode: str, n: int, m: int, scale: float, roi: tuple[float, float] | None) -> np.ndarray:
    """Where each output coordinate of an axis resized n -> m (by `scale`) reads in the input; NaN
    where tf_crop_and_resize extrapolates."""
    y = np.arange(m, dtype=np.float64)
    width = scale * n  # the spec's output width: scale times input, not the rounded size
    if mode == "align_corners":
        return np.zeros(m) if width == 1 else y * (n - 1) / (width - 1)
    if mode == "asymmetric":
        return y / scale
    if mode == "tf_crop_and_resize":
        lo, hi = roi if roi is not None else (0.0, 1.0)
        x = np.full(m, (hi - lo) * (n - 1) / 2) if width == 1 else y * (hi - lo) * (n - 1) / (width - 1)
        x = x + lo * (n - 1)
        return np.where((x < 0) | (x > n - 1), np.nan, x)
    if mode == "pytorch_half_pixel":
        return np.full(m, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = n / 2 * (1 - m / width)
        return offset + (y + 0.5) / scale - 0.5
    raise ValueError(f"coordinate_transformation_mode '{mode}' is not supported")


def _coefficients(mode: str, ratio: float, scale: float, antialias: bool, a: float, rounding: str) -> np.ndarray:
    """The weights of the taps around a source coordinate whose fractional part is `ratio` (1 for
    an integer coordinate)."""
    if mode == "nearest":
        if float(ratio).is_integer():
            return np.array([0.0, 1.0])
        up = {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5, "floor": False, "ceil": True}
        if rounding not in up:
            raise ValueError(f"nearest_mode '{rounding}' is not supported")
        return np.array([0.0, 1.0]) if up[rounding] else np.array([1.0, 0.0])
    if mode == "linear" and not antialias:
        return np.array([1 - ratio, ratio])
    if mode == "linear":
        s = min(scale, 1.0)
        start = int(np.floor(-1 / s) + 1)
        w = np.clip(1 - np.abs((np.arange(start, 2 - start) - ratio) * s), 0, 1)
        return w / w.sum()
    if mode == "cubic" and not antialias:
        r, q = ratio, 1 - ratio
        return np.array([((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
                         ((a + 2) * r - (a + 3)) * r * r + 1,
                         ((a + 2) * q - (a + 3)) * q * q + 1,
                         ((a * (q + 1) - 5 * a) * (q + 1) + 8 * a) * (q + 1) - 4 * a])
    if mode == "cubic":
        s = min(scale, 1.0)
        start = int(np.floor(-2 / s) + 1)
        t = np.abs(s * (np.arange(start, 2 - start) - ratio))
        w = np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                     np.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a, 0.0))
        return w / w.sum()
    raise ValueError(f"mode '{mode}' is not supported (nearest, linear and cubic are)")


def _taps(coords: np.ndarray, n: int, mode: str, scale: float, antialias: bool, a: float, rounding: str,
          exclude_outside: bool) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), each (m, taps): the input positions each output coordinate reads and
    their weights (the spec's neighbour choice: the taps nearest the coordinate, lower ones first)."""
    x = np.nan_to_num(coords)  # (extrapolated positions are replaced after)
    ratios = np.where(x == np.floor(x), 1.0, x - np.floor(x))
    weights = np.stack([_coefficients(mode, float(r), scale, antialias, a, rounding) for r in ratios])
    k = weights.shape[1]
    pad = math.ceil(k / 2)
    padded = x + pad
    frac = padded - np.floor(padded)
    if k % 2 == 0:
        offset = np.where(frac == 0, -(k // 2), -(k // 2) + 1)
    else:
        offset = np.where(frac <= 0.5, -((k - 1) // 2), -((k - 1) // 2) + 1)
    index = (np.floor(padded).astype(np.int64) + offset)[:, None] + np.arange(k)[None, :] - pad
    if exclude_outside:
        weights = np.where((index < 0) | (index >= n), 0.0, weights)
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0, 1.0, total)
    return np.clip(index, 0, n - 1), weights


def _resize_axis(c: Ctx, x: Tensor, axis: int, m: int, scale: float, roi: tuple[float, float] | None,
                 transform: str, mode: str, rounding: str) -> Tensor:
    xs = shape_of(x)
    n, rank = xs[axis], len(xs)
    coords = _source_coords(transform, n, m, scale, roi)
    index, weights = _taps(coords, n, mode, scale, bool(c.attr("antialias", 0)), float(c.attr("cubic_coeff_a", -0.75)),
                           rounding, bool(c.attr("exclude_outside", 0)))
    column = [m if i == axis else 1 for i in range(rank)]
    if mode == "nearest":
        out = c.b.take(x, index[np.arange(m), weights.argmax(axis=1)], axis)
    else:
        out = None
        for k in range(weights.shape[1]):
            if not weights[:, k].any():
                continue
            term = c.b.binary("multiply", c.b.take(x, index[:, k], axis), weights[:, k].astype(dtype_of(x)).reshape(column))
            out = term if out is None else c.b.binary("add", out, term)
        if out is None:
            out = c.b.full(0, [m if i == axis else d for i, d in enumerate(xs)], dtype_of(x))
    outside = np.isnan(coords)
    if outside.any():
        out = c.b.select(outside.reshape(column), c.b.scalar(c.attr("extrapolation_value", 0.0), dtype_of(x)), out)
    return out


def _resize(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    xs = shape_of(x)
    rank = len(xs)
    legacy = c.node.op_type == "Upsample" or c.opset < 11  # asymmetric coordinates, floor rounding
    roi = None
    if legacy:
        scales = np.array(c.attr("scales"), np.float32) if "scales" in c.attrs else c.known(1, "scales")
        sizes = None
    else:
        roi, scales, sizes = c.known(1, "roi"), c.known(2, "scales"), c.known(3, "sizes")
    mode = c.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        raise c.error(f"mode '{mode}' is not supported (nearest, linear and cubic are)")
    if mode == "nearest" and c.attr("antialias", 0):
        raise c.error("antialias=1 applies to the linear and cubic modes only")
    transform = c.attr("coordinate_transformation_mode", "asymmetric" if legacy else "half_pixel")
    rounding = "floor" if legacy else c.attr("nearest_mode", "round_prefer_floor")
    axes = [c.axis(a, rank) for a in c.attr("axes", list(range(rank)))]
    policy = c.attr("keep_aspect_ratio_policy", "stretch")
    if sizes is not None and sizes.size:
        if sizes.size != len(axes):
            raise c.error(f"{sizes.size} sizes for {len(axes)} axes")
        out = [int(s) for s in sizes.reshape(-1)]
        factors = [o / xs[a] for o, a in zip(out, axes)]
        if policy != "stretch":
            if policy not in ("not_larger", "not_smaller"):
                raise c.error(f"keep_aspect_ratio_policy '{policy}' is not supported")
            scale = min(factors) if policy == "not_larger" else max(factors)
            factors = [scale] * len(axes)
            out = [int(scale * xs[a] + 0.5) for a in axes]
    elif scales is not None and scales.size:
        if scales.size != len(axes):
            raise c.error(f"{scales.size} scales for {len(axes)} axes")
        factors = [float(s) for s in scales.reshape(-1)]
        out = [int(xs[a] * f) for a, f in zip(axes, factors)]
    else:
        raise c.error("one of 'scales' and 'sizes' must be given")
    rois: list[tuple[float, float] | None] = [None] * len(axes)
    if roi is not None and roi.size and transform == "tf_crop_and_resize":
        flat = [float(v) for v in roi.reshape(-1)]
        if len(flat) != 2 * len(axes):
            raise c.error(f"roi has {len(flat)} values for {len(axes)} axes (2 per axis)")
        rois = [(flat[i], flat[len(axes) + i]) for i in range(len(axes))]
    compute = dtype_of(x) if dtype_of(x) in (np.float32, np.float64) or mode == "nearest" else np.dtype(np.float32)
    y = c.b.convert(x, compute)
    for a, m, f, r in zip(axes, out, factors, rois):
        if math.isclose(f, 1.0) and m == xs[a] and (r is None or (math.isclose(r[0], 0) and math.isclose(r[1], 1))):
            continue
        y = _resize_axis(c, y, a, m, f, r, transform, mode, rounding)
    if dtype_of(x).kind in "iu" and compute != dtype_of(x):  # the reference rounds and saturates
        info = np.iinfo(dtype_of(x))
        y = c.b.unary("round_nearest_even", y)
        y = c.b.binary("minimum", c.b.binary("maximum", y, c.b.scalar(info.min, compute)), c.b.scalar(info.max, compute))
    return [c.b.convert(y, dtype_of(x))]


HANDLERS = {"Resize": _resize, "Upsample": _resize}
