"""Control flow where shapes allow: If and Loop.

`If` with a condition known at compile time inlines the taken branch; otherwise both branches are
converted and their outputs selected elementwise (they must then agree in shape). `Loop` with a
trip count and a condition known at compile time after every iteration is unrolled (at most
`MAX_UNROLL` iterations); scan outputs are stacked. A loop whose trip count depends on the data
has no IR form (the compiler has no `while` lowering) and is refused naming the node.
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
    cond = c.optional(1)
    if cond is not None and not isinstance(cond, np.ndarray):
        raise c.error("the loop condition depends on the model's inputs: data-dependent loops are not supported")
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
    """Scan (opset 9+) unrolled over its scan inputs' (static) length."""
    if c.opset < 9:
        raise c.error("Scan before opset 9 (its batched form with sequence_lens) is not supported")
    body = c.attr("body")
    m = c.attr("num_scan_inputs")
    inputs = [c.input(i) for i in range(len(c.inputs))]
    n_states = len(inputs) - m
    states, scans = inputs[:n_states], inputs[n_states:]
    in_axes = list(c.attr("scan_input_axes", [0] * m))
    in_dirs = list(c.attr("scan_input_directions", [0] * m))
    n_out = len(c.node.output) - n_states
    out_axes = list(c.attr("scan_output_axes", [0] * n_out))
    out_dirs = list(c.attr("scan_output_directions", [0] * n_out))
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
