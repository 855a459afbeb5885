"""2-D window pooling (max, min, or a sum) over N x H x W x C f32, as a direct kernel.

A region compiler/passes/window_pools.py recognises (a CNN's MaxPool: 3x3, stride 2, after the
stem) runs here instead of the generic reduction kernel, which evaluates the window's index and
bounds expression per element vector (24x24 x 32 outputs of a 3x3 window: 29 us on one thread).
Here each output pixel folds its window's channel vectors straight from the input, the window
clipped to the image once per pixel (the padding reads as the init, which a max, a min or a sum
from 0 leaves as it is), unrolled where the window lies wholly inside.

Bindings: 0 = input N x H x W x C, 1 = output N x OH x OW x C. workgroup_id = (0, block of
output rows, image).
"""

from __future__ import annotations

from llvmlite import ir

from compiler import kernel_ir as kir
from compiler.passes.window_pools import WindowPool

from . import jit
from .abi_builder import I64, entry_alloca, for_range, i32, i64, load_vector, store_vector, vector
from .expr import ExprEmitter
from .grid_loops import clipped, kernel_entry
from .matmul import GeneratedKernel

WORKGROUPS = 8  # output row blocks to aim for over all images (a few per worker)
BLOCK_VECTORS = 8  # channel vectors folded at once (accumulators held in registers)


def generate_pool(region: kir.KernelRegion, pool: WindowPool, lanes: int | None = None) -> GeneratedKernel:
    """LLVM IR of `region`, the window pool `pool` (`window_pools.window_pool(region)`)."""
    lanes = lanes or jit.vector_width_f32()
    n, h, w, c = region.bindings[0].shape
    _, oh, ow, _ = region.bindings[1].shape
    (kh, kw), (sh, sw), (top_pad, left_pad) = pool.window, pool.strides, pool.pads
    rows = -(-oh // max(1, -(-WORKGROUPS // n)))
    module = ir.Module()
    kb, (source, result) = kernel_entry(module, region)
    b = kb.builder
    image = b.zext(kb.workgroup_id(2), I64)
    source = b.gep(source, [b.mul(image, i64(h * w * c))], inbounds=True)
    result = b.gep(result, [b.mul(image, i64(oh * ow * c))], inbounds=True)
    body = region.body
    fold = body.combiner[0]

    def clip(start: ir.Value, size: int, extent: int) -> tuple[ir.Value, ir.Value]:
        """[first, end) of the window offsets from `start` that fall inside 0..extent."""
        first = b.sub(i64(0), start)
        first = b.select(b.icmp_signed(">", first, i64(0)), first, i64(0))
        end = b.sub(i64(extent), start)
        return first, b.select(b.icmp_signed("<", end, i64(size)), end, i64(size))

    def pixel(y: ir.Value, x: ir.Value) -> None:
        top, left = b.sub(b.mul(y, i64(sh)), i64(top_pad)), b.sub(b.mul(x, i64(sw)), i64(left_pad))
        (i0, i1), (j0, j1) = clip(top, kh, h), clip(left, kw, w)
        out = b.gep(result, [b.mul(b.add(b.mul(y, i64(ow)), x), i64(c))], inbounds=True)
        for c0 in range(0, c, BLOCK_VECTORS * lanes):
            widths = [min(lanes, c - v) for v in range(c0, min(c, c0 + BLOCK_VECTORS * lanes), lanes)]
            init = ExprEmitter(b, region.bindings, [], [], None, lanes).value(body.inits[0])
            acc = [entry_alloca(b, vector(lanes)) for _ in widths]
            for slot in acc:
                b.store(init, slot)

            def combine(x: ir.Value, y: ir.Value) -> ir.Value:
                return ExprEmitter(b, region.bindings, [], [], None, lanes, [x, y]).value(fold)

            def tap(i: ir.Value, j: ir.Value) -> list[ir.Value]:
                """The channel vectors of input pixel (top + i, left + j)."""
                at = b.gep(source, [b.add(b.mul(b.add(b.mul(b.add(top, i), i64(w)), b.add(left, j)), i64(c)), i64(c0))],
                           inbounds=True)
                return [load_vector(b, b.gep(at, [i64(v * lanes)], inbounds=True), lanes, valid)
                        for v, valid in enumerate(widths)]

            whole = b.and_(b.and_(b.icmp_signed("==", i0, i64(0)), b.icmp_signed("==", i1, i64(kh))),
                           b.and_(b.icmp_signed("==", j0, i64(0)), b.icmp_signed("==", j1, i64(kw))))
            with b.if_else(whole) as (inside, edge):
                with inside:  # the window lies in the image: unrolled, folded as a tree (a chain
                    # of 9 NaN-propagating maxima, 6 instructions each, was latency-bound)
                    taps = [tap(i64(i), i64(j)) for i in range(kh) for j in range(kw)]
                    for v, slot in enumerate(acc):
                        values = [b.load(slot)] + [t[v] for t in taps]
                        while len(values) > 1:
                            values = [combine(*values[k:k + 2]) if k + 1 < len(values) else values[k]
                                      for k in range(0, len(values), 2)]
                        b.store(values[0], slot)
                with edge:
                    with for_range(b, i0, i1, name="i") as i:
                        with for_range(b, j0, j1, name="j") as j:
                            for slot, value in zip(acc, tap(i, j)):
                                b.store(combine(b.load(slot), value), slot)
            for v, (slot, valid) in enumerate(zip(acc, widths)):
                store_vector(b, b.load(slot), b.gep(out, [i64(c0 + v * lanes)], inbounds=True), valid)

    first, last = clipped(b, b.zext(kb.workgroup_id(1), I64), rows, i64(oh))
    with for_range(b, first, last, name="y") as y:
        with for_range(b, 0, ow, name="x") as x:
            pixel(y, x)
    b.ret(i32(0))
    return GeneratedKernel(region.name, str(module), (1, -(-oh // rows), n), 0, len(region.bindings), pool)
