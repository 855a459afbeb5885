"""Emitting tensor IR from ONNX nodes: the `Builder` and the per-node `Ctx`.

ONNX values are held either as IR `Value`s or as numpy arrays (initializers, Constant nodes, and
everything computed only from those: a `Shape -> Gather -> Concat -> Reshape` chain at the shapes
of one call signature). A node whose inputs are all known is *folded*: its handler emits IR into a
scratch list as usual and the reference evaluator (compiler/reference.py, the IR's own semantics)
runs it, so folding and compiling can never disagree. Known arrays become `constant` ops only where
a runtime op uses them.

Every IR op built here is fully typed with static shapes (the frontend instantiates a graph per
input-shape signature), so the result types are computed here and shape inference re-checks them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence, Union

import numpy as np

from compiler.errors import CompileError
from compiler.ir import Op, Region, TensorType, Value

Tensor = Union[Value, np.ndarray]
"""An ONNX value during conversion: an IR value, or its contents when known at compile time."""

FOLD_LIMIT = 1 << 16  # fold nodes whose results are at most this many elements (shape vectors, small tables)


def shape_of(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape) if isinstance(t, np.ndarray) else tuple(t.type.shape)  # type: ignore[arg-type]


def dtype_of(t: Tensor) -> np.dtype:
    return t.dtype if isinstance(t, np.ndarray) else t.type.dtype


class Builder:
    """Appends typed IR ops to `ops`; constants are deduplicated per array object."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._constants: dict[int, tuple[np.ndarray, Value]] = {}
        self.loc: tuple[int, int] | None = None  # (node index + 1, 0): where ops of the node come from
        # MatMul results computed as one 2-D matmul and reshaped back to their batch dims: a bias
        # Add then goes on the 2-D result, where the backend fuses it into the matmul's epilogue.
        self.matmul_rows: dict[Value, Value] = {}
        self.opsets: dict[str, int] = {}  # the model's opset per domain other than the default one

    def emit(self, name: str, operands: Sequence[Tensor], shape: Sequence[int], dtype: Any,
             attrs: dict[str, Any] | None = None, regions: list[Region] | None = None) -> Value:
        return self.emit_n(name, operands, [(shape, dtype)], attrs, regions)[0]

    def emit_n(self, name: str, operands: Sequence[Tensor], types: Sequence[tuple[Sequence[int], Any]],
               attrs: dict[str, Any] | None = None, regions: list[Region] | None = None) -> list[Value]:
        values = [self.value(x) for x in operands]
        results = [Value(TensorType(tuple(int(d) for d in s), np.dtype(d))) for s, d in types]
        self.ops.append(Op(name, values, results, dict(attrs or {}), list(regions or []), self.loc))
        return results

    def value(self, x: Tensor) -> Value:
        """An IR value for `x` (a `constant` op for a known array, emitted once per array)."""
        if isinstance(x, Value):
            return x
        x = np.asarray(x)
        hit = self._constants.get(id(x))
        if hit is not None and hit[0] is x:
            return hit[1]
        v = Value(TensorType(x.shape, x.dtype))
        self.ops.append(Op("constant", [], [v], {"value": x}, [], self.loc))
        self._constants[id(x)] = (x, v)
        return v

    # -- common shapes of ops ------------------------------------------------------------------
    def convert(self, x: Tensor, dtype: Any) -> Tensor:
        dtype = np.dtype(dtype)
        if dtype_of(x) == dtype:
            return x
        return self.emit("convert", [x], shape_of(x), dtype)

    def broadcast(self, x: Tensor, shape: Sequence[int]) -> Tensor:
        """Numpy-style broadcast of `x` to `shape` (trailing dims aligned)."""
        shape = tuple(int(d) for d in shape)
        src = shape_of(x)
        if src == shape:
            return x
        offset = len(shape) - len(src)
        if offset < 0 or any(s != 1 and s != shape[offset + i] for i, s in enumerate(src)):
            raise CompileError(f"cannot broadcast {src} to {shape}")
        # drop the size-1 dims that stretch, so broadcast_in_dim maps only real dims
        keep = [i for i, s in enumerate(src) if s == shape[offset + i]]
        if len(keep) != len(src):
            x = self.reshape(x, [src[i] for i in keep])
        return self.emit("broadcast_in_dim", [x], shape, dtype_of(x),
                         {"broadcast_dimensions": tuple(offset + i for i in keep)})

    def reshape(self, x: Tensor, shape: Sequence[int]) -> Tensor:
        shape = tuple(int(d) for d in shape)
        if shape_of(x) == shape:
            return x
        if math.prod(shape) != math.prod(shape_of(x)):
            raise CompileError(f"cannot reshape {shape_of(x)} to {shape}")
        return self.emit("reshape", [x], shape, dtype_of(x))

    def view(self, x: Tensor, shape: Sequence[int]) -> Tensor:
        """A reshape through 1-D. The backend turns a reshape that only adds or drops unit dims
        into an index expression (fused into its consumer, or copied where a buffer is needed,
        as a matmul operand or a result), and any other reshape into a view of the operand's
        buffer: for a buffer that must stay one (matmul operands and results) the view is free."""
        shape = tuple(int(d) for d in shape)
        if shape_of(x) == shape or len(shape_of(x)) <= 1 or len(shape) <= 1:
            return self.reshape(x, shape)
        return self.reshape(self.reshape(x, [math.prod(shape)]), shape)

    def transpose(self, x: Tensor, perm: Sequence[int]) -> Tensor:
        perm = tuple(int(p) for p in perm)
        if perm == tuple(range(len(perm))):
            return x
        src = shape_of(x)
        return self.emit("transpose", [x], [src[p] for p in perm], dtype_of(x), {"permutation": perm})

    def slice(self, x: Tensor, starts: Sequence[int], limits: Sequence[int], strides: Sequence[int] | None = None) -> Tensor:
        strides = tuple(strides or (1,) * len(starts))
        shape = [max(0, -(-(hi - lo) // s)) for lo, hi, s in zip(starts, limits, strides)]
        if tuple(shape) == shape_of(x):
            return x
        return self.emit("slice", [x], shape, dtype_of(x), {
            "start_indices": tuple(starts), "limit_indices": tuple(limits), "strides": strides})

    def concat(self, xs: Sequence[Tensor], axis: int) -> Tensor:
        if len(xs) == 1:
            return xs[0]
        shape = list(shape_of(xs[0]))
        shape[axis] = sum(shape_of(x)[axis] for x in xs)
        return self.emit("concatenate", list(xs), shape, dtype_of(xs[0]), {"dimension": axis})

    def iota(self, shape: Sequence[int], dim: int, dtype: Any = np.int64) -> Tensor:
        return self.emit("iota", [], shape, dtype, {"iota_dimension": dim})

    def scalar(self, value: Any, dtype: Any) -> np.ndarray:
        return np.asarray(value, dtype=np.dtype(dtype))

    def full(self, value: Any, shape: Sequence[int], dtype: Any) -> Tensor:
        return self.broadcast(self.scalar(value, dtype), shape)

    def binary(self, name: str, a: Tensor, b: Tensor) -> Tensor:
        """An elementwise binary op with numpy broadcasting of both operands."""
        shape = np.broadcast_shapes(shape_of(a), shape_of(b))
        return self.emit(name, [self.broadcast(a, shape), self.broadcast(b, shape)], shape, dtype_of(a))

    def unary(self, name: str, x: Tensor) -> Tensor:
        return self.emit(name, [x], shape_of(x), dtype_of(x))

    def compare(self, direction: str, a: Tensor, b: Tensor) -> Tensor:
        shape = np.broadcast_shapes(shape_of(a), shape_of(b))
        kind = "FLOAT" if dtype_of(a).kind in "fV" else ("UNSIGNED" if dtype_of(a).kind in "ub" else "SIGNED")
        return self.emit("compare", [self.broadcast(a, shape), self.broadcast(b, shape)], shape, np.bool_,
                         {"comparison_direction": direction, "compare_type": kind})

    def select(self, cond: Tensor, a: Tensor, b: Tensor) -> Tensor:
        shape = np.broadcast_shapes(shape_of(cond), shape_of(a), shape_of(b))
        return self.emit("select", [self.broadcast(cond, shape), self.broadcast(a, shape), self.broadcast(b, shape)],
                         shape, dtype_of(a))

    def reduce(self, x: Tensor, axes: Sequence[int], body: str, init: Any) -> Tensor:
        """Reduce `x` over `axes` with the scalar op `body` (add, maximum...) from `init`."""
        axes = tuple(sorted(set(int(a) for a in axes)))
        dtype = dtype_of(x)
        shape = [d for i, d in enumerate(shape_of(x)) if i not in axes]
        if not axes:
            return x
        return self.emit("reduce", [x, self.scalar(init, dtype)], shape, dtype, {"dimensions": axes},
                         [scalar_body(body, dtype)])

    def dot(self, lhs: Tensor, rhs: Tensor, batch: int, lhs_contract: int, rhs_contract: int) -> Tensor:
        """dot_general with the leading `batch` dims of both operands as batch dims."""
        ls, rs = shape_of(lhs), shape_of(rhs)
        bd = tuple(range(batch))
        shape = [*ls[:batch], *(d for i, d in enumerate(ls) if i >= batch and i != lhs_contract),
                 *(d for i, d in enumerate(rs) if i >= batch and i != rhs_contract)]
        return self.emit("dot_general", [lhs, rhs], shape, dtype_of(lhs), {
            "lhs_batching_dimensions": bd, "rhs_batching_dimensions": bd,
            "lhs_contracting_dimensions": (lhs_contract,), "rhs_contracting_dimensions": (rhs_contract,)})

    def take(self, x: Tensor, indices: Tensor, axis: int) -> Tensor:
        """numpy.take(x, indices, axis) for in-range indices (a `gather`)."""
        xs, ish = shape_of(x), shape_of(indices)
        sizes = tuple(1 if i == axis else d for i, d in enumerate(xs))
        out = [*xs[:axis], *ish, *xs[axis + 1:]]
        offset_dims = tuple(range(axis)) + tuple(range(axis + len(ish), len(out)))
        return self.emit("gather", [x, indices], out, dtype_of(x), {
            "offset_dims": offset_dims, "collapsed_slice_dims": (axis,), "operand_batching_dims": (),
            "start_indices_batching_dims": (), "start_index_map": (axis,), "index_vector_dim": len(ish),
            "slice_sizes": sizes})


def scalar_body(name: str, dtype: Any) -> Region:
    """A reducer region `(a, b) -> name(a, b)` on scalars of `dtype`."""
    scalar = TensorType((), np.dtype(dtype))
    a, b, r = Value(scalar, "%lhs"), Value(scalar, "%rhs"), Value(scalar, "%r")
    return Region([a, b], [Op(name, [a, b], [r])], [r])


def region(arg_types: Sequence[Any], build: Callable[["Builder", list[Value]], list[Tensor]]) -> Region:
    """A region over scalar args of the given dtypes whose body `build` emits."""
    args = [Value(TensorType((), np.dtype(t))) for t in arg_types]
    b = Builder()
    results = [b.value(r) for r in build(b, args)]
    return Region(args, b.ops, results)


def lowest(dtype: np.dtype) -> Any:
    """The identity of `maximum` on `dtype` (-inf for floats)."""
    return -np.inf if dtype.kind in "fV" else (False if dtype == np.bool_ else np.iinfo(dtype).min)


def highest(dtype: np.dtype) -> Any:
    return np.inf if dtype.kind in "fV" else (True if dtype == np.bool_ else np.iinfo(dtype).max)
