"""ai.onnx.ml.TreeEnsemble: constant decision trees evaluated as nested selects.

The trees are attributes, so each becomes, bottom up, select(condition of the node on its feature
column, true subtree, false subtree) over [rows, n_targets] -- a leaf is the constant row with its
weight at its target (and the aggregation's identity elsewhere) -- linear in the tree's size.
Trees are combined with the aggregate function. Node modes, missing values tracking true, and the
order set-membership values are read in (the tree walk's, true branch first) follow the reference
(onnx/reference/ops/aionnxml/op_tree_ensemble.py), which applies no post_transform; a model asking
for one is refused.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of, shape_of
from compiler.frontends.onnx.graph import Ctx

_COMPARE = {0: "LE", 1: "LT", 2: "GE", 3: "GT", 4: "EQ", 5: "NE"}
MEMBER = 6


def _array(c: Ctx, name: str) -> np.ndarray | None:
    from onnx import numpy_helper
    value = c.attr(name)
    if value is None:
        return None
    return numpy_helper.to_array(value) if hasattr(value, "data_type") else np.asarray(value)


def _tree_ensemble(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    rows, _ = shape_of(x)
    dtype = dtype_of(x)
    if c.attr("post_transform", 0):
        raise c.error(f"post_transform {c.attr('post_transform')} is not supported (only NONE)")
    aggregate = c.attr("aggregate_function", 1)
    if aggregate not in (0, 1, 2, 3):
        raise c.error(f"aggregate_function {aggregate} is not supported")
    targets = c.attr("n_targets")
    splits, modes = _array(c, "nodes_splits"), _array(c, "nodes_modes")
    weights, leaf_targets = _array(c, "leaf_weights"), c.attr("leaf_targetids")
    features, true_ids, false_ids = c.attr("nodes_featureids"), c.attr("nodes_truenodeids"), c.attr("nodes_falsenodeids")
    true_leaf, false_leaf = c.attr("nodes_trueleafs"), c.attr("nodes_falseleafs")
    tracks = c.attr("nodes_missing_value_tracks_true") or [0] * len(features)
    members: Iterator[float] = iter(_array(c, "membership_values") if c.attr("membership_values") is not None else [])
    identity = {0: 0.0, 1: 0.0, 2: np.finfo(dtype).max, 3: np.finfo(dtype).min}[aggregate]
    trees = len(c.attr("tree_roots"))

    def leaf(i: int) -> np.ndarray:
        row = np.full(targets, identity, dtype)
        row[leaf_targets[i]] = weights[i] / trees if aggregate == 0 else weights[i]
        return row

    def column(f: int) -> Tensor:
        return c.b.slice(x, [0, f], [rows, f + 1])  # [rows, 1]

    def node(i: int, is_leaf: bool, depth: int = 0) -> Tensor:
        if is_leaf:
            return leaf(i)
        if depth > 512:
            raise c.error("a tree deeper than 512 nodes (or a cycle)")
        value = column(features[i])
        if modes[i] == MEMBER:
            cond = None
            while (m := next(members, np.nan)) and not np.isnan(m):
                hit = c.b.compare("EQ", value, c.b.scalar(m, dtype))
                cond = hit if cond is None else c.b.binary("or", cond, hit)
            cond = c.b.full(False, [rows, 1], np.bool_) if cond is None else cond
        elif int(modes[i]) in _COMPARE:
            cond = c.b.compare(_COMPARE[int(modes[i])], value, c.b.scalar(splits[i], dtype))
        else:
            raise c.error(f"node mode {int(modes[i])} is not supported")
        if tracks[i]:
            cond = c.b.binary("or", cond, c.b.compare("NE", value, value))
        yes = node(true_ids[i], bool(true_leaf[i]), depth + 1)
        no = node(false_ids[i], bool(false_leaf[i]), depth + 1)
        return c.b.select(c.b.broadcast(cond, [rows, targets]), c.b.broadcast(yes, [rows, targets]),
                          c.b.broadcast(no, [rows, targets]))

    total: Tensor = c.b.full(identity, [rows, targets], dtype)
    combine = {0: "add", 1: "add", 2: "minimum", 3: "maximum"}[aggregate]
    for root in c.attr("tree_roots"):
        single = bool(true_leaf[root] and false_leaf[root] and true_ids[root] == false_ids[root])
        total = c.b.binary(combine, total, c.b.broadcast(node(root, single), [rows, targets]))
    return [total]


HANDLERS = {"ai.onnx.ml.TreeEnsemble": _tree_ensemble}
