"""The caller's side of the export: a worker process runs export.py (`sys.executable -m`) and
answers requests, so TensorFlow is never loaded into the caller's process (see export.py).

The worker is started on the first export and reused by the next ones (importing TensorFlow
takes seconds), one request at a time; it exits by itself after export.IDLE_EXIT_S idle, or when
this process ends (its stdin closes). Requests and results travel as JSON files (the StableHLO
text of a model with its weights can be hundreds of MB), their paths as one line each way. A
CompileError or InvalidArgument in the worker is raised again here with its message; a worker
that dies (a TensorFlow crash) or runs past EXPORT_TIMEOUT_S is a CompileError with the last line
it printed.

Exports are cached beside the compile cache's entries (`<key>.savedmodel.json`, pruned with
them), keyed by the model directory's contents, the request, this compiler's version and
TensorFlow's: loading a SavedModel again, in a later process, starts no TensorFlow at all.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence

import numpy as np

from compiler.cache import cache_dir, max_bytes, private_dir, prune
from compiler.errors import CompileError
from compiler.executable import dtype_from_name, write_atomic
from compiler.pipeline import compiler_version
from common.errors import InvalidArgument

EXPORT_TIMEOUT_S = 1800  # a large model's export takes minutes; a hung TensorFlow must still end

_ROOT = str(Path(__file__).resolve().parents[3])  # the folder holding `compiler/`, for the worker's imports


@dataclass(frozen=True)
class Exported:
    """A signature exported at each input-shape signature: its names and StableHLO texts."""

    where: str  # "DIR: signature 'NAME'", for messages
    inputs: tuple[tuple[str, tuple[int | None, ...], np.dtype], ...]  # sorted by name
    outputs: tuple[tuple[str, np.dtype], ...]  # sorted by key
    texts: tuple[tuple[tuple[tuple[int, ...], ...], str], ...]  # (input shapes, StableHLO text)
    note: str | None  # what was assumed for unknown dims, when nothing was asked


class _Gone(Exception):
    """The worker ended before answering (crashed, or exited idle as the request arrived)."""


class _Worker:
    """One export.py worker process and the file its stderr goes to."""

    def __init__(self) -> None:
        self.log: IO[bytes] = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen([sys.executable, "-m", "compiler.frontends.savedmodel.export"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def ask(self, request: str, result: str, timeout: float) -> None:
        """Sends one request and waits for its answer; _Gone if the worker ends first."""
        try:
            self.proc.stdin.write(f"{request}\t{result}\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _Gone from None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self.close()
                raise CompileError(f"TensorFlow's export did not finish within {timeout:.0f} s")
        if self.proc.stdout.readline() != "done\n":
            self.proc.wait()
            raise _Gone

    def last_line(self) -> str:
        self.log.seek(0)
        lines = [line for line in self.log.read().decode(errors="replace").splitlines() if line.strip()]
        return f"exit status {self.proc.returncode}: {lines[-1].strip() if lines else 'no output'}"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


_worker: _Worker | None = None
_lock = threading.Lock()


def _ask(request: str, result: str) -> None:
    """One request answered by the worker (started, or restarted once if it had ended)."""
    global _worker
    deadline = time.monotonic() + EXPORT_TIMEOUT_S
    for attempt in range(2):
        if _worker is None or _worker.proc.poll() is not None:
            _worker = _Worker()
        try:
            _worker.ask(request, result, max(1.0, deadline - time.monotonic()))
            return
        except _Gone:
            failed, _worker = _worker, None
            if attempt:
                raise CompileError(f"TensorFlow's export process failed ({failed.last_line()})") from None
        except CompileError:
            _worker = None
            raise


def is_saved_model(path: str) -> bool:
    """A directory holding a saved_model.pb (or .pbtxt)."""
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt"))


def _tensorflow_version() -> str | None:
    for distribution in ("tensorflow-cpu", "tensorflow"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


_digests: dict[str, tuple[tuple, str]] = {}  # model directory -> (its files' stats, their digest)


def _model_digest(path: str) -> str:
    """sha256 over the SavedModel directory's files (names and contents). A compile exports one
    model several times (the sizes of its unknown dims): the contents are read again only when
    a file's size or mtime changed."""
    files = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            file = os.path.join(root, name)
            st = os.stat(file)
            files.append((os.path.relpath(file, path), st.st_size, st.st_mtime_ns))
    stats = tuple(files)
    known = _digests.get(path)
    if known is not None and known[0] == stats:
        return known[1]
    digest = hashlib.sha256()
    for rel, _, _ in files:
        digest.update(rel.encode() + b"\0")
        with open(os.path.join(path, rel), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    _digests[path] = (stats, digest.hexdigest())
    return _digests[path][1]


def _cache_entry(request: dict) -> Path | None:
    """Where the export of `request` is cached (None: the cache directory is not private)."""
    directory = cache_dir()
    if private_dir(directory) is not None:
        return None
    key = {"request": request, "model": _model_digest(request["path"]), "compiler": compiler_version(),
           "tensorflow": _tensorflow_version()}
    return directory / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()}.savedmodel.json"


def _exported(path: str, request: dict) -> dict:
    """The worker's answer to `request`, from the cache where it has it."""
    entry = _cache_entry(request)
    if entry is not None and entry.exists():
        try:
            with open(entry) as f:
                data = json.load(f)
            os.utime(entry)  # most recently used: pruned last
            return data
        except (OSError, ValueError):
            pass  # a damaged entry: export again and overwrite it
    with tempfile.TemporaryDirectory(prefix="fibergrid-savedmodel-") as tmp:
        request_file, result_file = os.path.join(tmp, "request.json"), os.path.join(tmp, "result.json")
        with open(request_file, "w") as f:
            json.dump(request, f)
        with _lock:
            try:
                _ask(request_file, result_file)
            except CompileError as e:
                raise CompileError(f"{path}: {e}") from None
        with open(result_file, "rb") as f:
            raw = f.read()
    data = json.loads(raw)
    if entry is not None and "error" not in data:
        try:
            write_atomic(entry, raw, mode=0o600)
            prune(entry.parent, max_bytes(), keep=entry)
        except OSError:
            pass  # an export not cached is exported again next time
    return data


def export(path: str, signature: str = "serving_default",
           input_shapes: Sequence[Sequence[Sequence[int]]] | None = None) -> Exported:
    """`signature` of the SavedModel at `path` exported at each of `input_shapes` (default: the
    declared shapes, unknown dims 1), by TensorFlow in the worker process (or from the cache)."""
    if not is_saved_model(path):
        raise CompileError(f"{path}: not a SavedModel directory (no saved_model.pb)")
    data = _exported(path, {"path": os.path.abspath(path), "signature": signature,
                            "input_shapes": None if input_shapes is None else [[list(s) for s in shapes] for shapes in input_shapes]})
    if "error" in data:
        kind = InvalidArgument if data["error"]["kind"] == "InvalidArgument" else CompileError
        raise kind(data["error"]["message"])
    return Exported(
        data["where"],
        tuple((name, tuple(shape), dtype_from_name(dtype)) for name, shape, dtype in data["inputs"]),
        tuple((name, dtype_from_name(dtype)) for name, dtype in data["outputs"]),
        tuple((tuple(tuple(s) for s in e["shapes"]), e["text"]) for e in data["exports"]),
        data["note"])
