"""Weights pre-packed at compile time (IREE calls this data tiling).

A matmul's microkernel reads B as NR-wide panels, k-major inside a panel. When B is computed
at run time each workgroup copies its panels into local memory first (and every row tile
repeats the copy); when B is a constant of the program (a layer's weights), this pass stores it
packed once, in the executable, so the kernel reads contiguous panels straight from it: no copy
per workgroup, no local memory, and a batch-1 GEMV streams each panel front to back.

The panel width is the target's (`panel_width(m, n, k)`), so the pass runs where kernels are
generated for a known target; the packed region (`MatmulBody.b_panel`) says the layout to every
other target that compiles the same kernel IR (the portable lowering indexes the panels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from compiler import kernel_ir as kir
from compiler.passes.fusion import Dispatch, Partition, Tensor
from compiler.passes.library_lowering import matmul_slots

PanelWidth = Callable[[int, int, int], int]
Packer = Callable[[np.ndarray, int], np.ndarray]


def prepack_weights(part: Partition, panel_width: PanelWidth, pack: Packer) -> Partition:
    """`part` with each single-batch matmul whose B is a constant read by nothing else (no other
    dispatch, not a result) rewritten to read that constant packed (`pack(B, NR)`)."""
    own = private_constants(part)
    tensors = list(part.tensors)
    dispatches = []
    for d in part.dispatches:
        body = d.region.body
        if isinstance(body, kir.MatmulBody) and body.batch == 1 and not body.b_panel:
            a, b, _, _ = matmul_slots(d.region, "bias_add" in body.epilogue)
            weights = tensors[d.tensors[b]]
            if a != b and weights.id in own:
                d = _packed(d, b, weights, panel_width(body.m, body.n, body.k), pack, tensors)
        dispatches.append(d)
    return Partition(tensors, dispatches, list(part.results))


def private_constants(part: Partition) -> set[int]:
    """Ids of the constants that one dispatch alone reads and no result is: a pass may store
    them in whatever layout that dispatch's kernel wants."""
    readers: dict[int, int] = {}
    for d in part.dispatches:
        for t in set(d.tensors):
            readers[t] = readers.get(t, 0) + 1
    results = {t for t, _ in part.results}
    return {t.id for t in part.tensors if t.kind == "constant" and readers.get(t.id) == 1 and t.id not in results}


def _packed(d: Dispatch, slot: int, weights: Tensor, nr: int, pack: Packer, tensors: list[Tensor]) -> Dispatch:
    """`d` reading `weights` (replaced in `tensors`, same id) packed in `nr`-wide panels."""
    body = d.region.body
    value = pack(np.asarray(weights.value, np.float32).reshape(body.k, body.n), nr)
    tensors[weights.id] = dataclasses.replace(weights, shape=value.shape, value=value)
    bindings = list(d.region.bindings)
    bindings[slot] = dataclasses.replace(bindings[slot], shape=value.shape)
    region = kir.KernelRegion(d.region.name, tuple(bindings), dataclasses.replace(body, b_panel=nr))
    return Dispatch(region, d.tensors)
