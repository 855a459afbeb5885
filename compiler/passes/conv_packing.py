"""Convolution filters pre-packed at compile time, as compiler/passes/packing.py packs matmul
weights (IREE's data tiling).

The conv kernel's microkernel reads its K x F filter (K = KH*KW*C, the HWIO filter's rows) as
NR-wide panels, k-major inside a panel. Read in place, each k step of a panel is a short row
piece F floats from the last, and every pixel tile of every image repeats that walk; a filter
that is a constant of the program is stored packed once instead, so the kernel streams
contiguous panels (what the late stages of a CNN, a few pixels against megabytes of filter, are
bound by). `ConvBody.filter_panel` says the layout to every target that compiles the region
(the portable lowering indexes the panels).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from compiler import kernel_ir as kir
from compiler.passes.fusion import Dispatch, Partition
from compiler.passes.packing import private_constants

PanelWidth = Callable[[Sequence[int], Sequence[int], int], int]  # input, filter, output pixels per image
Packer = Callable[[np.ndarray, int], np.ndarray]


def prepack_filters(part: Partition, panel_width: PanelWidth, pack: Packer) -> Partition:
    """`part` with each (not depthwise) convolution whose filter is a constant read by nothing
    else (no other dispatch, not a result) rewritten to read it packed (`pack(K x F, NR)`)."""
    own = private_constants(part)
    tensors = list(part.tensors)
    dispatches = []
    for d in part.dispatches:
        body = d.region.body
        if isinstance(body, kir.ConvBody) and not body.depthwise and not body.filter_panel \
                and not d.region.bindings[1].output and d.tensors.count(d.tensors[1]) == 1:
            weights = tensors[d.tensors[1]]
            if weights.id in own:
                _, oh, ow, _ = d.region.bindings[2].shape
                nr = panel_width(body.input_shape, body.filter_shape, oh * ow)
                k = math.prod(body.filter_shape[:3])
                value = pack(np.asarray(weights.value, np.float32).reshape(k, body.filter_shape[3]), nr)
                tensors[weights.id] = dataclasses.replace(weights, shape=value.shape, value=value)
                bindings = list(d.region.bindings)
                bindings[1] = dataclasses.replace(bindings[1], shape=value.shape)
                new = dataclasses.replace(body, filter_panel=nr)
                d = Dispatch(kir.KernelRegion(d.region.name, tuple(bindings), new, d.region.dynamic), d.tensors)
        dispatches.append(d)
    return Partition(tensors, dispatches, list(part.results))
