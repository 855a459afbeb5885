"""The host program of a compiled function, and the lowering of control flow into it.

A host program is a list of steps over the function's buffers (`fusion.Tensor`s):

    DispatchRecord  run a kernel on a grid with buffers bound to its slots
    CopyRecord      copy one whole buffer into another of the same byte size
    JumpRecord      go to step `target` (len(program): the end), always or when the scalar in a
                    predicate buffer equals `equals`

`barrier_before` on a dispatch or a copy orders it after everything before it; a jump, and every
step a jump lands on, is a barrier by itself. A function without control flow is one straight
list of dispatches, exactly as fusion partitions it.

Control flow (StableHLO `while`, `case`, `if`, and a `call` whose callee has any) is lowered by
splitting each body at its control-flow ops into straight-line *segments*; each segment is
partitioned by fusion as a function of its own (arguments: the values it reads from outside;
results: the values used after it), and the structure becomes jumps:

    while   init copies -> carried buffers C;  cond segment -> P;  jump end if P == 0;
            top: body and the cond again over its results -> R, P';  copies R -> C;
            jump end if P' == 0;  jump top;  end:                     (results: C)
    case    jump B_k if index == k (k < n-1); jump B_{n-1} (StableHLO: an index out of range
            runs the last branch);  B_k: branch k;  copies -> results;  jump end;  end:
    if      jump F if pred == 0;  true branch;  copies;  jump end;  F: false branch;  copies;  end:
    call    its callee's body, inlined with the call's operands as its arguments

Loop-carried values live in buffers of their own that the body's results are copied into at the
end of each iteration (a result that is another carried buffer goes through a scratch copy first,
so a rotation of carried values is right). A runtime may run this program anywhere: the CPU
drivers record it into one command buffer whose jumps the scheduler evaluates between regions
(no host round trip per iteration); other drivers run the straight stretches as command buffers
and evaluate the jumps on the host (fibergrid/module.py).
"""

from __future__ import annotations

import math
from collections import ChainMap
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence, Union

import numpy as np

from compiler.errors import CompileError
from compiler.ir import Function, Module, Op, TensorType, Value
from compiler.passes.fusion import Dispatch, Partition, Tensor, partition

CONTROL_OPS = ("while", "case", "if")


@dataclass(frozen=True)
class DispatchRecord:
    """One dispatch of the host program; `tensors[i]` is the Tensor id bound to slot i."""

    entry: str
    workgroup_count: tuple[int, int, int]
    tensors: tuple[int, ...]
    barrier_before: bool


@dataclass(frozen=True)
class CopyRecord:
    """Copy all bytes of Tensor `source` into Tensor `target` (same byte size)."""

    source: int
    target: int
    barrier_before: bool


@dataclass(frozen=True)
class JumpRecord:
    """Go to step `target`; with `predicate` >= 0 only when that Tensor's scalar equals `equals`."""

    target: int
    predicate: int = -1
    equals: int = 0


Step = Union[DispatchRecord, CopyRecord, JumpRecord]


def has_jumps(program: Sequence[Step]) -> bool:
    return any(isinstance(s, JumpRecord) for s in program)


def check_program(program: Sequence[Step], tensors: Sequence[Tensor], origin: str) -> None:
    """Raises CompileError unless every step names existing tensors and jump targets, and every
    copy and predicate has a size it can have (a damaged .fgx must fail here, not on a device)."""
    n = len(tensors)
    for i, t in enumerate(tensors):
        if t.id != i:
            raise CompileError(f"{origin}: tensor {i} has id {t.id}")

    def tensor(t: int, what: str) -> Tensor:
        if not 0 <= t < n:
            raise CompileError(f"{origin}: {what} names tensor {t}, which is missing (the function has {n})")
        return tensors[t]

    for i, s in enumerate(program):
        if isinstance(s, DispatchRecord):
            for t in s.tensors:
                tensor(t, f"step {i} ({s.entry})")
        elif isinstance(s, CopyRecord):
            a, b = tensor(s.source, f"copy step {i}"), tensor(s.target, f"copy step {i}")
            if _nbytes(a) != _nbytes(b):
                raise CompileError(f"{origin}: copy step {i}: {_nbytes(a)} bytes into a buffer of {_nbytes(b)}")
        elif isinstance(s, JumpRecord):
            if not 0 <= s.target <= len(program):
                raise CompileError(f"{origin}: jump step {i} targets step {s.target} of {len(program)}")
            if not -(1 << 63) <= s.equals < (1 << 63):
                raise CompileError(f"{origin}: jump step {i}: equals {s.equals} is not a 64-bit integer")
            if s.predicate >= 0:
                p = tensor(s.predicate, f"jump step {i}")
                if math.prod(p.shape) != 1 or p.dtype.kind not in "biu":
                    raise CompileError(f"{origin}: jump step {i}: predicate tensor {s.predicate} is "
                                       f"{p.shape} {p.dtype}, not an integer or i1 scalar")
        else:
            raise CompileError(f"{origin}: step {i} is {type(s).__name__}, not a dispatch, copy or jump")


def _nbytes(t: Tensor) -> int:
    return math.prod(t.shape) * np.dtype(t.dtype).itemsize


# ------------------------------------------------------------------------------------------------
# Lowering


@dataclass(frozen=True)
class _Copy:
    source: int
    target: int


@dataclass(frozen=True)
class _Jump:
    label: int
    predicate: int = -1
    equals: int = 0


@dataclass(frozen=True)
class _Label:
    id: int


@dataclass
class Lowered:
    """A function's buffers, its steps with fusion's dispatches not yet code-generated (and
    labels instead of step indices), and per result the tensor holding it and its shape."""

    tensors: list[Tensor] = field(default_factory=list)
    items: list = field(default_factory=list)  # Dispatch | _Copy | _Jump | _Label
    results: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)

    @property
    def dispatches(self) -> list[Dispatch]:
        return [i for i in self.items if isinstance(i, Dispatch)]


def _uses(ops: Iterable[Op]) -> set[Value]:
    """Every value read by `ops`, their nested regions included (case branches capture)."""
    used: set[Value] = set()
    for op in ops:
        used.update(op.operands)
        for r in op.regions:
            used |= _uses(r.ops)
            used.update(r.results)
    return used


class _Lowerer:
    def __init__(self, module: Module, function: str, prepare: Callable[[Partition], Partition]) -> None:
        self.module = module
        self.prepare = prepare
        self.name = function
        self.out = Lowered()
        self.segments = 0
        self.labels = 0
        self._control: dict[str, bool] = {}

    def is_control(self, op: Op) -> bool:
        if op.name in CONTROL_OPS:
            return True
        return op.name == "call" and self.callee_has_control(op.attrs["callee"])

    def callee_has_control(self, name: str) -> bool:
        if name not in self._control:
            self._control[name] = False  # a recursive call graph is not StableHLO; stop anyway
            self._control[name] = any(self.is_control(op) or any(self.region_has_control(r) for r in op.regions)
                                      for op in self.module.function(name).ops)
        return self._control[name]

    def region_has_control(self, region) -> bool:
        return any(self.is_control(op) or any(self.region_has_control(r) for r in op.regions) for op in region.ops)

    def tensor(self, shape: Sequence[int], dtype: np.dtype, kind: str = "temp", **kw) -> int:
        t = Tensor(len(self.out.tensors), tuple(int(d) for d in shape), np.dtype(dtype), kind, **kw)
        self.out.tensors.append(t)
        return t.id

    def new_label(self) -> int:
        self.labels += 1
        return self.labels

    def run(self) -> Lowered:
        fn = self.module.function(self.name)
        env: ChainMap = ChainMap()
        for i, a in enumerate(fn.args):
            env[a] = self.tensor(a.type.shape, a.type.dtype, "input", input_index=i)
        simple = not any(self.is_control(op) for op in fn.ops)
        results = self.scope(fn.ops, fn.results, env, leading=fn.args, name=self.name if simple else None)
        self.out.results = [(t, tuple(v.type.shape)) for t, v in zip(results, fn.results)]
        return self.out

    def scope(self, ops: list[Op], results: list[Value], env: ChainMap, leading: Sequence[Value] = (),
              name: str | None = None) -> list[int]:
        """Lowers a body; returns the tensor of each of its results."""
        start = 0
        constants = {op.results[0]: op.attrs["value"] for op in ops if op.name == "constant"}
        for j, op in enumerate(ops):
            if self.is_control(op):
                self.segment(ops[start:j], ops[j:], results, env, leading, name)
                leading = ()
                self.control(op, env, constants)
                start = j + 1
        self.segment(ops[start:], [], results, env, leading, name)
        return [env[v] for v in results]

    def segment(self, ops: list[Op], later: list[Op], results: list[Value], env: ChainMap,
                leading: Sequence[Value], name: str | None) -> None:
        """Partitions straight-line `ops` as a function of the values it reads from outside."""
        if not ops:
            return
        if name is None:
            needed = _uses(later) | set(results)
            outs = [r for op in ops for r in op.results if r in needed]
            name = f"{self.name}_segment{self.segments}"
            self.segments += 1
        else:  # the whole function: fusion sees it as written
            outs = list(results)
        defined = {r for op in ops for r in op.results}
        ins = list(leading)
        seen = set(ins)
        for op in ops:
            for v in [*op.operands, *(x for r in op.regions for x in _uses(r.ops) | set(r.results))]:
                if v not in defined and v not in seen and v in env:
                    ins.append(v)
                    seen.add(v)
        fn = Function(name, ins, outs, ops, False)
        part = self.prepare(partition(Module({**self.module.functions, name: fn}), name))
        remap = {}
        for t in part.tensors:
            if t.kind == "input":
                remap[t.id] = env[ins[t.input_index]]
            else:
                remap[t.id] = self.tensor(t.shape, t.dtype, t.kind, value=t.value)
        for d in part.dispatches:
            self.out.items.append(Dispatch(d.region, tuple(remap[t] for t in d.tensors)))
        for v, (t, _) in zip(outs, part.results):
            env[v] = remap[t]

    def copies(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Copies source -> target tensors as one parallel group; a source that is also a
        target (carried values rotated) is saved to a scratch buffer first."""
        pairs = [(s, t) for s, t in pairs if s != t and _nbytes(self.out.tensors[t])]
        targets = {t for _, t in pairs}
        staged = []
        for s, t in pairs:
            if s in targets:
                scratch = self.tensor(self.out.tensors[s].shape, self.out.tensors[s].dtype)
                self.out.items.append(_Copy(s, scratch))
                s = scratch
            staged.append((s, t))
        self.out.items.extend(_Copy(s, t) for s, t in staged)

    def carried(self, values: Sequence[Value]) -> list[int]:
        return [self.tensor(v.type.shape, v.type.dtype) for v in values]

    def loop(self, op: Op, env: ChainMap, constants: dict[Value, np.ndarray]) -> None:
        """A while. The cond is also cloned onto the end of the body, over the body's results,
        so the test for the next iteration fuses into the body's kernels (one region fewer per
        iteration than a separate cond segment):

            C = init;  [P = cond(C); jump end if P == 0];  top: R, P' = body(C), cond(R);
            C = R;  jump end if P' == 0;  jump top;  end:

        With a trip count known at compile time (scan, fori_loop with constant bounds) the entry
        test is dropped (T > 0), or the whole loop (T == 0)."""
        _check_while(op)
        cond, body = op.regions
        items = self.out.items
        carried = self.carried(op.operands)
        self.copies(zip((env[v] for v in op.operands), carried))
        trips = _trip_count(op, constants)
        if trips == 0:
            env.update(zip(op.results, carried))
            return
        top, end = self.new_label(), self.new_label()
        test = [*cond.ops, *_as_word(cond.results[0])]
        if trips < 0:
            [predicate] = self.scope(test, [test[-1].results[0]], env.new_child(dict(zip(cond.args, carried))))
            items.append(_Jump(end, predicate, 0))
        items.append(_Label(top))
        if any(self.is_control(o) for o in cond.ops):  # no clone of a cond with control flow in it
            out = self.scope(body.ops, body.results, env.new_child(dict(zip(body.args, carried))))
            self.copies(zip(out, carried))
            [predicate] = self.scope(test, [test[-1].results[0]], env.new_child(dict(zip(cond.args, carried))))
        else:
            again = _clone(test, dict(zip(cond.args, body.results)))
            *out, predicate = self.scope([*body.ops, *again], [*body.results, again[-1].results[0]],
                                         env.new_child(dict(zip(body.args, carried))))
            self.copies(zip(out, carried))
        items.append(_Jump(end, predicate, 0))
        items.append(_Jump(top))
        items.append(_Label(end))
        env.update(zip(op.results, carried))

    def control(self, op: Op, env: ChainMap, constants: dict[Value, np.ndarray]) -> None:
        items = self.out.items
        if op.name == "call":
            callee = self.module.function(op.attrs["callee"])
            inner: ChainMap = ChainMap(dict(zip(callee.args, (env[v] for v in op.operands))))
            env.update(zip(op.results, self.scope(callee.ops, callee.results, inner)))
        elif op.name == "while":
            self.loop(op, env, constants)
        else:  # case / if: the branches write the same result buffers
            _check_branches(op)
            results = self.carried(op.results)
            selector = op.operands[0]
            if selector.type.dtype == np.bool_:
                [word] = _as_word(selector)
                self.segment([word], [], word.results, env, (), None)
                selector = word.results[0]
            selector = env[selector]
            labels = [self.new_label() for _ in op.regions]
            end = self.new_label()
            if op.name == "if":  # regions: true, false
                items.append(_Jump(labels[1], selector, 0))
            else:
                items.extend(_Jump(labels[k], selector, k) for k in range(len(labels) - 1))
                items.append(_Jump(labels[-1]))
            for k, region in enumerate(op.regions):
                items.append(_Label(labels[k]))
                self.copies(zip(self.scope(region.ops, region.results, env.new_child()), results))
                if k < len(op.regions) - 1:
                    items.append(_Jump(end))
            items.append(_Label(end))
            env.update(zip(op.results, results))


def _trip_count(op: Op, constants: dict[Value, np.ndarray]) -> int:
    """The trip count of a `while` in the form JAX gives scan and fori_loop with constant bounds
    (counter k starts at a constant, the cond is k < a constant, the body adds 1 to k); -1 for
    any other loop."""
    cond, body = op.regions
    local = {o.results[0]: o for o in [*cond.ops, *body.ops] if len(o.results) == 1}

    def constant(v: Value) -> int | None:
        o = local.get(v)
        value = o.attrs["value"] if o is not None and o.name == "constant" else constants.get(v)
        if value is None or np.asarray(value).size != 1 or np.asarray(value).dtype.kind not in "iu":
            return None
        return int(np.asarray(value).reshape(()))

    test = local.get(cond.results[0])
    if test is None or test.name != "compare" or test.attrs.get("comparison_direction") != "LT" \
            or test.attrs.get("compare_type", "SIGNED") != "SIGNED" or test.operands[0] not in cond.args:
        return -1
    k = cond.args.index(test.operands[0])
    bound, start = constant(test.operands[1]), constant(op.operands[k])
    step = local.get(body.results[k])
    if bound is None or start is None or step is None or step.name != "add" or body.args[k] not in step.operands:
        return -1
    other = step.operands[1] if step.operands[0] is body.args[k] else step.operands[0]
    if constant(other) != 1:
        return -1
    return max(0, bound - start)


def _clone(ops: list[Op], values: dict[Value, Value]) -> list[Op]:
    """`ops` again, reading `values[v]` for each operand v it maps, with results of their own.
    (Nested regions are shared: those of straight-line ops use only their own arguments.)"""
    out = []
    for op in ops:
        results = [Value(r.type, r.name) for r in op.results]
        out.append(Op(op.name, [values.get(v, v) for v in op.operands], results, op.attrs, op.regions, op.loc))
        values.update(zip(op.results, results))
    return out


def _as_word(predicate: Value) -> list[Op]:
    """An op converting an i1 predicate to i32: predicates are read as words (WebGPU kernels
    have no 8-bit stores)."""
    return [Op("convert", [predicate], [Value(TensorType((), np.dtype(np.int32)), predicate.name)])]


def _check_while(op: Op) -> None:
    if len(op.regions) != 2:
        raise CompileError(f"{op.where()}: a while has a cond and a body region, this one has {len(op.regions)}")
    cond, body = op.regions
    if len(cond.results) != 1 or cond.results[0].type.shape != () or cond.results[0].type.dtype != np.bool_:
        got = ", ".join(str(v.type) for v in cond.results) or "nothing"
        raise CompileError(f"{op.where()}: the cond region must return one tensor<i1>, it returns {got}")
    types = [v.type for v in op.operands]
    for what, values in (("cond arguments", cond.args), ("body arguments", body.args), ("body results", body.results)):
        if [v.type for v in values] != types:
            raise CompileError(f"{op.where()}: the {what} ({', '.join(str(v.type) for v in values)}) do not match "
                               f"the carried values ({', '.join(str(t) for t in types)})")


def _check_branches(op: Op) -> None:
    selector = op.operands[0].type if op.operands else None
    if op.name == "if":
        if selector is None or selector.shape != () or selector.dtype != np.bool_ or len(op.regions) != 2:
            raise CompileError(f"{op.where()}: an if takes a tensor<i1> predicate and two branches")
    elif selector is None or selector.shape != () or selector.dtype.kind not in "iu" or not op.regions:
        got = "nothing" if selector is None else str(selector)
        raise CompileError(f"{op.where()}: a case takes a scalar integer index (got {got}) and at least one branch")
    types = [v.type for v in op.results]
    for k, region in enumerate(op.regions):
        if [v.type for v in region.results] != types:
            raise CompileError(f"{op.where()}: branch {k} returns ({', '.join(str(v.type) for v in region.results)}), "
                               f"the op's results are ({', '.join(str(t) for t in types)})")


def lower(module: Module, function: str, prepare: Callable[[Partition], Partition] = lambda p: p) -> Lowered:
    """The buffers and steps of the static `function` of `module` (shape_inference.specialize's
    output); a function without control flow is exactly fusion's partition of it. `prepare`
    rewrites each partition as the target's kernels want it (llvm_cpu.prepare)."""
    return _Lowerer(module, function, prepare).run()


def assemble(lowered: Lowered, kernels: Sequence) -> tuple[Step, ...]:
    """The final steps: a DispatchRecord per dispatch (`kernels[i]`, with `name` and
    `workgroup_count`, is the i-th dispatch's code; empty grids are dropped), barriers only where
    a step touches a buffer a step since the last barrier writes, or writes one it reads; labels
    resolved to step indices."""
    steps: list = []
    at: dict[int, int] = {}
    written: set[int] = set()
    read: set[int] = set()
    kernel = iter(kernels)
    for item in lowered.items:
        if isinstance(item, _Label):
            at[item.id] = len(steps)
            written, read = set(), set()
            continue
        if isinstance(item, _Jump):
            steps.append(item)
            written, read = set(), set()
            continue
        if isinstance(item, Dispatch):
            k = next(kernel)
            if 0 in k.workgroup_count:
                continue  # an empty grid: nothing to run (fusion drops those writing nothing)
            outs = {t for t, decl in zip(item.tensors, item.region.bindings) if decl.output}
            ins = set(item.tensors) - outs
        else:
            ins, outs = {item.source}, {item.target}
        barrier = bool(written & (ins | outs)) or bool(read & outs)
        if barrier:
            written, read = set(), set()
        written |= outs
        read |= ins
        steps.append(DispatchRecord(k.name, k.workgroup_count, item.tensors, barrier) if isinstance(item, Dispatch)
                     else CopyRecord(item.source, item.target, barrier))
    return tuple(JumpRecord(at[s.label], s.predicate, s.equals) if isinstance(s, _Jump) else s for s in steps)
