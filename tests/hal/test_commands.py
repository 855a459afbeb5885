"""Every command-buffer command, checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fibergrid as fg
from tests.hal import kernels as K
from tests.hal.helpers import TIMEOUT, assert_device_works, run, run_one

# --- dispatch -------------------------------------------------------------------------------------


def _check_ids(out: np.ndarray, grid: tuple[int, int, int]) -> None:
    gx, gy, gz = grid
    slots = out.reshape(-1, 8)
    assert len(slots) == gx * gy * gz
    z, y, x = np.meshgrid(np.arange(gz), np.arange(gy), np.arange(gx), indexing="ij")
    np.testing.assert_array_equal(slots[:, 0], x.reshape(-1))
    np.testing.assert_array_equal(slots[:, 1], y.reshape(-1))
    np.testing.assert_array_equal(slots[:, 2], z.reshape(-1))
    np.testing.assert_array_equal(slots[:, 3], gx * gy * gz)
    np.testing.assert_array_equal(slots[:, 4:7], np.tile([2, 3, 4], (len(slots), 1)))
    np.testing.assert_array_equal(slots[:, 7], 1, err_msg="every workgroup runs exactly once")


@pytest.mark.parametrize("grid", [(1,), (37,), (5, 7), (1, 9), (3, 4, 5), (1, 1, 6), (130, 2, 3)])
def test_dispatch_grid(device, grid):
    full = tuple(grid) + (1,) * (3 - len(grid))
    out = device.allocator.allocate_view((int(np.prod(full)) * 8,), np.int32)
    run_one(device, lambda cb: cb.dispatch(K.write_ids, "write_ids", grid, [], [out]))
    _check_ids(out.to_numpy(), full)


def test_dispatch_grid_as_int_and_entry_by_index(device):
    out = device.allocator.allocate_view((8 * 6,), np.int32)
    run_one(device, lambda cb: cb.dispatch(K.write_ids, 0, 6, [], [out]))
    _check_ids(out.to_numpy(), (6, 1, 1))


def test_saxpy(device):
    n = 1000
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    xv = device.allocator.import_array(x)
    yv = device.allocator.import_array(np.ones(n, np.float32))
    run_one(device, lambda cb: cb.dispatch(K.saxpy, "saxpy", (16,), [2.0], [xv, yv]))
    np.testing.assert_array_equal(yv.to_numpy(), np.float32(1) + np.float32(2) * x)


@pytest.mark.parametrize("m, n, k", [(8, 8, 8), (13, 10, 7), (1, 17, 3)])
def test_tiled_matmul(device, m, n, k):
    rng = np.random.default_rng(m * 100 + n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    av, bv = device.allocator.import_array(a), device.allocator.import_array(b)
    cv = device.allocator.allocate_view((m, n), np.float32)
    grid = (-(-n // K.TILE), -(-m // K.TILE))
    run_one(device, lambda cb: cb.dispatch(K.matmul, "matmul", grid, [m, n, k], [av, bv, cv]))
    np.testing.assert_allclose(cv.to_numpy(), a @ b, rtol=1e-5, atol=1e-5)


def test_constants_by_declared_type(device):
    i = device.allocator.allocate_view((1,), np.int32)
    u = device.allocator.allocate_view((1,), np.uint32)
    f = device.allocator.allocate_view((1,), np.float32)
    run_one(device, lambda cb: cb.dispatch(K.store_constants, "store_constants", 1, [-5, 4_000_000_000, 0.25], [i, u, f]))
    assert int(i.to_numpy()[0]) == -5
    assert int(u.to_numpy()[0]) == 4_000_000_000
    assert float(f.to_numpy()[0]) == 0.25
    # numpy arrays and numpy scalars are accepted too
    run_one(device, lambda cb: cb.dispatch(K.store_constants, "store_constants", 1, np.array([7, 8, 9]), [i, u, f]))
    assert (int(i.to_numpy()[0]), int(u.to_numpy()[0]), float(f.to_numpy()[0])) == (7, 8, 9.0)
    run_one(device, lambda cb: cb.dispatch(K.store_constants, "store_constants", 1, [np.int32(-1), np.uint32(1), np.float32(-3.5)], [i, u, f]))
    assert (int(i.to_numpy()[0]), int(u.to_numpy()[0]), float(f.to_numpy()[0])) == (-1, 1, -3.5)


def test_binding_forms_see_only_their_range(device):
    """Buffer, BufferView, (buffer, offset) and (buffer, offset, length) bindings."""
    n = 64
    x = device.allocator.import_array(np.ones(n, np.float32))
    y = device.allocator.allocate_buffer(4 * 3 * n)
    cb = device.create_command_buffer()
    cb.dispatch(K.saxpy, "saxpy", 1, [1.0], [x, (y, 4 * n, 4 * 10)])  # elements [n, n+10)
    cb.dispatch(K.saxpy, "saxpy", 1, [2.0], [x.buffer, (y, 4 * 2 * n)])  # elements [2n, 3n)
    cb.end()
    run(device, cb)
    want = np.zeros(3 * n, np.float32)
    want[n : n + 10] = 1
    want[2 * n :] = 2
    np.testing.assert_array_equal(y.read(np.float32), want)


def test_local_memory(device):
    out = device.allocator.allocate_view((5,), np.int32)
    run_one(device, lambda cb: cb.dispatch(K.use_local, "use_local", 5, [], [out]))
    np.testing.assert_array_equal(out.to_numpy(), np.full(5, sum(range(64)), np.int32))


# --- dispatch_indirect -----------------------------------------------------------------------------


def test_dispatch_indirect_reads_count_at_execution_time(device):
    counts = device.allocator.allocate_view((3,), np.uint32)  # zero while recording
    out = device.allocator.allocate_view((8 * 24,), np.int32)
    cb = device.create_command_buffer("reusable")
    cb.dispatch_indirect(K.write_ids, "write_ids", counts, [], [out])
    cb.end()
    counts.buffer.write(np.array([2, 3, 4], np.uint32))
    run(device, cb)
    _check_ids(out.to_numpy(), (2, 3, 4))
    # replayed with a different count: the new count applies
    out.buffer.map()[:] = 0
    counts.buffer.write(np.array([5, 1, 1], np.uint32))
    run(device, cb)
    got = out.to_numpy()
    _check_ids(got[: 8 * 5], (5, 1, 1))
    assert not got[8 * 5 :].any()


def test_dispatch_indirect_count_written_by_earlier_dispatch(device):
    counts = device.allocator.allocate_buffer(64)
    out = device.allocator.allocate_view((8 * 12,), np.int32)
    cb = device.create_command_buffer()
    cb.dispatch(K.write_count, "write_count", 1, [3, 2, 2], [(counts, 16, 12)])
    cb.execution_barrier()
    cb.dispatch_indirect(K.write_ids, "write_ids", (counts, 16), [], [out])
    cb.end()
    run(device, cb)
    np.testing.assert_array_equal(counts.read(np.uint32, 3, offset=16), [3, 2, 2])
    _check_ids(out.to_numpy(), (3, 2, 2))


@pytest.mark.parametrize("count", [(0, 1, 1), (4, 0, 1), (1, 1, 0), (0, 0, 0)])
def test_dispatch_indirect_zero_count_skips(device, count):
    counts = device.allocator.import_array(np.array(count, np.uint32))
    out = device.allocator.allocate_view((64,), np.int32)
    after = device.allocator.allocate_view((4,), np.int32)
    cb = device.create_command_buffer()
    cb.dispatch_indirect(K.write_ids, "write_ids", counts, [], [out])
    cb.execution_barrier()
    cb.fill(after.buffer, 0, None, 0x11111111)
    cb.end()
    run(device, cb)
    assert not out.to_numpy().any()
    np.testing.assert_array_equal(after.to_numpy(), np.full(4, 0x11111111))


def test_dispatch_indirect_over_limit_fails_the_submission(device):
    limit = device.limits.max_workgroup_count
    counts = device.allocator.import_array(np.array([limit + 1, 1, 1], np.uint32))
    out = device.allocator.allocate_view((64,), np.int32)
    cb = device.create_command_buffer()
    cb.dispatch_indirect(K.write_ids, "write_ids", counts, [], [out])
    cb.end()
    s = device.create_semaphore(0)
    device.queue_execute([cb], signal=[(s, 1)])
    with pytest.raises(fg.Aborted) as e:
        s.wait(1, timeout=TIMEOUT)
    assert "write_ids" in str(e.value) and str(limit + 1) in str(e.value)
    assert not out.to_numpy().any()
    assert_device_works(device)


def test_dispatch_indirect_record_time_checks(device):
    small = device.allocator.allocate_buffer(8)
    counts = device.allocator.allocate_buffer(64)
    out = device.allocator.allocate_view((64,), np.int32)
    cb = device.create_command_buffer()
    with pytest.raises(fg.OutOfRange) as e:
        cb.dispatch_indirect(K.write_ids, "write_ids", small, [], [out])
    assert "[0, 12)" in str(e.value) and "8 bytes" in str(e.value)
    with pytest.raises(fg.OutOfRange):
        cb.dispatch_indirect(K.write_ids, "write_ids", (counts, 56), [], [out])
    with pytest.raises(fg.InvalidArgument, match="offset 2"):
        cb.dispatch_indirect(K.write_ids, "write_ids", (counts, 2), [], [out])
    with pytest.raises(fg.InvalidArgument, match="nope"):
        cb.dispatch_indirect(K.write_ids, "nope", counts, [], [out])
    with pytest.raises(fg.InvalidArgument, match="bindings"):
        cb.dispatch_indirect(K.write_ids, "write_ids", counts, [], [])
    cb.end()
    assert_device_works(device)


# --- fill -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, pattern_length, offset, length, unit",
    [
        (0xAB, 1, 3, 9, np.uint8),
        (0xBEEF, 2, 6, 20, np.uint16),
        (0xDEADBEEF, 4, 8, 40, np.uint32),
        (0xDEADBEEF, None, 0, None, np.uint32),  # default 4 bytes, whole buffer
        (0, 4, 4, 0, np.uint32),  # zero length: nothing changes
    ],
)
def test_fill_patterns(device, pattern, pattern_length, offset, length, unit):
    size = 64
    buf = device.allocator.allocate_buffer(size)
    buf.write(np.full(size, 0x5A, np.uint8))
    run_one(device, lambda cb: cb.fill(buf, offset, length, pattern, pattern_length))
    want = np.full(size, 0x5A, np.uint8)
    end = size if length is None else offset + length
    want[offset:end] = np.full((end - offset) // np.dtype(unit).itemsize, pattern, unit).view(np.uint8)
    np.testing.assert_array_equal(buf.read(), want)


@pytest.mark.parametrize("scalar", [np.uint8(0x7F), np.int8(-2), np.uint16(0x1234), np.float16(1.5), np.int32(-7), np.float32(7.25), np.uint32(0xFFFFFFFF)])
def test_fill_numpy_scalars(device, scalar):
    size = 48
    buf = device.allocator.allocate_buffer(size)
    run_one(device, lambda cb: cb.fill(buf, 0, size, scalar))
    np.testing.assert_array_equal(buf.read(scalar.dtype), np.full(size // scalar.dtype.itemsize, scalar, scalar.dtype))


def test_fill_spanning_many_tiles(device):
    """Fills and copies larger than any internal chunking keep the pattern's phase."""
    size = 300_000
    buf = device.allocator.allocate_buffer(size)
    run_one(device, lambda cb: cb.fill(buf, 2, size - 6, 0xA1B2, 2))
    got = buf.read()
    want = np.zeros(size, np.uint8)
    want[2 : size - 4] = np.full((size - 6) // 2, 0xA1B2, np.uint16).view(np.uint8)
    np.testing.assert_array_equal(got, want)
    dst = device.allocator.allocate_buffer(size)
    run_one(device, lambda cb: cb.copy(buf, 1, dst, 5, size - 9))
    want2 = np.zeros(size, np.uint8)
    want2[5 : size - 4] = got[1 : size - 8]
    np.testing.assert_array_equal(dst.read(), want2)


def test_fill_errors(device):
    buf = device.allocator.allocate_buffer(64)
    cb = device.create_command_buffer()
    with pytest.raises(fg.InvalidArgument, match="pattern_length 3"):
        cb.fill(buf, 0, 12, 0, 3)
    with pytest.raises(fg.InvalidArgument, match="256"):
        cb.fill(buf, 0, 4, 256, 1)
    with pytest.raises(fg.InvalidArgument, match="65536"):
        cb.fill(buf, 0, 4, 0x10000, 2)
    with pytest.raises(fg.InvalidArgument, match="-1"):
        cb.fill(buf, 0, 4, -1, 4)
    with pytest.raises(fg.InvalidArgument, match="1.5"):
        cb.fill(buf, 0, 4, 1.5)
    with pytest.raises(fg.InvalidArgument, match="offset 2"):
        cb.fill(buf, 2, 4, 0, 4)
    with pytest.raises(fg.InvalidArgument, match="length 6"):
        cb.fill(buf, 0, 6, 0, 4)
    with pytest.raises(fg.InvalidArgument, match="length 3"):
        cb.fill(buf, 0, 3, np.uint16(1))
    with pytest.raises(fg.OutOfRange) as e:
        cb.fill(buf, 60, 8, 0)
    assert "[60, 68)" in str(e.value) and "64 bytes" in str(e.value)
    with pytest.raises(fg.OutOfRange) as e:
        cb.fill(buf, 68, None, 0)
    cb.end()
    assert_device_works(device)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fill_matches_numpy_model(device, data):
    plen = data.draw(st.sampled_from([1, 2, 4]))
    size = data.draw(st.integers(0, 96))
    offset = data.draw(st.integers(0, size // plen)) * plen
    length = data.draw(st.integers(0, (size - offset) // plen)) * plen
    pattern = data.draw(st.integers(0, (1 << (8 * plen)) - 1))
    buf = device.allocator.allocate_buffer(size)
    buf.write(np.arange(size, dtype=np.uint8))
    run_one(device, lambda cb: cb.fill(buf, offset, length, pattern, plen))
    want = np.arange(size, dtype=np.uint8)
    want[offset : offset + length] = np.full(length // plen, pattern, f"<u{plen}").view(np.uint8)
    np.testing.assert_array_equal(buf.read(), want)


# --- copy and update ------------------------------------------------------------------------------


def test_copy(device):
    src = device.allocator.import_array(np.arange(100, dtype=np.uint8))
    dst = device.allocator.allocate_buffer(100)
    run_one(device, lambda cb: (cb.copy(src.buffer, 10, dst, 3, 50), cb.copy(src.buffer, 0, src.buffer, 90, 10)))
    want = np.zeros(100, np.uint8)
    want[3:53] = np.arange(10, 60)
    np.testing.assert_array_equal(dst.read(), want)
    np.testing.assert_array_equal(src.to_numpy()[90:], np.arange(10))


def test_copy_errors(device):
    a = device.allocator.allocate_buffer(64)
    b = device.allocator.allocate_buffer(32)
    cb = device.create_command_buffer()
    with pytest.raises(fg.OutOfRange) as e:
        cb.copy(a, 0, b, 0, 40)
    assert "copy target" in str(e.value) and "[0, 40)" in str(e.value) and "32 bytes" in str(e.value)
    with pytest.raises(fg.OutOfRange) as e:
        cb.copy(b, 16, a, 0, 20)
    assert "copy source" in str(e.value) and "[16, 36)" in str(e.value) and "32 bytes" in str(e.value)
    with pytest.raises(fg.OutOfRange):
        cb.copy(a, -4, b, 0, 4)
    with pytest.raises(fg.InvalidArgument, match="overlap") as e:
        cb.copy(a, 0, a, 8, 16)
    assert "[0, 16)" in str(e.value) and "[8, 24)" in str(e.value)
    with pytest.raises(fg.InvalidArgument, match="overlap"):
        cb.copy(a, 8, a, 0, 16)
    cb.copy(a, 0, a, 16, 16)  # adjacent is fine
    cb.end()
    run(device, cb)
    assert_device_works(device)


def test_update(device):
    buf = device.allocator.allocate_buffer(64)
    host = np.array([1, 2, 3], np.int32)
    cb = device.create_command_buffer()
    cb.update(host, buf, 4)
    cb.update(b"\xff\xfe", buf, 60)
    cb.update(bytearray(b"\x09"), buf, 0)
    cb.end()
    host[:] = 0  # update copies the data when recorded
    run(device, cb)
    got = buf.read()
    assert got[0] == 9
    np.testing.assert_array_equal(buf.read(np.int32, 3, offset=4), [1, 2, 3])
    assert bytes(got[60:62]) == b"\xff\xfe"
    assert not got[16:60].any()


def test_update_errors(device):
    buf = device.allocator.allocate_buffer(16)
    cb = device.create_command_buffer()
    with pytest.raises(fg.OutOfRange) as e:
        cb.update(np.zeros(4, np.int32), buf, 4)
    assert "[4, 20)" in str(e.value) and "16 bytes" in str(e.value)
    with pytest.raises(fg.ResourceExhausted):
        cb.update(np.zeros(device.limits.max_update_size + 1, np.uint8), device.allocator.allocate_buffer(device.limits.max_update_size + 1))
    cb.end()
    assert_device_works(device)


# --- barriers and regions -------------------------------------------------------------------------


def test_barrier_chain_of_dependent_dispatches(device):
    buf = device.allocator.allocate_view((4,), np.int32)
    cb = device.create_command_buffer()
    for _ in range(50):
        cb.dispatch(K.increment, "increment", 1, [2], [buf])
        cb.execution_barrier()
    cb.end()
    run(device, cb)
    np.testing.assert_array_equal(buf.to_numpy(), [0, 0, 50, 0])


def test_barrier_orders_many_workgroup_dispatches(device):
    """The second dispatch reads elements that other workgroups of the first one wrote."""
    n = 4000
    a = device.allocator.allocate_view((n,), np.int32)
    b = device.allocator.allocate_view((n,), np.int32)
    c = device.allocator.allocate_view((n,), np.int32)
    groups = -(-n // 16)
    cb = device.create_command_buffer()
    for _ in range(3):
        cb.fill(a.buffer, 0, None, 0)
        cb.execution_barrier()
        cb.dispatch(K.iota, "iota", groups, [], [a])
        cb.execution_barrier()
        cb.dispatch(K.reverse_double, "reverse_double", groups, [], [a, b])
        cb.execution_barrier()
        cb.copy(b.buffer, 0, c.buffer, 0, 4 * n)
        cb.execution_barrier()
    cb.end()
    run(device, cb)
    want = 2 * np.arange(n - 1, -1, -1, dtype=np.int32)
    np.testing.assert_array_equal(b.to_numpy(), want)
    np.testing.assert_array_equal(c.to_numpy(), want)


def test_barrier_orders_transfers(device):
    buf = device.allocator.allocate_buffer(64)
    out = device.allocator.allocate_buffer(64)
    cb = device.create_command_buffer()
    cb.execution_barrier()  # leading and repeated barriers are harmless
    cb.fill(buf, 0, 64, 0x01010101)
    cb.execution_barrier()
    cb.execution_barrier()
    cb.update(np.array([5, 6], np.uint32), buf, 8)
    cb.execution_barrier()
    cb.copy(buf, 0, out, 0, 64)
    cb.execution_barrier()
    cb.end()
    run(device, cb)
    want = np.full(16, 0x01010101, np.uint32)
    want[2:4] = [5, 6]
    np.testing.assert_array_equal(out.read(np.uint32), want)


def test_commands_without_barrier_on_disjoint_ranges_all_land(device):
    n = 256
    buf = device.allocator.allocate_buffer(4 * 8 * n)
    src = device.allocator.import_array(np.arange(n, dtype=np.int32))
    x = device.allocator.import_array(np.ones(n, np.float32))
    cb = device.create_command_buffer()
    cb.fill(buf, 0, 4 * n, np.int32(-1))  # block 0
    cb.copy(src.buffer, 0, buf, 4 * n, 4 * n)  # block 1
    cb.update(np.full(n, 3, np.int32), buf, 8 * n)  # block 2
    cb.dispatch(K.iota, "iota", n // 16, [], [(buf, 12 * n, 4 * n)])  # block 3
    cb.dispatch(K.saxpy, "saxpy", n // 64, [4.0], [x, (buf, 16 * n, 4 * n)])  # block 4
    for blk in range(5, 8):
        cb.dispatch(K.increment_all, "increment_all", n, [], [(buf, 4 * blk * n, 4 * n)])  # blocks 5..7
    cb.end()
    run(device, cb)
    got = buf.read(np.int32).reshape(8, n)
    np.testing.assert_array_equal(got[0], -1)
    np.testing.assert_array_equal(got[1], np.arange(n))
    np.testing.assert_array_equal(got[2], 3)
    np.testing.assert_array_equal(got[3], np.arange(n))
    np.testing.assert_array_equal(got[4].view(np.float32), 4.0)
    np.testing.assert_array_equal(got[5:], 1)


def test_command_buffers_of_one_submission_run_in_order(device):
    buf = device.allocator.allocate_view((1,), np.int32)
    out = device.allocator.allocate_view((20,), np.int32)
    cbs = []
    for i in range(20):
        cb = device.create_command_buffer()
        cb.dispatch(K.increment, "increment", 1, [0], [buf])
        cb.execution_barrier()
        cb.copy(buf.buffer, 0, out.buffer, 4 * i, 4)
        cb.end()
        cbs.append(cb)
    run(device, *cbs)
    np.testing.assert_array_equal(out.to_numpy(), np.arange(1, 21))


def test_empty_command_buffer(device):
    cb = device.create_command_buffer()
    cb.end()
    run(device, cb)
    s = device.create_semaphore(0)
    device.queue_execute([], signal=[(s, 3)])
    s.wait(3, timeout=TIMEOUT)
    assert s.query() == 3
