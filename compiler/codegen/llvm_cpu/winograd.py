"""3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, 2015).

A 2x2 block of output pixels is A^T [(G g G^T) * (B^T d B)] A, d the 4x4 input block under it
and g one input channel's 3x3 filter: over the channels, 16 matmuls of (blocks x C) @ (C x F),
one per point of the 4x4 transformed block, do the work of the direct convolution's 9 taps x 4
pixels: 2.25x fewer multiply-adds. ResNet's 3x3 layers over 24x24 x 32 and 12x12 x 64 are
compute-bound on the direct kernel (~160 GFLOP/s a core, the FMA peak), so this is what is left.

Per workgroup (a band of block rows, all output channels): the input rows under it are copied
zero-padded into local memory (the direct kernel's strip); the filter, pre-packed in NR-wide
panels as for the direct kernel, is transformed into U[16][panels][C][NR] (G g G^T; made per
workgroup, since a region has no place for a second packed form: bands of ~24 blocks keep it
cheap). Then, a register tile of MR blocks at a time (so that V and M stay in L1), each block's
4x4 x C is transformed (B^T d B: adds only) into V[16][MR][C], the 16 matmuls run on the
microkernel into M[16][MR][F], and each block's 2x2 outputs are A^T m A, the epilogue (bias,
residual, ReLU) applied as they are stored. One thread, ResNet's 24x24 x 32 -> 32: 54 us
against the direct kernel's 89 in the same rounds (12x12 x 64 -> 64: 51 against 70). The
transforms round differently from the direct sum; F(2x2, 3x3) has the smallest error of its
family (2.5e-7 of the output's scale there, as the direct kernel's).

Bindings as conv.py's: 0 = input N x H x W x C, 1 = filter (packed, filter_panel = NR),
2 = output N x H x W x F, 3.. = epilogue inputs. workgroup_id = (0, band of block rows, image).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llvmlite import ir

from .abi_builder import F32, I64, for_range, i64, internal_function, load_vector, store_vector
from .matmul import LINE, EpilogueSite, RegisterTile, microkernel

if TYPE_CHECKING:
    from .conv import ConvGenerator

F32P = F32.as_pointer()
POINTS = 16  # the 4x4 transformed block


class Transforms:
    """The F(2x2, 3x3) transforms on IR vectors, through `fadd`/`fsub`/`fmul` of a builder."""

    def __init__(self, b: ir.IRBuilder, lanes: int) -> None:
        self.b, self.lanes = b, lanes

    def _half(self, x: ir.Value) -> ir.Value:
        return self.b.fmul(x, ir.Constant(x.type, [0.5] * self.lanes))

    def input(self, d: list[list[ir.Value]]) -> list[ir.Value]:
        """B^T d B, row-major 4x4, for d 4x4."""
        b = self.b
        rows = [[b.fsub(d[0][j], d[2][j]) for j in range(4)], [b.fadd(d[1][j], d[2][j]) for j in range(4)],
                [b.fsub(d[2][j], d[1][j]) for j in range(4)], [b.fsub(d[1][j], d[3][j]) for j in range(4)]]
        return [v for r in rows for v in (b.fsub(r[0], r[2]), b.fadd(r[1], r[2]), b.fsub(r[2], r[1]), b.fsub(r[1], r[3]))]

    def filter(self, g: list[list[ir.Value]]) -> list[ir.Value]:
        """G g G^T, row-major 4x4, for g 3x3 (G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1])."""
        b = self.b

        def apply(x: list[ir.Value]) -> list[ir.Value]:
            outer = b.fadd(x[0], x[2])
            return [x[0], self._half(b.fadd(outer, x[1])), self._half(b.fsub(outer, x[1])), x[2]]

        columns = [apply([g[i][j] for i in range(3)]) for j in range(3)]  # G g: 4 rows x 3 columns
        return [v for i in range(4) for v in apply([columns[j][i] for j in range(3)])]

    def output(self, m: list[ir.Value]) -> list[ir.Value]:
        """A^T m A, row-major 2x2, for m row-major 4x4 (A^T = [1 1 1 0; 0 1 -1 -1])."""
        b = self.b
        rows = [[b.fadd(b.fadd(m[j], m[4 + j]), m[8 + j]) for j in range(4)],
                [b.fsub(b.fsub(m[4 + j], m[8 + j]), m[12 + j]) for j in range(4)]]
        return [v for r in rows for v in (b.fadd(b.fadd(r[0], r[1]), r[2]), b.fsub(b.fsub(r[1], r[2]), r[3]))]


class WinogradTiles:
    """The tile functions of conv.py's generator `gen` for a 3x3, stride 1, pad 1 convolution by
    F(2x2, 3x3); a workgroup tile is `tm` output pixels = whole pairs of output rows (the last
    may hold one row) x one filter panel (or all F, fewer)."""

    def __init__(self, gen: ConvGenerator) -> None:
        self.gen, self.g, self.cfg, self.module, self.name = gen, gen.g, gen.cfg, gen.module, gen.name

    @property
    def blocks_wide(self) -> int:
        return -(-self.g.ow // 2)

    def band(self, tm: int) -> int:
        """Block rows of a tile of `tm` pixels."""
        return -(-tm // (2 * self.g.ow))

    def layout(self, tm: int) -> tuple[int, int, int, int]:
        """Floats of local memory before V, M and U, and in all, for a tile of `tm` pixels: V and
        M hold one register tile of blocks (MR), so that they stay in L1 between the transforms
        and the matmuls."""
        g, cfg = self.g, self.cfg
        v = (2 * self.band(tm) + 2) * self.gen.strip_width * g.c
        m = v + POINTS * cfg.mr * g.c
        u = m + POINTS * cfg.mr * cfg.tile_n
        return v, m, u, u + POINTS * self.u_point

    @property
    def u_point(self) -> int:
        """Floats between two points' transformed filters: their panels and one cache line more,
        so that the 16 values of one filter transform, stored a point apart, fall in different
        L1 sets (without it, C x NR = 4 KiB apart, all in one: each store missed)."""
        return -(-self.cfg.tile_n // self.cfg.nr) * self.g.c * self.cfg.nr + LINE // 4

    @property
    def local_floats(self) -> int:
        return self.layout(self.cfg.tile_m)[3]

    def tile(self, tm: int, tn: int) -> ir.Function:
        key = f"{self.name}.tile.{tm}x{tn}"
        if key in self.module.globals:
            return self.module.globals[key]
        g, cfg, lanes = self.g, self.cfg, self.cfg.lanes
        args = [("image", F32P), ("filter", F32P), ("out", F32P),
                *((f"extra{i}", F32P) for i in range(self.gen.extra)), ("local", F32P), ("p0", I64), ("n0", I64)]
        fn, b = internal_function(self.module, key, args, noalias=("image", "filter", "out", "local"))
        image, filt, out, *rest = fn.args
        extra, (local, p0, n0) = rest[:-3], rest[-3:]
        at_v, at_m, at_u, _ = self.layout(tm)
        v, m, u = (b.gep(local, [i64(at)], inbounds=True) for at in (at_v, at_m, at_u))
        band, wide, nr, mr = self.band(tm), self.blocks_wide, cfg.nr, cfg.mr
        blocks, panels, ld_m = band * wide, -(-tn // nr), cfg.tile_n
        row_floats = self.gen.strip_width * g.c
        math = Transforms(b, lanes)
        b.call(self.gen.strip(2 * band * g.ow), [image, local, p0])

        # U[point][panel][c][NR] = G g G^T of the packed filter's rows (kh*3 + kw)*C + c, for this
        # workgroup's panels (from n0 / NR)
        k = 9 * g.c
        first_panel = b.gep(filt, [b.mul(b.udiv(n0, i64(nr)), i64(k * nr))], inbounds=True)
        with for_range(b, 0, g.c, name="c") as c:
            for p in range(panels):
                for j in range(cfg.nv):
                    taps = [[load_vector(b, b.gep(first_panel, [b.add(i64((p * k + (kh * 3 + kw) * g.c) * nr + j * lanes),
                                                                       b.mul(c, i64(nr)))], inbounds=True), lanes, lanes)
                             for kw in range(3)] for kh in range(3)]
                    for point, value in enumerate(math.filter(taps)):
                        at = b.add(i64(point * self.u_point + p * g.c * nr + j * lanes), b.mul(c, i64(nr)))
                        store_vector(b, value, b.gep(u, [at], inbounds=True), lanes)

        def store(oy: ir.Value, ox: ir.Value, c0: int, valid: int, value: ir.Value) -> None:
            """out[oy, ox, n0 + c0 ...] = value, through the epilogue."""
            pixel, col = b.add(b.mul(oy, i64(g.ow)), ox), b.add(n0, i64(c0))
            if self.gen.epilogue is not None:
                value = self.gen.epilogue(EpilogueSite(b, pixel, col, valid, extra), value)
            store_vector(b, value, b.gep(out, [b.add(b.mul(pixel, i64(g.f)), col)], inbounds=True), valid)

        def chunk(first: ir.Value, count: int) -> None:
            """Blocks first..first+count (count <= MR): transform, multiply, transform back (loops
            over the blocks, not unrolled: a 6x6 layer's kernel was 1 MB of IR, 1.3 s of LLVM)."""
            def block_at(i: ir.Value) -> tuple[ir.Value, ir.Value]:
                blk = b.add(first, i)
                return b.udiv(blk, i64(wide)), b.urem(blk, i64(wide))

            with for_range(b, 0, count, name="vi") as i:  # V[point][i][c] = B^T d B of block i's 4x4 input
                by, bx = block_at(i)
                corner = b.gep(local, [b.add(b.mul(by, i64(2 * row_floats)), b.mul(bx, i64(2 * g.c)))], inbounds=True)
                for c0 in range(0, g.c, lanes):
                    valid = min(lanes, g.c - c0)
                    d = [[load_vector(b, b.gep(corner, [i64(y * row_floats + x * g.c + c0)], inbounds=True), lanes,
                                      valid) for x in range(4)] for y in range(4)]
                    for point, value in enumerate(math.input(d)):
                        at = b.add(b.mul(i, i64(g.c)), i64(point * mr * g.c + c0))
                        store_vector(b, value, b.gep(v, [at], inbounds=True), valid)
            true = ir.Constant(ir.IntType(1), 1)
            with for_range(b, 0, POINTS, name="point") as point:  # M[point] = V[point] @ U[point]
                a_at = b.gep(v, [b.mul(point, i64(mr * g.c))], inbounds=True)
                for p in range(panels):
                    shape = RegisterTile(lanes, count, min(nr, tn - p * nr), lda=g.c, ldb=nr, ldc=ld_m, masked_b=False)
                    kernel = microkernel(self.module, f"{self.name}.winograd", shape, False, None, 0)
                    b_at = b.gep(u, [b.add(b.mul(point, i64(self.u_point)), i64(p * g.c * nr))], inbounds=True)
                    c_at = b.gep(m, [b.add(b.mul(point, i64(mr * ld_m)), i64(p * nr))], inbounds=True)
                    b.call(kernel, [a_at, b_at, c_at, i64(g.c), true, true, i64(0), i64(0)])
            row0 = b.udiv(p0, i64(g.ow))
            with for_range(b, 0, count, name="mi") as i:  # out = A^T m A, through the epilogue
                by, bx = block_at(i)
                y, x = b.add(row0, b.mul(by, i64(2))), b.mul(bx, i64(2))
                for c0 in range(0, tn, lanes):
                    valid = min(lanes, tn - c0)
                    mv = [load_vector(b, b.gep(m, [b.add(b.mul(i, i64(ld_m)), i64(point * mr * ld_m + c0))],
                                                inbounds=True), lanes, valid) for point in range(POINTS)]
                    for index, value in enumerate(math.output(mv)):
                        oy, ox = b.add(y, i64(index // 2)), b.add(x, i64(index % 2))
                        # a block's second row or column lies past the image only where OH or OW
                        # is odd (tiles are whole pairs of rows): checked only there
                        checks = [b.icmp_unsigned("<", at, i64(size)) for at, size in ((oy, g.oh), (ox, g.ow)) if size % 2]
                        if checks:
                            with b.if_then(b.and_(*checks) if len(checks) == 2 else checks[0]):
                                store(oy, ox, c0, valid, value)
                        else:
                            store(oy, ox, c0, valid, value)

        whole = blocks - blocks % mr
        with for_range(b, 0, whole, step=mr, name="chunk") as first:
            chunk(first, mr)
        if blocks % mr:
            chunk(i64(whole), blocks % mr)
        b.ret_void()
        return fn
