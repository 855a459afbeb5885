"""numba's on-disk cache, kept in step with the scheduler's sources as a whole.

numba (cache=True) keys each file's cached functions on that file alone, yet a compiled function
has its callees from other files compiled into it: worker.py's loop carries executor.py's code.
A change to executor.py or layout.py would leave worker.py's cache running the old code. So the
scheduler keeps a digest of all its sources beside the cache, and clears the cache when the digest
changes, before any of its functions is compiled or loaded (numba does both on first call).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_HERE = Path(__file__).parent


def sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(_HERE.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def keep_in_step() -> None:
    """Drops every cached scheduler function if any scheduler source changed since they were
    cached. Best effort: a cache directory that cannot be written only means recompiling."""
    cache = _HERE / "__pycache__"
    stamp = cache / "scheduler-sources.sha256"
    digest = sources_digest()
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    try:
        for entry in cache.glob("*.nb[ic]"):
            entry.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:
        pass
