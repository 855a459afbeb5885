"""Dynamic dims compiled once: a function whose inputs have a dynamic leading dim (a batch) is
compiled for every size at once, the dim D being a run-time value, as IREE compiles them.

How. A row-major buffer whose leading dim grows keeps its strides, so a kernel over it needs
the dim's value only in its loop bounds, its grid and its binding-length checks. The function
is lowered (shapes, fusion, kernel IR) twice, with every dynamic input dim set to one of two
large sizes S1 and S2 (`SENTINELS`), and the two results are compared field by field
(`generalize`). They must be the same program except for integers that are `scale * S` in
places where a kernel can take them at run time (`_RUNTIME_FIELDS`: a buffer's leading dim, an
elementwise, reduction or row space's leading dim (never a reduced one, nor a row's length) and
its grid's rows or columns, a matmul's M or batch, a convolution's batch), or integer constants
in a kernel's expressions that are `a * S + b` (a clamp bound, an offset into a concatenation,
the dim's value as data: a third size confirms they are affine), which become `a * D + b` over
`kernel_ir.DimValue`. Every such region gets `kernel_ir.DynamicExtents` and its kernel reads D
from push constant 0; the host computes the buffer sizes and the workgroup counts from D per call
(`DynamicDims`). Anything else that moves with the size (a float constant, a reduced extent, an
inner dim, a sort, a depthwise convolution) makes the function fall back to one compile per
input-shape signature, with the reason (`NotDynamic`): the decision is made at compile time from
what the compiler produced, never guessed from the source.

Why large sizes: choices that depend on a size (tile rows clipped to the rows, a GEMV for M = 1,
whole columns per workgroup under 2 x 16384 points) take their general form above the limits,
and that form is correct for any size; two sizes rule out what only coincides at one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from compiler import kernel_ir as kir
from compiler.passes.fusion import Dispatch

# Primes above every size-dependent tiling limit (kernel_ir.tile_elementwise: 2 x 16384
# columns; matmul's small-M paths). Primes: no extent of one is a multiple of the other's by chance.
SENTINELS = (40009, 40031, 40063)  # the third only when constants move with the dim


class NotDynamic(Exception):
    """The function's code depends on its dynamic dim in a way kernels cannot take at run time;
    the message says where (it becomes FunctionEntry.dynamic_fallback)."""


@dataclass(frozen=True)
class DynamicDims:
    """How a function compiled once for a dynamic dim D becomes the program for one D: per
    tensor (buffer) and per result, its leading dim is `scale * D` (0: static); per kernel entry with a
    dynamic grid, per workgroup-count dim (scale, tile): ceil(scale * D / tile) workgroups
    (scale 0: the recorded count). `sentinel`: the size the recorded shapes were made with."""

    tensors: tuple[int, ...]
    results: tuple[int, ...]
    grids: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]
    sentinel: int


def check_leading(signature: Sequence[tuple[tuple[int | None, ...], np.dtype]]) -> None:
    """NotDynamic unless some input's dim 0 is dynamic and no other dim of any input is."""
    for i, (shape, _) in enumerate(signature):
        inner = [d for d, n in enumerate(shape) if n is None and d > 0]
        if inner:
            raise NotDynamic(f"input {i} has a dynamic dim in an inner position (dim {inner[0]}): only a leading "
                             f"(batch) dim is compiled as a run-time value")
    if not any(shape and shape[0] is None for shape, _ in signature):
        raise NotDynamic("no input has a dynamic dim")


def sentinel_shapes(signature: Sequence[tuple[tuple[int | None, ...], np.dtype]], size: int) -> tuple[tuple[int, ...], ...]:
    """The input shapes with every dynamic dim set to `size`."""
    return tuple(tuple(size if d is None else d for d in shape) for shape, _ in signature)


# Where an integer may differ between the two lowerings (path patterns over Lowered; "*" is
# any index), and which DynamicExtents field (or host table) it becomes.
_RUNTIME_FIELDS = {
    ("tensors", "*", "shape", 0): "tensor",
    ("results", "*", 1, 0): "result",
    ("items", "*", "region", "bindings", "*", "shape", 0): "binding",
    ("items", "*", "region", "body", "shape", 0): "lead",
    ("items", "*", "region", "body", "grid", "rows"): "rows",
    ("items", "*", "region", "body", "grid", "cols"): "cols",
    ("items", "*", "region", "body", "m"): "lead",
    ("items", "*", "region", "body", "batch"): "batch",
    ("items", "*", "region", "body", "input_shape", 0): "batch",  # a convolution's N (grid z)
}


def resize(shape: tuple[int, ...], scale: int, dim: int) -> tuple[int, ...]:
    """`shape` (recorded at a sentinel size) with its dynamic dim `scale * dim` (scale 0: as is)."""
    if not scale:
        return shape
    d = kir.leading_dim(shape)
    return (*shape[:d], scale * dim, *shape[d + 1:])


def _field_of(path: tuple, value_at: Any) -> str | None:
    """The run-time field an integer at `path` may be, or None. A shape entry qualifies only
    as its shape's leading dim (`value_at(path[:-1])` is the shape in the first lowering)."""
    if not path or path[0] not in ("tensors", "results", "items") or len(path) < 2:
        return None
    generic = list(path)
    generic[1] = "*"
    if path[0] == "items" and len(path) > 4 and path[3] == "bindings":
        generic[4] = "*"
    if path[-2] in ("shape", 1) and isinstance(path[-1], int):
        if path[-1] != kir.leading_dim(value_at(path[:-1])):
            return None
        generic[-1] = 0
    return _RUNTIME_FIELDS.get(tuple(generic))


def _at(root: Any, path: tuple) -> Any:
    for p in path:
        root = root[p] if isinstance(p, int) else getattr(root, p)
    return root


def _where(path: tuple, lowered: Any) -> str:
    """A readable place for a message: the kernel and field, or the buffer."""
    if path and path[0] == "items" and len(path) > 1:
        item = lowered.items[path[1]]
        if isinstance(item, Dispatch):
            rest = [str(p) for p in path[3:]]
            if len(rest) > 4:  # deep in an expression: where it starts and what it is
                rest = rest[:3] + ["..."] + rest[-1:]
            return f"kernel {item.region.name} ({type(item.region.body).__name__}): {'.'.join(rest)}"
    if len(path) == 4 and path[0] == "tensors" and path[2] == "shape":
        return f"dim {path[3]} of buffer {path[1]} {lowered.tensors[path[1]].shape} (not its leading dim)"
    return ".".join(str(p) for p in path)


_NODES = (kir.Load, kir.Const, kir.Coord, kir.Arg, kir.Compute, kir.DimValue)


class _Differ:
    """Walks two lowerings of one function in step, collecting the integers that differ."""

    def __init__(self, first: Any) -> None:
        self.first = first
        self.ints: list[tuple[tuple, int, int]] = []
        self.seen: set[tuple[int, int, int]] = set()

    def walk(self, a: Any, b: Any, path: tuple) -> None:
        if a is b and not isinstance(a, (int, np.integer, tuple, list)):  # a shared weight, dtype, ...
            return
        if isinstance(a, _NODES):  # expression DAGs: each shared node once per region
            key = (path[1], id(a), id(b))
            if key in self.seen:
                return
            self.seen.add(key)
        if type(a) is not type(b):
            raise NotDynamic(f"{_where(path, self.first)} changes with the dynamic dim")
        if isinstance(a, (bool, np.bool_)) or a is None or isinstance(a, (str, float, np.dtype, np.floating)):
            if a != b and not (a != a and b != b):  # (NaN constants are equal here)
                raise NotDynamic(f"{_where(path, self.first)} changes with the dynamic dim ({a} vs {b})")
        elif isinstance(a, (int, np.integer)):
            if a != b:
                self.ints.append((path, int(a), int(b)))
        elif isinstance(a, np.ndarray):
            if a.shape != b.shape or a.dtype != b.dtype or a.tobytes() != b.tobytes():
                raise NotDynamic(f"{_where(path, self.first)}: a constant's shape or contents depend on the dynamic dim")
        elif isinstance(a, (tuple, list)):
            if len(a) != len(b):
                raise NotDynamic(f"{_where(path, self.first)} changes length with the dynamic dim")
            for i, (x, y) in enumerate(zip(a, b)):
                self.walk(x, y, path + (i,))
        elif dataclasses.is_dataclass(a):
            for f in dataclasses.fields(a):
                self.walk(getattr(a, f.name), getattr(b, f.name), path + (f.name,))
        elif a != b:
            raise NotDynamic(f"{_where(path, self.first)} changes with the dynamic dim")


class NeedsThirdSize(Exception):
    """Constants move with the dynamic dim: a third lowering must confirm they are affine in it."""


def _classify(first: Any, other: Any, s1: int, s2: int) -> tuple[dict[tuple, tuple[str, int]], dict[tuple, tuple[int, int]]]:
    """The differences between two lowerings: {path: (run-time field, scale)} for extents that
    are `scale * S`, {path: (a, b)} for integer constants in expressions that are `a * S + b`;
    NotDynamic for anything else."""
    differ = _Differ(first)
    differ.walk(first, other, ())
    fields: dict[tuple, tuple[str, int]] = {}
    constants: dict[tuple, tuple[int, int]] = {}
    for path, v1, v2 in differ.ints:
        field = _field_of(path, lambda p: _at(first, p))
        if field is None and path[-1] == "value" and isinstance(node := _at(first, path[:-1]), kir.Const) \
                and node.dtype.kind in "iu" and (v2 - v1) % (s2 - s1) == 0:
            a = (v2 - v1) // (s2 - s1)
            constants[path] = (a, v1 - a * s1)
            continue
        if field is None:
            raise NotDynamic(f"{_where(path, first)} changes with the dynamic dim ({v1} at size {s1}, {v2} at {s2})")
        if v1 % s1 or v2 != v1 // s1 * s2:
            raise NotDynamic(f"{_where(path, first)} is not a multiple of the dynamic dim ({v1} at size {s1}, {v2} at {s2})")
        fields[path] = (field, v1 // s1)
    return fields, constants


def _substitute(obj: Any, nodes: dict[int, Any], memo: dict[int, Any]) -> Any:
    """`obj` with every expression node whose id is in `nodes` replaced (DAG sharing kept)."""
    if id(obj) in nodes:
        return nodes[id(obj)]
    if isinstance(obj, tuple):
        new = tuple(_substitute(x, nodes, memo) for x in obj)
        return obj if all(x is y for x, y in zip(new, obj)) else new
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if id(obj) not in memo:
            changed = {f.name: v for f in dataclasses.fields(obj)
                       if (v := _substitute(getattr(obj, f.name), nodes, memo)) is not getattr(obj, f.name)}
            memo[id(obj)] = dataclasses.replace(obj, **changed) if changed else obj
        return memo[id(obj)]
    return obj


def _dim_expression(const: kir.Const, a: int, b: int) -> kir.Expr:
    """a * D + b in the constant's integer type."""
    value: kir.Expr = kir.DimValue(const.dtype)
    if a != 1:
        value = kir.Compute("multiply", (value, kir.Const(a, const.dtype)), const.dtype)
    return kir.Compute("add", (value, kir.Const(b, const.dtype)), const.dtype) if b else value


def generalize(lowerings: Sequence[Any], sizes: Sequence[int] = SENTINELS) -> tuple[Any, DynamicDims]:
    """From lowerings (host_program.Lowered) of one function at dynamic-dim sizes `sizes` (two,
    or three when integer constants in kernels move with the dim: NeedsThirdSize asks for it):
    the first with DynamicExtents on every region that has dynamic extents, those constants
    made run-time expressions of D (kir.DimValue), and the host tables (DynamicDims, its `grids`
    still empty: they come from the generated kernels). NotDynamic when they differ in any
    other way, or a constant is not affine in the dim."""
    first = lowerings[0]
    fields, constants = _classify(first, lowerings[1], sizes[0], sizes[1])
    if constants and len(lowerings) < 3:
        raise NeedsThirdSize
    if constants:
        third_fields, third_constants = _classify(first, lowerings[2], sizes[0], sizes[2])
        if third_fields != fields or third_constants != constants:
            moved = sorted(set(constants.items()) ^ set(third_constants.items()))
            where = _where(moved[0][0], first) if moved else "an extent"
            raise NotDynamic(f"{where} changes with the dynamic dim, but not in proportion to it")
    tensors = [0] * len(first.tensors)
    results = [0] * len(first.results)
    extents: dict[int, dict[str, Any]] = {}
    for path, (field, scale) in fields.items():
        if field == "tensor":
            tensors[path[1]] = scale
        elif field == "result":
            results[path[1]] = scale
        else:
            region = first.items[path[1]].region
            e = extents.setdefault(path[1], {"bindings": [0] * len(region.bindings)})
            if field == "binding":
                e["bindings"][path[4]] = scale
            else:
                body = region.body
                if field == "lead" and isinstance(body, kir.ReductionBody) and kir.leading_dim(body.shape) in body.reduced:
                    raise NotDynamic(f"kernel {region.name} reduces over the dynamic dim")
                if isinstance(body, kir.RowBody) and (field == "cols" or kir.leading_dim(body.shape) == len(body.shape) - 1):
                    raise NotDynamic(f"kernel {region.name}'s rows run along the dynamic dim")
                e[field] = scale
    nodes: dict[int, dict[int, kir.Expr]] = {}
    for path, (a, b) in constants.items():
        const = _at(first, path[:-1])
        nodes.setdefault(path[1], {})[id(const)] = _dim_expression(const, a, b)
        extents.setdefault(path[1], {"bindings": [0] * len(first.items[path[1]].region.bindings)})
    items = list(first.items)
    for k, e in extents.items():
        d = items[k]
        body = d.region.body
        if not isinstance(body, (kir.ElementwiseBody, kir.ReductionBody, kir.RowBody, kir.MatmulBody, kir.ConvBody)) \
                or isinstance(body, kir.ConvBody) and (body.depthwise or set(e) - {"bindings", "batch"}):
            raise NotDynamic(f"kernel {d.region.name} ({type(d.region.body).__name__}) has no form with a run-time size")
        dynamic = kir.DynamicExtents(tuple(e.pop("bindings")), **e)
        body = _substitute(body, nodes[k], {}) if k in nodes else body
        items[k] = Dispatch(dataclasses.replace(d.region, body=body, dynamic=dynamic), d.tensors)
    return dataclasses.replace(first, items=items), DynamicDims(tuple(tensors), tuple(results), (), sizes[0])
