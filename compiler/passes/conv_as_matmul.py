"""1x1 convolutions as matmuls.

An NHWC x HWIO convolution with a 1x1 window, unit strides and no padding is exactly
out[N*H*W, F] = in[N*H*W, C] @ filter[C, F] over the same memory: as a `MatmulBody` region it
takes the GEMM kernel and, its filter being a constant, the weights pre-packed at compile time
(compiler/passes/packing.py) instead of the direct convolution's per-tap gather. MobileNet's
pointwise convolutions and ResNet's bottleneck projections are of this kind. A bias and a ReLU
fused into the convolution stay its epilogue.
"""

from __future__ import annotations

import dataclasses

from compiler import kernel_ir as kir
from compiler.passes.fusion import Dispatch, Partition

# The conv epilogues a MatmulBody has too (every target's matmul applies them); a residual or a
# ReLU6 keeps the 1x1 convolution a ConvBody, whose kernels apply those.
MATMUL_EPILOGUES = ((), ("bias_add",), ("relu",), ("bias_add", "relu"))


def as_matmul(region: kir.KernelRegion) -> kir.KernelRegion | None:
    """`region` as a matmul region over the same bindings, or None when it is not a 1x1 conv."""
    body = region.body
    if not isinstance(body, kir.ConvBody):
        return None
    n, h, w, c = body.input_shape
    kh, kw, _, f = body.filter_shape
    padding = [p for pair in body.padding for p in pair]
    if (kh, kw) != (1, 1) or tuple(body.strides) != (1, 1) or any(padding) or body.depthwise or body.channels_first \
            or body.epilogue not in MATMUL_EPILOGUES or region.bindings[1].output:
        return None
    m = n * h * w
    shapes = ((1, m, c), (1, c, f), (1, m, f))  # bindings 0 = input, 1 = filter, 2 = output, 3 = bias
    bindings = tuple(dataclasses.replace(d, shape=s) for d, s in zip(region.bindings, shapes)) + region.bindings[3:]
    return kir.KernelRegion(region.name, bindings, kir.MatmulBody(m, f, c, epilogue=body.epilogue))


def convs_as_matmuls(part: Partition) -> Partition:
    """`part` with every 1x1 convolution region rewritten by `as_matmul`."""
    dispatches = []
    for d in part.dispatches:
        region = as_matmul(d.region)
        dispatches.append(d if region is None else Dispatch(region, d.tensors))
    return Partition(list(part.tensors), dispatches, list(part.results))
