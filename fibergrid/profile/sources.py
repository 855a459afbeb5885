"""Source names and work per kernel: which StableHLO ops a dispatch region came from, and the
flops and bytes of the region, for the per-dispatch table.

The compiler does not carry this yet: `KernelRegion` deliberately knows nothing of its source
and `DispatchRecord` only has the entry name (FUNCTION_dispatch_N_KIND). The fusion pass is
deterministic, so this module re-runs it (read-only use of the compiler: parse, specialize,
partition) with an observing subclass of its walker that records, for each region it emits, the
ops whose expressions the region lowered, the matmul or fold (with its absorbed epilogue) it
flushed, and the op being walked. Op locations are (line, col) in the source text; where JAX
printed debug locations (`as_text(debug_info=True)`: `loc(#loc21)` with
`#loc21 = loc("jit(f)/dot_general"(...))`), the JAX name and Python file:line are added.

If the compiler changes shape under this (it is private API), `kernel_sources` returns {} and
the profile falls back to entry names: naming must never break a profile. The proper fix is for
the compiler to put `source_ops` on each DispatchRecord (see the report of issue 11).
"""

from __future__ import annotations

import math
import re
from typing import Any

from fibergrid.profile.naming import KernelSource

_LOC_DEF = re.compile(r"^(#loc\d*)\s*=\s*loc\((.*)\)\s*$")
_LOC_USE = re.compile(r"loc\((#loc\d*)\)\s*$")
_NAME = re.compile(r'^"([^"]*)"\((.*)\)$')
_FILE = re.compile(r'^"([^"]*)":(\d+):(\d+)')
_REFS = re.compile(r"#loc\d*")

# Ops that do no work of their own in a region: left out of labels unless nothing else is there.
_FREE = {"constant", "broadcast_in_dim", "reshape", "transpose", "convert", "iota", "slice", "pad",
         "concatenate", "reverse", "bitcast_convert", "dynamic_slice", "gather", "dynamic_update_slice"}
# How a label picks its lead op: the most expensive kind first.
_RANK = {"convolution": 0, "dot_general": 1, "sort": 2, "reduce_window": 3, "reduce": 4}


class _Locations:
    """JAX debug locations of a StableHLO text: `#locN` aliases resolved to (name, file:line)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.defs: dict[str, str] = {}
        for line in self.lines:
            m = _LOC_DEF.match(line.strip())
            if m:
                self.defs[m.group(1)] = m.group(2)

    def _resolve(self, body: str, depth: int = 0) -> tuple[str | None, str | None]:
        if depth > 20:
            return None, None
        body = body.strip()
        if body.startswith("#loc"):
            return self._resolve(self.defs.get(body, ""), depth + 1)
        m = _FILE.match(body)
        if m:
            return None, f"{m.group(1).rsplit('/', 1)[-1]}:{m.group(2)}"
        name, where = None, None
        m = _NAME.match(body)
        if m:
            name = m.group(1)
            _, where = self._resolve(m.group(2), depth + 1)
            return name, where
        for ref in _REFS.findall(body):  # callsite(#a at #b): the callee first
            n, w = self._resolve(ref, depth + 1)
            name, where = name or n, where or w
            if name and where:
                break
        return name, where

    def of(self, loc: tuple[int, int] | None) -> tuple[str | None, str | None]:
        """(JAX name, file:line) of the op at `loc` (1-based line, col), when it was printed."""
        if not loc or not 0 < loc[0] <= len(self.lines):
            return None, None
        m = _LOC_USE.search(self.lines[loc[0] - 1])
        return self._resolve(m.group(1)) if m else (None, None)


class _OnnxLocations:
    """ONNX ops carry loc = (node index + 1, 0) (frontends/onnx/graph.py): the node's type and
    name are the model's own names for what a region computes."""

    def __init__(self, model: Any) -> None:
        self.nodes = list(model.graph.node)

    def node(self, loc: tuple[int, int] | None) -> tuple[str, str] | None:
        if not loc or not 0 < loc[0] <= len(self.nodes):
            return None
        n = self.nodes[loc[0] - 1]
        return n.op_type, n.name or n.output[0]

    def of(self, loc: tuple[int, int] | None) -> tuple[str | None, str | None]:
        node = self.node(loc)
        return (f"{node[0]} {node[1]}", None) if node else (None, None)


def _onnx_label(ops: list[Any], locs: _OnnxLocations) -> tuple[str, tuple[str, ...]]:
    """'Conv /resnet/embedder/Conv +2 nodes': the region's costliest node, and how many more."""
    nodes = list(dict.fromkeys(n for n in (locs.node(op.loc) for op in sorted(ops, key=lambda o: o.loc or (0, 0))) if n))
    if not nodes:
        return _label(ops, None)
    work = [op for op in ops if op.name not in _FREE] or ops
    lead_op = min(work, key=lambda op: (_RANK.get(op.name, 9), op.loc or (0, 0)))
    lead = locs.node(lead_op.loc) or nodes[0]
    label = f"{lead[0]} {lead[1]}" + (f" +{len(nodes) - 1} nodes" if len(nodes) > 1 else "")
    return label, tuple(f"{t} {n}" for t, n in nodes)


def _body_flops(body: Any, kir: Any) -> int | None:
    """Arithmetic operations one run of the region does (multiply-add = 2), where known."""
    if isinstance(body, kir.MatmulBody):
        return 2 * body.batch * body.m * body.n * body.k + (body.batch * body.m * body.n * len(body.epilogue))
    if isinstance(body, kir.ConvBody):
        n, h, w, c = body.input_shape
        kh, kw, ci, co = body.filter_shape
        (pt, pb), (pl, pr) = body.padding
        (sh, sw), (dh, dw) = body.strides, body.dilation
        oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
        return 2 * n * max(oh, 0) * max(ow, 0) * co * kh * kw * ci
    if isinstance(body, (kir.ElementwiseBody, kir.ReductionBody)):
        seen: set[int] = set()

        def count(node: Any) -> int:
            if id(node) in seen:
                return 0
            seen.add(id(node))
            if isinstance(node, kir.Compute):
                here = 1 if node.dtype != kir.INDEX else 0
                return here + sum(count(x) for x in node.operands)
            return 0  # loads' index arithmetic is addressing, not work

        if isinstance(body, kir.ElementwiseBody):
            return math.prod(body.shape) * sum(count(x) for x in body.outputs)
        per_point = sum(count(x) for x in body.inputs) + sum(count(x) for x in body.combiner)
        out = math.prod(n for d, n in enumerate(body.shape) if d not in body.reduced)
        return math.prod(body.shape) * per_point + out * sum(count(x) for x in body.outputs)
    return None


def _observed_fuser(fusion: Any) -> type:
    class Observed(fusion._Fuser):  # noqa: SLF001 — read-only reuse of the compiler's walk
        def __init__(self, fn: Any) -> None:
            super().__init__(fn)
            self.node_op: dict[int, Any] = {}
            self.keep: list[Any] = []  # nodes stay alive: their ids must not be reused
            self.owner_ops: dict[int, list[Any]] = {}  # id(pending matmul or fold) -> its ops
            self.current = None
            self.flushing = None
            self.region_ops: dict[str, tuple[list[Any], Any]] = {}

        def _note(self, op: Any, target: Any) -> None:
            if target is not None:
                self.owner_ops.setdefault(id(target), []).append(op)
                self.keep.append(target)

        def expression(self, op: Any, operands: list) -> Any:
            node = super().expression(op, operands)
            if node is not None and id(node) not in self.node_op:
                self.node_op[id(node)] = op
                self.keep.append(node)
            return node

        def op(self, op: Any) -> None:
            self.current = op
            super().op(op)
            for r in op.results:
                self._note(op, self.pending.get(r) or self.pending_folds.get(r))

        def absorb_epilogue(self, op: Any) -> bool:
            done = super().absorb_epilogue(op)
            if done:
                self._note(op, self.pending.get(op.results[0]))
            return done

        def absorb_into_fold(self, op: Any) -> bool:
            done = super().absorb_into_fold(op)
            if done:
                self._note(op, self.pending_folds.get(op.results[0]))
            return done

        def flush(self, v: Any) -> None:
            outer, self.flushing = self.flushing, self.pending_folds.get(v) or self.pending.get(v)
            try:
                super().flush(v)
            finally:
                self.flushing = outer

        def add_dispatch(self, kind: str, regs: Any, body: Any) -> None:
            ops = list(self.owner_ops.get(id(self.flushing), [])) if self.flushing is not None else []
            if kind in ("conv", "sort") and self.current is not None:
                ops.append(self.current)
            ops += [self.node_op[k] for k in regs.memo if k in self.node_op]
            before = len(self.part.dispatches)
            super().add_dispatch(kind, regs, body)
            if len(self.part.dispatches) > before:
                region = self.part.dispatches[-1].region
                self.region_ops[region.name] = (ops or ([self.current] if self.current else []), region)

    return Observed


def _label(ops: list[Any], locs: _Locations | None) -> tuple[str, tuple[str, ...]]:
    unique = list({id(op): op for op in ops}.values())
    unique.sort(key=lambda op: op.loc or (0, 0))
    work = [op for op in unique if op.name not in _FREE] or unique
    lead = min(work, key=lambda op: (_RANK.get(op.name, 9), op.loc or (0, 0)))
    names = [lead.name] + [op.name for op in work if op is not lead]
    short = "+".join(dict.fromkeys(names))
    if len(short) > 48:
        short = f"{lead.name}+{len(work) - 1} ops"
    where = f"@{lead.loc[0]}" if lead.loc else ""
    jax_name, py = locs.of(lead.loc) if locs else (None, None)
    extra = py or jax_name  # the Python line says more than JAX's op path, which repeats the op
    label = f"{short}{where}" + (f" ({extra})" if extra else "")
    def describe(op: Any) -> str:
        name, where = locs.of(op.loc) if locs else (None, None)
        at = f"@{op.loc[0]}:{op.loc[1]}" if op.loc else ""
        more = ", ".join(x for x in (name, where) if x)
        return f"{op.name}{at}" + (f" ({more})" if more else "")

    described = tuple(describe(op) for op in unique)
    return label, described


def kernel_sources(text: str | bytes, compiled: Any) -> dict[str, KernelSource]:
    """Entry name -> KernelSource for a CompiledFunction compiled from `text` (StableHLO, or a
    serialized ONNX model). {} when the text does not re-partition into the same entries binding
    the same shapes (never raises)."""
    try:
        from compiler import kernel_ir as kir
        from compiler import pipeline
        from compiler.passes import fusion

        module = pipeline.parse(text)
        if hasattr(pipeline, "static_module"):  # ONNX converts its graph per signature first
            static = pipeline.static_module(module, compiled.name, compiled.shapes)
        else:
            from compiler.passes.shape_inference import specialize

            static = specialize(module, compiled.name, compiled.shapes)
        walker = _observed_fuser(fusion)(fusion.inline_calls(static, static.function(compiled.name)))
        walker.run()
    except Exception:  # noqa: BLE001 — naming is best effort, never a failure of the profile
        return {}
    entries = {k.name for k in compiled.kernels}
    if not entries <= set(walker.region_ops):
        return {}
    # The same entries must bind tensors of the same shapes, or this is another model's source.
    from compiler.codegen.llvm_cpu import prepare

    part = prepare(walker.part)  # as compile_function has it: constant weights pre-packed
    shapes = {t.id: tuple(t.shape) for t in compiled.tensors}
    ours = {t.id: tuple(t.shape) for t in part.tensors}
    theirs = {rec.entry: tuple(shapes[t] for t in rec.tensors) for rec in compiled.program
              if hasattr(rec, "entry")}  # dispatches (not copies or jumps)
    mine = {d.region.name: tuple(ours[t] for t in d.tensors) for d in part.dispatches}
    if any(mine.get(entry) != bound for entry, bound in theirs.items()):
        return {}
    model = getattr(module, "model", None)
    onnx_locs = _OnnxLocations(model) if model is not None and hasattr(model, "graph") else None
    locs = None if onnx_locs else _Locations(text if isinstance(text, str) else "")
    out = {}
    for name in entries:
        ops, region = walker.region_ops[name]
        if not ops:
            label, described = name, ()
        elif onnx_locs:
            label, described = _onnx_label(ops, onnx_locs)
        else:
            label, described = _label(ops, locs)
        out[name] = KernelSource(label, described, _body_flops(region.body, kir), name.rpartition("_")[2])
    return out
