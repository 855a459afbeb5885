"""The compile cache under concurrency and damage: processes compiling one model into one cache
leave one whole entry; a corrupted entry is recompiled, not fatal; the cache is bounded (least
recently used entries go first) and private to its user."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fibergrid as fg
from compiler import cache
from compiler.cache import CACHE

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("onnx")

CHILD = """
import sys, numpy as np, fibergrid as fg
from tests.reliability.stress import small_model
y = fg.load(small_model(), device="local-sync")(np.ones((3, 8), np.float32))
print(repr(float(y.sum())))
"""


def test_concurrent_processes_share_one_cache(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), FIBERGRID_CACHE_DIR=str(tmp_path / "c"))
    procs = [subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert len({o for o, _ in outs}) == 1  # the same result everywhere
    files = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert files and all(f.endswith(".fgx") for f in files), files  # no temporary file left behind
    for f in (tmp_path / "c").iterdir():
        from compiler import executable
        executable.load(f)  # every entry whole
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o700
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in (tmp_path / "c").iterdir())


def test_corrupted_entry_is_recompiled(tmp_path, monkeypatch):
    from tests.reliability.stress import small_model
    monkeypatch.setenv("FIBERGRID_CACHE_DIR", str(tmp_path))
    x = np.ones((2, 8), np.float32)
    want = fg.load(small_model(), device="local-sync")(x)
    for entry in tmp_path.glob("*.fgx"):
        data = entry.read_bytes()
        entry.write_bytes(data[: len(data) // 2] + bytes(16))
    builds = CACHE.builds
    np.testing.assert_array_equal(fg.load(small_model(), device="local-sync")(x), want)
    assert CACHE.builds > builds


def test_cache_is_pruned_least_recently_used_first(tmp_path):
    sizes = {}
    for i, name in enumerate(["old", "middle", "new"]):
        p = tmp_path / f"{name}.fgx"
        p.write_bytes(bytes(1000))
        os.utime(p, ns=(time.time_ns(), time.time_ns() + i * 10**9))
        sizes[name] = 1000
    assert cache.prune(tmp_path, 2000) == 1
    assert sorted(p.stem for p in tmp_path.glob("*.fgx")) == ["middle", "new"]
    os.utime(tmp_path / "middle.fgx", ns=(time.time_ns(), time.time_ns() + 10 * 10**9))  # a hit
    assert cache.prune(tmp_path, 1000) == 1
    assert [p.stem for p in tmp_path.glob("*.fgx")] == ["middle"]


def test_bounded_cache_through_loads(tmp_path, monkeypatch):
    from tests.reliability.stress import small_model
    monkeypatch.setenv("FIBERGRID_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("FIBERGRID_CACHE_MAX_BYTES", "1")  # every write prunes all but itself
    module = fg.load(small_model(), device="local-sync")
    module(np.ones((2, 8), np.float32))
    module(np.ones((3, 8), np.float32))  # another specialization: another entry
    assert len(list(tmp_path.glob("*.fgx"))) == 1


def test_a_cache_others_can_write_is_not_used(tmp_path, monkeypatch):
    from tests.reliability.stress import small_model
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("FIBERGRID_CACHE_DIR", str(shared))
    cache.CACHE._warned.discard(str(shared))
    with pytest.warns(UserWarning, match="others can write to it"):
        module = fg.load(small_model(), device="local-sync")
    assert module(np.ones((2, 8), np.float32)).shape == (2, 4)
    assert list(shared.iterdir()) == []  # nothing read from or written to it
