"""Suite-wide setup: compiled programs go to a temporary compile cache, never the user's; JAX,
the reference, runs on the CPU even where it has a GPU (its f32 matmuls there default to TF32,
and some ops lower differently: 8 of tests/gpu/test_cuda.py's cases failed on the H200 host
against such a reference)."""

import os

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before any test module imports JAX


@pytest.fixture(autouse=True, scope="session")
def _compile_cache_dir(tmp_path_factory):
    """Point FIBERGRID_CACHE_DIR at a fresh directory for the whole run (tests that count cache
    hits point it at their own directory on top of this)."""
    old = os.environ.get("FIBERGRID_CACHE_DIR")
    os.environ["FIBERGRID_CACHE_DIR"] = str(tmp_path_factory.mktemp("fibergrid-cache"))
    yield
    if old is None:
        del os.environ["FIBERGRID_CACHE_DIR"]
    else:
        os.environ["FIBERGRID_CACHE_DIR"] = old


@pytest.fixture
def compiles(monkeypatch, tmp_path):
    """A one-item list counting LLVM compiles (object code emitted) from here on, in a fresh
    compile cache: what a test of "compiled once" counts."""
    from compiler.codegen.llvm_cpu import jit

    monkeypatch.setenv("FIBERGRID_CACHE_DIR", str(tmp_path / "cache"))
    return count_calls(monkeypatch, jit, "emit_object")


def count_calls(monkeypatch, owner, name: str) -> list[int]:
    """A one-item list counting the calls of `owner.name` from here on (the call still runs)."""
    count = [0]
    original = getattr(owner, name)

    def counting(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return count


def device_per_driver(*drivers: str):
    """A module-scoped fixture giving one device per driver in `drivers` (local-task with 2
    workers), skipping drivers this machine lacks: `device = device_per_driver("local-sync", ...)`."""

    @pytest.fixture(scope="module", params=drivers)
    def device(request):
        import fibergrid as fg

        if request.param not in fg.available_drivers():
            pytest.skip(f"no {request.param} device here")
        dev = fg.create_device(request.param, workers=2) if request.param == "local-task" else fg.create_device(request.param)
        request.addfinalizer(dev.close)
        return dev

    return device
