"""The on-disk compile cache: compiled programs (.fgx bytes) keyed by what produced them.

Parsing and compiling a model takes seconds (an MLP with 7 MB of weights: ~7 s to parse its
StableHLO, ~4 s in LLVM); loading its .fgx takes milliseconds. So `fg.load(text)` and
`fibergrid compile` look here first. The key is the sha256 of the source text, the functions,
the input shapes, the compiler version (a digest of its sources) and the target CPU with its
features: a change in any of them is a different entry, never a stale hit.

Entries live under `$FIBERGRID_CACHE_DIR`, else `~/.cache/fibergrid`, written through a
temporary file and a rename so concurrent processes never read half an entry. An entry that
fails the .fgx checks (truncated, corrupted, built for another CPU) is ignored and rebuilt. A
cache directory that cannot be written only costs the speed-up: the compile still succeeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Callable, Sequence

from compiler import executable, pipeline
from common.errors import InvalidArgument, Unavailable


def cache_dir() -> Path:
    """`$FIBERGRID_CACHE_DIR`, else `~/.cache/fibergrid` (read at each use: tests point it elsewhere)."""
    return Path(os.environ.get("FIBERGRID_CACHE_DIR") or Path.home() / ".cache" / "fibergrid")


def cache_key(source: str | bytes, functions: Sequence[str] | None, shapes: pipeline.Shapes | None,
              targets: Sequence[str] = ()) -> str:
    """sha256 over everything that decides the compiled code."""
    target = executable.Target.host()
    parts = {
        "targets": sorted(targets),
        "source": hashlib.sha256(source if isinstance(source, bytes) else source.encode()).hexdigest(),
        "functions": sorted(functions) if functions else None,
        "shapes": [list(s) for s in shapes] if shapes is not None else None,
        "compiler": pipeline.compiler_version(),
        "format": executable.FORMAT_VERSION,
        "target": [target.triple, target.cpu, sorted(target.features)],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class CompileCache:
    """Counts its hits and builds so tests and tools can tell a hit from a recompile."""

    def __init__(self) -> None:
        self.hits = 0
        self.builds = 0
        self._lock = threading.Lock()

    def get_or_build(self, source: str | bytes, functions: Sequence[str] | None, shapes: pipeline.Shapes | None,
                     build: Callable[[], executable.Program], targets: Sequence[str] = ()) -> executable.Program:
        """The cached program for this key, or `build()`'s, stored for next time. `targets`:
        the extra targets `build` compiles for (part of the key)."""
        path = cache_dir() / f"{cache_key(source, functions, shapes, targets)}.fgx"
        if path.exists():
            try:
                program = executable.load(path)
                with self._lock:
                    self.hits += 1
                for entry in program.functions.values():
                    for compiled in entry.specializations.values():
                        # Lets a device of another format have the kernels compiled for it.
                        object.__setattr__(compiled, "source", source)
                return program
            except (InvalidArgument, Unavailable):
                pass  # a damaged or foreign entry: rebuild and overwrite it
        program = build()
        with self._lock:
            self.builds += 1
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            executable.write_atomic(path, executable.to_bytes(program))
        except OSError as e:
            warnings.warn(f"fibergrid: cannot write the compile cache entry {path}: {e}", stacklevel=2)
        return program


CACHE = CompileCache()
"""The process-wide cache `fg.load` and the CLI use."""
