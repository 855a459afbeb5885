"""TfIdfVectorizer on integer tokens: n-gram counts (with skips) against a constant pool.

Each pool n-gram (tokens t_1..t_n, output column k) is counted, for every skip distance d it is
looked for at, as the number of start positions s with X[s + m*d] == t_{m+1} for every m: n
comparisons of strided windows of X with constants, and-ed, summed -- elementwise ops and a
reduction per n-gram. The counting rules are the reference's (onnx/reference/ops/
op_tfidf_vectorizer.py): n-grams outside [min_gram_length, max_gram_length] are not counted,
unigrams only at distance 1, longer ones at distances 1 .. max_skip_count + 1. String pools
are refused (no string tensors).
"""

from __future__ import annotations

import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of, shape_of
from compiler.frontends.onnx.graph import Ctx


def _pool(c: Ctx) -> list[tuple[tuple[int, ...], int]]:
    """(tokens, output column) of every pool n-gram within the gram-length bounds."""
    pool = [int(v) for v in c.attr("pool_int64s", [])]
    if not pool:
        raise c.error("only integer pools (pool_int64s) are supported: fibergrid has no string tensors")
    counts = [int(v) for v in c.attr("ngram_counts")]
    indexes = [int(v) for v in c.attr("ngram_indexes")]
    lo, hi = int(c.attr("min_gram_length")), int(c.attr("max_gram_length"))
    grams, gram_id = [], 0
    for size, start in enumerate(counts, start=1):
        end = counts[size] if size < len(counts) else len(pool)
        for first in range(start, end - size + 1, size):
            if lo <= size <= hi:
                grams.append((tuple(pool[first:first + size]), indexes[gram_id]))
            gram_id += 1
    return grams


def _tfidf(c: Ctx) -> list[Tensor]:
    x = c.input(0)
    xs = shape_of(x)
    if len(xs) not in (1, 2):
        raise c.error(f"input must be [C] or [B, C], got {xs}")
    rows = xs[:-1]
    length = xs[-1]
    skips = int(c.attr("max_skip_count", 0))
    size = max(int(i) for i in c.attr("ngram_indexes")) + 1
    counts: dict[int, Tensor] = {}
    for tokens, column in _pool(c):
        n = len(tokens)
        for d in ([1] if n == 1 else range(1, skips + 2)):
            positions = length - d * (n - 1)
            if positions <= 0:
                continue
            match = None
            for m, token in enumerate(tokens):
                window = c.b.slice(x, [0] * len(rows) + [m * d], [*rows, m * d + positions])
                hit = c.b.compare("EQ", window, c.b.scalar(token, dtype_of(x)))
                match = hit if match is None else c.b.binary("and", match, hit)
            found = c.b.reduce(c.b.convert(match, np.float32), [len(rows)], "add", 0)
            counts[column] = found if column not in counts else c.b.binary("add", counts[column], found)
    zero = c.b.full(0, rows, np.float32)
    tf = c.b.concat([c.b.reshape(counts.get(k, zero), [*rows, 1]) for k in range(size)], len(rows))
    mode = c.attr("mode")
    weights = np.asarray(c.attr("weights", []) or np.ones(size), np.float32)
    if mode == "TF":
        return [tf]
    if mode == "IDF":
        return [c.b.select(c.b.compare("GT", tf, c.b.scalar(0, np.float32)), c.b.broadcast(weights, shape_of(tf)),
                           c.b.scalar(0, np.float32))]
    if mode == "TFIDF":
        return [c.b.binary("multiply", tf, weights)]
    raise c.error(f"mode '{mode}' is not supported (TF, IDF, TFIDF)")


HANDLERS = {"TfIdfVectorizer": _tfidf}
