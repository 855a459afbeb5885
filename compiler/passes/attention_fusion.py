"""Attention fusion: scores matmul -> row softmax -> matmul with V as one `AttentionBody` region.

After row fusion a transformer block's attention is three or four dispatches: S = Q @ K^T (a
matmul), a RowBody over S's rows (the scale, the mask, max, exp, sum: softmax; it writes P, or
exp and the row sums when the final divide was split off by an unrelated dispatch in between,
which an elementwise region over the same rows then applies), and P @ V. The S x S scores go to
memory and back twice. Where a block of score rows fits in cache, one region whose workgroups
each own a block of query rows computes the block's scores into local memory, runs the row
chain over them in place and multiplies by V: S and P never leave the cache.

A chain fuses when every intermediate (S, what the RowBody writes, P) is read by the chain
alone and is not a function result, the matmuls are plain f32 ones (no epilogue, no packed
weights), the RowBody reads S only at the current point, and nothing is dynamic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler import kernel_ir as kir
from compiler.passes.attention_layout import in_place
from compiler.passes.fusion import Dispatch, Partition
from compiler.passes.index_exprs import reads_point
from compiler.passes.library_lowering import matmul_slots

F32 = np.dtype(np.float32)
Fits = Callable[[int, int, int, bool], bool]
"""(queries m, keys n, head size k, transposed) -> whether the target's fused kernel takes it."""


class _NoFusion(Exception):
    """The chain does not have the form the fused region computes."""



class _Rewriter:
    """Translates the row chain's expressions into the fused region's: the score load becomes
    Arg(0), row value j Arg(j + 1), any other load a binding from slot 4 on."""

    def __init__(self) -> None:
        self.decls: list[kir.BindingDecl] = []
        self.tensors: list[int] = []
        self.slots: dict[tuple[int, tuple[int, ...]], int] = {}

    def slot(self, tensor: int, decl: kir.BindingDecl) -> int:
        key = (tensor, decl.shape)
        if key not in self.slots:
            self.slots[key] = 4 + len(self.decls)
            self.decls.append(kir.BindingDecl(decl.shape, decl.dtype))
            self.tensors.append(tensor)
        return self.slots[key]

    def row(self, node: kir.Expr, d: Dispatch, score: int, memo: dict, vary: bool = True) -> kir.Expr:
        """A RowBody expression of `d` (score tensor `score`); `vary` False: a per-row value step,
        which must not read the score."""
        if id(node) in memo:
            return memo[id(node)]
        if isinstance(node, kir.Arg):
            out: kir.Expr = kir.Arg(node.index + 1, node.dtype)
        elif isinstance(node, kir.Compute):
            out = kir.Compute(node.op, tuple(self.row(x, d, score, memo, vary) for x in node.operands), node.dtype, node.attr)
        elif isinstance(node, kir.Load):
            tensor, decl = d.tensors[node.binding], d.region.bindings[node.binding]
            if tensor == score:
                if not vary or not reads_point(decl.shape, node.index, d.region.body.shape):
                    raise _NoFusion
                out = kir.Arg(0, node.dtype)
            else:
                index = tuple(self.row(x, d, score, memo, vary) for x in node.index)
                out = kir.Load(self.slot(tensor, decl), index, node.dtype)
        else:
            out = node
        memo[id(node)] = out
        return out

    def outer(self, node: kir.Expr, d: Dispatch, rows: Dispatch, coords: list[kir.Coord], full: dict[int, kir.Expr],
              values: dict[int, kir.Expr], memo: dict) -> kir.Expr:
        """An expression of the elementwise region `d` (whose Coord(e) is `coords[e]` of the
        RowBody `rows`' space) in that space, the RowBody's outputs replaced by their
        (translated) expressions: `full` per full-row tensor, `values` per per-row tensor."""
        if id(node) in memo:
            return memo[id(node)]
        if isinstance(node, kir.Coord):
            out: kir.Expr = coords[node.dim]
        elif isinstance(node, kir.Compute):
            out = kir.Compute(node.op, tuple(self.outer(x, d, rows, coords, full, values, memo) for x in node.operands),
                              node.dtype, node.attr)
        elif isinstance(node, kir.Load):
            tensor, decl = d.tensors[node.binding], d.region.bindings[node.binding]
            index = tuple(self.outer(x, d, rows, coords, full, values, memo) for x in node.index)
            if tensor in full:
                if not reads_point(decl.shape, index, rows.region.body.shape):
                    raise _NoFusion
                out = full[tensor]
            elif tensor in values:
                if not reads_point(decl.shape, index, rows.region.body.shape[:-1]):
                    raise _NoFusion
                out = values[tensor]
            else:
                out = kir.Load(self.slot(tensor, decl), index, node.dtype)
        elif isinstance(node, kir.Arg):
            raise _NoFusion
        else:
            out = node
        memo[id(node)] = out
        return out


class _Graph:
    """Who writes and who reads each tensor of a partition."""

    def __init__(self, part: Partition) -> None:
        self.writer: dict[int, int] = {}
        self.readers: dict[int, set[int]] = {}
        for i, d in enumerate(part.dispatches):
            for t, decl in zip(d.tensors, d.region.bindings):
                if decl.output:
                    self.writer[t] = i
                else:
                    self.readers.setdefault(t, set()).add(i)
        self.results = {t for t, _ in part.results}

    def only_read_by(self, tensor: int, readers: set[int]) -> bool:
        return tensor not in self.results and self.readers.get(tensor, set()) <= readers


def _outputs(d: Dispatch) -> list[int]:
    return [t for t, decl in zip(d.tensors, d.region.bindings) if decl.output]


def _fuse(part: Partition, graph: _Graph, pv: int, fits: Fits) -> tuple[Dispatch, set[int]]:
    """The fused region ending at the P @ V matmul `pv` (or at out^T = V^T @ P^T, as JAX writes
    attention over (batch, seq, heads, dim) tensors), and the dispatches it replaces."""
    d2 = part.dispatches[pv]
    body2 = d2.region.body
    if not isinstance(body2, kir.MatmulBody) or body2.epilogue or body2.b_panel or d2.region.dynamic is not None:
        raise _NoFusion
    a2, b2, c2, _ = matmul_slots(d2.region, False)
    if a2 == b2:
        raise _NoFusion
    try:
        return _fuse_oriented(part, graph, pv, fits, a2, b2, c2, False)
    except _NoFusion:
        return _fuse_oriented(part, graph, pv, fits, b2, a2, c2, True)


def _fuse_oriented(part: Partition, graph: _Graph, pv: int, fits: Fits, p_slot: int, v_slot: int,
                   out_slot: int, transposed: bool) -> tuple[Dispatch, set[int]]:
    """`_fuse` with P in matmul slot `p_slot`; `transposed`: P^T is the B operand (V^T A)."""
    d2 = part.dispatches[pv]
    body2 = d2.region.body
    p_tensor = d2.tensors[p_slot]
    if p_tensor not in graph.writer:
        raise _NoFusion
    e_index = graph.writer[p_tensor]
    e = part.dispatches[e_index]
    r_index, elementwise = e_index, None
    if isinstance(e.region.body, kir.ElementwiseBody):
        elementwise = e
        sources = {graph.writer.get(t) for t, decl in zip(e.tensors, e.region.bindings) if not decl.output}
        rows = [i for i in sources if i is not None and isinstance(part.dispatches[i].region.body, kir.RowBody)]
        if len(rows) != 1:
            raise _NoFusion
        r_index = rows[0]
    rows_d = part.dispatches[r_index]
    rb = rows_d.region.body
    if not isinstance(rb, kir.RowBody) or rows_d.region.dynamic is not None:
        raise _NoFusion
    scores = [(t, graph.writer[t]) for t, decl in zip(rows_d.tensors, rows_d.region.bindings)
              if not decl.output and t in graph.writer
              and isinstance(part.dispatches[graph.writer[t]].region.body, kir.MatmulBody)]
    if len(scores) != 1:
        raise _NoFusion
    s_tensor, s_index = scores[0]
    d1 = part.dispatches[s_index]
    body1 = d1.region.body
    if body1.epilogue or body1.b_panel or d1.region.dynamic is not None:
        raise _NoFusion
    a1, b1, _, _ = matmul_slots(d1.region, False)
    batch, m, n = body1.batch, body1.m, body1.n
    queries, keys, dv = (body2.n, body2.k, body2.m) if transposed else (body2.m, body2.k, body2.n)
    if (body2.batch, queries, keys) != (batch, m, n) or rb.shape[-1] != n or rb.rows != batch * m:
        raise _NoFusion
    # Coord(e) of the elementwise region as a Coord of the RowBody's space: the same, or the
    # last two swapped where it writes P^T.
    coords = [kir.Coord(e) for e in range(len(rb.shape))]
    if transposed:
        coords[-2:] = coords[:-3:-1]
        if elementwise is None or len(rb.shape) < 2 or rb.shape[-2] != m:
            raise _NoFusion
    space = tuple(rb.shape[c.dim] for c in coords)
    if d2.region.bindings[p_slot].shape != ((batch, n, m) if transposed else (batch, m, n)):
        raise _NoFusion
    if elementwise is not None and elementwise.region.body.shape != space:
        raise _NoFusion
    members = {s_index, r_index, e_index, pv}
    if not graph.only_read_by(s_tensor, {r_index}) or not graph.only_read_by(p_tensor, {pv}):
        raise _NoFusion
    if any(not graph.only_read_by(t, {e_index if elementwise is not None else pv}) for t in _outputs(rows_d)) \
            or elementwise is not None and len(_outputs(e)) != 1:
        raise _NoFusion
    if not fits(m, n, body1.k, transposed):
        raise _NoFusion

    rewriter = _Rewriter()
    memo: dict = {}
    steps = tuple(rewriter.row(x, rows_d, s_tensor, memo if op != "value" else {}, op != "value")
                  for x, op in zip(rb.steps, rb.step_ops))
    full = {rows_d.tensors[s]: rewriter.row(x, rows_d, s_tensor, memo) for s, x in zip(rb.output_bindings, rb.outputs)}
    values = {rows_d.tensors[s]: rewriter.row(x, rows_d, s_tensor, {}, False)
              for s, x in zip(rb.row_output_bindings, rb.row_outputs)}
    if elementwise is None:
        probability = full[p_tensor]
    else:
        eb = elementwise.region.body
        probability = rewriter.outer(eb.outputs[0], elementwise, rows_d, coords, full, values, {})
    if probability.dtype != F32:
        raise _NoFusion
    decls = [d1.region.bindings[a1], d1.region.bindings[b1], d2.region.bindings[v_slot], d2.region.bindings[out_slot]]
    tensors = [d1.tensors[a1], d1.tensors[b1], d2.tensors[v_slot], d2.tensors[out_slot]]
    if any(graph.writer.get(t) in members for t in tensors[:3] + rewriter.tensors):
        raise _NoFusion  # an input the chain itself writes (row fusion can fold a copy of V into the RowBody)
    body = kir.AttentionBody(batch, m, n, body1.k, dv, rb.shape, steps, rb.step_ops, probability, transposed)
    region = kir.KernelRegion(d1.region.name, tuple(decls) + tuple(rewriter.decls), body)
    return Dispatch(region, tuple(tensors) + tuple(rewriter.tensors)), members


def fuse_attention(part: Partition, fits: Fits) -> Partition:
    """`part` with every attention chain (module docstring) that `fits` the target's kernel
    (its block of score rows in cache) fused into one AttentionBody region, placed where its
    P @ V matmul was, with the head-splitting copies around it folded in (attention_layout)."""
    graph = _Graph(part)
    dispatches: list[Dispatch | None] = list(part.dispatches)
    for pv in range(len(dispatches)):
        try:
            fused, members = _fuse(part, graph, pv, fits)
        except _NoFusion:
            continue
        fused, members = in_place(part.dispatches, graph, fused, members)
        if any(dispatches[i] is not part.dispatches[i] for i in members):
            continue  # shares a dispatch with a chain fused already
        for i in members:
            dispatches[i] = None
        dispatches[pv] = fused
    return Partition(list(part.tensors), [d for d in dispatches if d is not None], list(part.results))
