"""TensorScatter (opset 24): a KV cache's update written at per-batch positions given at run time.

Each cache position j of batch entry b along `axis` reads the update at s = j - write_indices[b]
(modulo the cache length in 'circular' mode) where 0 <= s < the update's length, and keeps the
past cache elsewhere: one gather from the update laid out as [batch * length, rest] with run-time
row indices, and a select -- no scatter, so the write positions need not be known at compile time.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.frontends.onnx.builder import Tensor, shape_of
from compiler.frontends.onnx.graph import Ctx


def _tensor_scatter(c: Ctx) -> list[Tensor]:
    past, update, where = c.input(0), c.input(1), c.optional(2)
    ps, us = shape_of(past), shape_of(update)
    rank = len(ps)
    axis = c.axis(c.attr("axis", -2), rank)
    fits = len(us) == rank and us[axis] <= ps[axis] and all(p == u for i, (p, u) in enumerate(zip(ps, us)) if i != axis)
    if axis == 0 or not fits:
        raise c.error(f"update {us} does not fit cache {ps} along axis {axis} (not the batch axis)")
    batch, length, count = ps[0], ps[axis], us[axis]
    i64 = np.int64
    start = c.b.full(0, [batch], i64) if where is None else c.b.convert(where, i64)
    offset = c.b.binary("subtract", c.b.iota([batch, length], 1), c.b.broadcast(c.b.reshape(start, [batch, 1]), [batch, length]))
    if c.attr("mode", "linear") == "circular":
        offset = c.b.binary("remainder", c.b.binary("add", offset, c.b.scalar(length, i64)), c.b.scalar(length, i64))
    elif c.attr("mode", "linear") != "linear":
        raise c.error(f"mode '{c.attr('mode')}' is not supported (linear, circular)")
    inside = c.b.binary("and", c.b.compare("GE", offset, c.b.scalar(0, i64)), c.b.compare("LT", offset, c.b.scalar(count, i64)))
    clamped = c.b.binary("minimum", c.b.binary("maximum", offset, c.b.scalar(0, i64)), c.b.scalar(count - 1, i64))
    rows = c.b.binary("add", clamped, c.b.binary("multiply", c.b.iota([batch, length], 0), c.b.scalar(count, i64)))
    others = [i for i in range(1, rank) if i != axis]
    perm = [0, axis, *others]
    flat = c.b.reshape(c.b.transpose(update, perm), [batch * count, math.prod(us[i] for i in others)])
    taken = c.b.reshape(c.b.take(flat, c.b.reshape(rows, [batch * length]), 0), [batch, length, *(us[i] for i in others)])
    taken = c.b.transpose(taken, [perm.index(i) for i in range(rank)])
    mask = c.b.broadcast(c.b.reshape(inside, [batch if i == 0 else length if i == axis else 1 for i in range(rank)]), ps)
    return [c.b.select(mask, taken, past)]


HANDLERS = {"TensorScatter": _tensor_scatter}
