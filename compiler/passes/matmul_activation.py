"""Activations as matmul epilogues: a matmul and the elementwise region that alone reads its
result, as one region (`MatmulBody.activation`).

Fusion folds a bias add and a relu into the matmul as it walks the ops (jax.nn.relu(x @ w + b)),
but an activation that reads the matmul's result twice (GELU: x * 0.5 * (1 + erf(x / sqrt 2)),
torch's tanh form, SiLU) ends the walk: the result goes to memory and an elementwise region reads
it back, one more dispatch and barrier per MLP. Where that region reads nothing but the result
(at the point it writes) and constants, its expression becomes the matmul's activation, applied
to each vector of C before it is stored, and the matmul writes the region's output instead.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from compiler import kernel_ir as kir
from compiler.passes.fusion import Dispatch, Partition
from compiler.passes.index_exprs import reads_point

F32 = np.dtype(np.float32)


class _Other(Exception):
    """The expression reads something other than the result at the current point."""


def _activation(expr: kir.Expr, d: Dispatch, result: int, memo: dict[int, kir.Expr]) -> kir.Expr:
    """`expr` (of elementwise dispatch `d`) with its loads of tensor `result` as Arg(0)."""
    if id(expr) in memo:
        return memo[id(expr)]
    if isinstance(expr, kir.Load):
        decl = d.region.bindings[expr.binding]
        if d.tensors[expr.binding] != result or expr.dtype != F32 or not reads_point(decl.shape, expr.index, d.region.body.shape):
            raise _Other
        out: kir.Expr = kir.Arg(0, F32)
    elif isinstance(expr, kir.Compute):
        out = kir.Compute(expr.op, tuple(_activation(x, d, result, memo) for x in expr.operands), expr.dtype, expr.attr)
    elif isinstance(expr, kir.Const):
        out = expr
    else:
        raise _Other
    memo[id(expr)] = out
    return out


def fuse_activations(part: Partition) -> Partition:
    """`part` with every f32 elementwise region that alone reads a plain matmul's result (not a
    function result) and reads nothing else folded into that matmul (module docstring)."""
    writer: dict[int, int] = {}
    readers: dict[int, set[int]] = {}
    for i, d in enumerate(part.dispatches):
        for t, decl in zip(d.tensors, d.region.bindings):
            if decl.output:
                writer[t] = i
            else:
                readers.setdefault(t, set()).add(i)
    results = {t for t, _ in part.results}
    dispatches: list[Dispatch | None] = list(part.dispatches)
    for e, d in enumerate(part.dispatches):
        body = d.region.body
        inputs = {t for t, decl in zip(d.tensors, d.region.bindings) if not decl.output}
        if not isinstance(body, kir.ElementwiseBody) or len(body.outputs) != 1 or len(inputs) != 1 \
                or d.region.dynamic is not None:
            continue
        result = next(iter(inputs))
        w = writer.get(result)
        if w is None or readers[result] != {e} or result in results or dispatches[w] is not part.dispatches[w]:
            continue
        m = part.dispatches[w]
        mb = m.region.body
        if not isinstance(mb, kir.MatmulBody) or mb.activation is not None or m.region.dynamic is not None \
                or body.shape[-1:] != (mb.n,) or math.prod(body.shape) != mb.batch * mb.m * mb.n:
            continue
        out = next(s for s, decl in enumerate(d.region.bindings) if decl.output)
        if d.region.bindings[out].dtype != F32:
            continue
        try:
            activation = _activation(body.outputs[0], d, result, {})
        except _Other:
            continue
        c = next(s for s, decl in enumerate(m.region.bindings) if decl.output)
        tensors = list(m.tensors)
        tensors[c] = d.tensors[out]
        region = kir.KernelRegion(m.region.name, m.region.bindings, dataclasses.replace(mb, activation=activation))
        dispatches[w] = Dispatch(region, tuple(tensors))
        dispatches[e] = None
    return Partition(list(part.tensors), [d for d in dispatches if d is not None], list(part.results))
