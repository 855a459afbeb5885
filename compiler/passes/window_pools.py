"""Which reduction regions are 2-D window pools over a channels-last tensor.

fusion.py lowers every reduce_window into a generic `ReductionBody`: the iteration space is the
output's dims x the window's, and a window point in the padding reads the init value through a
select. An ONNX MaxPool after a CNN's stem (N x H x W x C, a 3x3 window over H and W, stride 2)
comes out that way, and the generic reduction kernel evaluates the whole index and bounds
expression per element vector. A target with a direct pooling kernel asks `window_pool` for the
window's geometry: it reads the strides and pads off the element's index expression, rebuilds the
element expression fusion would give for them (with index_exprs, as fusion.reduce_window does)
and accepts the region only when the two are the same tree, so a region it does not take keeps
the generic kernel, never a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler import kernel_ir as kir
from compiler.passes import index_exprs as ix

F32 = np.dtype(np.float32)
# Folds a pool may be, and the init each needs for a window point in the padding to change
# nothing (max/min: any init, being idempotent; a sum: 0).
FOLDS = ("maximum", "minimum", "add")


@dataclass(frozen=True)
class WindowPool:
    """out[n, oh, ow, c] = fold over the window of input[n, oh*s0 - top + i, ow*s1 - left + j, c]
    (i < window[0], j < window[1]) of the points inside the input, from the region's init (the
    kernel reads it there)."""

    fold: str
    window: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int]  # (top, left): pads before the input rows and columns


def _terms(node: kir.Expr) -> list[kir.Expr]:
    """The addends of an index expression (nested adds flattened)."""
    if isinstance(node, kir.Compute) and node.op == "add":
        return [t for x in node.operands for t in _terms(x)]
    return [node]


def _axis(node: kir.Expr, out_dim: int, window_dim: int) -> tuple[int, int] | None:
    """(stride, pad before) of an input coordinate `(clamp of) Coord(out)*stride + Coord(window)
    - pad`, or None when it is not of that form."""
    if isinstance(node, kir.Compute) and node.op == "clamp":
        node = node.operands[1]
    stride, window, pad = 0, False, 0
    for term in _terms(node):
        if isinstance(term, kir.Coord) and term.dim == out_dim:
            stride = 1
        elif isinstance(term, kir.Compute) and term.op == "multiply" and isinstance(term.operands[0], kir.Coord) \
                and term.operands[0].dim == out_dim and isinstance(term.operands[1], kir.Const):
            stride = int(term.operands[1].value)
        elif isinstance(term, kir.Coord) and term.dim == window_dim:
            window = True
        elif isinstance(term, kir.Const):
            pad = -int(term.value)
        else:
            return None
    return (stride, pad) if stride > 0 and window and pad >= 0 else None


def _element(shape: tuple[int, ...], strides: tuple[int, ...], pads: tuple[int, ...], padded_after: tuple[bool, ...],
             init: kir.Const) -> kir.Expr:
    """The element expression fusion.reduce_window builds for a 4-D input binding 0 (unit
    dilations), the padding after each axis 1 where `padded_after` (its size matters not)."""
    padding = tuple((pad, int(after)) for pad, after in zip(pads, padded_after))
    new, guard = ix.window_coords(shape, strides, (1,) * 4, padding, (1,) * 4)
    return ix.select(guard, kir.Load(0, tuple(new), F32), init)


def window_pool(region: kir.KernelRegion) -> WindowPool | None:
    """The pool `region` computes, or None when it is not a static 2-D window pool of f32 over
    an N x H x W x C binding into an N x OH x OW x C one."""
    body = region.body
    if not isinstance(body, kir.ReductionBody) or region.dynamic is not None or len(region.bindings) != 2:
        return None
    source, result = region.bindings
    if source.output or not result.output or source.dtype != F32 or result.dtype != F32 or len(source.shape) != 4:
        return None
    if len(body.shape) != 8 or body.reduced != (4, 5, 6, 7) or body.shape[4] != 1 or body.shape[7] != 1:
        return None
    if body.output_shape != tuple(result.shape) or body.output_bindings != (1,) or len(body.inputs) != 1:
        return None
    fold, init, (output,) = body.combiner[0], body.inits[0], body.outputs
    if len(body.combiner) != 1 or not isinstance(fold, kir.Compute) or fold.op not in FOLDS \
            or not isinstance(init, kir.Const) or fold.op == "add" and init.value != 0:
        return None
    if repr(fold.operands) != repr((kir.Arg(0, F32), kir.Arg(1, F32))) or repr(output) != repr(kir.Arg(0, F32)):
        return None
    element = body.inputs[0]
    load = element.operands[1] if isinstance(element, kir.Compute) and element.op == "select" else element
    if not isinstance(load, kir.Load) or len(load.index) != 4:
        return None
    axes = [_axis(load.index[d], d, 4 + d) for d in (1, 2)]
    if None in axes:
        return None
    (s0, p0), (s1, p1) = axes
    text = repr(element)
    for after in ((False, False), (False, True), (True, False), (True, True)):
        expected = _element(tuple(source.shape), (1, s0, s1, 1), (0, p0, p1, 0), (False, *after, False), init)
        if repr(expected) == text:
            return WindowPool(fold.op, (body.shape[5], body.shape[6]), (s0, s1), (p0, p1))
    return None
