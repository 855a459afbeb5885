"""Row fusion: a chain of dispatches over the same rows merged into one `RowBody` region.

Fusion (passes/fusion.py) emits a softmax over the last dim as four dispatches (the max of each
row, exp(x - max) into a temporary because two ops read it, its sum, the divide) and a layernorm
as five; each streams the whole tensor through memory, so a softmax over 64 MB reads or writes
about 320 MB. Where a row fits in cache, one dispatch whose workgroups own whole rows reads each
row from memory once: the chain's folds and elementwise steps then run over a row in cache.

A chain is a run of consecutive dispatches over rows `lead` x `n` (the last dim) (one that reads
nothing the chain wrote joins too: jnp.var folds x again for its own mean):
- a fold along the last dim (a `ReductionBody` reducing only it, with one add / multiply /
  maximum / minimum accumulator) becomes a fold step; its outputs become per-row values;
- an elementwise region over the rows themselves (shape `lead`, unit dims aside: mean's divide,
  rsqrt(var + eps)) becomes per-row value steps;
- an elementwise region over the full rows (unit dims aside: a layernorm's output seen as the
  matrix a Gemm takes) becomes output expressions.
What the chain writes and only the chain reads disappears: a per-row value becomes an `Arg`, a
full-row temporary is recomputed from its expression where it is read (its loads go to the
chain's inputs, which the row keeps in cache). Anything read after the chain is still written.
A dispatch that reads a chain temporary any other way (transposed, shifted) ends the chain.
"""

from __future__ import annotations

import dataclasses
import math

from compiler import kernel_ir as kir
from compiler.passes.fusion import Dispatch, Partition
from compiler.passes.index_exprs import reads_point, space_coords


class _NoJoin(Exception):
    """The dispatch cannot join the chain (raised while translating it, before any commit)."""


def _fold_op(body: kir.ReductionBody) -> str | None:
    """The ROW_FOLDS op of a single-accumulator fold of its one element, or None."""
    if len(body.combiner) != 1 or len(body.inputs) != 1 or not isinstance(body.inits[0], kir.Const):
        return None
    if not kir.is_float(body.inputs[0].dtype):  # the identities of ROW_FOLDS are float ones
        return None
    node = body.combiner[0]
    if not (isinstance(node, kir.Compute) and node.op in kir.ROW_FOLDS):
        return None
    if sorted(x.index for x in node.operands if isinstance(x, kir.Arg)) != [0, 1]:
        return None
    return node.op


class _Chain:
    """The RowBody being built from dispatches over rows `lead` x `n`."""

    def __init__(self, lead: tuple[int, ...], n: int) -> None:
        self.lead, self.n = lead, n
        self.shape = lead + (n,)
        self.members: list[Dispatch] = []
        self.decls: list[kir.BindingDecl] = []
        self.tensors: list[int] = []
        self.slots: dict[tuple[int, tuple[int, ...]], int] = {}
        self.steps: list[kir.Expr] = []
        self.ops: list[str] = []
        self.full: dict[int, tuple[kir.Expr, kir.BindingDecl]] = {}  # tensor -> expression, decl
        self.values: dict[int, tuple[kir.Arg, kir.BindingDecl]] = {}  # tensor -> row value, decl

    # -- translation of one dispatch's expressions into the chain's ---------------------------
    def _slot(self, tensor: int, decl: kir.BindingDecl) -> int:
        key = (tensor, decl.shape)
        if key not in self.slots:
            self.slots[key] = len(self.decls)
            self.decls.append(kir.BindingDecl(decl.shape, decl.dtype))
            self.tensors.append(tensor)
        return self.slots[key]

    def _row_coords(self) -> list[kir.Expr]:
        return [kir.Coord(d) for d in range(len(self.lead))]

    def _translate(self, node, d: Dispatch, coords: list[kir.Expr], args: list[kir.Expr] | None, memo: dict):
        if id(node) in memo:
            return memo[id(node)]
        if isinstance(node, kir.Coord):
            out = coords[node.dim]
        elif isinstance(node, kir.Arg):
            if args is None:
                raise _NoJoin
            out = args[node.index]
        elif isinstance(node, kir.Compute):
            out = kir.Compute(node.op, tuple(self._translate(x, d, coords, args, memo) for x in node.operands),
                              node.dtype, node.attr)
        elif isinstance(node, kir.Load):
            tensor, decl = d.tensors[node.binding], d.region.bindings[node.binding]
            index = [self._translate(x, d, coords, args, memo) for x in node.index]
            if tensor in self.full:
                if self._point_space(decl.shape) is None or not self._is_point(decl.shape, index):
                    raise _NoJoin
                out = self.full[tensor][0]
            elif tensor in self.values:
                if not reads_point(decl.shape, index, self.lead):
                    raise _NoJoin
                out = self.values[tensor][0]
            else:
                out = kir.Load(self._slot(tensor, decl), tuple(index), node.dtype)
        else:
            out = node
        memo[id(node)] = out
        return out

    def _row_space(self, shape: tuple[int, ...]) -> list[kir.Expr] | None:
        """Coords of an iteration space over the rows themselves, in the chain's row Coords."""
        return space_coords(shape, self.lead)

    def _point_space(self, shape: tuple[int, ...]) -> list[kir.Expr] | None:
        """Coords of an iteration space over the rows' points (the chain's shape, unit dims aside:
        a layernorm's output seen as a matrix for the next Gemm), in the chain's Coords."""
        return space_coords(shape, self.shape) if shape[-1:] == self.shape[-1:] else None

    def _is_point(self, shape: tuple[int, ...], index: list[kir.Expr]) -> bool:
        return shape[-1:] == self.shape[-1:] and reads_point(shape, index, self.shape)

    def _value(self, expr: kir.Expr) -> kir.Arg:
        if isinstance(expr, kir.Arg):
            return expr
        self.steps.append(expr)
        self.ops.append("value")
        return kir.Arg(len(self.steps) - 1, expr.dtype)

    # -- joining ------------------------------------------------------------------------------
    def join(self, d: Dispatch) -> bool:
        """Add `d` to the chain if it fits (False leaves the chain as it was)."""
        saved = (len(self.decls), len(self.steps), dict(self.full), dict(self.values))
        try:
            self._join(d)
        except _NoJoin:
            del self.decls[saved[0]:], self.tensors[saved[0]:], self.steps[saved[1]:], self.ops[saved[1]:]
            self.slots = {k: v for k, v in self.slots.items() if v < saved[0]}
            self.full, self.values = saved[2], saved[3]
            return False
        self.members.append(d)
        return True

    def _join(self, d: Dispatch) -> None:
        body, memo = d.region.body, {}
        identity = [kir.Coord(e) for e in range(len(self.shape))]
        if isinstance(body, kir.ReductionBody):
            op = _fold_op(body)
            if op is None or body.shape != self.shape or body.reduced != (len(self.lead),):
                raise _NoJoin
            self.steps.append(self._translate(body.inputs[0], d, identity, None, memo))
            self.ops.append(op)
            acc = kir.Arg(len(self.steps) - 1, body.inputs[0].dtype)
            init = body.inits[0]
            if init.value != kir.ROW_FOLDS[op]:
                acc = self._value(kir.Compute(op, (acc, init), acc.dtype))
            for slot, expr in zip(body.output_bindings, body.outputs):
                value = self._translate(expr, d, self._row_coords(), [acc], {})
                self.values[d.tensors[slot]] = (self._value(value), d.region.bindings[slot])
        elif isinstance(body, kir.ElementwiseBody) and (coords := self._point_space(body.shape)) is not None:
            for slot, expr in zip(body.output_bindings, body.outputs):
                decl = dataclasses.replace(d.region.bindings[slot], shape=self.shape)  # the same bytes
                self.full[d.tensors[slot]] = (self._translate(expr, d, coords, None, memo), decl)
        elif isinstance(body, kir.ElementwiseBody) and (coords := self._row_space(body.shape)) is not None:
            for slot, expr in zip(body.output_bindings, body.outputs):
                value = self._translate(expr, d, coords, None, memo)
                self.values[d.tensors[slot]] = (self._value(value), d.region.bindings[slot])
        else:
            raise _NoJoin

    # -- the region ----------------------------------------------------------------------------
    def row_bytes(self) -> int:
        """Bytes of one row of every full-row input: what the row's steps keep in cache."""
        return self.n * sum(decl.dtype.itemsize for decl in self.decls if decl.shape == self.shape)

    def region(self, live: set[int]) -> Dispatch:
        """One dispatch for the chain, writing the tensors in `live` (read after it)."""
        decls, tensors = list(self.decls), list(self.tensors)
        outputs, output_slots, row_outputs, row_slots = [], [], [], []
        for table, exprs, slots in ((self.full, outputs, output_slots), (self.values, row_outputs, row_slots)):
            for tensor, (expr, decl) in table.items():
                if tensor in live:
                    exprs.append(expr)
                    slots.append(len(decls))
                    decls.append(dataclasses.replace(decl, output=True))
                    tensors.append(tensor)
        rows = math.prod(self.lead)
        grid = kir.Grid(rows, self.n, max(1, min(rows, 16384 // self.n)), self.n)
        body = kir.RowBody(self.shape, tuple(self.steps), tuple(self.ops), tuple(outputs), tuple(output_slots),
                           tuple(row_outputs), tuple(row_slots), grid)
        # The first member's name: the profiler names regions after the ops fusion gave them.
        return Dispatch(kir.KernelRegion(self.members[0].region.name, tuple(decls), body), tuple(tensors))


def _start(d: Dispatch, max_row_bytes: int) -> _Chain | None:
    body = d.region.body
    if isinstance(body, kir.ReductionBody):
        if _fold_op(body) is None or body.reduced != (len(body.shape) - 1,):
            return None
    elif not isinstance(body, kir.ElementwiseBody):
        return None
    shape = body.shape
    if not shape or shape[-1] < 2 or shape[-1] * 4 > max_row_bytes:
        return None
    chain = _Chain(tuple(shape[:-1]), shape[-1])
    return chain if chain.join(d) else None


def fuse_rows(part: Partition, max_row_bytes: int) -> Partition:
    """`part` with every chain of row-wise dispatches (module docstring) that folds at least once
    merged into one RowBody dispatch, where one row of its full-row inputs takes at most
    `max_row_bytes` (the cache a row's steps run in)."""
    readers: dict[int, list[int]] = {}
    for i, d in enumerate(part.dispatches):
        for t, decl in zip(d.tensors, d.region.bindings):
            if not decl.output:
                readers.setdefault(t, []).append(i)
    results = {t for t, _ in part.results}
    out: list[Dispatch] = []
    i = 0
    while i < len(part.dispatches):
        chain = _start(part.dispatches[i], max_row_bytes)
        if chain is not None:
            for d in part.dispatches[i + 1:]:
                if not chain.join(d):
                    break
        members = len(chain.members) if chain else 0
        folds = chain is not None and any(op in kir.ROW_FOLDS for op in chain.ops)
        if members < 2 or not folds or chain.row_bytes() > max_row_bytes:
            out.append(part.dispatches[i])
            i += 1
            continue
        end = i + members
        live = {t for t in list(chain.full) + list(chain.values)
                if t in results or any(r >= end for r in readers.get(t, ()))}
        out.append(chain.region(live))
        i = end
    return Partition(list(part.tensors), out, list(part.results))

