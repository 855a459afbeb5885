"""StableHLO text (as JAX prints it) -> the compiler's tensor IR.

Reads what `jax.jit(f).lower(...).as_text()` and `jax.export...mlir_module()` print: the pretty
syntax of each op, MLIR's generic quoted syntax (`"stablehlo.sort"(%x) <{...}> ({...})`), `loc(...)`
annotations and `#loc` aliases (skipped), private functions and `call`, and dynamic dims (`?`).

Shape: the MLIR syntax itself (tokens, types, attributes, dense literals, regions) is read by
`compiler.frontends.mlir.Reader`; this module holds StableHLO's op tables: which source ops map to
which IR ops, the pretty forms of the ops that have one, and `_normalize_attrs`, which maps both
syntaxes onto one set of attr keys (StableHLO's property names, dimension-number structs
flattened into the attrs). Every error is a `CompileError` naming line:col.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from compiler.errors import CompileError
from compiler.frontends.mlir import OpParts, QuantizedType, Reader, Token, TupleType, TupleValue
from compiler.ir import SUPPORTED_OPS, Function, Module, Op, Region, TensorType, Value
from compiler.passes.decompose import Builder
from compiler.passes.shape_inference import infer_shapes
from common.errors import Error as HalError

# --------------------------------------------------------------------------------------------
# Attribute normalization: both syntaxes -> one set of keys

_DROPPED_ATTRS = {"precision_config", "precision", "algorithm", "result_accuracy", "api_version",
                  "has_side_effect", "backend_config", "indices_are_sorted", "is_stable", "unique_indices",
                  "known_expanding_dimensions", "known_nonexpanding_dimensions"}
_DROPPED_PREFIXES = ("mhlo.", "sdy.", "jax.")

_RENAMES: dict[str, dict[str, str]] = {
    "broadcast_in_dim": {"dims": "broadcast_dimensions"},
    "dynamic_broadcast_in_dim": {"dims": "broadcast_dimensions"},
    "transpose": {"dims": "permutation"},
    "reverse": {"dims": "dimensions"},
    "rng_bit_generator": {"algorithm": "rng_algorithm"},
    "rng": {"distribution": "rng_distribution"},
    "iota": {"dim": "iota_dimension"},
    "dynamic_iota": {"dim": "iota_dimension"},
    "concatenate": {"dim": "dimension"},
    "get_dimension_size": {"dim": "dimension"},
    "dynamic_slice": {"sizes": "slice_sizes"},
    "pad": {"low": "edge_padding_low", "high": "edge_padding_high", "interior": "interior_padding"},
    "convolution": {"stride": "window_strides", "pad": "padding", "lhs_dilate": "lhs_dilation",
                    "rhs_dilate": "rhs_dilation", "reverse": "window_reversal"},
}
_FLATTENED = {"dot_dimension_numbers", "dimension_numbers", "window", "scatter_dimension_numbers",
              "ragged_dot_dimension_numbers"}


def _plain(v: Any) -> Any:
    """numpy arrays and lists (non-constant attrs) -> nested tuples of Python scalars."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    return v


def _normalize_attrs(name: str, raw: dict[str, Any], enums: list[str],
                     operand_types: list[TensorType]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _FLATTENED and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    if name == "dynamic_conv":  # a convolution whose padding is an operand
        name = "convolution"
    renames = _RENAMES.get(name, {})
    attrs = {}
    for key, value in flat.items():
        key = renames.get(key, key)
        if key in _DROPPED_ATTRS or key.startswith(_DROPPED_PREFIXES):
            continue
        attrs[key] = value if name == "constant" else _plain(value)
    if name == "compare":
        for key, enum in zip(("comparison_direction", "compare_type"), enums):
            attrs[key] = enum
    for key, value in _defaults(name, attrs, operand_types).items():
        attrs.setdefault(key, value)
    return attrs


def _defaults(name: str, attrs: dict[str, Any], operand_types: list[TensorType]) -> dict[str, Any]:
    """Attrs StableHLO lets the printer omit when they have their default value."""
    if name in ("dot_general", "ragged_dot"):
        return {k: () for k in ("lhs_batching_dimensions", "rhs_batching_dimensions",
                                "lhs_contracting_dimensions", "rhs_contracting_dimensions")}
    if name in ("gather", "dynamic_gather"):  # the printer omits empty lists and index_vector_dim 0
        return {"index_vector_dim": 0, **{k: () for k in (
            "offset_dims", "collapsed_slice_dims", "operand_batching_dims",
            "start_indices_batching_dims", "start_index_map")}}
    if name == "select_and_scatter" and operand_types:
        n = operand_types[0].rank
        return {"window_strides": (1,) * n, "padding": ((0, 0),) * n}
    if name == "scatter":  # the printer omits empty lists and index_vector_dim 0
        return {"index_vector_dim": 0, **{k: () for k in (
            "update_window_dims", "inserted_window_dims", "input_batching_dims",
            "scatter_indices_batching_dims", "scatter_dims_to_operand_dims")}}
    if name == "convolution":
        n = len(attrs.get("input_spatial_dimensions", ()))
        return {"window_strides": (1,) * n, "padding": ((0, 0),) * n, "lhs_dilation": (1,) * n,
                "rhs_dilation": (1,) * n, "window_reversal": (False,) * n,
                "feature_group_count": 1, "batch_group_count": 1}
    if name == "reduce_window" and operand_types:
        n = operand_types[0].rank
        return {"window_strides": (1,) * n, "base_dilations": (1,) * n,
                "window_dilations": (1,) * n, "padding": ((0, 0),) * n}
    if name == "sort":
        return {"dimension": -1}
    return {}


def _conv_layout(lhs: list[str], rhs: list[str], out: list[str]) -> dict[str, Any]:
    """`[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]` -> StableHLO's conv dimension numbers."""
    def spatial(dims: list[str]) -> tuple[int, ...]:
        found = {int(d): i for i, d in enumerate(dims) if d.isdigit()}
        return tuple(found[k] for k in range(len(found)))
    return {
        "input_batch_dimension": lhs.index("b"), "input_feature_dimension": lhs.index("f"),
        "input_spatial_dimensions": spatial(lhs),
        "kernel_input_feature_dimension": rhs.index("i"),
        "kernel_output_feature_dimension": rhs.index("o"), "kernel_spatial_dimensions": spatial(rhs),
        "output_batch_dimension": out.index("b"), "output_feature_dimension": out.index("f"),
        "output_spatial_dimensions": spatial(out),
    }


# --------------------------------------------------------------------------------------------
# Parser

_CALLS = {"call", "func.call"}
_CONTROL = {"while", "case", "if"}  # ops whose regions may use values of the enclosing scope
_CHLO = {"chlo.square": "multiply", **{f"chlo.{n}": n for n in (  # chlo ops JAX emits, as IR ops
    "erf", "erfc", "atan", "asin", "acos", "sinh", "cosh", "asinh", "acosh", "atanh", "lgamma", "digamma",
    "erf_inv", "next_after", "mulhi", "scan", "top_k", "ragged_dot")}}

_RENAMING = {"stablehlo.tuple", "stablehlo.get_tuple_element", "stablehlo.optimization_barrier",
             "stablehlo.after_all"}
_LAPACK = re.compile(r"lapack_[sd](potrf|trsm)(_ffi)?")  # the LAPACK calls JAX's CPU lowering makes


def _lapack_op(target: str, parts: OpParts, head: Token) -> tuple[str, dict[str, Any]]:
    """`custom_call @lapack_?potrf_ffi` (jnp.linalg.cholesky: the factor and LAPACK's info) and
    `@lapack_?trsm_ffi` (solve_triangular) as the StableHLO ops they compute. Their options
    are LAPACK's characters in mhlo.backend_config ('L'ower/'U'pper, side 'L'/'R', trans
    'N'/'T'/'C', diag 'N'/'U'); matrices are the trailing two dims, as StableHLO's."""
    config = parts.attrs.get("mhlo.backend_config")
    config = config if isinstance(config, dict) else {}
    char = {k: chr(int(v)) for k, v in config.items() if isinstance(v, int)}
    if "potrf" in target:
        if len(parts.operands) != 1 or len(parts.result_types) != 2:
            raise CompileError(f"custom_call @{target} at {head.where}: expected one operand and two results")
        return "cholesky", {"lower": char.get("uplo", "L") == "L"}
    if len(parts.operands) != 2 or len(parts.result_types) != 1:
        raise CompileError(f"custom_call @{target} at {head.where}: expected two operands and one result")
    transpose = {"N": "NO_TRANSPOSE", "T": "TRANSPOSE", "C": "ADJOINT"}.get(char.get("trans_x", "N"), "NO_TRANSPOSE")
    return "triangular_solve", {"left_side": char.get("side", "L") == "L", "lower": char.get("uplo", "L") == "L",
                                "unit_diagonal": char.get("diag", "N") == "U", "transpose_a": transpose}


def _torch_index_select(parts: OpParts, head: Token) -> dict[str, Any]:
    """torch_index_select(x, index; dim, batch_dims) as gather's attrs: the result is x's dims
    before `dim` (the first batch_dims of them shared with index), index's other dims, then
    x's dims after `dim`."""
    x, index = (v.type for v in parts.operands)
    dim, batch = int(parts.attrs.get("dim", 0)), int(parts.attrs.get("batch_dims", 0))
    if not (0 <= batch <= dim < x.rank and batch <= index.rank):
        raise CompileError(f"torch_index_select at {head.where}: dim {dim} and batch_dims {batch} "
                           f"do not fit {x} and {index}")
    out_rank = x.rank - 1 + index.rank - batch
    after = dim + index.rank - batch
    return {"offset_dims": tuple(range(batch, dim)) + tuple(range(after, out_rank)),
            "collapsed_slice_dims": (dim,), "operand_batching_dims": tuple(range(batch)),
            "start_indices_batching_dims": tuple(range(batch)), "start_index_map": (dim,),
            "index_vector_dim": index.rank,
            "slice_sizes": tuple(1 if d < batch or d == dim else n for d, n in enumerate(x.shape))}


def _ir_op_name(full: str) -> str | None:
    """The IR op name for a source op name, or None when it is not supported."""
    if full in ("stablehlo.uniform_quantize", "stablehlo.uniform_dequantize"):
        return full.removeprefix("stablehlo.")  # rewritten by StableHLOReader.quantized
    if full == "stablehlo.torch_index_select":
        return "gather"
    if full in _CHLO:
        return _CHLO[full]
    if full in _CALLS or full == "stablehlo.composite":  # a composite runs its decomposition
        return "call"
    name = full.removeprefix("stablehlo.")
    return name if name != full and name in SUPPORTED_OPS and name != "call" else None


class StableHLOReader(Reader):
    """StableHLO's (and chlo's) ops over the MLIR reader."""

    terminators = frozenset({"return", "func.return", "stablehlo.return"})

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.constants: dict[Value, Op] = {}  # constant results -> their op (for region captures)
        self.called: list[tuple[Op, str, Token]] = []  # ops whose region is a function's body

    def dialect_attr(self, name: Token) -> Any:
        """`#stablehlo.conv<[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]>` or its `raw key = value`
        form (-> conv dimension numbers)."""
        if name.text != "#stablehlo.conv":
            return None
        if self.peek().text == "raw":
            self.next()
            self.next()
            return self.struct_fields()
        self.next()
        layout = self.conv_layout()
        self.expect(">")
        return layout

    def finish(self, functions: dict[str, Function]) -> None:
        for op, callee, head in self.called:  # dynamic_reduce_window's reducer is a function
            if callee not in functions:
                raise CompileError(f"op '{op.name}' at {head.where} calls undefined function @{callee}")
            body = functions[callee]
            body.public = False  # jax.export prints it public, but it is only a reducer
            op.regions.append(_clone_region(Region(body.args, body.ops, body.results), {}))

    def conv_layout(self) -> dict[str, Any]:
        def dims() -> list[str]:
            self.expect("[")
            return self.comma_list(lambda: self.next().text, "]")
        lhs = dims()
        self.expect("x")
        rhs = dims()
        self.expect("->")
        out = dims()
        try:
            return _conv_layout(lhs, rhs, out)
        except (ValueError, KeyError):
            raise CompileError(f"malformed convolution dim_numbers at {self.tok.where}") from None

    # -- operations ------------------------------------------------------------------------
    def operation(self) -> Op:
        names: list[tuple[str, int]] = []
        if self.tok.kind == "value":
            def result_def() -> None:
                t = self.expect_kind("value")
                count = int(self.expect_kind("number").text) if self.accept(":") else 1
                names.append((t.text, count))
            result_def()
            while self.accept(","):
                result_def()
            self.expect("=")
        head = self.tok
        if head.kind not in ("ident", "string"):
            self.fail("expected an operation")
        self.next()
        full = head.text.strip('"')
        if full in _RENAMING or (full in ("stablehlo.real", "stablehlo.imag") and head.kind != "string"
                                 and self.tok.kind == "value"):
            return self.renaming_op(full, head, names)
        name = _ir_op_name(full)
        if name is None:
            raise CompileError(f"unsupported op '{full}' at {head.where}")
        if head.kind == "string":
            parts = self.generic_op()
        elif full == "stablehlo.composite":
            parts = self.composite_op()
        else:
            parts = {"call": self.call_op, "reduce": self.reduce_op, "while": self.while_op,
                     "constant": self.constant_op, "scan": self.scan_op,
                     "top_k": self.top_k_op}.get(name, self.pretty_op)()
        self.skip_loc()
        return self.build(name, full, head, names, parts)

    def renaming_op(self, full: str, head: Token, names: list[tuple[str, int]]) -> Op | None:
        """Ops that only give existing values new names: `tuple`, `get_tuple_element`,
        `optimization_barrier`, `after_all` (a token: nothing has side effects to order), and
        `real` of a real tensor (its `imag` is a zero constant)."""
        index = None
        if head.kind == "string":
            parts = self.generic_op()
            operands, index = parts.operands, parts.attrs.get("index")
        else:
            operands = []
            while not self.at(":"):
                if self.tok.kind == "value":
                    operands.append(self.use())
                elif self.accept("["):
                    index = int(self.expect_kind("number").text)
                    self.expect("]")
                elif self.at("{"):
                    self.attr_dict()
                else:
                    self.expect(",")
            self.op_types()
        self.skip_loc()
        if full == "stablehlo.tuple":
            values: list = [TupleValue(tuple(operands))]
        elif full == "stablehlo.after_all":  # a token orders side effects; with none, it is no data
            values = [TupleValue(())]
        elif full == "stablehlo.get_tuple_element":
            if len(operands) != 1 or not isinstance(operands[0], TupleValue) or not isinstance(index, int) \
                    or not 0 <= index < len(operands[0].elements):
                raise CompileError(f"get_tuple_element at {head.where} needs a tuple and an index in range")
            values = [operands[0].elements[index]]
        elif full in ("stablehlo.real", "stablehlo.imag"):
            x = operands[0] if len(operands) == 1 else None
            if not isinstance(x, Value) or x.type.dtype.kind not in "fV":
                raise CompileError(f"unsupported op '{full}' at {head.where}: complex numbers are not supported")
            if full == "stablehlo.real":
                values = [x]
            else:
                if not x.type.is_static:
                    raise CompileError(f"unsupported op '{full}' at {head.where} on a dynamic shape")
                zeros = OpParts([], {"value": np.zeros(x.type.shape, x.type.dtype)}, [x.type], [], [])
                return self.build("constant", "stablehlo.constant", head, names, zeros)
        else:
            values = operands
        if sum(count for _, count in names) != len(values):
            raise CompileError(f"op '{full}' at {head.where} defines {sum(c for _, c in names)} results, "
                               f"it has {len(values)}")
        k = 0
        for result_name, count in names:
            self.define(result_name, values[k:k + count])
            k += count
        return None

    def quantized(self, name: str, head: Token, names: list[tuple[str, int]], parts: OpParts) -> list[Op]:
        """An op on `!quant.uniform` tensors as the spec defines it: quantized operands are
        dequantized, the op runs on the expressed type, quantized results are quantized
        (round to nearest even, plus the zero point, clamped to the storage range).
        uniform_quantize/dequantize are those steps alone; bitcast_convert keeps the storage."""
        b = Builder((head.line, head.col))

        def per_element(values: tuple, q: QuantizedType) -> Value:
            if q.axis is None:
                return b.const(values[0], q.shape, q.expressed)
            vector = b.op("constant", [], (len(values),), q.expressed, value=np.array(values, q.expressed))
            return b.broadcast(vector, q.shape, (q.axis,))

        def dequantize(v: Value) -> Value:
            q = v.type
            x = b.convert(v, q.expressed)
            return b.binary("multiply", b.binary("subtract", x, per_element(q.zero_points, q)), per_element(q.scales, q))

        def quantize(x: Value, q: QuantizedType) -> Value:
            y = b.op("round_nearest_even", [b.binary("divide", x, per_element(q.scales, q))], q.shape, q.expressed)
            y = b.binary("add", y, per_element(q.zero_points, q))
            y = b.op("clamp", [b.like(y, q.storage_min), y, b.like(y, q.storage_max)], q.shape, q.expressed)
            out = Value(q)
            b.ops.append(Op("convert", [y], [out], {}, [], b.loc))
            return out

        if any(not t.is_static for t in parts.result_types) or any(not v.type.is_static for v in parts.operands):
            raise CompileError(f"quantized op at {head.where} on a dynamic shape: not supported")
        if name == "bitcast_convert":
            out = Value(parts.result_types[0])
            b.ops.append(Op("convert", parts.operands, [out], {}, [], b.loc))  # same storage type
            results = [out]
        else:
            operands = [dequantize(v) if isinstance(v.type, QuantizedType) else v for v in parts.operands]
            if name in ("uniform_quantize", "uniform_dequantize"):
                values = operands[:1]
            else:
                types = [TensorType(t.shape, t.expressed) if isinstance(t, QuantizedType) else t
                         for t in parts.result_types]
                values = [Value(t) for t in types]
                attrs = _normalize_attrs(name, parts.attrs, parts.enums, [v.type for v in operands])
                b.ops.append(Op(name, operands, values, attrs, parts.regions, b.loc))
            results = [quantize(v, t) if isinstance(t, QuantizedType) else b.convert(v, t.dtype)
                       for v, t in zip(values, parts.result_types)]
        k = 0
        for result_name, count in names:
            self.define(result_name, results[k:k + count])
            k += count
        return b.ops

    def build(self, name: str, full: str, head: Token, names: list[tuple[str, int]],
              parts: OpParts) -> Op | list[Op]:
        loc = (head.line, head.col)
        if any(isinstance(t, TupleType) for t in parts.result_types):
            raise CompileError(f"op '{full}' at {head.where} yields a tuple or token: not supported")
        if any(isinstance(v, TupleValue) for v in parts.operands):
            raise CompileError(f"op '{full}' at {head.where} takes a tuple operand: only get_tuple_element may")
        if any(isinstance(t, QuantizedType) for t in [v.type for v in parts.operands] + parts.result_types):
            if sum(count for _, count in names) != len(parts.result_types):
                raise CompileError(f"op '{full}' at {head.where} defines the wrong number of results")
            return self.quantized(name, head, names, parts)
        for region in parts.regions:
            self.close_region(region, name, head)
        if full == "chlo.square":
            parts.operands = parts.operands * 2
        if full == "stablehlo.torch_index_select":
            parts.attrs = _torch_index_select(parts, head)
        if full == "stablehlo.composite":
            callee = parts.attrs.get("decomposition")
            if not isinstance(callee, str):
                raise CompileError(f"composite at {head.where} has no decomposition function")
            parts.attrs = {"callee": callee}
        called = None
        if name == "custom_call":
            target = parts.attrs.get("call_target_name")
            if target == "stablehlo.dynamic_reduce_window":
                # (inputs..., inits..., window_dimensions, window_strides, base_dilations,
                #  window_dilations, padding) with the reducer as a called function
                called = parts.attrs.get("called_computations")
                n = len(parts.operands) - 5
                if not (isinstance(called, tuple) and len(called) == 1 and isinstance(called[0], str)):
                    raise CompileError(f"dynamic_reduce_window at {head.where} needs one called computation")
                if n < 2 or n % 2 or len(parts.result_types) != n // 2:
                    raise CompileError(f"dynamic_reduce_window at {head.where} has {len(parts.operands)} "
                                       f"operands and {len(parts.result_types)} results")
                name, parts.attrs = "dynamic_reduce_window", {}
            elif isinstance(target, str) and _LAPACK.fullmatch(target):
                name, parts.attrs = _lapack_op(target, parts, head)
            elif target != "shape_assertion":
                raise CompileError(f"unsupported custom_call @{target} at {head.where}")
        n_results = sum(count for _, count in names)
        if n_results != len(parts.result_types):
            raise CompileError(f"op '{full}' at {head.where} defines {n_results} results "
                               f"but its type has {len(parts.result_types)}")
        results = [Value(ty) for ty in parts.result_types]
        k = 0
        for result_name, count in names:
            for j, v in enumerate(results[k:k + count]):
                v.name = result_name + (f"#{j}" if count > 1 else "")
            self.define(result_name, results[k:k + count])
            k += count
        attrs = _normalize_attrs(name, parts.attrs, parts.enums, [v.type for v in parts.operands])
        op = Op(name, parts.operands, results, attrs, parts.regions, loc)
        if name == "constant":
            self.constants[results[0]] = op
        if called is not None:
            self.called.append((op, called[0], head))
        return op

    def close_region(self, region: Region, owner: str, head: Token) -> None:
        """Make `region` self-contained: jax.export hoists a comparator's constants out of the
        region, so the body uses values of the enclosing scope. Captured constants are cloned
        into the body (later passes lower a region from its arguments alone); capturing anything
        else is only allowed in the regions of control flow (while, case, if), whose bodies see
        the enclosing scope as JAX's lax.cond branches use the enclosing function's values."""
        defined = set(region.args)
        clones: dict[Value, Value] = {}
        prologue: list[Op] = []

        def capture(v: Value, user: Op | None) -> Value:
            if v in defined:
                return v
            if v not in clones:
                const = self.constants.get(v)
                if const is None:
                    if owner in _CONTROL:
                        return v
                    where = f" at {user.loc[0]}:{user.loc[1]}" if user is not None and user.loc else ""
                    raise CompileError(f"region of op '{owner}' at {head.where} uses {v.name or 'a value'}"
                                       f" from outside it{where}: only constants may be captured")
                clones[v] = Value(v.type, v.name)
                prologue.append(Op("constant", [], [clones[v]], dict(const.attrs), [], const.loc))
            return clones[v]

        def walk(ops: list[Op], results: list[Value], holder: Op | None) -> list[Value]:
            for op in ops:
                op.operands = [capture(v, op) for v in op.operands]
                for inner in op.regions:
                    defined.update(inner.args)
                    inner.results = walk(inner.ops, inner.results, op)
                defined.update(op.results)
            return [capture(v, holder) for v in results]

        region.results = walk(region.ops, region.results, None)
        region.ops[:0] = prologue

    def pretty_op(self) -> OpParts:
        """Pretty syntax of the ops with no region: operands, `key = value` attrs, bare enums
        (`GE`, `SIGNED`), a slice spec `[a:b:s, ...]`, an attr dict, a callee symbol, then types."""
        operands: list[Value] = []
        attrs: dict[str, Any] = {}
        enums: list[str] = []
        while not self.at(":"):
            t = self.tok
            if t.kind == "value":
                operands.append(self.use())
            elif t.text == "," and t.kind == "punct":
                self.next()
            elif t.kind == "ident" and self.peek().text == "=":
                self.next()
                self.next()
                self.keyword_attr(t.text, attrs)
            elif t.kind == "ident":
                enums.append(self.next().text)
            elif t.text == "[":
                self.slice_spec(attrs)
            elif t.text == "{":
                attrs.update(self.attr_dict())
            elif t.text == "(":
                self.next()
                operands.extend(self.comma_list(self.use, ")"))
            elif t.kind == "symbol":
                attrs["call_target_name"] = self.next().text[1:].strip('"')
            else:
                self.fail("unexpected token in operation")
        operand_types, types = self.op_types()
        # `: T` is every operand's and the result's type; `: I, T` (select) lists operand types
        # of which the last is the result's; after `->` come the results themselves
        return OpParts(operands, attrs, types if operand_types is not None else types[-1:], [], enums)

    def constant_op(self) -> OpParts:
        """`constant dense<...> : T` (the attr's type is the result type)."""
        if self.at("{"):
            self.attr_dict()
        if not self.at("dense"):
            self.fail("expected a dense constant")
        value = self.dense_attr()
        return OpParts([], {"value": value}, [TensorType(value.shape, value.dtype)], [], [])

    def keyword_attr(self, key: str, attrs: dict[str, Any]) -> None:
        if key in ("contracting_dims", "batching_dims"):  # `[1] x [0]`
            lhs = self.attr()
            self.expect("x")
            rhs = self.attr()
            base = key.replace("_dims", "_dimensions")
            attrs["lhs_" + base], attrs["rhs_" + base] = lhs, rhs
        elif key == "dim_numbers":
            attrs.update(self.conv_layout())
        else:
            attrs[key] = self.attr()

    def slice_spec(self, attrs: dict[str, Any]) -> None:
        self.expect("[")

        def dim() -> tuple[int, int, int]:
            start = int(self.expect_kind("number").text)
            self.expect(":")
            limit = int(self.expect_kind("number").text)
            stride = int(self.expect_kind("number").text) if self.accept(":") else 1
            return start, limit, stride

        dims = self.comma_list(dim, "]")
        attrs["start_indices"] = tuple(d[0] for d in dims)
        attrs["limit_indices"] = tuple(d[1] for d in dims)
        attrs["strides"] = tuple(d[2] for d in dims)

    def composite_op(self) -> OpParts:
        """`composite "name" %a, %b {decomposition = @fn, ...} : (Ts) -> Us`: a call of @fn."""
        self.expect_kind("string")
        operands = []
        if self.tok.kind == "value":
            operands.append(self.use())
            while self.accept(","):
                operands.append(self.use())
        attrs = self.attr_dict() if self.at("{") else {}
        _, result_types = self.op_types()
        return OpParts(operands, attrs, result_types, [], [])

    def call_op(self) -> OpParts:
        callee = self.expect_kind("symbol").text[1:].strip('"')
        self.expect("(")
        operands = self.comma_list(self.use, ")")
        if self.at("{"):
            self.attr_dict()
        _, result_types = self.op_types()
        return OpParts(operands, {"callee": callee}, result_types, [], [])

    def reduce_op(self) -> OpParts:
        """`reduce(%x init: %c), ... [applies stablehlo.op] across dimensions = [..] : T
        [reducer(%a: T, %b: T) (%c: U, %d: U) { body }]`."""
        if not self.at("("):  # no pretty form: the generic form is `"stablehlo.reduce"(...)`
            self.fail("expected '(' after stablehlo.reduce")
        inputs, inits = [], []
        while self.accept("("):
            inputs.append(self.use())
            self.expect("init")
            self.expect(":")
            inits.append(self.use())
            self.expect(")")
            self.accept(",")
        applies = None
        if self.accept("applies"):
            applies = self.expect_kind("ident")
        self.expect("across")
        self.expect("dimensions")
        self.expect("=")
        attrs = {"dimensions": self.attr()}
        if self.at("{"):
            attrs.update(self.attr_dict())
        _, result_types = self.op_types()
        if applies is not None:
            body_name = applies.text.removeprefix("stablehlo.")
            if body_name not in SUPPORTED_OPS:
                raise CompileError(f"unsupported op '{applies.text}' at {applies.where}")
            scalar = TensorType((), inits[0].type.dtype)
            a, b, r = Value(scalar, "%lhs"), Value(scalar, "%rhs"), Value(scalar, "%r")
            body = Region([a, b], [Op(body_name, [a, b], [r], {}, [], (applies.line, applies.col))], [r])
        else:
            self.expect("reducer")
            pairs = []
            while self.at("("):
                self.next()
                pair = []
                for _ in range(2):
                    t = self.expect_kind("value")
                    self.expect(":")
                    pair.append(Value(self.type(), t.text))
                    self.skip_loc()
                    self.accept(",")
                self.expect(")")
                pairs.append(pair)
            body = self.region([p[0] for p in pairs] + [p[1] for p in pairs])
        return OpParts(inputs + inits, attrs, result_types, [body], [])

    def top_k_op(self) -> OpParts:
        """`chlo.top_k(%x, k = K) : T -> (U, V)`."""
        self.expect("(")
        operand = self.use()
        self.expect(",")
        self.expect("k")
        self.expect("=")
        k = int(self.expect_kind("number").text)
        self.expect(")")
        _, result_types = self.op_types()
        return OpParts([operand], {"k": k}, result_types, [], [])

    def scan_op(self) -> OpParts:
        """`chlo.scan(%x, ...) inits(%c, ...) dimension=D [attributes {is_reverse = true}]
        { ^bb0(elements..., carries...): ... } : (Ts) -> (Us)`."""
        self.expect("(")
        inputs = self.comma_list(self.use, ")")
        self.expect("inits")
        self.expect("(")
        inits = self.comma_list(self.use, ")")
        self.expect("dimension")
        self.expect("=")
        attrs: dict[str, Any] = {"dimension": int(self.expect_kind("number").text), "is_reverse": False,
                                 "carries": len(inits)}
        if self.accept("attributes"):
            attrs.update(self.attr_dict())
        body = self.region()
        _, result_types = self.op_types()
        if len(body.args) != len(inputs) + len(inits) or len(result_types) < len(inits):
            self.fail("scan's region takes an element per input and a carry per init")
        return OpParts(inputs + inits, attrs, result_types, [body], [])

    def while_op(self) -> OpParts:
        """`while(%iterArg = %init, ...) : T, ... cond { ... } do { ... }`."""
        self.expect("(")
        names, operands = [], []

        def carried() -> None:
            names.append(self.expect_kind("value").text)
            self.expect("=")
            operands.append(self.use())

        self.comma_list(carried, ")")
        if self.accept("attributes"):
            self.attr_dict()
        _, types = self.op_types()
        if len(types) != len(names):
            self.fail(f"while has {len(names)} carried values but {len(types)} types")
        regions = []
        for keyword in ("cond", "do"):
            self.expect(keyword)
            regions.append(self.region([Value(ty, n) for n, ty in zip(names, types)]))
        return OpParts(operands, {}, types, regions, [])


def _clone_region(region: Region, vmap: dict[Value, Value]) -> Region:
    """A copy of `region` with fresh values (values from outside it are mapped by `vmap`)."""
    args = [Value(a.type, a.name) for a in region.args]
    inner = {**vmap, **dict(zip(region.args, args))}
    ops = []
    for op in region.ops:
        results = [Value(r.type, r.name) for r in op.results]
        regions = [_clone_region(r, inner) for r in op.regions]
        ops.append(Op(op.name, [inner.get(v, v) for v in op.operands], results, dict(op.attrs),
                      regions, op.loc))
        inner.update(zip(op.results, results))
    return Region(args, ops, [inner.get(v, v) for v in region.results])


def parse_stablehlo(text: str) -> Module:
    """Parse StableHLO MLIR text into a shape-checked `Module` (raises `CompileError`)."""
    return infer_shapes(read_module(text, StableHLOReader))


def read_module(text: str, reader: type[Reader]) -> Module:
    """`text` read by `reader` (StableHLOReader or a subclass of it) into an untyped Module."""
    if not isinstance(text, str):
        raise CompileError(f"expected StableHLO text (str), got {type(text).__name__}")
    parser = reader(text)
    try:
        module = parser.module()
    except RecursionError:
        raise CompileError("input nests too deeply") from None
    except HalError:
        raise
    except (KeyError, IndexError, ValueError, TypeError, AttributeError, ArithmeticError) as e:
        # a safety net: every check should raise CompileError itself; none may escape raw
        t = parser.tok
        raise CompileError(f"malformed input at {t.where} near {t.text[:40]!r} "
                           f"({type(e).__name__}: {e})") from None
    return module
