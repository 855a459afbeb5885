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

An entry is native code that `fg.load` runs, so the directory must be the user's alone: it is
created 0700, entries are written 0600, and a directory owned by another user or writable by
group or others is not used (a warning; compiles go on uncached), since anyone who can write
there could plant code. The cache is bounded: after a write, the least recently used entries
(a hit refreshes an entry's mtime) are deleted until the total is under
`$FIBERGRID_CACHE_MAX_BYTES` (default 2 GiB).
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


DEFAULT_MAX_BYTES = 2 << 30


def cache_dir() -> Path:
    """`$FIBERGRID_CACHE_DIR`, else `~/.cache/fibergrid` (read at each use: tests point it elsewhere)."""
    return Path(os.environ.get("FIBERGRID_CACHE_DIR") or Path.home() / ".cache" / "fibergrid")


def max_bytes() -> int:
    """`$FIBERGRID_CACHE_MAX_BYTES`, else DEFAULT_MAX_BYTES."""
    value = os.environ.get("FIBERGRID_CACHE_MAX_BYTES")
    try:
        return int(value) if value else DEFAULT_MAX_BYTES
    except ValueError:
        raise InvalidArgument(f"FIBERGRID_CACHE_MAX_BYTES={value!r}: expected a number of bytes") from None


def private_dir(path: Path) -> str | None:
    """Creates `path` (0700) if missing; None when it is private to this user, else why not."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError as e:
        return f"cannot create it: {e.strerror or e}"
    if st.st_uid != os.getuid():
        return f"it belongs to uid {st.st_uid}, not to this user ({os.getuid()})"
    if st.st_mode & 0o022:
        return f"others can write to it (mode {st.st_mode & 0o777:o})"
    return None


def prune(directory: Path, limit: int, keep: Path | None = None) -> int:
    """Deletes the least recently used entries (oldest mtime) until the total size is at most
    `limit`, never `keep` (the entry just written); returns how many were deleted. Entries that
    vanish meanwhile (another process pruning) are skipped."""
    entries = []
    for p in [*directory.glob("*.fgx"), *directory.glob("*.savedmodel.json")]:
        try:
            st = p.stat()
        except OSError:
            continue
        entries.append((st.st_mtime_ns, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    deleted = 0
    for _, size, p in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        if p == keep:
            continue
        try:
            p.unlink()
            deleted += 1
        except OSError:
            pass
        total -= size
    return deleted


def cache_key(source: str | bytes, functions: Sequence[str] | None, shapes: pipeline.Shapes | None,
              targets: Sequence[str] = (), values: str = "") -> str:
    """sha256 over everything that decides the compiled code (`values`: a digest of the value
    inputs' contents, for a function compiled per contents: executable.FunctionEntry.value_inputs)."""
    target = executable.Target.host()
    parts = {
        "targets": sorted(targets),
        "values": values,
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
        self.pruned = 0
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def _usable(self, directory: Path) -> bool:
        """Whether `directory` is private to this user; warns once per directory when not."""
        why = private_dir(directory)
        if why is not None and str(directory) not in self._warned:
            self._warned.add(str(directory))
            warnings.warn(f"fibergrid: not using the compile cache {directory}: {why}. An entry is native code that "
                          f"loading runs; compiling without the cache", stacklevel=3)
        return why is None

    def get_or_build(self, source: str | bytes, functions: Sequence[str] | None, shapes: pipeline.Shapes | None,
                     build: Callable[[], executable.Program], targets: Sequence[str] = (), values: str = "") -> executable.Program:
        """The cached program for this key, or `build()`'s, stored for next time. `targets`:
        the extra targets `build` compiles for, `values` the value inputs' digest (both part of
        the key)."""
        directory = cache_dir()
        usable = self._usable(directory)
        path = directory / f"{cache_key(source, functions, shapes, targets, values)}.fgx"
        if usable and path.exists():
            try:
                program = executable.load(path)
                with self._lock:
                    self.hits += 1
                try:
                    os.utime(path)  # most recently used: pruned last
                except OSError:
                    pass
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
        if not usable:
            return program
        try:
            executable.write_atomic(path, executable.to_bytes(program), mode=0o600)
            deleted = prune(directory, max_bytes(), keep=path)
            with self._lock:
                self.pruned += deleted
        except OSError as e:
            warnings.warn(f"fibergrid: cannot write the compile cache entry {path}: {e}", stacklevel=2)
        return program


CACHE = CompileCache()
"""The process-wide cache `fg.load` and the CLI use."""
