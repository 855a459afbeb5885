"""The quick call (fibergrid/quick_call.py): a signature called again skips the general path's
steps, and every call it cannot take (other dtypes, shapes, layouts, lists, bad `out`, a lane
taken) goes the general way with the same results and the same errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fibergrid as fg
from fibergrid.quick_call import QUICK_AFTER
from tests.conftest import count_calls

jax = pytest.importorskip("jax")
jnp = jax.numpy
RNG = np.random.default_rng(5)
W = RNG.standard_normal((16, 8)).astype(np.float32)


def _f(x, s):
    return jnp.tanh(x @ W) * s, (x.sum(axis=1) > 0).astype(jnp.int32)


def _want(x, s):
    return [np.asarray(r) for r in jax.jit(_f)(x, s)]


def _close(got, want):
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)


@pytest.fixture(params=["local-sync", "local-task"])
def module(request):
    x = np.zeros((3, 16), np.float32)
    text = jax.jit(_f).lower(x, np.float32(1)).as_text()
    with fg.create_device(request.param, **({"workers": 2} if request.param == "local-task" else {})) as dev:
        yield fg.load(text, device=dev)


def _args():
    return RNG.standard_normal((3, 16)).astype(np.float32), np.asarray(RNG.standard_normal(), np.float32)


def _general_calls(module, monkeypatch) -> list[int]:
    """Counts the calls that take the general path (its signature lookup)."""
    return count_calls(monkeypatch, module["main"], "_prepared_for")


def test_a_signature_called_again_takes_the_quick_call(module, monkeypatch):
    general = _general_calls(module, monkeypatch)
    results = []
    for i in range(40):
        args = _args()
        got = module(*args) if i % 2 else module(*args, out=[np.empty((3, 8), np.float32), np.empty(3, np.int32)])
        _close(got, _want(*args))
        results.append(got[0])
    assert general[0] == QUICK_AFTER
    assert not any(np.shares_memory(a, b) for a, b in zip(results, results[1:]))  # fresh arrays, not the lane's


def test_calls_the_quick_call_cannot_take_go_the_general_way(module, monkeypatch):
    for _ in range(QUICK_AFTER):
        module(*_args())
    general = _general_calls(module, monkeypatch)
    x, s = _args()
    want = _want(x, s)
    _close(module(np.asfortranarray(x), s), want)  # another layout: the quick call copies it all the same
    assert general[0] == 0
    _close(module(x.tolist(), float(s)), want)  # lists and Python scalars take the declared dtype
    with pytest.raises(fg.InvalidArgument, match="argument 0"):
        module(x.astype(np.float64), s)  # another dtype: an error, never a cast
    with pytest.raises(fg.InvalidArgument, match="argument 0"):
        module(x[:2], s)
    with pytest.raises(fg.InvalidArgument, match="out"):
        module(x, s, out=[np.empty((3, 8), np.float64), np.empty(3, np.int32)])
    readonly = np.empty((3, 8), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(fg.InvalidArgument, match="writeable"):
        module(x, s, out=[readonly, np.empty(3, np.int32)])
    with pytest.raises(fg.InvalidArgument, match="out"):
        module(x, s, out=[np.empty((3, 8), np.float32)])
    assert general[0] == 6
    _close(module(x, s), want)  # and the quick call still serves


def test_calls_from_many_threads(module):
    """Threads race for the signature's lane: the one that loses it goes the general way."""
    errors = []

    def calls() -> None:
        try:
            for _ in range(50):
                args = _args()
                _close(module(*args), _want(*args))
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=calls) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]


def _count_to(n):
    return jax.lax.while_loop(lambda i: i < n, lambda i: i + 1, jnp.int32(0))


def test_a_call_that_times_out_leaves_the_signature_usable():
    """A call past its deadline raises; its lane (and quick call) is replaced, and the next
    calls of the signature run, and get a quick call again."""
    text = jax.jit(_count_to).lower(np.int32(0)).as_text()
    with fg.create_device("local-sync") as dev:
        module = fg.load(text, device=dev, timeout=0.3)
        for n in (5, 6, 7):
            assert int(module(np.int32(n))) == n
        assert module["main"]._quick is not None
        with pytest.raises(fg.DeadlineExceeded):
            module(np.int32(2**31 - 1))
        for n in (8, 9, 10, 11):
            assert int(module(np.int32(n))) == n
        assert module["main"]._quick is not None and module["main"]._quick.lane in module["main"]._quick.prepared._lanes


@pytest.mark.parametrize("driver", ["local-sync", "local-task"])
def test_a_closed_device_refuses_the_quick_call(driver):
    x, s = _args()
    text = jax.jit(_f).lower(x, s).as_text()
    device = fg.create_device(driver)
    module = fg.load(text, device=device)
    for _ in range(QUICK_AFTER + 1):
        module(x, s)
    assert module["main"]._quick is not None
    device.close()
    with pytest.raises(fg.FailedPrecondition, match="closed"):
        module(x, s)


@pytest.mark.parametrize("driver", ["local-sync", "local-task"])
def test_arrays_the_general_path_bound_in_place_are_let_go_first(driver, monkeypatch):
    """A 128 KiB input and result: the general path binds them in place (the caller's input,
    a fresh result array); the quick call copies them, so it first points the bindings back at
    the lane's buffers. Otherwise its kernel would read the general call's input, freed by then,
    and write over the result that call returned."""
    text = jax.jit(lambda x: x * 2.0 + 1.0).lower(np.zeros((128, 256), np.float32)).as_text()
    with fg.create_device(driver) as device:
        module = fg.load(text, device=device)
        for _ in range(QUICK_AFTER):
            module(RNG.standard_normal((128, 256)).astype(np.float32))
        general = count_calls(monkeypatch, module["main"], "_prepared_for")
        listed = module(RNG.standard_normal((128, 256)).astype(np.float32).tolist())  # a list: the general path
        kept = listed.copy()
        for _ in range(3):
            x = RNG.standard_normal((128, 256)).astype(np.float32)
            np.testing.assert_allclose(module(x), x * 2.0 + 1.0, rtol=1e-6)
        np.testing.assert_array_equal(listed, kept)
        assert general[0] == 1
