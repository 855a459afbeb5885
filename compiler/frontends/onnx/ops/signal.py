"""Signal ops: DFT, STFT, MelWeightMatrix and Col2Im, each a linear map with static coefficients at one shape signature.

- DFT along an axis is a product with the DFT matrix of its length (real and imaginary parts as
  two real matrices, each from numpy's FFT of the unit impulses: the same convention, zero padding,
  cropping, one-sided output and inverse scaling as the reference), so it runs on the backends'
  matmul, in float64. An inverse one-sided DFT (irfft) is real-linear in the real and imaginary parts.
- STFT gathers its frames with a constant index table, windows them and takes their DFT.
- MelWeightMatrix is a constant of its (known) scalar inputs.
- Col2Im sums the column entries landing on each image position: a constant table of at most
  prod(block_shape) sources per position, each a gather, summed (no product with zeros, so a NaN
  stays where it is).
"""

from __future__ import annotations

import math

import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of, shape_of
from compiler.frontends.onnx.graph import Ctx


def _along(c: Ctx, x: Tensor, matrix: np.ndarray, axis: int) -> Tensor:
    """x with its `axis` (length n) mapped through `matrix` (n, m)."""
    rank = len(shape_of(x))
    y = c.b.dot(x, matrix.astype(dtype_of(x)), 0, axis, 0)  # the other dims in order, then m
    perm = list(range(rank - 1))
    perm.insert(axis, rank - 1)
    return c.b.transpose(y, perm)


def _components(c: Ctx, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """The real and imaginary parts of a signal whose last dim is 1 (real) or 2 (complex)."""
    shape = shape_of(x)
    rank = len(shape)
    if shape[-1] not in (1, 2):
        raise c.error(f"the last dim of the signal must be 1 (real) or 2 (complex), got {shape[-1]}")
    part = lambda k: c.b.reshape(c.b.slice(x, [0] * (rank - 1) + [k], [*shape[:-1], k + 1]), shape[:-1])  # noqa: E731
    return part(0), part(1) if shape[-1] == 2 else None


def dft(c: Ctx, x: Tensor, axis: int, length: int, inverse: bool, onesided: bool) -> Tensor:
    """ONNX DFT of x ([..., 1|2]) along `axis` (an axis of x, not its last), computed in float64
    as the reference does (parts that cancel then cancel to well below float32's resolution)."""
    if dtype_of(x) != np.float64:
        return c.b.convert(dft(c, c.b.convert(x, np.float64), axis, length, inverse, onesided), dtype_of(x))
    re, im = _components(c, x)
    n = shape_of(x)[axis]
    basis = np.eye(n)
    if inverse and onesided:  # irfft: real output
        parts = [_along(c, re, np.fft.irfft(basis, n=length, axis=1), axis)]
        if im is not None:
            parts.append(_along(c, im, np.fft.irfft(1j * basis, n=length, axis=1), axis))
        out = parts[0] if len(parts) == 1 else c.b.binary("add", parts[0], parts[1])
        return c.b.reshape(out, [*shape_of(out), 1])
    f = (np.fft.ifft if inverse else np.fft.fft)(basis, n=length, axis=1)
    if onesided and not inverse:
        f = f[:, :length // 2 + 1]
    out_re, out_im = _along(c, re, f.real, axis), _along(c, re, f.imag, axis)
    if im is not None:
        out_re = c.b.binary("subtract", out_re, _along(c, im, f.imag, axis))
        out_im = c.b.binary("add", out_im, _along(c, im, f.real, axis))
    shape = [*shape_of(out_re), 1]
    return c.b.concat([c.b.reshape(out_re, shape), c.b.reshape(out_im, shape)], len(shape) - 1)


def _dft(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    rank = len(shape_of(x))
    if c.opset >= 20:
        given = c.ints(2, "axis")
        axis = given[0] if given else -2
    else:
        axis = c.attr("axis", 1)
    axis = c.axis(axis, rank)
    if axis == rank - 1:
        raise c.error("the DFT axis cannot be the last (real/imaginary) dim")
    inverse, onesided = bool(c.attr("inverse", 0)), bool(c.attr("onesided", 0))
    given = c.ints(1, "dft_length")
    n = shape_of(x)[axis]
    length = given[0] if given else 2 * (n - 1) if inverse and onesided else n
    if length < 1:
        raise c.error(f"dft_length must be positive, got {length}")
    return [dft(c, x, axis, length, inverse, onesided)]


def _stft(c: Ctx) -> list[Tensor]:
    signal, window = c.input(0), c.optional(2)
    batch, total, comps = shape_of(signal)
    step = c.ints(1, "frame_step")[0]
    given = c.ints(3, "frame_length")
    length = given[0] if given else shape_of(window)[0] if window is not None else None
    if length is None or step < 1 or not 0 < length <= total:
        raise c.error(f"frame_length {length} and frame_step {step} do not fit a signal of {total}")
    frames = (total - length) // step + 1
    index = (np.arange(frames)[:, None] * step + np.arange(length)[None, :]).reshape(-1)
    framed = c.b.reshape(c.b.take(signal, index, 1), [batch, frames, length, comps])
    if window is not None:
        framed = c.b.binary("multiply", framed, c.b.reshape(c.b.convert(window, dtype_of(signal)), [1, 1, length, 1]))
    return [dft(c, framed, 2, length, False, bool(c.attr("onesided", 1)))]


def _col2im(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    image, block = c.ints(1, "image_shape"), c.ints(2, "block_shape")
    n, rows, cols = shape_of(x)
    k = len(image)
    dil = c.attr("dilations", [1] * k)
    pads = c.attr("pads", [0] * 2 * k)
    strides = c.attr("strides", [1] * k)
    blocks = math.prod(block)
    if len(block) != k or rows % blocks:
        raise c.error(f"input {shape_of(x)} does not fit block_shape {block}")
    channels = rows // blocks
    counts = [(image[i] + pads[i] + pads[k + i] - dil[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(k)]
    if math.prod(counts) != cols:
        raise c.error(f"{cols} columns, but image_shape {image} with these blocks gives {math.prod(counts)}")
    sources: list[list[int]] = [[] for _ in range(math.prod(image))]
    for b, offset in enumerate(np.ndindex(*block)):
        for l, place in enumerate(np.ndindex(*counts)):
            pos = [place[i] * strides[i] + offset[i] * dil[i] - pads[i] for i in range(k)]
            if all(0 <= p < image[i] for i, p in enumerate(pos)):
                sources[int(np.ravel_multi_index(pos, image))].append(b * cols + l)
    width = max(1, max(len(s) for s in sources))
    zero = blocks * cols  # the index of an appended zero
    table = np.array([s + [zero] * (width - len(s)) for s in sources], np.int64)
    flat = c.b.reshape(x, [n, channels, blocks * cols])
    flat = c.b.concat([flat, c.b.full(0, [n, channels, 1], dtype_of(x))], 2)
    out = None
    for j in range(width):
        term = c.b.take(flat, table[:, j], 2)
        out = term if out is None else c.b.binary("add", out, term)
    return [c.b.reshape(out, [n, channels, *image])]


def _mel_weight_matrix(c: Ctx) -> list[Tensor]:
    """The [dft_length // 2 + 1, num_mel_bins] triangular filter bank, computed here from its
    (known) scalar inputs with the spec's formulas (mel = 2595 log10(1 + f / 700))."""
    bins, length, rate = (c.ints(i, what)[0] for i, what in enumerate(("num_mel_bins", "dft_length", "sample_rate")))
    low, high = (float(c.known(i, what).reshape(-1)[0]) for i, what in ((3, "lower_edge_hertz"), (4, "upper_edge_hertz")))
    if bins < 1 or length < 1 or rate < 1:
        raise c.error(f"num_mel_bins {bins}, dft_length {length} and sample_rate {rate} must be positive")
    mel_low, mel_high = (2595 * np.log1p(f / 700) / np.log(10) for f in (low, high))
    mels = np.arange(bins + 2) * ((mel_high - mel_low) / (bins + 2)) + mel_low
    edges = (((length + 1) * (700 * np.expm1(mels / 2595 * np.log(10)))) // rate).astype(int)
    out = np.zeros((length // 2 + 1, bins))
    for i in range(bins):
        left, centre, right = edges[i:i + 3]
        if centre == left:
            out[centre, i] = 1
        else:
            out[left:centre + 1, i] = (np.arange(left, centre + 1) - left) / (centre - left)
        if right > centre:
            out[centre:right, i] = (right - np.arange(centre, right)) / (right - centre)
    from compiler.frontends.onnx.model import element_type
    return [out.astype(element_type(c.attr("output_datatype", 1), c.where))]


HANDLERS = {"DFT": _dft, "STFT": _stft, "Col2Im": _col2im, "MelWeightMatrix": _mel_weight_matrix}
