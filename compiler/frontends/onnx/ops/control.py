"""Control flow where shapes allow: If, Loop and Scan.

`If` with a condition known at compile time inlines the taken branch; otherwise both branches are
converted and their outputs selected elementwise (they must then agree in shape). `Loop` with a
trip count and a condition known at compile time after every iteration is unrolled (at most
`MAX_UNROLL` iterations); scan outputs are stacked. A trip count or initial condition given as a
graph input is read at conversion (the graph compiles per distinct value); a condition the body
computes from runtime data has no IR form (the frontend emits no `while`) and is refused naming
the node. `Scan` is
unrolled over its scan inputs' static length (opset 8's batched form once per batch entry).
"""

from __future__ import annotations

import numpy as np

from compiler.frontends.onnx.builder import Tensor, shape_of
from compiler.frontends.onnx.graph import Ctx, Scope, convert_graph

MAX_UNROLL = 1024


def _branch(c: Ctx, graph, bindings: dict[str, Tensor] | None = None) -> list[Tensor]:
    from compiler.frontends.onnx.ops import HANDLERS
    scope = Scope(c.scope)
    scope.values.update(bindings or {})
    return convert_graph(graph, scope, c.b, c.opset, HANDLERS)


def _if(c: Ctx) -> list[Tensor]:
    cond = c.input(0)
    then, other = c.attr("then_branch"), c.attr("else_branch")
    if isinstance(cond, np.ndarray):
        return _branch(c, then if bool(cond.reshape(-1)[0]) else other)
    a, b = _branch(c, then), _branch(c, other)
    outs = []
    for x, y in zip(a, b):
        if shape_of(x) != shape_of(y):
            raise c.error(f"the branches give shapes {shape_of(x)} and {shape_of(y)} on a runtime condition")
        outs.append(c.b.select(c.b.reshape(cond, []), x, y))
    return outs


def _loop(c: Ctx) -> list[Tensor]:
    body = c.attr("body")
    trips = c.known(0, "M")
    cond = c.known(1, "cond")  # (as M: a graph input compiles per distinct value)
    limit = int(trips.reshape(-1)[0]) if trips is not None else None
    if limit is None and cond is None:
        raise c.error("a loop with neither a trip count nor a condition never ends")
    carried = list(c.inputs[2:])
    n_carried = len(carried)
    scans: list[list[Tensor]] = []
    names = [i.name for i in body.input]
    i = 0
    running = True if cond is None else bool(cond.reshape(-1)[0])
    while running and (limit is None or i < limit):
        if i >= MAX_UNROLL:
            raise c.error(f"more than {MAX_UNROLL} iterations to unroll")
        outs = _branch(c, body, dict(zip(names, [np.array(i, np.int64), np.array(running), *carried])))
        next_cond, carried, scan = outs[0], outs[1:1 + n_carried], outs[1 + n_carried:]
        if not scans:
            scans = [[] for _ in scan]
        for acc, s in zip(scans, scan):
            acc.append(c.b.reshape(s, [1, *shape_of(s)]))
        if not isinstance(next_cond, np.ndarray):
            raise c.error("the loop condition depends on the model's inputs: data-dependent loops are not supported")
        running = bool(next_cond.reshape(-1)[0])
        i += 1
    n_scan = len(c.node.output) - n_carried
    if i == 0 and n_scan:
        raise c.error("a loop that runs no iteration has scan outputs of unknown shape")
    return [*carried, *(c.b.concat(acc, 0) for acc in scans)]


def _scan(c: Ctx) -> list[Tensor]:
    """Scan unrolled over its scan inputs' (static) length. Opset 8's batched form (a leading
    batch dim on every state and scan input and output, optional sequence_lens) runs the same
    unrolled body once per batch entry, full length only."""
    m = c.attr("num_scan_inputs")
    if c.opset >= 9:
        inputs = [c.input(i) for i in range(len(c.inputs))]
        return _unrolled(c, inputs[:len(inputs) - m], inputs[len(inputs) - m:],
                         list(c.attr("scan_input_axes", [0] * m)), list(c.attr("scan_input_directions", [0] * m)))
    lens = c.known(0, "sequence_lens")
    inputs = [c.input(i) for i in range(1, len(c.inputs))]
    states, scans = inputs[:len(inputs) - m], inputs[len(inputs) - m:]
    batch = shape_of(inputs[0])[0]
    if lens is not None and any(int(v) != shape_of(scans[0])[1] for v in lens.reshape(-1)):
        raise c.error("Scan (opset 8) with sequence_lens shorter than the scan inputs is not supported")
    per_batch = []
    for b in range(batch):
        row = [c.b.reshape(c.b.slice(x, [b] + [0] * (len(shape_of(x)) - 1), [b + 1, *shape_of(x)[1:]]), shape_of(x)[1:])
               for x in inputs]
        per_batch.append(_unrolled(c, row[:len(states)], row[len(states):], [0] * m, list(c.attr("directions", [0] * m))))
    return [c.b.concat([c.b.reshape(y, [1, *shape_of(y)]) for y in ys], 0) for ys in zip(*per_batch)]


def _unrolled(c: Ctx, states: list[Tensor], scans: list[Tensor], in_axes: list[int], in_dirs: list[int]) -> list[Tensor]:
    """The final states and stacked scan outputs of Scan's body run over `scans`."""
    body = c.attr("body")
    m = len(scans)
    n_states = len(states)
    n_out = len(c.node.output) - n_states
    out_axes = list(c.attr("scan_output_axes", [0] * n_out))
    out_dirs = list(c.attr("scan_output_directions", [0] * n_out))
    if m == 0:
        raise c.error("Scan needs at least one scan input")
    in_axes = [c.axis(a, len(shape_of(x))) for a, x in zip(in_axes, scans)]
    lengths = {shape_of(x)[a] for a, x in zip(in_axes, scans)}
    if len(lengths) != 1:
        raise c.error(f"scan inputs have different lengths {sorted(lengths)}")
    length = lengths.pop()
    if length > MAX_UNROLL:
        raise c.error(f"more than {MAX_UNROLL} iterations to unroll")
    names = [i.name for i in body.input]
    steps: list[list[Tensor]] = [[] for _ in range(n_out)]
    for t in range(length):
        slices = []
        for x, a, d in zip(scans, in_axes, in_dirs):
            k = length - 1 - t if d else t
            xs = shape_of(x)
            lo, hi = [0] * len(xs), list(xs)
            lo[a], hi[a] = k, k + 1
            slices.append(c.b.reshape(c.b.slice(x, lo, hi), [d for i, d in enumerate(xs) if i != a]))
        outs = _branch(c, body, dict(zip(names, [*states, *slices])))
        states = outs[:n_states]
        for acc, y in zip(steps, outs[n_states:]):
            acc.append(y)
    results = []
    for acc, a, d in zip(steps, out_axes, out_dirs):
        if d:
            acc = acc[::-1]
        rank = len(shape_of(acc[0])) + 1
        a = c.axis(a, rank)
        results.append(c.b.concat([c.b.reshape(y, [*shape_of(y)[:a], 1, *shape_of(y)[a:]]) for y in acc], a))
    return [*states, *results]


HANDLERS = {"If": _if, "Loop": _loop, "Scan": _scan}
