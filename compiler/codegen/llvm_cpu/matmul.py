"""f32 matmul kernels C[M,N] (+)= A[M,K] @ B[K,N] for the CPU kernel ABI, generated with llvmlite.

All of M, N, K are static, so every edge is known when the kernel is generated: the kernel
picks one of at most four tile variants (full/edge rows x full/edge columns) per workgroup and
each variant calls register-tile microkernels whose shape is a Python constant.

Structure (the BLIS/GotoBLAS loop nest, one workgroup per `tile_m x tile_n` tile of C):

    for kb in K step kc:                 K blocking: a kc x NR panel of B fits in L1
        pack B[kb:kb+kc, tile] -> local  contiguous kc x NR panels: no 4 KiB-stride aliasing,
                                         no TLB misses in the hot loop
        for each NR-wide panel p:        the panel stays in L1 ...
            for each MR-row block r:     ... while A's tile_m x kc block streams from L2
                microkernel(MR x NR)     MR*NR/VL vector accumulators in registers, llvm.fma,
                                         one broadcast of A per row and k; the row blocks
                                         prefetch the next panel (into L2), a line a k step;
                                         C's partial sums between K blocks stay in a local
                                         buffer with padded rows (C's own rows, 4 KiB apart,
                                         fall in the panel's L1 sets): C is written once

B that is a constant of the program (a layer's weights) arrives pre-packed in that panel layout
(`pack_weights`, applied at compile time by compiler/passes/packing.py; `b_panel`): the pack
step goes and every path, GEMV included, reads contiguous panels straight from the binding.

Small M has no reuse of B, so a B computed at run time is not packed: M = 1 streams a few
whole rows of B at a time into C's row held in L1 (`_stream_tile`), which runs at the
bandwidth B arrives at; M = 2..4 use register tiles over B in place with software prefetch.

Bindings: 0 = A, 1 = B, 2 = C, 3.. = extra inputs an epilogue reads (e.g. a bias). Row-major,
contiguous; with `batch > 1` each binding holds `batch` matrices back to back (workgroup_id[2]
is the batch index) and extra bindings are shared by all batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from llvmlite import ir

from . import caches, jit
from .abi_builder import (
    F32,
    I1,
    I8P,
    I32,
    I64,
    KernelBuilder,
    entry_alloca,
    fma,
    for_range,
    i32,
    i64,
    internal_function,
    intrinsic,
    load_vector,
    splat,
    store_vector,
    vector,
)

F32P = F32.as_pointer()

# Kernel return codes (0 is hal.abi.KERNEL_OK).
ERROR_LOCAL_MEMORY = 1  # the driver gave less local memory than the entry point declared
ERROR_BINDING_TOO_SHORT = 2  # a binding cannot hold the matrix the kernel was generated for


@dataclass(frozen=True)
class MatmulConfig:
    """Tiling of one matmul: register tile `mr x nv*lanes`, workgroup tile `tile_m x tile_n`."""

    lanes: int  # f32 lanes per vector register
    mr: int  # rows of the register tile
    nv: int  # vectors per row of the register tile (NR = nv * lanes columns)
    tile_m: int  # rows of C per workgroup (best a multiple of mr)
    tile_n: int  # columns of C per workgroup (best a multiple of NR)
    kc: int  # K block
    pack_b: bool  # copy B panels into local memory (pays when several row blocks reuse them)
    prefetch_rows: int = 0  # unpacked B: prefetch the row this many k ahead (0 = none)
    stream_rows: int = 0  # M = 1: rows of B per pass over C's row kept in L1 (0 = register tile)
    prefetch_next: int = 0  # shares of the next B panel (kc lines each) row block i prefetches
    # share i mod prefetch_next of (0 = none): every call the same code, later ones hit in L2
    c_local: bool = False  # keep C's partial sums between K blocks in local memory (padded rows)

    @property
    def nr(self) -> int:
        return self.nv * self.lanes


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def choose_config(m: int, n: int, k: int, lanes: int | None = None, packed: bool = False,
                  cache: caches.Caches | None = None) -> MatmulConfig:
    """Tile sizes from the shape, the vector width and the host's cache sizes (measured on Zen 3:
    `python -m bench.matmul_kernels`). `packed`: B arrives pre-packed in NR-wide panels
    (`pack_weights`), so no path reads it in place and nothing is packed at run time.

    M = 1 with B in place: the streaming GEMV (`stream_rows` = 4 rows of B per pass) with at
    least 512 columns per workgroup: short row pieces defeat the prefetchers (256 columns ran
    1.3x slower than 512 and 1.7x slower than 1024 for 784x1024). M <= 4: register tiles of
    M x up to 8 vectors (enough independent FMA chains to cover the FMA latency), over B in place
    prefetching 8 rows ahead (1.2x faster than without), or over packed panels, which are
    contiguous streams the hardware prefetchers follow (a software prefetch 2 or 8 KiB ahead
    measured no faster in the batch-1 MLP, nor 4 narrower panels read side by side).
    Skinny shapes split N into at least MIN_WORKGROUPS column tiles so every worker has some.
    Otherwise the blocked path. On a 2-core Emerald Rapids VM, one core, interleaved rounds
    (`bench.matmul_kernels --sweep 1024 2048` has the variants): prefetching the next B panel
    took 1024^3 from ~0.80 to ~0.87 of the FMA peak and keeping C's partial sums in local memory
    to ~0.90 (OpenBLAS ~0.80-0.85 in the same rounds); copying A's block into local memory
    (rows kc apart) was slower at 1024^3, 2048^3 and a batch of 64. Register tile 6 x 2 vectors
    with 16 vector registers (AVX2: 12 accumulators + 2 B vectors + 1 broadcast), 8 x 3, 6 x 4
    or 12 x 2 with 32 (AVX-512, `register_tile`); kc sized so a kc x NR panel of B and an
    MR x kc sliver of A fill 3/4 of L1 (256 on Zen 3: kc = 512 ran ~3% faster on one thread but
    scaled to only 1.2-1.6x on two), K split into equal blocks so no block is a sliver; tile_m up to 16 register tiles while A's tile_m x kc block takes at
    most half of L2; tile_n = 8 panels, narrower when few row tiles would leave workers idle.
    """
    lanes = lanes or jit.vector_width_f32()
    cache = cache or caches.host()
    if m == 1 and not packed:
        tile_n = min(n, max(512, round_up(-(-n // 4), lanes)))
        return MatmulConfig(lanes, 1, 1, 1, tile_n, k, pack_b=False, stream_rows=4)
    if m <= 4:
        # No more vectors than N needs, and few enough that N splits into MIN_WORKGROUPS panels:
        # a batch-1 layer is a stream of weights, and its 8 panels of 128 columns (1024 wide,
        # AVX-512) left a worker that woke a little late one or none of them.
        nv = min(8, 12 // m, -(-n // lanes), max(2, n // (MIN_WORKGROUPS * lanes)))
        nr = nv * lanes
        tile_n = min(n, max(nr, round_up(-(-n // MIN_WORKGROUPS), nr)))
        return MatmulConfig(lanes, m, nv, m, tile_n, k, pack_b=False, prefetch_rows=0 if packed else 8)
    mr, nv = register_tile(n, lanes)
    nr = nv * lanes
    kc_max = min(512, max(64, cache.l1d * 3 // 4 // (4 * (nr + mr)) // 16 * 16))
    kc = -(-k // -(-k // kc_max))
    tile_m = min(m, 16 * mr, max(mr, cache.l2 // 2 // (4 * kc) // mr * mr))
    # Narrower column tiles when there are few row tiles, so that skinny shapes (batch 64
    # against a 1024-wide weight: one row tile) still give MIN_WORKGROUPS to spread over the
    # workers: 3 workgroups of 384 columns left one of two workers idle half the time.
    wanted_col_tiles = -(-MIN_WORKGROUPS // -(-m // tile_m))
    tile_n = min(n, 8 * nr, max(nr, round_up(-(-n // wanted_col_tiles), nr)))
    return MatmulConfig(lanes, mr, nv, tile_m, tile_n, kc, pack_b=not packed and m > 2 * mr,
                        prefetch_next=-(-4 * nr // LINE) if packed else 0,
                        c_local=k > kc)


def panel_width(m: int, n: int, k: int) -> int:
    """Columns per panel (NR) of a B pre-packed for the host's m x n x k matmul kernel."""
    return choose_config(m, n, k, packed=True).nr


def packed_size(k: int, n: int, nr: int) -> int:
    """Floats of `pack_weights` of a K x N matrix."""
    return -(-n // nr) * k * nr


def pack_weights(b: np.ndarray, nr: int) -> np.ndarray:
    """B (K x N) as ceil(N / nr) panels of K x nr, k-major inside a panel, the last zero-padded
    on the right: the layout the microkernel reads (what the run-time packing builds per
    workgroup), made once at compile time for weights that are constants."""
    k, n = b.shape
    panels = -(-n // nr)
    padded = np.zeros((k, panels * nr), np.float32)
    padded[:, :n] = b
    return np.ascontiguousarray(padded.reshape(k, panels, nr).transpose(1, 0, 2))


PREFETCH_NEXT_LOCALITY = 2  # llvm.prefetch locality of the next B panel: 2 = prefetcht1 (into L2)
LINE = 64  # bytes per cache line

MIN_WORKGROUPS = 16  # blocked matmul workgroups to aim for (a few per worker, for balance)

# Register tiles (rows, vectors) that fill the vector registers: 16 registers hold 6 x 2
# accumulators + 2 B vectors + 1 broadcast; 32 hold 8 x 3 (or 6 x 4, 12 x 2) + B + broadcast.
TILES_16_REGISTERS = ((6, 2),)
TILES_32_REGISTERS = ((8, 3), (6, 4), (12, 2))


def register_tile(n: int, lanes: int, rows: int = 0) -> tuple[int, int]:
    """(mr, nv) for N columns: of the tiles that fill the registers (and have at least `rows`
    rows, where some do), the one whose panels waste the fewest columns past N (64 output
    channels in 48-wide panels compute a 16-wide remainder with a third of the accumulators,
    64-wide panels do not), the first on a tie."""
    tiles = TILES_32_REGISTERS if lanes >= 16 else TILES_16_REGISTERS
    tiles = [t for t in tiles if t[0] >= rows] or tiles
    return min(tiles, key=lambda t: round_up(n, t[1] * lanes) - n)



@dataclass(frozen=True)
class EpilogueSite:
    """Where an epilogue runs: one vector of C values about to be stored."""

    builder: ir.IRBuilder
    row: ir.Value  # i64 row of C
    col: ir.Value  # i64 column of the vector's first lane
    valid: int  # lanes that lie inside C (the rest are masked off)
    extra: Sequence[ir.Value]  # f32* of the extra bindings (binding 3, 4, ...)


Epilogue = Callable[[EpilogueSite, ir.Value], ir.Value]


def bias_add(extra_index: int = 0) -> Epilogue:
    """C[i, j] += bias[j], bias being extra binding `extra_index` (N floats)."""

    def apply(site: EpilogueSite, values: ir.Value) -> ir.Value:
        b = site.builder
        ptr = b.gep(site.extra[extra_index], [site.col], inbounds=True)
        return b.fadd(values, load_vector(b, ptr, values.type.count, site.valid))

    return apply


def relu(site: EpilogueSite, values: ir.Value) -> ir.Value:
    """max(C, 0) (maxnum: lowers to one vmaxps)."""
    fn = intrinsic(site.builder.module, f"llvm.maxnum.v{values.type.count}f32", values.type, [values.type] * 2)
    return site.builder.call(fn, [values, ir.Constant(values.type, [0.0] * values.type.count)])


def chain(*epilogues: Epilogue) -> Epilogue:
    """Apply epilogues left to right, e.g. `chain(bias_add(), relu)`."""

    def apply(site: EpilogueSite, values: ir.Value) -> ir.Value:
        for epilogue in epilogues:
            values = epilogue(site, values)
        return values

    return apply


@dataclass(frozen=True)
class GeneratedKernel:
    """A generated kernel (LLVM IR text) plus what a driver needs to dispatch it."""

    name: str
    ir: str
    workgroup_count: tuple[int, int, int]
    local_memory_size: int  # bytes of WorkgroupState.local_memory the kernel needs
    binding_count: int
    config: object  # the tiling it was generated with (MatmulConfig, ConvConfig)
    constant_count: int = 0  # push constants it reads (1: the dynamic dim D)
    # A kernel over a dynamic dim D: per workgroup-count dim, (scale, tile): the count is
    # ceil(scale * D / tile), or `workgroup_count`'s where scale is 0. Empty: all static.
    dynamic_grid: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class RuntimeExtents:
    """A matmul whose M or batch is `scale * D`, D read at run time from push constant 0 (0:
    static). Generated at one large M (the blocked path); row tiles are clipped at run time."""

    m: int = 0
    batch: int = 0


@dataclass(frozen=True)
class RegisterTile:
    """Static shape of one microkernel: `mr` rows x `cols` columns of C, and leading dimensions."""

    lanes: int
    mr: int
    cols: int
    lda: int  # floats between rows of A
    ldb: int  # floats between k rows of B (NR for a packed panel)
    ldc: int  # floats between rows of C
    masked_b: bool  # B is read in place: mask loads past `cols` (packed panels are zero-padded)
    prefetch_rows: int = 0  # prefetch B this many k rows ahead (for B streamed from L2/L3)
    prefetch_line: bool = False  # one more argument, pf: prefetch the cache line pf + 64 * k bytes
    ldc_local: int = 0  # one more argument, cl: C accumulates there (rows this far apart) until
    # the last K block, which stores to c (0: every K block reads and writes c)
    segments: int = 1  # K runs over this many segments of kc each, B's rows on contiguously
    segment_lda: int = 0  # floats of A between two segments' starts (a direct conv's input rows)


def microkernel(module: ir.Module, prefix: str, shape: RegisterTile, accumulate: bool,
                epilogue: Epilogue | None, extra_count: int) -> ir.Function:
    """The register-tile kernel C[row:row+mr, col:col+cols] (+)= A_rows @ B_panel, generated once
    per shape in `module` (matmul and conv share it).

    Arguments: a (A at [row, kb]), b (B at [kb, col]), c (C at [row, col]), the extra bindings,
    kc, first (start from zero instead of C, unless `accumulate`), last (apply the epilogue),
    row and col (where the epilogue is). Accumulators are `mr x ceil(cols/lanes)` vectors held
    in registers through the k loop; each k step loads the B vectors once and broadcasts one A
    value per row into `llvm.fma`.
    """
    s = shape
    key = (f"{prefix}.micro.{s.mr}x{s.cols}.{s.lda}.{s.ldb}.{s.ldc}" + (".pf" if s.prefetch_line else "")
           + (f".cl{s.ldc_local}" if s.ldc_local else "") + (f".s{s.segments}.{s.segment_lda}" if s.segments > 1 else ""))
    if key in module.globals:
        return module.globals[key]
    lanes, mr = s.lanes, s.mr
    args = [("a", F32P), ("b", F32P), ("c", F32P), *((f"extra{i}", F32P) for i in range(extra_count)),
            ("kc", I64), ("first", I1), ("last", I1), ("row", I64), ("col", I64),
            *([("cl", F32P)] if s.ldc_local else []), *([("pf", F32P)] if s.prefetch_line else [])]
    fn, b = internal_function(module, key, args, noalias=("a", "b", "c", "cl"))
    fn.attributes.add("noinline")  # the register allocator sees the hot loop alone
    a, bp, c, *extra = fn.args[: 3 + extra_count]
    kc, first, last, row, col = fn.args[3 + extra_count: 8 + extra_count]
    named = {arg.name: arg for arg in fn.args}
    nvec = -(-s.cols // lanes)
    valid = [min(lanes, s.cols - j * lanes) for j in range(nvec)]
    acc = [[entry_alloca(b, vector(lanes), f"acc{r}.{j}") for j in range(nvec)] for r in range(mr)]

    def at(base: ir.Value, ld: int) -> list[list[ir.Value]]:
        return [[b.gep(base, [i64(r * ld + j * lanes)], inbounds=True) for j in range(nvec)] for r in range(mr)]

    c_at = at(c, s.ldc)
    partial_at = at(named["cl"], s.ldc_local) if s.ldc_local else c_at  # C between K blocks

    def load_acc(source: list[list[ir.Value]]) -> None:
        for r in range(mr):
            for j in range(nvec):
                b.store(load_vector(b, source[r][j], lanes, valid[j]), acc[r][j])

    # Accumulators start at zero on the first K block (at C if C += A @ B), else at the partial C.
    zero = ir.Constant(vector(lanes), [0.0] * lanes)
    with b.if_else(first) as (then, otherwise):
        with then:
            if accumulate:
                load_acc(c_at)
            else:
                for r in range(mr):
                    for j in range(nvec):
                        b.store(zero, acc[r][j])
        with otherwise:
            load_acc(partial_at)

    prefetch = intrinsic(module, "llvm.prefetch.p0", ir.VoidType(), [I8P, I32, I32, I32])

    def k_steps(a_seg: ir.Value, b_seg: ir.Value) -> None:
        """kc steps of K: A's row elements from a_seg, B's rows from b_seg."""
        with for_range(b, 0, kc, name="k") as kk:
            b_row = b.gep(b_seg, [b.mul(kk, i64(s.ldb))], inbounds=True)
            if s.prefetch_rows:
                ahead = b.gep(b_row, [i64(s.prefetch_rows * s.ldb)])
                for line in range(0, s.cols, 64 // 4):
                    target = b.bitcast(b.gep(ahead, [i64(line)]), I8P)
                    b.call(prefetch, [target, i32(0), i32(3), i32(1)])
            if s.prefetch_line:
                target = b.bitcast(b.gep(named["pf"], [b.mul(kk, i64(LINE // 4))]), I8P)
                b.call(prefetch, [target, i32(0), i32(PREFETCH_NEXT_LOCALITY), i32(1)])
            bv = [load_vector(b, b.gep(b_row, [i64(j * lanes)], inbounds=True), lanes,
                              valid[j] if s.masked_b else lanes) for j in range(nvec)]
            for r in range(mr):
                av = splat(b, b.load(b.gep(a_seg, [b.add(kk, i64(r * s.lda))], inbounds=True)), lanes)
                for j in range(nvec):
                    b.store(fma(b, av, bv[j], b.load(acc[r][j])), acc[r][j])

    if s.segments > 1:
        with for_range(b, 0, s.segments, name="seg") as seg:  # A from seg * segment_lda, B from row seg * kc
            k_steps(b.gep(a, [b.mul(seg, i64(s.segment_lda))], inbounds=True),
                    b.gep(bp, [b.mul(b.mul(seg, kc), i64(s.ldb))], inbounds=True))
    else:
        k_steps(a, bp)

    # The last K block stores to C (after the epilogue), the others to the partial C.
    out_at = [[b.select(last, c_at[r][j], partial_at[r][j]) if s.ldc_local else c_at[r][j] for j in range(nvec)]
              for r in range(mr)]
    for r in range(mr):
        for j in range(nvec):
            if epilogue is not None:
                with b.if_then(last):
                    site = EpilogueSite(b, b.add(row, i64(r)), b.add(col, i64(j * lanes)), valid[j], extra)
                    b.store(epilogue(site, b.load(acc[r][j])), acc[r][j])
            store_vector(b, b.load(acc[r][j]), out_at[r][j], valid[j])
    b.ret_void()
    return fn


@dataclass
class _Generator:
    m: int
    n: int
    k: int
    batch: int
    accumulate: bool
    epilogue: Epilogue | None
    extra_bindings: tuple[int, ...]
    cfg: MatmulConfig
    name: str
    b_packed: bool = False  # B is `pack_weights(B, cfg.nr)`, not K x N
    module: ir.Module = field(default_factory=ir.Module)

    @property
    def panel_floats(self) -> int:
        """Floats of one packed kc x NR panel of B."""
        return self.cfg.kc * self.cfg.nr

    @property
    def b_local_floats(self) -> int:
        """Floats of local memory for the packed B panels (the partial C follows them)."""
        return self.panel_floats * -(-self.cfg.tile_n // self.cfg.nr) if self.cfg.pack_b else 0

    @property
    def ldc_local(self) -> int:
        """Floats between rows of the local partial C: a tile row plus one cache line, so that
        a register tile's rows fall in different L1 sets (C's own rows, 4 KiB apart, do not)."""
        return round_up(self.cfg.tile_n, self.cfg.nr) + LINE // 4 if self.cfg.c_local and self.k > self.cfg.kc else 0

    @property
    def local_memory_size(self) -> int:
        return 4 * (self.b_local_floats + self.cfg.tile_m * self.ldc_local)

    def _extra_args(self) -> list[tuple[str, ir.Type]]:
        return [(f"extra{i}", F32P) for i in range(len(self.extra_bindings))]

    def microkernel(self, mr: int, cols: int, prefetch_line: bool = False) -> ir.Function:
        packed = self.cfg.pack_b or self.b_packed
        shape = RegisterTile(self.cfg.lanes, mr, cols, lda=self.k,
                             ldb=self.cfg.nr if packed else self.n, ldc=self.n, masked_b=not packed,
                             prefetch_rows=0 if packed else self.cfg.prefetch_rows,
                             prefetch_line=prefetch_line,
                             ldc_local=self.ldc_local)
        return microkernel(self.module, self.name, shape, self.accumulate, self.epilogue,
                           len(self.extra_bindings))

    # -- packing ----------------------------------------------------------------------------
    def pack(self, tn: int) -> ir.Function:
        """Copy B[kb:kb+kc, n0:n0+tn] into kc x NR panels (k-major inside a panel), zero-padded."""
        key = f"{self.name}.pack.{tn}"
        if key in self.module.globals:
            return self.module.globals[key]
        lanes, nr = self.cfg.lanes, self.cfg.nr
        fn, b = internal_function(self.module, key, [("src", F32P), ("dst", F32P), ("kc", I64)],
                                  noalias=("src", "dst"))
        src, dst, kc = fn.args
        with for_range(b, 0, kc, name="k") as kk:
            src_row = b.gep(src, [b.mul(kk, i64(self.n))], inbounds=True)
            dst_row = b.gep(dst, [b.mul(kk, i64(nr))], inbounds=True)
            for p in range(-(-tn // nr)):
                for j in range(self.cfg.nv):
                    col = p * nr + j * lanes
                    value = load_vector(b, b.gep(src_row, [i64(col)], inbounds=True), lanes, tn - col)
                    store_vector(b, value, b.gep(dst_row, [i64(p * self.panel_floats + j * lanes)], inbounds=True), lanes)
        b.ret_void()
        return fn

    # -- workgroup tile ---------------------------------------------------------------------
    def rows_tile(self, tn: int) -> ir.Function:
        """A workgroup tile of `tn` columns and a run-time number of rows (the last argument,
        tm): the edge row tile of a matmul whose M is dynamic."""
        key = f"{self.name}.tile.rows.{tn}"
        if key in self.module.globals:
            return self.module.globals[key]
        args = [("a", F32P), ("b", F32P), ("c", F32P), *self._extra_args(),
                ("local", F32P), ("m0", I64), ("n0", I64), ("tm", I64)]
        fn, b = internal_function(self.module, key, args, noalias=("a", "b", "c", "local"))
        a, bm, c, *rest = fn.args
        extra, (local, m0, n0, tm) = rest[:-4], rest[-4:]
        self._blocked_tile(b, tm, tn, a, bm, c, extra, local, m0, n0)
        b.ret_void()
        return fn

    def tile(self, tm: int, tn: int) -> ir.Function:
        """One workgroup's `tm x tn` tile of C at (m0, n0)."""
        key = f"{self.name}.tile.{tm}x{tn}"
        if key in self.module.globals:
            return self.module.globals[key]
        args = [("a", F32P), ("b", F32P), ("c", F32P), *self._extra_args(),
                ("local", F32P), ("m0", I64), ("n0", I64)]
        fn, b = internal_function(self.module, key, args, noalias=("a", "b", "c", "local"))
        a, bm, c, *rest = fn.args
        extra, (local, m0, n0) = rest[:-3], rest[-3:]
        if self.cfg.stream_rows and not self.b_packed:
            self._stream_tile(b, tn, a, bm, c, extra, m0, n0)
        else:
            self._blocked_tile(b, tm, tn, a, bm, c, extra, local, m0, n0)
        b.ret_void()
        return fn

    def _stream_tile(self, b: ir.IRBuilder, tn: int, a: ir.Value, bm: ir.Value, c: ir.Value,
                     extra: Sequence[ir.Value], m0: ir.Value, n0: ir.Value) -> None:
        """Row m0 of C over columns n0..n0+tn, for M = 1 (OpenBLAS's sgemv_n scheme).

        Each pass reads `stream_rows` rows of B as long contiguous streams (which the hardware
        prefetchers follow; a register tile would read short pieces of K rows 4 KiB apart)
        and updates C's row, which stays in L1: the kernel runs at the bandwidth B arrives at.
        """
        lanes, rows = self.cfg.lanes, self.cfg.stream_rows
        c_row = b.gep(c, [b.add(b.mul(m0, i64(self.n)), n0)], inbounds=True)
        a_row = b.gep(a, [b.mul(m0, i64(self.k))], inbounds=True)
        b_cols = b.gep(bm, [n0], inbounds=True)
        full, edge = divmod(tn, lanes)

        def over_columns(body: Callable[[ir.Value, int], None]) -> None:
            with for_range(b, 0, full * lanes, step=lanes, name="j") as j:
                body(j, lanes)
            if edge:
                body(i64(full * lanes), edge)

        def k_block(k0: ir.Value, count: int, zero_init: bool) -> None:
            a_vals = [splat(b, b.load(b.gep(a_row, [b.add(k0, i64(u))], inbounds=True)), lanes)
                      for u in range(count)]

            def update(j: ir.Value, valid: int) -> None:
                c_at = b.gep(c_row, [j], inbounds=True)
                acc = ir.Constant(vector(lanes), [0.0] * lanes) if zero_init else load_vector(b, c_at, lanes, valid)
                for u in range(count):
                    b_at = b.gep(b_cols, [b.add(b.mul(b.add(k0, i64(u)), i64(self.n)), j)], inbounds=True)
                    acc = fma(b, a_vals[u], load_vector(b, b_at, lanes, valid), acc)
                store_vector(b, acc, c_at, valid)

            over_columns(update)

        first = min(rows, self.k)
        k_block(i64(0), first, zero_init=not self.accumulate)
        k_full = first + (self.k - first) // rows * rows
        with for_range(b, first, k_full, step=rows, name="kb") as k0:
            k_block(k0, rows, zero_init=False)
        if k_full < self.k:
            k_block(i64(k_full), self.k - k_full, zero_init=False)
        if self.epilogue is not None:
            def finish(j: ir.Value, valid: int) -> None:
                c_at = b.gep(c_row, [j], inbounds=True)
                site = EpilogueSite(b, m0, b.add(n0, j), valid, extra)
                store_vector(b, self.epilogue(site, load_vector(b, c_at, lanes, valid)), c_at, valid)

            over_columns(finish)

    def _blocked_tile(self, b: ir.IRBuilder, tm: int | ir.Value, tn: int, a: ir.Value, bm: ir.Value,
                      c: ir.Value, extra: Sequence[ir.Value], local: ir.Value, m0: ir.Value,
                      n0: ir.Value) -> None:
        """The BLIS loop nest over K blocks, B panels and register tiles (module docstring)."""
        cfg = self.cfg
        row_blocks = []
        if isinstance(tm, int):
            row_blocks = [(r, cfg.mr) for r in range(0, tm - tm % cfg.mr, cfg.mr)]
            if tm % cfg.mr:
                row_blocks.append((tm - tm % cfg.mr, tm % cfg.mr))
        full_panels, edge_cols = divmod(tn, cfg.nr)

        def row_blocks_at(visit: Callable[[ir.Value, int, int | None], None]) -> None:
            """visit(first row in the tile, rows, block index when static) per register-tile
            block of the tile's rows."""
            if isinstance(tm, int):
                for index, (r, mr) in enumerate(row_blocks):
                    visit(i64(r), mr, index)
                return
            full = b.sub(tm, b.urem(tm, i64(cfg.mr)))  # a run-time row count (RuntimeExtents)
            with for_range(b, 0, full, step=cfg.mr, name="rb") as r:
                visit(r, cfg.mr, None)
            rest = b.urem(tm, i64(cfg.mr))
            for mr in range(1, cfg.mr):
                with b.if_then(b.icmp_unsigned("==", rest, i64(mr))):
                    visit(full, mr, None)

        panels = full_panels + bool(edge_cols)
        with for_range(b, 0, self.k, step=cfg.kc, name="kb") as kb:
            kc = b.select(b.icmp_signed("<", b.sub(i64(self.k), kb), i64(cfg.kc)),
                          b.sub(i64(self.k), kb), i64(cfg.kc), name="kc")
            first = b.icmp_signed("==", kb, i64(0))
            last = b.icmp_signed("==", b.add(kb, kc), i64(self.k))
            b_block = b.gep(bm, [b.add(b.mul(kb, i64(self.n)), n0)], inbounds=True)
            if cfg.pack_b:
                b.call(self.pack(tn), [b_block, local, kc])

            def packed_panel(col: ir.Value, k0: ir.Value, inbounds: bool = True) -> ir.Value:
                """Panel col / NR of the pre-packed B, from row k0: contiguous kc x NR floats
                (`inbounds` False: a prefetch target, which may lie past the binding)."""
                first_row = b.add(b.mul(b.udiv(col, i64(cfg.nr)), i64(self.k)), k0)
                return b.gep(bm, [b.mul(first_row, i64(cfg.nr))], inbounds=inbounds)

            def panel(p: ir.Value, cols: int) -> None:
                col = b.add(n0, b.mul(p, i64(cfg.nr)))
                next_panel = None
                if self.b_packed:
                    b_panel = packed_panel(col, kb)
                    if cfg.prefetch_next:  # the tile's next panel, in this K block or the next one
                        # (the one after it measured no better)
                        wraps = b.icmp_signed("==", p, i64(panels - 1))
                        ahead = b.select(wraps, i64(0), b.add(p, i64(1)))
                        next_panel = packed_panel(b.add(n0, b.mul(ahead, i64(cfg.nr))),
                                                  b.add(kb, b.select(wraps, kc, i64(0))), inbounds=False)
                elif cfg.pack_b:
                    b_panel = b.gep(local, [b.mul(p, i64(self.panel_floats))], inbounds=True)
                else:
                    b_panel = b.gep(b_block, [b.mul(p, i64(cfg.nr))], inbounds=True)

                def block(r: ir.Value, mr: int, index: int | None) -> None:
                    row = b.add(m0, r)
                    a_at = b.gep(a, [b.add(b.mul(row, i64(self.k)), kb)], inbounds=True)
                    c_at = b.gep(c, [b.add(b.mul(row, i64(self.n)), col)], inbounds=True)
                    args = [a_at, b_panel, c_at, *extra, kc, first, last, row, col]
                    if self.ldc_local:
                        c_local = b.gep(local, [i64(self.b_local_floats)], inbounds=True)
                        args.append(b.gep(c_local, [b.add(b.mul(r, i64(self.ldc_local)), b.mul(p, i64(cfg.nr)))],
                                          inbounds=True))
                    # Row blocks prefetch kc lines of the next panel each (one a k step), in turn
                    prefetching = next_panel is not None
                    if prefetching:
                        share = index % cfg.prefetch_next if index is not None else 0
                        args.append(b.gep(next_panel, [b.mul(kc, i64(share * LINE // 4))]))
                    b.call(self.microkernel(mr, cols, prefetching), args)

                row_blocks_at(block)

            with for_range(b, 0, full_panels, name="p") as p:
                panel(p, cfg.nr)
            if edge_cols:
                panel(i64(full_panels), edge_cols)

    def kernel(self, runtime: RuntimeExtents | None = None) -> GeneratedKernel:
        cfg = self.cfg
        grid = (-(-self.n // cfg.tile_n), -(-self.m // cfg.tile_m), self.batch)
        strides = [self.m * self.k, self.k * self.n, self.m * self.n]
        bindings = [(s * self.batch, s) for s in strides] + [(x, 0) for x in self.extra_bindings]
        if self.b_packed:
            bindings[1] = (packed_size(self.k, self.n, cfg.nr), 0)
        per_dim: list[int] = []
        if runtime is not None:  # floats per unit of D of A, B (unless shared) and C
            if runtime.m and cfg.stream_rows:
                raise ValueError("generate_matmul: a run-time M needs the blocked path (generate it at a large M)")
            rows = [runtime.m * self.k, 0, runtime.m * self.n] if runtime.m else [0, 0, 0]
            per_dim = [r * self.batch for r in rows]
            if runtime.batch:
                per_dim = [runtime.batch * s if step else 0 for (_, step), s in zip(bindings, strides)]
            per_dim += [0] * (len(bindings) - len(per_dim))
        return emit_tiled_entry(self.module, self.name, grid, (self.m, self.n),
                                (cfg.tile_m, cfg.tile_n), bindings, self.local_memory_size,
                                self.tile, cfg, per_dim=per_dim, rows_scale=runtime.m if runtime else 0,
                                rows_tile_function=self.rows_tile)


def emit_tiled_entry(
    module: ir.Module,
    name: str,
    grid: tuple[int, int, int],
    extent: tuple[int, int],
    tile: tuple[int, int],
    bindings: Sequence[tuple[int, int]],
    local_memory_size: int,
    tile_function: Callable[[int, int], ir.Function],
    config: object,
    per_dim: Sequence[int] = (),
    rows_scale: int = 0,
    rows_tile_function: Callable[[int], ir.Function] | None = None,
) -> GeneratedKernel:
    """The ABI entry point shared by matmul and conv: workgroup (x, y, z) computes the tile of
    rows y*tile[0].. and columns x*tile[1].. of batch z.

    `bindings` gives, per binding, (floats it must hold, floats per batch step; 0 = shared by
    all batches). The entry checks the bindings' lengths and the local memory size once per
    workgroup (returning an error code instead of touching memory it was not given), offsets
    the batched bindings and calls `tile_function(tm, tn)(bindings..., local, m0, n0)` for
    this workgroup's tile shape: edge variants exist only where the tile does not divide the
    extent.

    A dynamic kernel (RuntimeExtents): `per_dim` gives, per binding, the floats it must hold per
    unit of D (0: `bindings`' static count), and with `rows_scale` the rows are `rows_scale * D`:
    the last row tile, when partial, runs `rows_tile_function(tn)` with its row count.
    """
    kb = KernelBuilder(module, name)
    b = kb.builder
    wx, wy, wz = (b.zext(kb.workgroup_id(d), I64) for d in range(3))
    dim = kb.dynamic_dim() if any(per_dim) or rows_scale else None
    per_dim = list(per_dim) or [0] * len(bindings)
    short = ir.Constant(I1, 0)
    for i, (count, _) in enumerate(bindings):
        need = kb.extent(count, per_dim[i], dim)
        short = b.or_(short, b.icmp_unsigned("<", kb.binding_length(i), b.mul(need, i64(4))))
    with b.if_then(short, likely=False):
        b.ret(i32(ERROR_BINDING_TOO_SHORT))
    local = ir.Constant(F32P, None)
    if local_memory_size:
        with b.if_then(b.icmp_unsigned("<", kb.local_memory_size(), i32(local_memory_size)), likely=False):
            b.ret(i32(ERROR_LOCAL_MEMORY))
        local = kb.local_memory()
    pointers = [kb.binding_ptr(i) if not step else
                b.gep(kb.binding_ptr(i), [b.mul(wz, i64(step))], inbounds=True)
                for i, (_, step) in enumerate(bindings)]
    m0, n0 = b.mul(wy, i64(tile[0])), b.mul(wx, i64(tile[1]))
    args = [*pointers, local, m0, n0]
    edge_m, edge_n = extent[0] - (grid[1] - 1) * tile[0], extent[1] - (grid[0] - 1) * tile[1]

    def run_tile(tm: int, tn: int) -> None:
        b.call(tile_function(tm, tn), args)
        b.ret(i32(0))

    is_edge_n = b.icmp_unsigned("==", wx, i64(grid[0] - 1))
    if rows_scale:  # the last row tile holds rows - last * tile rows (when not a whole tile)
        rows = b.mul(dim, i64(rows_scale))
        last = b.sub(b.udiv(b.add(rows, i64(tile[0] - 1)), i64(tile[0])), i64(1))
        tm = b.sub(rows, b.mul(last, i64(tile[0])))
        partial = b.and_(b.icmp_unsigned("==", wy, last), b.icmp_unsigned("!=", tm, i64(tile[0])))
        with b.if_then(partial):
            if edge_n != tile[1]:
                with b.if_then(is_edge_n):
                    b.call(rows_tile_function(edge_n), [*args, tm])
                    b.ret(i32(0))
            b.call(rows_tile_function(tile[1]), [*args, tm])
            b.ret(i32(0))
        edge_m = tile[0]  # every other row tile is whole
    is_edge_m = b.icmp_unsigned("==", wy, i64(grid[1] - 1))
    if edge_m != tile[0] and edge_n != tile[1]:
        with b.if_then(b.and_(is_edge_m, is_edge_n)):
            run_tile(edge_m, edge_n)
    if edge_m != tile[0]:
        with b.if_then(is_edge_m):
            run_tile(edge_m, tile[1])
    if edge_n != tile[1]:
        with b.if_then(is_edge_n):
            run_tile(tile[0], edge_n)
    run_tile(*tile)
    return GeneratedKernel(name, str(module), grid, local_memory_size, len(pointers), config)


def generate_matmul(
    m: int,
    n: int,
    k: int,
    *,
    batch: int = 1,
    accumulate: bool = False,
    epilogue: Epilogue | None = None,
    extra_bindings: Sequence[int] = (),
    config: MatmulConfig | None = None,
    b_panel: int = 0,
    name: str = "matmul",
    runtime: RuntimeExtents | None = None,
) -> GeneratedKernel:
    """Generate the LLVM IR of C (+)= A @ B (+ epilogue) for static shapes; compile it with
    `jit.compile_ir(kernel.ir)` and dispatch `kernel.workgroup_count` workgroups with
    `kernel.local_memory_size` bytes of local memory.

    `extra_bindings` lists, for each binding after C, how many floats it must hold (a bias
    of N floats: `(n,)`); the kernel returns ERROR_BINDING_TOO_SHORT rather than read past a
    short binding. `config` overrides `choose_config` (for measurements). `b_panel` = NR: binding
    1 holds `pack_weights(B, NR)` (one B shared by all batches), NR being `panel_width(m, n, k)`.
    """
    if min(m, n, k, batch) < 1:
        raise ValueError(f"generate_matmul: every dimension must be >= 1, got M={m} N={n} K={k} batch={batch}")
    cfg = config or choose_config(m, n, k, packed=bool(b_panel))
    if b_panel and (b_panel != cfg.nr or cfg.stream_rows or cfg.pack_b):
        raise ValueError(f"generate_matmul: B packed in {b_panel}-wide panels does not fit the tiling {cfg}")
    gen = _Generator(m, n, k, batch, accumulate, epilogue, tuple(extra_bindings), cfg, name, bool(b_panel))
    return gen.kernel(runtime)
