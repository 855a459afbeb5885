"""The caller's side of the export: runs export.py in a child process (`sys.executable -m`) and
reads its result back, so TensorFlow is never loaded into the caller's process (see export.py).

The request and the result travel as JSON files (the StableHLO text of a model with its weights
can be hundreds of MB: a file, not a pipe). A CompileError or InvalidArgument in the child is
raised again here with its message; a child that dies (a TensorFlow crash) or runs past
`EXPORT_TIMEOUT_S` is a CompileError with the last line it printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from compiler.errors import CompileError
from compiler.executable import dtype_from_name
from common.errors import InvalidArgument

EXPORT_TIMEOUT_S = 1800  # a large model's export takes minutes; a hung TensorFlow must still end

_ROOT = str(Path(__file__).resolve().parents[3])  # the folder holding `compiler/`, for the child's imports


@dataclass(frozen=True)
class Exported:
    """A signature exported at each input-shape signature: its names and StableHLO texts."""

    where: str  # "DIR: signature 'NAME'", for messages
    inputs: tuple[tuple[str, tuple[int | None, ...], np.dtype], ...]  # sorted by name
    outputs: tuple[tuple[str, np.dtype], ...]  # sorted by key
    texts: tuple[tuple[tuple[tuple[int, ...], ...], str], ...]  # (input shapes, StableHLO text)
    note: str | None  # what was assumed for unknown dims, when nothing was asked


def is_saved_model(path: str) -> bool:
    """A directory holding a saved_model.pb (or .pbtxt)."""
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt"))


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def export(path: str, signature: str = "serving_default",
           input_shapes: Sequence[Sequence[Sequence[int]]] | None = None) -> Exported:
    """`signature` of the SavedModel at `path` exported at each of `input_shapes` (default: the
    declared shapes, unknown dims 1), by TensorFlow in a child process."""
    if not is_saved_model(path):
        raise CompileError(f"{path}: not a SavedModel directory (no saved_model.pb)")
    with tempfile.TemporaryDirectory(prefix="fibergrid-savedmodel-") as tmp:
        request, result = os.path.join(tmp, "request.json"), os.path.join(tmp, "result.json")
        with open(request, "w") as f:
            json.dump({"path": os.path.abspath(path), "signature": signature,
                       "input_shapes": None if input_shapes is None else [[list(s) for s in shapes] for shapes in input_shapes]}, f)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])))
        try:
            proc = subprocess.run([sys.executable, "-m", "compiler.frontends.savedmodel.export", request, result],
                                  env=env, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CompileError(f"{path}: TensorFlow's export did not finish within {EXPORT_TIMEOUT_S} s") from None
        if proc.returncode != 0 or not os.path.exists(result):
            raise CompileError(f"{path}: TensorFlow's export process failed (exit status {proc.returncode}): "
                               f"{_last_line(proc.stderr)}")
        with open(result) as f:
            data = json.load(f)
    if "error" in data:
        kind = InvalidArgument if data["error"]["kind"] == "InvalidArgument" else CompileError
        raise kind(data["error"]["message"])
    return Exported(
        data["where"],
        tuple((name, tuple(shape), dtype_from_name(dtype)) for name, shape, dtype in data["inputs"]),
        tuple((name, dtype_from_name(dtype)) for name, dtype in data["outputs"]),
        tuple((tuple(tuple(s) for s in e["shapes"]), e["text"]) for e in data["exports"]),
        data["note"])
