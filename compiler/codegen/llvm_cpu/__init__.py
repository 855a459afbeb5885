"""LLVM CPU backend: host JIT/AOT (`jit`), ABI helpers for llvmlite.ir (`abi_builder`), the
shared expression emitter (`expr`) and one generator per kernel IR body: `elementwise`,
`reduction`, `rows`, `sort`, and the hand-tiled `matmul`, `conv`, `depthwise` and `pooling` the
hardest ops lower to."""

from dataclasses import replace

from compiler import kernel_ir as kir
from compiler.codegen.llvm_cpu import caches, conv, matmul
from compiler.codegen.llvm_cpu.activation import activation
from compiler.codegen.llvm_cpu.attention import fits_attention, generate_attention
from compiler.codegen.llvm_cpu.depthwise import generate_depthwise
from compiler.codegen.llvm_cpu.elementwise import generate_elementwise
from compiler.codegen.llvm_cpu.pooling import generate_pool
from compiler.codegen.llvm_cpu.reduction import generate_reduction
from compiler.codegen.llvm_cpu.rows import generate_rows
from compiler.codegen.llvm_cpu.sort import generate_sort
from compiler.errors import CompileError
from compiler.passes.attention_fusion import fuse_attention
from compiler.passes.conv_as_matmul import convs_as_matmuls
from compiler.passes.conv_packing import prepack_filters
from compiler.passes.fusion import Partition
from compiler.passes.matmul_activation import fuse_activations
from compiler.passes.packing import prepack_weights
from compiler.passes.row_fusion import fuse_rows
from compiler.passes.window_pools import window_pool


def prepare(part: Partition, attention: bool = True) -> Partition:
    """The partition as this target's kernels want it: 1x1 convolutions as matmuls, constant
    matmul weights and conv filters pre-packed, row-wise chains (softmax, layernorm) one pass over
    rows that fit in half the L2, activations (GELU) as matmul epilogues, and with `attention`
    (not for a function compiled for every size of a dynamic dim: the fused kernel has no
    run-time size) scores -> softmax -> @ V one region."""
    part = fuse_rows(part, caches.host().l2 // 2)
    if attention:
        part = fuse_attention(part, fits_attention)
    part = fuse_activations(part)
    part = prepack_weights(convs_as_matmuls(part), matmul.panel_width, matmul.pack_weights)
    return prepack_filters(part, conv.panel_width, matmul.pack_weights)


def generate(region: kir.KernelRegion) -> matmul.GeneratedKernel:
    """The llvm_cpu kernel for one region: the only place that picks a generator per body. A
    region with dynamic extents (elementwise, reduction, rows, matmul, conv: compiler/dynamic.py decides
    which) reads the dim from push constant 0, and says how its grid grows with it."""
    body = region.body
    dynamic = region.dynamic
    pool = window_pool(region)
    if pool is not None:
        return generate_pool(region, pool)
    if isinstance(body, (kir.ElementwiseBody, kir.ReductionBody, kir.RowBody)):
        generator = {kir.ElementwiseBody: generate_elementwise, kir.ReductionBody: generate_reduction,
                     kir.RowBody: generate_rows}[type(body)]
        kernel = generator(region)
        if dynamic is None:
            return kernel
        grid = ((dynamic.cols, body.grid.tile_cols), (dynamic.rows, body.grid.tile_rows), (0, 1))
        return replace(kernel, constant_count=1, dynamic_grid=grid)
    if dynamic is not None and not isinstance(body, (kir.MatmulBody, kir.ConvBody)) or \
            isinstance(body, kir.ConvBody) and body.depthwise and dynamic is not None:
        raise CompileError(f"{region.name}: llvm_cpu has no dynamic form of {type(body).__name__}")
    if isinstance(body, kir.SortBody):
        return generate_sort(region)
    if isinstance(body, kir.AttentionBody):
        return generate_attention(region)
    if isinstance(body, kir.ConvBody) and body.depthwise:
        return generate_depthwise(region)
    if isinstance(body, kir.ConvBody):
        batch = dynamic.batch if dynamic is not None else 0
        kernel = conv.generate_conv2d(body.input_shape, body.filter_shape, strides=body.strides,
                                      padding=body.padding, dilation=body.dilation, name=region.name,
                                      runtime_batch=batch, filter_panel=body.filter_panel, steps=body.epilogue,
                                      channels_first=body.channels_first)
        if not batch:
            return kernel
        grid = ((0, kernel.config.tile_n), (0, kernel.config.tile_m), (batch, 1))
        return replace(kernel, constant_count=1, dynamic_grid=grid)
    epilogues = {"bias_add": matmul.bias_add(0), "relu": matmul.relu}
    steps = [epilogues[e] for e in body.epilogue] + ([activation(body.activation)] if body.activation is not None else [])
    epilogue = matmul.chain(*steps) if steps else None
    extra = (body.n,) if "bias_add" in body.epilogue else ()
    runtime = matmul.RuntimeExtents(dynamic.lead, dynamic.batch) if dynamic is not None else None
    kernel = matmul.generate_matmul(body.m, body.n, body.k, batch=body.batch, epilogue=epilogue,
                                    extra_bindings=extra, b_panel=body.b_panel, name=region.name,
                                    runtime=runtime)
    if runtime is None:
        return kernel
    cfg = kernel.config
    grid = ((0, cfg.tile_n), (runtime.m, cfg.tile_m), (runtime.batch, 1))
    return replace(kernel, constant_count=1, dynamic_grid=grid)
