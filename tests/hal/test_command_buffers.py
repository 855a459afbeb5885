"""Command buffer life cycle (one-shot, reusable, ended) and record-time validation."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from tests.hal import kernels as K
from tests.hal.helpers import TIMEOUT, assert_device_works, run

# --- life cycle -----------------------------------------------------------------------------------


def test_modes(device):
    assert device.create_command_buffer().mode is fg.CommandBufferMode.ONE_SHOT
    assert device.create_command_buffer("reusable").mode is fg.CommandBufferMode.REUSABLE
    assert device.create_command_buffer(fg.CommandBufferMode.REUSABLE).mode is fg.CommandBufferMode.REUSABLE
    with pytest.raises(ValueError):
        device.create_command_buffer("sometimes")


def test_reusable_replayed_many_times_accumulates(device):
    n = 300
    x = device.allocator.import_array(np.arange(n, dtype=np.float32))
    y = device.allocator.allocate_view((n,), np.float32)
    count = device.allocator.allocate_view((2,), np.int32)
    cb = device.create_command_buffer("reusable")
    cb.dispatch(K.saxpy, "saxpy", -(-n // 64), [1.0], [x, y])
    cb.dispatch(K.increment, "increment", 1, [1], [count])
    cb.execution_barrier()
    cb.dispatch(K.increment, "increment", 1, [1], [count])
    cb.end()
    s = device.create_semaphore(0)
    replays = 100
    for i in range(1, replays + 1):
        device.queue_execute([cb], signal=[(s, i)])
        s.wait(i, timeout=TIMEOUT)
    np.testing.assert_array_equal(y.to_numpy(), replays * np.arange(n, dtype=np.float32))
    np.testing.assert_array_equal(count.to_numpy(), [0, 2 * replays])


def test_reusable_replayed_with_host_data_changed_between(device):
    src = device.allocator.allocate_view((4,), np.int32)
    dst = device.allocator.allocate_view((4,), np.int32)
    cb = device.create_command_buffer("reusable")
    cb.copy(src.buffer, 0, dst.buffer, 0, 16)
    cb.end()
    for i in range(10):
        src.buffer.write(np.full(4, i, np.int32))
        run(device, cb)
        np.testing.assert_array_equal(dst.to_numpy(), np.full(4, i))


def test_one_shot_submitted_twice(device):
    buf = device.allocator.allocate_view((1,), np.int32)
    cb = device.create_command_buffer()
    cb.dispatch(K.increment, "increment", 1, [0], [buf])
    cb.end()
    run(device, cb)
    with pytest.raises(fg.FailedPrecondition, match="one-shot") as e:
        device.queue_execute([cb])
    assert f"#{cb.id}" in str(e.value)
    with pytest.raises(fg.FailedPrecondition):
        device.queue_execute(cb)
    assert int(buf.to_numpy()[0]) == 1
    assert_device_works(device)


def test_submit_not_ended(device):
    cb = device.create_command_buffer()
    cb.fill(device.allocator.allocate_buffer(4), 0, 4, 1)
    s = device.create_semaphore(0)
    with pytest.raises(fg.FailedPrecondition, match="not ended"):
        device.queue_execute([cb], signal=[(s, 1)])
    assert s.query() == 0
    cb.end()
    device.queue_execute([cb], signal=[(s, 1)])  # ending it afterwards makes it submittable
    s.wait(1, timeout=TIMEOUT)


def test_failed_submit_validation_submits_nothing(device):
    """A bad command buffer anywhere in the list rejects the whole submission."""
    buf = device.allocator.allocate_view((1,), np.int32)
    good = device.create_command_buffer()
    good.dispatch(K.increment, "increment", 1, [0], [buf])
    good.end()
    bad = device.create_command_buffer()
    with pytest.raises(fg.FailedPrecondition):
        device.queue_execute([good, bad])
    run(device, good)  # `good` was not consumed by the rejected submission
    assert int(buf.to_numpy()[0]) == 1


def test_command_buffer_of_another_device(device, driver):
    from tests.hal.conftest import make_device

    other = make_device(driver)
    try:
        cb = other.create_command_buffer()
        cb.end()
        with pytest.raises(fg.InvalidArgument):
            device.queue_execute([cb])
        s = other.create_semaphore(0)
        with pytest.raises(fg.InvalidArgument):
            device.queue_barrier(signal=[(s, 1)])
    finally:
        other.close()
    assert_device_works(device)


@pytest.mark.parametrize(
    "call",
    [
        lambda cb, b: cb.dispatch(K.increment, "increment", 1, [0], [b]),
        lambda cb, b: cb.dispatch_indirect(K.increment, "increment", b.buffer, [0], [b]),
        lambda cb, b: cb.fill(b.buffer, 0, 4, 0),
        lambda cb, b: cb.copy(b.buffer, 0, b.buffer, 8, 4),
        lambda cb, b: cb.update(b"abcd", b.buffer, 0),
        lambda cb, b: cb.execution_barrier(),
        lambda cb, b: cb.end(),
    ],
    ids=["dispatch", "dispatch_indirect", "fill", "copy", "update", "execution_barrier", "end"],
)
def test_recording_into_ended_command_buffer(device, call):
    b = device.allocator.allocate_view((16,), np.int32)
    cb = device.create_command_buffer()
    cb.fill(b.buffer, 0, 64, 0)
    cb.end()
    with pytest.raises(fg.FailedPrecondition, match="ended") as e:
        call(cb, b)
    assert f"#{cb.id}" in str(e.value)
    run(device, cb)  # still submittable, with the commands it had
    assert_device_works(device)


# --- record-time validation -----------------------------------------------------------------------


def _expect(cb, exc, fragments, call):
    with pytest.raises(Exception) as e:
        call(cb)
    assert type(e.value) is exc, f"{type(e.value).__name__}: {e.value}"
    for f in fragments:
        assert f in str(e.value), f"{f!r} not in {str(e.value)!r}"


def _bufs(device):
    x = device.allocator.allocate_view((128,), np.float32)
    y = device.allocator.allocate_view((128,), np.float32)
    return x, y


def test_unknown_entry_point(device):
    x, y = _bufs(device)
    cb = device.create_command_buffer()
    _expect(cb, fg.InvalidArgument, ["'saxpi'", "saxpy"], lambda cb: cb.dispatch(K.saxpy, "saxpi", 1, [1.0], [x, y]))
    _expect(cb, fg.InvalidArgument, ["#3"], lambda cb: cb.dispatch(K.saxpy, 3, 1, [1.0], [x, y]))
    _expect(cb, fg.InvalidArgument, ["42"], lambda cb: cb.dispatch(42, "saxpy", 1, [1.0], [x, y]))
    cb.end()
    assert_device_works(device)


@pytest.mark.parametrize("n", [0, 1, 3])
def test_wrong_binding_count(device, n):
    x, y = _bufs(device)
    cb = device.create_command_buffer()
    _expect(cb, fg.InvalidArgument, ["'saxpy'", f"{n} bindings", "takes 2"], lambda cb: cb.dispatch(K.saxpy, "saxpy", 1, [1.0], [x, y, x][:n]))
    cb.end()
    assert_device_works(device)


def test_binding_range_outside_buffer(device):
    x, y = _bufs(device)  # 512 bytes each
    cb = device.create_command_buffer()
    _expect(cb, fg.OutOfRange, ["'saxpy'", "binding 1", "[256, 768)", "512 bytes"], lambda cb: cb.dispatch(K.saxpy, "saxpy", 1, [1.0], [x, (y.buffer, 256, 512)]))
    _expect(cb, fg.OutOfRange, ["binding 0", "[600, 512)"], lambda cb: cb.dispatch(K.saxpy, "saxpy", 1, [1.0], [(x.buffer, 600), y]))
    _expect(cb, fg.OutOfRange, ["binding 0", "[-4, "], lambda cb: cb.dispatch(K.saxpy, "saxpy", 1, [1.0], [(x.buffer, -4, 8), y]))
    _expect(cb, fg.InvalidArgument, ["binding 1", "offset 2"], lambda cb: cb.dispatch(K.saxpy, "saxpy", 1, [1.0], [x, (y.buffer, 2, 8)]))
    _expect(cb, fg.InvalidArgument, ["binding 0", "'x'"], lambda cb: cb.dispatch(K.saxpy, "saxpy", 1, [1.0], ["x", y]))
    cb.end()
    assert_device_works(device)


@pytest.mark.parametrize("constants", [[], [1.0, 2.0]])
def test_wrong_constant_count(device, constants):
    x, y = _bufs(device)
    cb = device.create_command_buffer()
    _expect(cb, fg.InvalidArgument, ["'saxpy'", f"{len(constants)} constants", "takes 1"], lambda cb: cb.dispatch(K.saxpy, "saxpy", 1, constants, [x, y]))
    cb.end()
    assert_device_works(device)


def test_bad_constant_value(device):
    x, y = _bufs(device)
    cb = device.create_command_buffer()
    _expect(cb, fg.InvalidArgument, ["'saxpy'", "constant 0", "'abc'"], lambda cb: cb.dispatch(K.saxpy, "saxpy", 1, ["abc"], [x, y]))
    cb.end()
    assert_device_works(device)


@pytest.mark.parametrize("grid, dim", [((0,), 0), ((4, 0), 1), ((1, 1, 0), 2), ((-1,), 0)])
def test_zero_workgroup_count(device, grid, dim):
    x, y = _bufs(device)
    cb = device.create_command_buffer()
    _expect(cb, fg.InvalidArgument, ["'saxpy'", f"workgroup_count[{dim}] = {grid[dim]}"], lambda cb: cb.dispatch(K.saxpy, "saxpy", grid, [1.0], [x, y]))
    cb.end()
    assert_device_works(device)


@pytest.mark.parametrize("grid", [(), (1, 1, 1, 1), "abc", (1.5, "x")])
def test_malformed_workgroup_count(device, grid):
    x, y = _bufs(device)
    cb = device.create_command_buffer()
    _expect(cb, fg.InvalidArgument, ["'saxpy'", "workgroup_count"], lambda cb: cb.dispatch(K.saxpy, "saxpy", grid, [1.0], [x, y]))
    cb.end()
    assert_device_works(device)


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_over_limit_workgroup_count(device, dim):
    x, y = _bufs(device)
    limit = device.limits.max_workgroup_count
    grid = [1, 1, 1]
    grid[dim] = limit + 1
    cb = device.create_command_buffer()
    _expect(cb, fg.OutOfRange, ["'saxpy'", f"workgroup_count[{dim}] = {limit + 1}", str(limit)], lambda cb: cb.dispatch(K.saxpy, "saxpy", tuple(grid), [1.0], [x, y]))
    cb.end()
    assert_device_works(device)


def test_local_memory_over_device_limit(device):
    ep = K.use_local.entry_points[0]
    big = fg.EntryPoint("big_local", ep.function, ep.workgroup_size, ep.binding_count, ep.constant_count, ep.binding_dtypes, ep.constant_types, device.limits.local_memory_size + 1)
    exe = fg.Executable((big,), K.use_local.format, keepalive=K.use_local)
    out = device.allocator.allocate_view((1,), np.int32)
    cb = device.create_command_buffer()
    _expect(cb, fg.ResourceExhausted, ["'big_local'", str(device.limits.local_memory_size + 1)], lambda cb: cb.dispatch(exe, "big_local", 1, [], [out]))
    cb.end()
    assert_device_works(device)


def test_executable_format_not_supported(device):
    ep = K.saxpy.entry_points[0]
    exe = fg.Executable((ep,), "made-up-isa", keepalive=K.saxpy)
    with pytest.raises(fg.Unavailable, match="made-up-isa"):
        device.check_executable(exe)
    x, y = _bufs(device)
    cb = device.create_command_buffer()
    _expect(cb, fg.Unavailable, ["'made-up-isa'"], lambda cb: cb.dispatch(exe, "saxpy", 1, [1.0], [x, y]))
    counts = device.allocator.allocate_buffer(12)
    _expect(cb, fg.Unavailable, ["'made-up-isa'"], lambda cb: cb.dispatch_indirect(exe, "saxpy", counts, [1.0], [x, y]))
    cb.end()
    device.check_executable(K.saxpy)  # the suite's own kernels load
    assert_device_works(device)


def test_failed_record_leaves_command_buffer_usable(device):
    """A rejected command is not recorded; the rest of the command buffer still runs."""
    x, y = _bufs(device)
    x.buffer.write(np.ones(128, np.float32))
    cb = device.create_command_buffer()
    cb.dispatch(K.saxpy, "saxpy", 2, [1.0], [x, y])
    for bad in (lambda: cb.dispatch(K.saxpy, "saxpy", 0, [1.0], [x, y]), lambda: cb.dispatch(K.saxpy, "saxpy", 2, [], [x, y]), lambda: cb.fill(y.buffer, 0, 1024, 0)):
        with pytest.raises(fg.Error):
            bad()
    cb.execution_barrier()
    cb.dispatch(K.saxpy, "saxpy", 2, [2.0], [x, y])
    cb.end()
    run(device, cb)
    np.testing.assert_array_equal(y.to_numpy(), np.full(128, 3.0, np.float32))


def test_one_shot_listed_twice_in_one_submission(device):
    buf = device.allocator.allocate_view((1,), np.int32)
    cb = device.create_command_buffer()
    cb.dispatch(K.increment, "increment", 1, [0], [buf])
    cb.end()
    s = device.create_semaphore(0)
    with pytest.raises(fg.FailedPrecondition, match="one-shot") as e:
        device.queue_execute([cb, cb], signal=[(s, 1)])
    assert f"#{cb.id}" in str(e.value)
    assert s.query() == 0
    run(device, cb)  # the rejected submission did not consume it
    assert int(buf.to_numpy()[0]) == 1


def test_command_buffers_as_any_iterable(device):
    buf = device.allocator.allocate_view((1,), np.int32)
    cbs = []
    for _ in range(3):
        cb = device.create_command_buffer()
        cb.dispatch(K.increment, "increment", 1, [0], [buf])
        cb.end()
        cbs.append(cb)
    s = device.create_semaphore(0)
    device.queue_execute((cb for cb in cbs), signal=[(s, 1)])
    s.wait(1, timeout=TIMEOUT)
    assert int(buf.to_numpy()[0]) == 3
