"""Heads read and written in place: the copies around a fused attention region folded into it.

torch's exports of transformers project Q, K and V into (batch, seq, heads * dim) tensors (or one
(batch, seq, 3 * heads * dim) tensor, GPT-2's c_attn), split the heads out with a Reshape and a
Transpose (for K a second one, to K^T), often scale Q and K by 1/sqrt(sqrt(dim)) each, and after
attention transpose the heads back into (batch, seq, heads * dim). Fusion makes each of those one
elementwise copy: three before the attention region and one after it, two more barriers per
layer. Every one of them is a load at an affine index, so the attention kernel can read Q, K^T
and V where the projection wrote them and write its output where the copy after it would have
(`AttentionBody.views`), and the scales of Q and K become one scale of the scores.

A copy folds in when its output is read by the attention region alone (or, after it, is the
attention's output read by that copy alone), it is one load of an f32 tensor (times a constant,
for Q and K^T), its index is affine in the row and the column with unit steps where the kernel
streams (Q's, V's and the output's columns, K^T's rows or columns), and at most two of the
leading dims are not 1 (batch and heads).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from compiler import kernel_ir as kir
from compiler.passes import index_exprs as ix
from compiler.passes.fusion import Dispatch

F32 = np.dtype(np.float32)
Q, KT, V, OUT = range(4)


class Graph(Protocol):
    writer: dict[int, int]
    readers: dict[int, set[int]]

    def only_read_by(self, tensor: int, readers: set[int]) -> bool: ...


def _has_load(node: kir.Expr) -> bool:
    if isinstance(node, kir.Load):
        return True
    return isinstance(node, kir.Compute) and any(_has_load(x) for x in node.operands)


def _lead_coords(shape: tuple[int, ...], batch: int) -> list[kir.Expr] | None:
    """Coords of a tensor of `shape` (leading dims..., rows, columns) at the attention's element
    (Coord(0) = batch index, Coord(1) = row, Coord(2) = column): its leading dims flatten to the
    batch (at most two of them not 1: batch and heads); None otherwise."""
    lead = shape[:-2]
    big = [d for d, n in enumerate(lead) if n != 1]
    if len(shape) < 2 or math.prod(lead) != batch or len(big) > 2:
        return None
    coords: list[kir.Expr] = [ix.index(0)] * len(lead) + [kir.Coord(1), kir.Coord(2)]
    if len(big) == 1:
        coords[big[0]] = kir.Coord(0)
    elif len(big) == 2:
        heads = ix.index(lead[big[1]])
        coords[big[0]] = kir.Compute("divide", (kir.Coord(0), heads), kir.INDEX)
        coords[big[1]] = kir.Compute("remainder", (kir.Coord(0), heads), kir.INDEX)
    return coords


def _steps(view: tuple[kir.Expr, ...], shape: tuple[int, ...]) -> tuple[int | None, int | None]:
    """Elements the view's flat offset moves per row and per column."""
    load = kir.Load(0, view, F32)
    return kir.load_step(load, shape, 1), kir.load_step(load, shape, 2)


def _streams(operand: int, steps: tuple[int | None, int | None]) -> bool:
    """Whether the kernel can stream the operand with these (row, column) steps."""
    row, col = steps
    if row is None or col is None:
        return False
    return col == 1 or operand == KT and row == 1


def _producer(part_dispatches: list[Dispatch], graph: Graph, fused: Dispatch, operand: int, members: set[int],
              shapes: dict[int, tuple[int, int]]):
    """(dispatch index, binding decl, tensor, view, scale) of the copy that writes the operand,
    or None."""
    tensor = fused.tensors[operand]
    w = graph.writer.get(tensor)
    if w is None or not graph.only_read_by(tensor, members):
        return None
    d = part_dispatches[w]
    body = d.region.body
    if not isinstance(body, kir.ElementwiseBody) or len(body.outputs) != 1 or d.region.dynamic is not None:
        return None
    expr, scale = body.outputs[0], 1.0
    if isinstance(expr, kir.Compute) and expr.op == "multiply" and operand != V:
        consts = [x for x in expr.operands if isinstance(x, kir.Const)]
        loads = [x for x in expr.operands if isinstance(x, kir.Load)]
        if len(consts) != 1 or len(loads) != 1:
            return None
        expr, scale = loads[0], float(consts[0].value)
    if not isinstance(expr, kir.Load) or expr.dtype != F32 or any(_has_load(x) for x in expr.index):
        return None
    if body.shape[-2:] != shapes[operand]:
        return None
    coords = _lead_coords(body.shape, fused.region.bindings[operand].shape[0])
    if coords is None:
        return None
    view = tuple(ix.substitute(x, coords) for x in expr.index)
    decl = d.region.bindings[expr.binding]
    if not _streams(operand, _steps(view, decl.shape)):
        return None
    return w, decl, d.tensors[expr.binding], view, scale


def _consumer(part_dispatches: list[Dispatch], graph: Graph, fused: Dispatch, batch: int):
    """(dispatch index, binding decl, tensor, view) of the copy that alone reads the output,
    as a permutation of its dims (the heads merged back), or None."""
    tensor = fused.tensors[OUT]
    readers = graph.readers.get(tensor, set())
    if len(readers) != 1 or not graph.only_read_by(tensor, readers):
        return None
    c = next(iter(readers))
    d = part_dispatches[c]
    body = d.region.body
    if not isinstance(body, kir.ElementwiseBody) or len(body.outputs) != 1 or d.region.dynamic is not None:
        return None
    expr = body.outputs[0]
    if not isinstance(expr, kir.Load) or expr.dtype != F32:
        return None
    decl = d.region.bindings[expr.binding]
    coords = _lead_coords(decl.shape, batch)
    if coords is None or decl.shape[-2:] != fused.region.bindings[OUT].shape[-2:]:
        return None
    view: list[kir.Expr | None] = [ix.index(0) if n == 1 else None for n in body.shape]
    for e, x in enumerate(expr.index):
        if isinstance(x, kir.Coord) and body.shape[x.dim] != 1:
            if view[x.dim] is not None:
                return None
            view[x.dim] = coords[e]
        elif decl.shape[e] != 1:
            return None
    out = next(s for s, b in enumerate(d.region.bindings) if b.output)
    if any(x is None for x in view) or not _streams(OUT, _steps(tuple(view), body.shape)):
        return None
    return c, d.region.bindings[out], d.tensors[out], tuple(view)


def _scaled(body: kir.AttentionBody, scale: float) -> tuple[tuple[kir.Expr, ...], kir.Expr]:
    """The row chain's steps and probability with the score (Arg(0)) times `scale`."""
    score = kir.Compute("multiply", (kir.Arg(0, F32), kir.Const(scale, F32)), F32)
    memo: dict[int, kir.Expr] = {}

    def go(node: kir.Expr) -> kir.Expr:
        if id(node) not in memo:
            if isinstance(node, kir.Arg) and node.index == 0:
                memo[id(node)] = score
            elif isinstance(node, kir.Compute):
                memo[id(node)] = kir.Compute(node.op, tuple(go(x) for x in node.operands), node.dtype, node.attr)
            elif isinstance(node, kir.Load):
                memo[id(node)] = kir.Load(node.binding, tuple(go(x) for x in node.index), node.dtype)
            else:
                memo[id(node)] = node
        return memo[id(node)]

    return tuple(go(x) for x in body.steps), go(body.probability)


def in_place(dispatches: list[Dispatch], graph: Graph, fused: Dispatch, members: set[int]) -> tuple[Dispatch, set[int]]:
    """`fused` (an AttentionBody region replacing `members` of `dispatches`) with the copies
    around it folded in (module docstring), and the dispatches it now replaces."""
    body = fused.region.body
    assert isinstance(body, kir.AttentionBody)
    if body.transposed or body.views:
        return fused, members
    shapes = {Q: (body.m, body.k), KT: (body.k, body.n), V: (body.n, body.dv)}
    decls, tensors = list(fused.region.bindings), list(fused.tensors)
    views: list[tuple[kir.Expr, ...]] = [ix.coords(3)] * 4
    scale, absorbed = 1.0, set()
    for operand in (Q, KT, V):
        found = _producer(dispatches, graph, fused, operand, members, shapes)
        if found is not None:
            w, decls[operand], tensors[operand], views[operand], factor = found
            absorbed.add(w)
            scale *= factor
    found = _consumer(dispatches, graph, fused, body.batch)
    if found is not None:
        c, decl, tensors[OUT], views[OUT] = found
        decls[OUT] = decl
        absorbed.add(c)
    if not absorbed:
        return fused, members
    steps, probability = (body.steps, body.probability) if scale == 1.0 else _scaled(body, float(np.float32(scale)))
    new = kir.AttentionBody(body.batch, body.m, body.n, body.k, body.dv, body.shape, steps, body.step_ops, probability,
                            views=tuple(views))
    region = kir.KernelRegion(fused.region.name, tuple(decls), new)
    return Dispatch(region, tuple(tensors)), members | absorbed
