"""A compiled model applied to batches of rows: the one piece the local runner, the Ray Data
Predictor and the Ray Serve deployment share.

A batch is a dict of columns (name -> array, first dim the row). Columns are matched to the
function's inputs by name (names from JAX's StableHLO text, `names.py`, or given as `inputs=`),
or by position when the model carries no names and the batch has one column per input; results
become columns named after the model's results (or `outputs=`). Other columns (an id, say) are
carried through unchanged, so a scored row can be joined back to its input.

The batch dim: a function whose inputs have a dynamic first dim (`jax.export` with a symbolic
batch dim) is called with the rows as they come (each new batch size compiles once, through the
disk cache); one with a static first dim B is called on chunks of B rows, the last padded by
repeating its last row and the padding's results dropped. Chunks are submitted together, so
they pipeline on the device. Either way every row's result depends only on that row, which is
what batch scoring assumes of a model.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

import fibergrid as fg
from compiler.executable import format_shape
from fibergrid.batch.names import function_names
from common.errors import InvalidArgument

Batch = dict[str, np.ndarray]


def _source_text(model: Any, module: Any) -> str | None:
    """The StableHLO text behind a model, where there is one (for input and result names)."""
    if isinstance(model, str) and "{" in model:
        return model
    path = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    if path and not path.endswith((".fgx", ".onnx")):
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError):
            pass
    source = module.program.source
    return source if isinstance(source, str) else None  # an ONNX model's source is not StableHLO text


def _origin(model: Any) -> str:
    if isinstance(model, (bytes, bytearray)):
        return "<model bytes>"
    return "<StableHLO text>" if isinstance(model, str) and "{" in model else str(os.fspath(model))


class BatchModel:
    """`BatchModel("model.fgx", device=dev)(batch) -> batch`: one function of a model scoring
    batches of rows. `inputs`/`outputs` name the columns per input and result (default: the
    model's names); `keep` the columns carried through (default: every column not an input);
    `max_batch` splits large batches for a dynamic-batch model (default: none)."""

    def __init__(self, model: str | os.PathLike | bytes, function: str = "main", *, device: Any = None,
                 inputs: Sequence[str] | None = None, outputs: Sequence[str] | None = None,
                 keep: Sequence[str] | None = None, max_batch: int | None = None) -> None:
        self.module = fg.load(model, device)
        self.function = self.module[function]
        self.origin = _origin(model)
        self.signature = self.function.signature
        if not self.signature:
            raise InvalidArgument(f"{self.origin}: @{function} takes no inputs; batch scoring needs a per-row input")
        for i, (shape, _) in enumerate(self.signature):
            if not shape:
                raise InvalidArgument(f"{self.origin}: @{function} input {i} is a scalar; every input needs a batch dim")
        firsts = {shape[0] for shape, _ in self.signature}
        if len(firsts) > 1:
            raise InvalidArgument(f"{self.origin}: @{function}'s inputs disagree on the batch dim "
                                  f"({', '.join(format_shape(s, d) for s, d in self.signature)})")
        self.static_batch: int | None = firsts.pop()  # None: dynamic
        if max_batch is not None and max_batch < 1:
            raise InvalidArgument(f"max_batch={max_batch} must be >= 1")
        self.max_batch = max_batch
        self._text = _source_text(model, self.module)
        if self.function.has_names:  # an ONNX graph's own input and output names
            names, self.named = [i.name for i in self.function.inputs], True
        else:
            names, _, self.named = function_names(self._text, function, len(self.signature), 1)
        if inputs is not None:
            inputs = list(inputs)
            if len(inputs) != len(self.signature):
                raise InvalidArgument(f"inputs={inputs}: @{function} takes {len(self.signature)} inputs")
            names, self.named = inputs, True
        self.input_names = names
        self._outputs = list(outputs) if outputs is not None else None
        self.output_names: list[str] | None = None  # known after the first call
        self.keep = list(keep) if keep is not None else None
        self._columns: dict[tuple[str, ...], list[str]] = {}  # batch columns -> input columns

    def __repr__(self) -> str:
        return f"<BatchModel {self.origin} @{self.function.name} inputs={self.input_names}>"

    # ----------------------------------------------------------------------------------------
    # Columns

    def input_columns(self, columns: Sequence[str]) -> list[str]:
        """The batch column for each model input; one clear error when one is missing."""
        key = tuple(columns)
        found = self._columns.get(key)
        if found is not None:
            return found
        if all(n in columns for n in self.input_names):
            found = list(self.input_names)
        elif not self.named and len([c for c in columns if c not in (self.keep or ())]) == len(self.signature):
            found = [c for c in columns if c not in (self.keep or ())]  # by position
        else:
            missing = next(n for n in self.input_names if n not in columns)
            hint = "" if self.named else " (the model has no input names: pass inputs=[...] / --inputs)"
            raise InvalidArgument(f"no column '{missing}' for input {self.input_names.index(missing)} of "
                                  f"@{self.function.name} (columns: {', '.join(columns) or 'none'}){hint}")
        self._columns[key] = found
        return found

    def _check(self, column: str, index: int, array: np.ndarray) -> np.ndarray:
        shape, dtype = self.signature[index]
        array = np.asarray(array)
        if array.dtype != dtype:
            raise InvalidArgument(f"column '{column}': dtype {array.dtype}, but input {index} of "
                                  f"@{self.function.name} takes {np.dtype(dtype)} (cast the column; no silent casts)")
        rows = tuple(array.shape[1:])
        if array.ndim != len(shape) or any(d is not None and d != s for d, s in zip(shape[1:], rows)):
            want = format_shape(shape[1:], dtype).split(" ")[0]
            raise InvalidArgument(f"column '{column}': rows of shape {rows}, but input {index} of "
                                  f"@{self.function.name} takes rows of {want} ({format_shape(shape, dtype)})")
        return array

    def _result_names(self, count: int) -> list[str]:
        if self.output_names is None:
            if self._outputs is not None:
                if len(self._outputs) != count:
                    raise InvalidArgument(f"outputs={self._outputs}: @{self.function.name} has {count} results")
                self.output_names = self._outputs
            else:
                self.output_names = [o.name for o in self.function.outputs] if self.function.has_names else \
                    function_names(self._text, self.function.name, len(self.signature), count)[1]
        return self.output_names

    # ----------------------------------------------------------------------------------------
    # Calls

    def _chunks(self, rows: int) -> list[tuple[int, int]]:
        size = self.static_batch or self.max_batch or rows
        return [(start, min(start + size, rows)) for start in range(0, rows, size)]

    def predict(self, arrays: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        """Results for rows given as one array per input (already checked): chunked, padded and
        pipelined as the batch dim needs; each result has one entry per row."""
        rows = len(arrays[0])
        if rows == 0:
            raise InvalidArgument("an empty batch: no rows to score")
        futures = []
        for start, end in self._chunks(rows):
            chunk = [a[start:end] for a in arrays]
            if self.static_batch and end - start < self.static_batch:
                pad = self.static_batch - (end - start)
                chunk = [np.concatenate([c, np.repeat(c[-1:], pad, axis=0)]) for c in chunk]
            futures.append((end - start, self.function.submit(*[np.ascontiguousarray(c) for c in chunk])))
        parts = []
        for n, future in futures:
            out = future.result()
            out = out if isinstance(out, tuple) else (out,)
            for i, r in enumerate(out):
                expect = self.static_batch or n
                if r.ndim == 0 or r.shape[0] != expect:
                    raise InvalidArgument(f"@{self.function.name} result {i} has shape {r.shape}: not one entry per "
                                          f"row of a {expect}-row call, so it cannot be split into rows")
            parts.append(tuple(r[:n] for r in out))
        return tuple(np.concatenate(p) if len(p) > 1 else p[0] for p in zip(*parts))

    def __call__(self, batch: Mapping[str, np.ndarray]) -> Batch:
        """Scores a batch: kept columns, then one column per result."""
        columns = list(batch)
        names = self.input_columns(columns)
        arrays = [self._check(c, i, batch[c]) for i, c in enumerate(names)]
        rows = len(arrays[0])
        for c, a in zip(names, arrays):
            if len(a) != rows:
                raise InvalidArgument(f"column '{c}' has {len(a)} rows, column '{names[0]}' {rows}")
        if self.keep is None:
            kept = [c for c in columns if c not in names]
        else:
            missing = [c for c in self.keep if c not in batch]
            if missing:
                raise InvalidArgument(f"no column '{missing[0]}' to keep (columns: {', '.join(columns)})")
            kept = self.keep
        results = self.predict(arrays)
        out_names = self._result_names(len(results))
        clash = next((n for n in out_names if n in kept), None)
        if clash is not None:
            raise InvalidArgument(f"result '{clash}' would overwrite the kept column '{clash}'; rename it with outputs=[...]")
        out: Batch = {c: np.asarray(batch[c]) for c in kept}
        out.update(zip(out_names, results))
        return out
