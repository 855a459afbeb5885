"""The per-call path of a loaded module: inputs bound in place or copied, results in memory the
caller owns or in caller-provided `out` arrays, async calls that pipeline, failed calls that
leave the module usable, and loads that share the default device (no threads left behind)."""

from __future__ import annotations

import threading

import numpy as np
import psutil
import pytest

import fibergrid as fg

jax = pytest.importorskip("jax")
jnp = jax.numpy
RNG = np.random.default_rng(11)
W = RNG.standard_normal((32, 24)).astype(np.float32)


def _f(x):
    return jnp.tanh(x @ W), x * 2.0


@pytest.fixture(scope="module")
def text() -> str:
    return jax.jit(_f).lower(np.zeros((5, 32), np.float32)).as_text()


@pytest.fixture(scope="module", params=["local-sync", "local-task"])
def module(request, text):
    with fg.create_device(request.param, **({"workers": 2} if request.param == "local-task" else {})) as dev:
        yield fg.load(text, device=dev)


def _want(x):
    return [np.asarray(r) for r in jax.jit(_f)(x)]


def _close(got, want):
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)


def test_results_are_new_arrays_the_caller_owns(module):
    x = RNG.standard_normal((5, 32)).astype(np.float32)
    first = module(x)
    second = module(x + 1)
    _close(first, _want(x))  # the second call did not write over the first call's results
    _close(second, _want(x + 1))
    assert not np.shares_memory(first[0], second[0])
    first[0][:] = 7  # the caller may write them
    _close(module(x), _want(x))


@pytest.mark.parametrize("offset", [0, 1])
def test_inputs_bound_in_place_or_copied(module, offset):
    """An aligned input may be used in place, an unaligned or strided one is copied; either
    way a later change to the caller's array does not change an earlier result."""
    raw = np.zeros(5 * 32 + 16, np.float32)
    x = raw[offset : offset + 5 * 32].reshape(5, 32)
    x[:] = RNG.standard_normal((5, 32))
    got = module(x)
    want = _want(x.copy())
    x[:] = 0
    _close(got, want)
    strided = RNG.standard_normal((5, 64)).astype(np.float32)[:, ::2]
    _close(module(strided), _want(np.ascontiguousarray(strided)))


def test_out_arrays_are_filled_and_returned(module):
    x = RNG.standard_normal((5, 32)).astype(np.float32)
    out = (np.empty((5, 24), np.float32), np.empty((5, 32), np.float32)[::1])
    got = module.main(x, out=out)
    assert got[0] is out[0] and got[1] is out[1]
    _close(out, _want(x))
    unaligned = np.zeros(5 * 24 + 1, np.float32)[1:].reshape(5, 24)  # copied into, not bound
    got = module.main(x, out=(unaligned, np.empty((5, 32), np.float32)))
    assert got[0] is unaligned
    _close(got, _want(x))


@pytest.mark.parametrize("bad", [(np.empty((5, 24), np.float64), np.empty((5, 32), np.float32)),
                                 (np.empty((5, 24), np.float32),),
                                 (np.empty((4, 24), np.float32), np.empty((5, 32), np.float32))])
def test_bad_out_is_a_clear_error(module, bad):
    with pytest.raises(fg.InvalidArgument, match="out"):
        module.main(np.zeros((5, 32), np.float32), out=bad)
    _close(module(np.ones((5, 32), np.float32)), _want(np.ones((5, 32), np.float32)))


def test_submitted_calls_pipeline_and_keep_their_results(module):
    xs = [RNG.standard_normal((5, 32)).astype(np.float32) for _ in range(10)]
    futures = [module.main.submit(x) for x in xs]  # more than the lanes: the oldest complete first
    for f, x in zip(futures, xs):
        _close(f.result(timeout=30), _want(x))
        assert f.done()
    _close(futures[0].result(), _want(xs[0]))  # result() again: the same results


def test_calls_from_many_threads(module):
    xs = [RNG.standard_normal((5, 32)).astype(np.float32) for _ in range(4)]
    errors: list[BaseException] = []

    def client(x):
        try:
            for _ in range(30):
                _close(module(x), _want(x))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(x,)) for x in xs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]


def test_loads_share_the_default_device(text, tmp_path):
    """50 loads of a model (text and a .mlir file), their modules dropped, leave no worker thread
    and no file handle behind: fg.load runs on the driver's shared device."""
    path = tmp_path / "model.mlir"
    path.write_text(text)
    fg.load(text, device="local-task")(np.zeros((5, 32), np.float32))
    fg.load(path, device="local-task")(np.zeros((5, 32), np.float32))
    process = psutil.Process()
    threads, fds = threading.active_count(), process.num_fds()
    for i in range(50):
        m = fg.load(text if i % 2 else path, device="local-task")
        m(np.zeros((5, 32), np.float32))
        del m
    assert threading.active_count() == threads
    assert process.num_fds() == fds
    assert fg.load(text, device="local-task").device is fg.default_device("local-task")


@fg.kernel(workgroup_size=1, bindings=(np.float32, np.float32))
def _double(wg, x, y):
    y[wg.id[0]] = 2 * x[wg.id[0]]


@pytest.mark.parametrize("driver", ["local-sync", "local-task"])
def test_cpu_rebind_uses_host_arrays_in_place(driver):
    """`Device.rebind` on a CPU driver points a command buffer's bindings at host arrays: the
    dispatch reads and writes them directly; unaligned or strided arrays are refused (the caller
    copies), and None points the bindings back at the buffer."""
    with fg.create_device(driver) as dev:
        xb, yb = dev.allocator.allocate_view((8,), np.float32), dev.allocator.allocate_view((8,), np.float32)
        cb = dev.create_command_buffer("reusable")
        cb.dispatch(_double, "_double", 8, [], [xb, yb])
        cb.end()
        sem = dev.create_semaphore(0)
        x, y = np.arange(8, dtype=np.float32), np.zeros(8, np.float32)
        assert dev.rebind(cb, xb.buffer, x) and dev.rebind(cb, yb.buffer, y)
        dev.execute_and_wait(cb, sem, 1, 10)
        np.testing.assert_array_equal(y, 2 * x)
        assert not yb.to_numpy().any()  # the buffer's own memory was not written
        assert not dev.rebind(cb, xb.buffer, np.zeros(9, np.float32)[1:])  # unaligned
        assert not dev.rebind(cb, xb.buffer, np.zeros(16, np.float32)[::2])  # strided
        assert not dev.rebind(cb, xb.buffer, np.zeros(4, np.float32))  # too small
        assert dev.rebind(cb, yb.buffer, None)
        dev.execute_and_wait(cb, sem, 2, 10)
        np.testing.assert_array_equal(yb.to_numpy(), 2 * x)


def test_back_to_back_calls_where_workers_finish_the_work():
    """Calls large enough for workers to join: a worker may complete a call (and signal the
    host) an instant before it marks the submission done; the next call must still bind its
    fresh result memory, never write into the previous call's (regression: heap corruption)."""
    w = RNG.standard_normal((512, 512)).astype(np.float32)
    text = jax.jit(lambda x: jnp.maximum(x @ w, 0) @ w).lower(np.zeros((64, 512), np.float32)).as_text()
    with fg.create_device("local-task", workers=2) as dev:
        m = fg.load(text, device=dev)
        x = RNG.standard_normal((64, 512)).astype(np.float32)
        want = np.maximum(x @ w, 0) @ w
        results = [m(x) for _ in range(40)]
        for r in results:
            np.testing.assert_allclose(r, want, rtol=1e-4, atol=1e-3)
        assert dev.scheduler.counters()["workgroups"] > 0
