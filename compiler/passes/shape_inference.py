"""Shape inference and shape specialization.

`infer_shapes(module)` types every op from its operands and attrs, checks the result types the
frontend read against that, and refines dynamic dims where the inference knows better (an int beats
None or a symbolic name; a symbolic name beats None).

`specialize(module, function_name, input_shapes)` is what the runtime calls once it knows the input
shapes: it re-types the entry function (and, per distinct signature, every function it calls) with
concrete dims, folds the small integer shape computations jax.export emits
(`get_dimension_size`, `concatenate` of dims, ...), turns the `dynamic_*` ops whose shape is now known
into their static forms, checks the `shape_assertion`s (raising `ShapeAssertionError` with JAX's
message) and drops what became dead. The result is a fully static module for the backend.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from compiler import reference  # its op semantics fold shape computations: they cannot disagree
from compiler.errors import CompileError, ShapeAssertionError, shape_assertion_message
from compiler.ir import ELEMENTWISE, Dim, Function, Module, Op, Region, TensorType, Value
from common.errors import Error as HalError

_FOLD_LIMIT = 64  # fold integer results up to this many elements: shape vectors, not data


def _known(d: Dim) -> bool:
    return isinstance(d, int)


def _arith(f: Callable[..., int], *dims: Dim) -> Dim:
    """f over dims when they are all known, else unknown."""
    return f(*dims) if all(_known(d) for d in dims) else None


def _merge_dim(a: Dim, b: Dim, what: str) -> Dim:
    if _known(a) and _known(b) and a != b:
        raise CompileError(f"{what}: dimension {a} does not match {b}")
    if _known(a) or _known(b):
        return a if _known(a) else b
    return a if a is not None else b


def _join(declared: TensorType, inferred: TensorType, what: str) -> TensorType:
    if declared.rank != inferred.rank or declared.dtype != inferred.dtype:
        raise CompileError(f"{what}: result type {declared} does not match inferred {inferred}")
    dims = []
    for d, i in zip(declared.shape, inferred.shape):
        if _known(d) and _known(i) and d != i:
            raise CompileError(f"{what}: result type {declared} does not match inferred {inferred}")
        dims.append(i if _known(i) or d is None else d)
    return TensorType(tuple(dims), declared.dtype)


# --------------------------------------------------------------------------------------------
# One rule per op: (op, operand types, declared result types, known operand values) -> shapes

Rule = Callable[[Op, list[TensorType], list[TensorType], list["np.ndarray | None"]], list[TensorType]]


def _elementwise(op: Op, ts: list[TensorType], decl: list[TensorType], _: list) -> list[TensorType]:
    rank = max(t.rank for t in ts)
    shape: list[Dim] = [None] * rank
    for t in ts:
        if t.rank == rank:
            shape = [_merge_dim(a, b, op.where()) for a, b in zip(shape, t.shape)]
        elif t.rank != 0:
            raise CompileError(f"{op.where()}: operand ranks {[t.rank for t in ts]} do not match")
    if op.name == "compare" or (op.name in ELEMENTWISE and ELEMENTWISE[op.name].bool_result):
        dtype = np.dtype(np.bool_)
    elif op.name in ("convert", "bitcast_convert"):
        dtype = decl[0].dtype
    else:
        dtype = ts[1 if op.name in ("select", "clamp") else 0].dtype
    return [TensorType(tuple(shape), dtype)]


def _bitcast(op: Op, ts, decl, known) -> list[TensorType]:
    if ts[0].dtype.itemsize == decl[0].dtype.itemsize:
        return _elementwise(op, ts, decl, known)
    return decl


def _declared(op: Op, ts, decl, known) -> list[TensorType]:
    return decl


def _broadcast_in_dim(op: Op, ts, decl, known) -> list[TensorType]:
    dims = op.attrs["broadcast_dimensions"]
    if len(dims) != ts[0].rank or len(set(dims)) != len(dims) or any(not 0 <= d < decl[0].rank for d in dims):
        raise CompileError(f"{op.where()}: broadcast_dimensions {list(dims)} do not map the {ts[0].rank} dims of "
                           f"{ts[0]} to distinct dims of {decl[0]}")
    out = list(decl[0].shape)
    for i, d in enumerate(dims):
        src = ts[0].shape[i]
        if _known(src) and src != 1:
            out[d] = _merge_dim(out[d], src, op.where())
    return [TensorType(tuple(out), ts[0].dtype)]


def _reshape(op: Op, ts, decl, known) -> list[TensorType]:
    out = list(decl[0].shape)
    unknown = [i for i, d in enumerate(out) if not _known(d)]
    if ts[0].is_static and len(unknown) == 1:
        rest = math.prod(d for d in out if _known(d))
        out[unknown[0]] = math.prod(ts[0].shape) // rest if rest else 0
    if ts[0].is_static and all(_known(d) for d in out) and math.prod(out) != math.prod(ts[0].shape):
        raise CompileError(f"{op.where()}: cannot reshape {ts[0]} to {decl[0]}")
    return [TensorType(tuple(out), ts[0].dtype)]


def _shape_operand(op: Op, ts, decl, known) -> list[TensorType]:
    """dynamic_broadcast_in_dim / dynamic_reshape / dynamic_iota: the shape is an operand's value."""
    shape = known[1 if op.name != "dynamic_iota" else 0]
    dtype = decl[0].dtype
    if shape is None:
        if op.name == "dynamic_broadcast_in_dim":
            return [TensorType(_broadcast_in_dim(op, ts, decl, known)[0].shape, dtype)]
        return decl
    return [TensorType(tuple(int(d) for d in shape), dtype)]


def _transpose(op: Op, ts, decl, known) -> list[TensorType]:
    return [TensorType(tuple(ts[0].shape[p] for p in op.attrs["permutation"]), ts[0].dtype)]


def _same_as_operands(op: Op, ts, decl, known) -> list[TensorType]:
    return list(ts[:len(decl)])


def _branches(op: Op, ts, decl, known) -> list[TensorType]:
    """case / if: the declared types (every branch's results are checked against them)."""
    if op.name == "if" and (ts[0].rank != 0 or ts[0].dtype != np.bool_ or len(op.regions) != 2):
        raise CompileError(f"{op.where()}: needs a tensor<i1> predicate and two branches")
    if op.name == "case" and (ts[0].rank != 0 or ts[0].dtype.kind not in "iu" or not op.regions):
        raise CompileError(f"{op.where()}: needs a scalar integer index and at least one branch")
    return decl


def _slice(op: Op, ts, decl, known) -> list[TensorType]:
    a = op.attrs
    shape = tuple(max(0, -(-(hi - lo) // s)) for lo, hi, s in
                  zip(a["start_indices"], a["limit_indices"], a["strides"]))
    return [TensorType(shape, ts[0].dtype)]


def _dynamic_slice(op: Op, ts, decl, known) -> list[TensorType]:
    return [TensorType(tuple(op.attrs["slice_sizes"]), ts[0].dtype)]


def _pad(op: Op, ts, decl, known) -> list[TensorType]:
    a = op.attrs
    shape = tuple(_arith(lambda d, lo=lo, hi=hi, i=i: lo + hi + d + max(d - 1, 0) * i, d)
                  for d, lo, hi, i in zip(ts[0].shape, a["edge_padding_low"],
                                          a["edge_padding_high"], a["interior_padding"]))
    return [TensorType(shape, ts[0].dtype)]


def _concatenate(op: Op, ts, decl, known) -> list[TensorType]:
    axis = op.attrs["dimension"]
    shape = list(ts[0].shape)
    for t in ts[1:]:
        for i, d in enumerate(t.shape):
            shape[i] = _arith(lambda a, b: a + b, shape[i], d) if i == axis else _merge_dim(shape[i], d, op.where())
    return [TensorType(tuple(shape), ts[0].dtype)]


def _dot_general(op: Op, ts, decl, known) -> list[TensorType]:
    a = op.attrs
    lhs, rhs = ts[0].shape, ts[1].shape
    for l, r in zip(a["lhs_batching_dimensions"] + a["lhs_contracting_dimensions"],
                    a["rhs_batching_dimensions"] + a["rhs_contracting_dimensions"]):
        _merge_dim(lhs[l], rhs[r], op.where())
    free_l = [d for i, d in enumerate(lhs) if i not in a["lhs_batching_dimensions"] + a["lhs_contracting_dimensions"]]
    free_r = [d for i, d in enumerate(rhs) if i not in a["rhs_batching_dimensions"] + a["rhs_contracting_dimensions"]]
    batch = [lhs[i] for i in a["lhs_batching_dimensions"]]
    return [TensorType(tuple(batch + free_l + free_r), decl[0].dtype)]


def _window_out(size: Dim, window: int, stride: int, lo: int, hi: int, base_dil: int, win_dil: int) -> Dim:
    def f(d: int) -> int:
        padded = (d - 1) * base_dil + 1 + lo + hi if d else lo + hi
        span = (window - 1) * win_dil + 1
        return max(0, (padded - span) // stride + 1)
    return _arith(f, size)


def _check_convolution(op: Op, lhs: TensorType, rhs: TensorType) -> None:
    """The convolution's dimension numbers name distinct in-range dims, and its feature and
    group counts agree (StableHLO spec: input features = kernel input features x
    feature_group_count; output features divisible by both group counts)."""
    a, rank = op.attrs, lhs.rank
    lhs_dims = [a["input_batch_dimension"], a["input_feature_dimension"], *a["input_spatial_dimensions"]]
    rhs_dims = [a["kernel_input_feature_dimension"], a["kernel_output_feature_dimension"], *a["kernel_spatial_dimensions"]]
    for name, dims, r in (("input", lhs_dims, rank), ("kernel", rhs_dims, rhs.rank)):
        if sorted(dims) != list(range(r)):
            raise CompileError(f"{op.where()}: convolution: the {name} dimension numbers {dims} are not the dims of rank {r}")
    groups, batch_groups = a.get("feature_group_count", 1), a.get("batch_group_count", 1)
    c_in, c_k = lhs.shape[a["input_feature_dimension"]], rhs.shape[a["kernel_input_feature_dimension"]]
    c_out, n = rhs.shape[a["kernel_output_feature_dimension"]], lhs.shape[a["input_batch_dimension"]]
    if groups < 1 or batch_groups < 1:
        raise CompileError(f"{op.where()}: convolution: group counts must be >= 1 (got {groups}, {batch_groups})")
    if isinstance(c_in, int) and isinstance(c_k, int) and c_in != c_k * groups:
        raise CompileError(f"{op.where()}: convolution: the input has {c_in} features, the kernel takes {c_k} x "
                           f"feature_group_count {groups}")
    if isinstance(c_out, int) and (c_out % groups or c_out % batch_groups):
        raise CompileError(f"{op.where()}: convolution: {c_out} output features do not divide into {groups} feature "
                           f"groups and {batch_groups} batch groups")
    if isinstance(n, int) and n % batch_groups:
        raise CompileError(f"{op.where()}: convolution: batch {n} does not divide into {batch_groups} batch groups")


def _convolution(op: Op, ts, decl, known) -> list[TensorType]:
    _check_convolution(op, ts[0], ts[1])
    a = op.attrs
    lhs, rhs = ts[0].shape, ts[1].shape
    out: list[Dim] = [None] * ts[0].rank
    out[a["output_batch_dimension"]] = _arith(lambda n: n // a["batch_group_count"], lhs[a["input_batch_dimension"]])
    out[a["output_feature_dimension"]] = rhs[a["kernel_output_feature_dimension"]]
    for k, (i, o) in enumerate(zip(a["input_spatial_dimensions"], a["output_spatial_dimensions"])):
        lo, hi = a["padding"][k]
        window = rhs[a["kernel_spatial_dimensions"][k]]
        out[o] = _window_out(lhs[i], window, a["window_strides"][k], lo, hi, a["lhs_dilation"][k],
                             a["rhs_dilation"][k])
    return [TensorType(tuple(out), decl[0].dtype)]


def _reduce(op: Op, ts, decl, known) -> list[TensorType]:
    n = len(ts) // 2
    dims = op.attrs["dimensions"]
    return [TensorType(tuple(d for i, d in enumerate(t.shape) if i not in dims), init.dtype)
            for t, init in zip(ts[:n], ts[n:])]


def _reduce_window(op: Op, ts, decl, known) -> list[TensorType]:
    a = op.attrs
    n = len(ts) // 2
    shape = tuple(_window_out(*args) for args in zip(
        ts[0].shape, a["window_dimensions"], a["window_strides"], *zip(*a["padding"]),
        a["base_dilations"], a["window_dilations"]))
    return [TensorType(shape, init.dtype) for init in ts[n:]]


def _check_gather(op: Op, operand: TensorType, indices: TensorType) -> None:
    """The gather attributes' constraints (StableHLO spec, C1-C21 in substance): every dim
    named in range and distinct, slice sizes within the operand, one start index per mapped dim."""
    a, rank = op.attrs, operand.rank
    ivd = a["index_vector_dim"]
    collapsed, batching, mapped = tuple(a["collapsed_slice_dims"]), tuple(a["operand_batching_dims"]), tuple(a["start_index_map"])
    sizes, offsets, index_batching = tuple(a["slice_sizes"]), tuple(a["offset_dims"]), tuple(a["start_indices_batching_dims"])
    problems = []
    if len(sizes) != rank:
        problems.append(f"{len(sizes)} slice_sizes for an operand of rank {rank}")
    for name, dims, bound in (("collapsed_slice_dims", collapsed, rank), ("operand_batching_dims", batching, rank),
                              ("start_index_map", mapped, rank), ("start_indices_batching_dims", index_batching, indices.rank)):
        if any(not 0 <= d < bound for d in dims) or len(set(dims)) != len(dims):
            problems.append(f"{name} {list(dims)} must be distinct dims in [0, {bound})")
    if set(collapsed) & set(batching):
        problems.append("collapsed_slice_dims and operand_batching_dims overlap")
    if not 0 <= ivd <= indices.rank or ivd in index_batching:
        problems.append(f"index_vector_dim {ivd} is out of range for indices of rank {indices.rank}")
    elif len(mapped) != (indices.shape[ivd] if ivd < indices.rank else 1) and (ivd == indices.rank or isinstance(indices.shape[ivd], int)):
        problems.append(f"start_index_map has {len(mapped)} dims for {indices.shape[ivd] if ivd < indices.rank else 1} start indices")
    if len(batching) != len(index_batching):
        problems.append("operand_batching_dims and start_indices_batching_dims differ in length")
    if len(sizes) == rank:
        for d in set(collapsed) | set(batching):
            if 0 <= d < rank and sizes[d] > 1:
                problems.append(f"slice_sizes[{d}] is {sizes[d]}, but dim {d} is collapsed or batched")
        for d, (n, dim) in enumerate(zip(sizes, operand.shape)):
            if n < 0 or isinstance(dim, int) and n > dim:
                problems.append(f"slice_sizes[{d}] = {n} does not fit dim {d} of size {dim}")
    out_rank = (indices.rank - (1 if ivd < indices.rank else 0)) + rank - len(collapsed) - len(batching)
    if len(offsets) != rank - len(collapsed) - len(batching) or list(offsets) != sorted(set(offsets)) or \
            any(not 0 <= d < out_rank for d in offsets):
        problems.append(f"offset_dims {list(offsets)} must be {rank - len(collapsed) - len(batching)} sorted distinct dims "
                        f"of the result (rank {out_rank})")
    if problems:
        raise CompileError(f"{op.where()}: gather: " + "; ".join(problems))


def _gather(op: Op, ts, decl, known) -> list[TensorType]:
    _check_gather(op, ts[0], ts[1])
    a = op.attrs
    idx = ts[1].shape
    batch = [d for i, d in enumerate(idx) if i != a["index_vector_dim"]]
    dropped = set(a["collapsed_slice_dims"]) | set(a["operand_batching_dims"])
    offsets = [s for i, s in enumerate(a["slice_sizes"]) if i not in dropped]
    out: list[Dim] = []
    for i in range(len(batch) + len(offsets)):
        out.append(offsets.pop(0) if i in a["offset_dims"] else batch.pop(0))
    return [TensorType(tuple(out), ts[0].dtype)]


def _triangular_solve(op: Op, ts, decl, known) -> list[TensorType]:
    a, b = ts
    if a.rank < 2 or a.rank != b.rank or a.shape[-1] != a.shape[-2] or a.dtype != b.dtype or a.dtype.kind != "f":
        raise CompileError(f"{op.where()}: needs square float matrices a and b of one rank, got {a} and {b}")
    n = b.shape[-2] if op.attrs["left_side"] else b.shape[-1]
    _merge_dim(a.shape[-1], n, op.where())
    return [b]


def _cholesky(op: Op, ts, decl, known) -> list[TensorType]:
    a = ts[0]
    if a.rank < 2 or a.shape[-1] != a.shape[-2] or a.dtype.kind != "f":
        raise CompileError(f"{op.where()}: needs square float matrices, got {a}")
    return [a] + [TensorType(a.shape[:-2], decl[1].dtype)][:len(decl) - 1]


def _map(op: Op, ts, decl, known) -> list[TensorType]:
    shape = ts[0].shape
    for t in ts[1:]:
        shape = tuple(_merge_dim(x, y, op.where()) for x, y in zip(shape, t.shape))
    return [TensorType(shape, d.dtype) for d in decl]


def _rng_state(op: Op, ts, decl, known) -> list[TensorType]:
    state = ts[0]
    if state.shape not in ((2,), (3,)) or state.dtype != np.uint64 or \
            op.attrs.get("rng_algorithm") not in ("DEFAULT", "THREE_FRY", "PHILOX"):
        raise CompileError(f"{op.where()}: needs a ui64[2] or ui64[3] state and algorithm DEFAULT, THREE_FRY "
                           f"or PHILOX, got {state} and {op.attrs.get('rng_algorithm')}")
    return [state, decl[1]]


def _batch_norm(op: Op, ts, decl, known) -> list[TensorType]:
    """The normalised operand (or its gradient) like the operand; per-feature vectors after."""
    x, f = ts[0], op.attrs["feature_index"]
    if not 0 <= f < x.rank or x.dtype.kind not in "fV":
        raise CompileError(f"{op.where()}: feature_index {f} does not fit the float operand {x}")
    feature = TensorType((x.shape[f],), x.dtype)
    for t in ts[1:]:
        if t.rank == 1:
            _merge_dim(t.shape[0], x.shape[f], op.where())
    return [x] + [feature] * (len(decl) - 1)


def _ragged_dot(op: Op, ts, decl, known) -> list[TensorType]:
    a = op.attrs
    if len(a.get("lhs_ragged_dimensions", ())) != 1 or len(a.get("rhs_group_dimensions", ())) != 1 \
            or a["lhs_ragged_dimensions"][0] in a["lhs_contracting_dimensions"] + a["lhs_batching_dimensions"]:
        raise CompileError(f"{op.where()}: only ragged_dot with one ragged lhs row dim and one rhs group dim "
                           f"(mode 1) is supported")
    return decl


def _scalar(op: Op, ts, decl, known) -> list[TensorType]:
    return [TensorType((), decl[0].dtype)]


def _dynamic_form(op: Op, ts, decl, known) -> list[TensorType]:
    """real_dynamic_slice / dynamic_gather / dynamic_reduce_window: typed as their static form
    once the operands that hold its attrs are known, else as declared."""
    form = reference.static_form(op, known)
    if form is None:
        return decl
    name, keep, attrs = form
    static = Op(name, [op.operands[i] for i in keep], op.results, attrs, op.regions, op.loc)
    return RULES[name](static, [ts[i] for i in keep], decl, [known[i] for i in keep])


# Operand counts of the ops whose rules read a fixed number (elementwise ops: ELEMENTWISE's arity).
ARITY = {"compare": 2, "convert": 1, "bitcast_convert": 1, "broadcast_in_dim": 1, "reshape": 1, "transpose": 1,
         "reverse": 1, "slice": 1, "pad": 2, "iota": 0, "constant": 0, "get_dimension_size": 1, "dot_general": 2,
         "convolution": 2}


def _check_operands(op: Op, ts: list[TensorType]) -> None:
    """The operand count, and for elementwise ops the element types (select: an i1 predicate
    and two alike; convert and bitcast_convert: any), as StableHLO's verifier checks them: what
    passes reaches code generation, which assumes them."""
    want = ELEMENTWISE[op.name].arity if op.name in ELEMENTWISE else ARITY.get(op.name)
    if want is not None and len(ts) != want:
        raise CompileError(f"{op.where()}: {op.name} takes {want} operand{'s' if want != 1 else ''}, got {len(ts)}")
    if op.name == "compare" and op.attrs.get("comparison_direction") not in ("EQ", "NE", "LT", "LE", "GT", "GE"):
        raise CompileError(f"{op.where()}: compare: unknown comparison_direction {op.attrs.get('comparison_direction')!r}")
    if op.name not in ELEMENTWISE and op.name != "compare":
        return
    if op.name == "select":
        if ts[0].dtype != np.bool_:
            raise CompileError(f"{op.where()}: select's predicate must be i1, got {ts[0]}")
        ts = ts[1:]
    if op.name not in ("shift_left", "shift_right_logical", "shift_right_arithmetic") and len({t.dtype for t in ts}) > 1:
        raise CompileError(f"{op.where()}: {op.name}'s operands differ in element type: {', '.join(str(t) for t in ts)}")


RULES: dict[str, Rule] = {name: _elementwise for name in ELEMENTWISE}
RULES.update({
    "compare": _elementwise, "convert": _elementwise, "bitcast_convert": _bitcast,
    "constant": _declared, "iota": _declared, "call": _declared, "custom_call": _declared,
    "broadcast_in_dim": _broadcast_in_dim, "reshape": _reshape, "transpose": _transpose,
    "reverse": _same_as_operands, "sort": _same_as_operands, "while": _same_as_operands,
    "case": _branches, "if": _branches,
    "dynamic_update_slice": lambda op, ts, decl, known: [ts[0]],
    "slice": _slice, "dynamic_slice": _dynamic_slice, "pad": _pad, "concatenate": _concatenate,
    "dot_general": _dot_general, "convolution": _convolution, "reduce": _reduce,
    "reduce_window": _reduce_window, "gather": _gather, "get_dimension_size": _scalar,
    "dynamic_broadcast_in_dim": _shape_operand, "dynamic_reshape": _shape_operand,
    "dynamic_iota": _shape_operand,
    "real_dynamic_slice": _dynamic_form, "dynamic_gather": _dynamic_form,
    "dynamic_reduce_window": _dynamic_form, "dynamic_pad": _dynamic_form, "dynamic_conv": _dynamic_form,
    "triangular_solve": _triangular_solve, "cholesky": _cholesky, "map": _map,
    "scatter": lambda op, ts, decl, known: list(ts[:len(decl)]), "scan": _declared,
    "select_and_scatter": lambda op, ts, decl, known: [ts[0]], "top_k": _declared,
    "rng_bit_generator": _rng_state, "rng": _declared,
    "batch_norm_inference": _batch_norm, "batch_norm_training": _batch_norm, "batch_norm_grad": _batch_norm,
    "ragged_dot": _ragged_dot,
})
"""Result-type rule of every IR op (a test checks this covers `ir.SUPPORTED_OPS`)."""


# --------------------------------------------------------------------------------------------
# The walk shared by infer_shapes and specialize


class _Typer:
    """Re-types functions op by op, tracking the values of small integer tensors.

    With `static=True` (specialize) every function is cloned per call signature and must come out
    fully static; otherwise each function is typed once from its declared argument types.
    """

    def __init__(self, module: Module, static: bool) -> None:
        self.module = module
        self.static = static
        self.done: dict[tuple, Function] = {}
        self.out: dict[str, Function] = {}
        self.known_results: dict[Function, list[np.ndarray | None]] = {}
        self.producers: dict[Value, Op] = {}  # typed values -> the typed op defining them

    def function(self, fn: Function, arg_types: Sequence[TensorType],
                 arg_values: Sequence[np.ndarray | None]) -> Function:
        if not self.static:  # one typing per function, from its declared signature
            arg_types, arg_values = [a.type for a in fn.args], [None] * len(fn.args)
        key = (fn.name, tuple(arg_types),
               tuple(None if v is None else (v.dtype.str, v.tobytes()) for v in arg_values))
        if key in self.done:
            return self.done[key]
        name, k = fn.name, 0
        while name in self.out or (k and name in self.module.functions):  # a clone per signature
            k += 1
            name = f"{fn.name}_{k}"
        args = [Value(t, a.name) for a, t in zip(fn.args, arg_types)]
        new = Function(name, args, [], [], fn.public)
        self.done[key] = new
        self.out[name] = new
        vmap = dict(zip(fn.args, args))
        known = {a: v for a, v in zip(args, arg_values) if v is not None}
        new.ops = self.ops(fn.ops, vmap, known)
        undefined = [v.name for v in fn.results if v not in vmap]
        if undefined:
            raise CompileError(f"@{fn.name}: returns {', '.join(undefined)}, defined by no op")
        new.results = [vmap[v] for v in fn.results]
        self.known_results[new] = [known.get(v) for v in new.results]
        if self.static:
            _drop_dead_ops(new)
        return new

    def ops(self, ops: list[Op], vmap: dict[Value, Value], known: dict[Value, np.ndarray]) -> list[Op]:
        out = []
        for op in ops:
            try:
                out.extend(self.op(op, vmap, known))
            except HalError:
                raise
            except (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError) as e:
                raise CompileError(f"{op.where()}: malformed op ({type(e).__name__}: {e})") from None
        return out

    def op(self, op: Op, vmap: dict[Value, Value], known: dict[Value, np.ndarray]) -> list[Op]:
        """The re-typed copy of `op` (none when it folded away; several when a dynamic op became
        static ones); maps `op`'s results to the new ones in `vmap`."""
        operands = [vmap[v] for v in op.operands]
        values = [known.get(v) for v in operands]
        if self.static and op.name in ("real_dynamic_slice", "dynamic_gather", "dynamic_reduce_window",
                                       "dynamic_pad", "dynamic_conv"):
            replacement = self.static_ops(op, operands, values, known)
            if replacement is not None:
                vmap.update((v, v) for v in operands)  # the replacement's operands are typed already
                return self.ops(replacement, vmap, known)
        new = self.typed(op, operands, values, vmap, known)
        if new is None:
            return []
        vmap.update(zip(op.results, new.results))
        self.producers.update((r, new) for r in new.results)
        return [new]

    def static_ops(self, op: Op, operands: list[Value], values: list[np.ndarray | None],
                   known: dict[Value, np.ndarray]) -> list[Op] | None:
        """Static ops computing what the dynamic `op` does (their operands are the typed
        `operands`, the last one defines `op.results`), or None when they cannot be had yet."""
        form = reference.static_form(op, values)
        if form is not None:
            name, keep, attrs = form
            return [Op(name, [operands[i] for i in keep], op.results, attrs, op.regions, op.loc)]
        if op.name != "real_dynamic_slice" or values[3] is None or np.any(values[3] != 1):
            return None
        # a slice at a runtime start: limits = starts + sizes with the sizes known -> dynamic_slice
        x, starts, limits = operands[:3]
        add = self.producers.get(limits)
        if add is None or add.name != "add" or starts not in add.operands:
            return None
        other = add.operands[1] if add.operands[0] is starts else add.operands[0]
        sizes = known.get(other)
        if sizes is None or sizes.shape != (x.type.rank,) or np.any(sizes < 0):
            return None
        ops, scalars = [], []
        for d in range(x.type.rank):
            one = Value(TensorType((1,), starts.type.dtype), f"{starts.name}[{d}]")
            scalar = Value(TensorType((), starts.type.dtype), f"{starts.name}[{d}]")
            ops.append(Op("slice", [starts], [one], {"start_indices": (d,), "limit_indices": (d + 1,),
                                                     "strides": (1,)}, [], op.loc))
            ops.append(Op("reshape", [one], [scalar], {}, [], op.loc))
            scalars.append(scalar)
        ops.append(Op("dynamic_slice", [x, *scalars], op.results,
                      {"slice_sizes": tuple(int(n) for n in sizes)}, [], op.loc))
        return ops

    def typed(self, op: Op, operands: list[Value], values: list[np.ndarray | None],
              vmap: dict[Value, Value], known: dict[Value, np.ndarray]) -> Op | None:
        """`op` re-typed over the typed `operands` (None when it folded away)."""
        ts = [v.type for v in operands]
        decl = [r.type for r in op.results]
        attrs, regions, callee = dict(op.attrs), [], None
        if op.name == "call":
            callee = self.function(self.module.function(op.attrs["callee"]), ts, values)
            attrs["callee"] = callee.name
            decl = [_join(d, r.type, op.where()) for d, r in zip(decl, callee.results)]
        for region in op.regions:
            arg_types = ts if op.name == "while" else [a.type for a in region.args]
            args = [Value(t, a.name) for a, t in zip(region.args, arg_types)]
            inner = {**vmap, **dict(zip(region.args, args))}  # bodies may use enclosing values
            body = self.ops(region.ops, inner, dict(known))
            regions.append(Region(args, body, [inner[v] for v in region.results]))
        if op.name in ("case", "if", "while"):
            _check_region_results(op, regions, decl)
        _check_operands(op, ts)
        try:
            inferred = RULES[op.name](op, ts, decl, values)
        except (KeyError, IndexError, TypeError, ValueError) as e:  # attrs/operands not as the op needs
            raise CompileError(f"{op.where()}: malformed op ({type(e).__name__}: {e})") from None
        types = [_join(d, i, op.where()) for d, i in zip(decl, inferred)]
        if self.static:
            for t in types:
                if not t.is_static:
                    raise CompileError(f"{op.where()}: result type {t} is still dynamic after specialization")
        results = [Value(t, r.name) for r, t in zip(op.results, types)]
        if callee is not None:  # shape computations flow through calls (jax.export's divmod)
            known.update((r, v) for r, v in zip(results, self.known_results.get(callee, ())) if v is not None)
        return self.fold(Op(op.name, operands, results, attrs, regions, op.loc), values, known)

    def fold(self, op: Op, values: list[np.ndarray | None], known: dict[Value, np.ndarray]) -> Op | None:
        """Track small integer results; rewrite dynamic-shape ops once their shapes are known."""
        if op.name == "custom_call":  # shape_assertion(pred, dim values...)
            if values[0] is None or any(v is None for v in values[1:]):
                return op
            if not bool(values[0]):
                raise ShapeAssertionError(shape_assertion_message(
                    op.attrs.get("error_message", "shape assertion failed"), [int(v) for v in values[1:]]))
            return None
        if op.name == "get_dimension_size" and _known(op.operands[0].type.shape[op.attrs["dimension"]]):
            value = np.array(op.operands[0].type.shape[op.attrs["dimension"]], op.results[0].type.dtype)
            op = Op("constant", [], op.results, {"value": value}, [], op.loc)
        elif op.name in ("dynamic_broadcast_in_dim", "dynamic_reshape", "dynamic_iota") and op.results[0].type.is_static:
            static = {"dynamic_broadcast_in_dim": "broadcast_in_dim", "dynamic_reshape": "reshape",
                      "dynamic_iota": "iota"}[op.name]
            operands = [] if static == "iota" else op.operands[:1]
            op = Op(static, operands, op.results, op.attrs, [], op.loc)
            values = [known.get(v) for v in operands]
        result = op.results[0].type if len(op.results) == 1 else None
        if (op.name == "constant" and result is not None and op.attrs["value"].size <= _FOLD_LIMIT) or (
                result is not None and result.is_static and math.prod(result.shape) <= _FOLD_LIMIT
                and result.dtype.kind in "iub" and not op.regions and op.name != "call"
                and all(v is not None for v in values)):
            known[op.results[0]] = reference.evaluate_op(op, values)[0]
        return op


def _check_region_results(op: Op, regions: list[Region], decl: list[TensorType]) -> None:
    """A branch (or a loop body) must yield the op's result types; a loop's cond one i1."""
    for k, region in enumerate(regions):
        if op.name == "while" and k == 0:
            want = [TensorType((), np.dtype(np.bool_))]
        else:
            want = decl
        got = [v.type for v in region.results]
        if len(got) != len(want) or any(g.dtype != w.dtype or g.rank != w.rank for g, w in zip(got, want)):
            raise CompileError(f"{op.where()}: region {k} yields ({', '.join(map(str, got))}), "
                               f"the op needs ({', '.join(map(str, want))})")


def _drop_dead_ops(fn: Function) -> None:
    """Remove ops whose results nothing uses (shape computations that specialization made dead)."""
    def uses(ops: list[Op], results: list[Value]) -> set[Value]:
        used = set(results)
        for op in ops:
            used.update(op.operands)
            for r in op.regions:
                used |= uses(r.ops, r.results)
        return used

    while True:
        used = uses(fn.ops, fn.results)
        live = [op for op in fn.ops if op.name == "custom_call" or any(r in used for r in op.results)]
        if len(live) == len(fn.ops):
            return
        fn.ops = live


def infer_shapes(module: Module) -> Module:
    """Type every op of `module`; returns a new module with checked, refined types."""
    typer = _Typer(module, static=False)
    for fn in module.functions.values():
        typer.function(fn, [a.type for a in fn.args], [None] * len(fn.args))
    return Module({name: typer.out[name] for name in module.functions})


def specialize(module: Module, function_name: str,
               input_shapes: Sequence[Sequence[int]]) -> Module:
    """A fully static module for calling `function_name` with inputs of `input_shapes`.

    Raises `InvalidArgument` if a shape does not fit the declared type, `ShapeAssertionError`
    (JAX's message) if it breaks a jax.export shape assertion. The entry keeps its name; callees
    are cloned per distinct signature.
    """
    fn = module.function(function_name)
    if len(input_shapes) != len(fn.args):
        raise CompileError(f"@{function_name} takes {len(fn.args)} inputs, got {len(input_shapes)} shapes")
    arg_types = []
    for i, (arg, shape) in enumerate(zip(fn.args, input_shapes)):
        shape = tuple(int(d) for d in shape)
        fits = len(shape) == arg.type.rank and all(
            not _known(d) or d == s for d, s in zip(arg.type.shape, shape))
        if not fits:
            raise CompileError(f"@{function_name} input {i}: shape {shape} does not fit {arg.type}")
        arg_types.append(TensorType(shape, arg.type.dtype))
    typer = _Typer(module, static=True)
    typer.function(fn, arg_types, [None] * len(fn.args))
    return Module(typer.out)
