"""Graph rewrites on the ONNX model before conversion (what ONNX Runtime's basic graph optimisations
do), where they save a whole pass over an activation that no later fusion can remove.

- `fold_batch_norms`: an inference BatchNormalization right after a Conv with constant weights
  becomes part of the Conv (w' = w * s, b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps)),
  as exported CNNs (ResNet, MobileNet) have after every convolution.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np


def fold_batch_norms(graph: Any, constants: dict[str, np.ndarray]) -> int:
    """Folds Conv -> BatchNormalization pairs in `graph` (its nodes are edited in place; new
    weights are added to `constants`). Returns how many were folded."""
    from onnx import helper
    users: collections.Counter[str] = collections.Counter(i for n in graph.node for i in n.input)
    outputs = {o.name for o in graph.output}
    producer = {o: n for n in graph.node for o in n.output}
    folded, dropped = 0, set()
    for index, bn in enumerate(graph.node):
        if bn.op_type != "BatchNormalization" or len(bn.input) != 5 or any(not i for i in bn.input):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in bn.attribute}
        if attrs.get("training_mode", 0) or any(n for n in bn.output[1:]):
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
            continue
        if users[conv.output[0]] != 1 or conv.output[0] in outputs or len(conv.input) < 2:
            continue
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        params = [constants.get(name) for name in bn.input[1:]]
        weight = constants.get(conv.input[1])
        bias = constants.get(conv.input[2]) if has_bias else None
        if weight is None or any(p is None for p in params) or (has_bias and bias is None):
            continue
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        if weight.dtype.kind != "f" or any(p.shape != (weight.shape[0],) for p in (gamma, beta, mean, var)):
            continue
        scale = gamma / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
        new_w = (weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))).astype(weight.dtype)
        base = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
        new_b = ((base - mean) * scale + beta).astype(weight.dtype)
        w_name, b_name = f"{bn.output[0]}__bn_folded_w", f"{bn.output[0]}__bn_folded_b"
        constants[w_name], constants[b_name] = new_w, new_b
        data = conv.input[0]
        del conv.input[:]
        conv.input.extend([data, w_name, b_name])
        conv.output[0] = bn.output[0]
        dropped.add(index)
        folded += 1
    if dropped:
        keep = [n for k, n in enumerate(graph.node) if k not in dropped]
        del graph.node[:]
        graph.node.extend(keep)
    return folded
