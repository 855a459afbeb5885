"""Buffers and buffer views: allocation, mapping, usage, bounds, alignment."""

from __future__ import annotations

import re

import numpy as np
import pytest

import fibergrid as fg
from tests.hal import kernels as K
from tests.hal.helpers import assert_device_works, run_one


def _names_range(message: str, lo: int, hi: int, size: int) -> bool:
    return f"[{lo}, {hi})" in message and str(size) in message


@pytest.mark.parametrize("size", [0, 1, 3, 64, 65, 4096, 100_003])
def test_allocate_sizes(device, size):
    buf = device.allocator.allocate_buffer(size)
    assert buf.size == size
    m = buf.map()
    assert m.dtype == np.uint8 and m.shape == (size,)
    assert not m.any(), "new buffers are zeroed"
    assert buf.address % 64 == 0


def test_allocate_via_device_and_defaults(device):
    buf = device.allocate_buffer(32)
    assert buf.size == 32
    assert buf.usage == fg.BufferUsage.DEFAULT
    assert buf.usage & fg.BufferUsage.MAPPING and buf.usage & fg.BufferUsage.TRANSFER and buf.usage & fg.BufferUsage.DISPATCH_STORAGE


def test_alignment_of_many_buffers(device):
    bufs = [device.allocator.allocate_buffer(n) for n in (1, 7, 63, 64, 100, 129, 1000, 4095)]
    assert all(b.address % 64 == 0 for b in bufs)
    views = [device.allocator.import_array(np.arange(n, dtype=np.float64)) for n in (1, 3, 17)]
    assert all(v.buffer.address % 64 == 0 for v in views)


@pytest.mark.parametrize("size", [-1, 1.5, "8"])
def test_allocate_bad_size(device, size):
    with pytest.raises(fg.InvalidArgument, match=re.escape(repr(size))):
        device.allocator.allocate_buffer(size)


def test_allocate_too_large(device):
    with pytest.raises(fg.ResourceExhausted):
        device.allocator.allocate_buffer(1 << 62)
    assert_device_works(device)


def test_map_write_read_roundtrip(device):
    buf = device.allocator.allocate_buffer(64)
    data = np.arange(16, dtype=np.int32)
    buf.write(data)
    np.testing.assert_array_equal(buf.read(np.int32), data)
    np.testing.assert_array_equal(buf.read(np.int32, (4, 4)), data.reshape(4, 4))
    np.testing.assert_array_equal(buf.read(np.int32, 2, offset=8), [2, 3])
    # map is a live view: writes go straight to the buffer
    m = buf.map(4, 4)
    m[:] = [1, 0, 0, 0]
    assert buf.read(np.int32)[1] == 1
    v = buf.view(np.float32, (2,), offset=16)
    v[:] = [1.5, -2.0]
    np.testing.assert_array_equal(buf.read(np.float32, 2, offset=16), [1.5, -2.0])
    # read returns a copy
    r = buf.read(np.int32)
    r[:] = 99
    assert buf.read(np.int32)[0] == 0
    buf.write(np.array([7], np.int16), offset=62)
    assert buf.read(np.int16, 1, offset=62)[0] == 7


def test_view_offset_must_be_element_aligned(device):
    buf = device.allocator.allocate_buffer(64)
    with pytest.raises(fg.InvalidArgument, match="offset 2"):
        buf.view(np.float32, 2, offset=2)


@pytest.mark.parametrize(
    "call, lo, hi",
    [
        (lambda b: b.map(10, 8), 10, 18),
        (lambda b: b.map(17), 17, 16),
        (lambda b: b.map(-1, 4), -1, 3),
        (lambda b: b.write(np.zeros(5, np.int32)), 0, 20),
        (lambda b: b.write(np.zeros(2, np.int32), offset=12), 12, 20),
        (lambda b: b.read(np.int32, 5), 0, 20),
        (lambda b: b.view(np.int32, (2,), offset=12), 12, 20),
    ],
)
def test_host_access_out_of_range(device, call, lo, hi):
    buf = device.allocator.allocate_buffer(16)
    with pytest.raises(fg.OutOfRange) as e:
        call(buf)
    assert _names_range(str(e.value), lo, hi, 16), str(e.value)
    assert "16 bytes" in str(e.value)


def test_mapping_requires_mapping_usage(device):
    U = fg.BufferUsage
    buf = device.allocator.allocate_buffer(64, U.TRANSFER | U.DISPATCH_STORAGE)
    for call in (lambda: buf.map(), lambda: buf.view(np.float32), lambda: buf.read(), lambda: buf.write(np.zeros(4, np.uint8))):
        with pytest.raises(fg.InvalidArgument, match="MAPPING"):
            call()
    # It is still usable by the device: fill it, copy it to a mappable buffer and look.
    out = device.allocator.allocate_buffer(64)
    run_one(device, lambda cb: (cb.fill(buf, 0, 64, 0x01020304), cb.execution_barrier(), cb.copy(buf, 0, out, 0, 64)))
    np.testing.assert_array_equal(out.read(np.uint32), np.full(16, 0x01020304, np.uint32))


def test_transfer_and_dispatch_usage_checked_at_record_time(device):
    U = fg.BufferUsage
    no_transfer = device.allocator.allocate_buffer(64, U.MAPPING | U.DISPATCH_STORAGE)
    no_storage = device.allocator.allocate_buffer(256, U.MAPPING | U.TRANSFER)
    ok = device.allocator.allocate_buffer(256)
    cb = device.create_command_buffer()
    with pytest.raises(fg.InvalidArgument, match="TRANSFER"):
        cb.fill(no_transfer, 0, 64, 0)
    with pytest.raises(fg.InvalidArgument, match="TRANSFER"):
        cb.copy(no_transfer, 0, ok, 0, 16)
    with pytest.raises(fg.InvalidArgument, match="TRANSFER"):
        cb.copy(ok, 0, no_transfer, 0, 16)
    with pytest.raises(fg.InvalidArgument, match="TRANSFER"):
        cb.update(b"1234", no_transfer, 0)
    with pytest.raises(fg.InvalidArgument, match="DISPATCH_STORAGE") as e:
        cb.dispatch(K.saxpy, "saxpy", (1,), [1.0], [ok, no_storage])
    assert "binding 1" in str(e.value) and "saxpy" in str(e.value)
    cb.end()
    assert_device_works(device)


def test_buffer_view(device):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    v = device.allocator.import_array(a)
    assert isinstance(v, fg.BufferView)
    assert v.shape == (2, 3, 4) and v.dtype == np.float32 and v.nbytes == 96 and v.offset == 0
    assert v.buffer.size == 96
    out = v.to_numpy()
    assert out.shape == (2, 3, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out, a)
    out[:] = 0  # a copy
    np.testing.assert_array_equal(v.to_numpy(), a)
    # import copies: changing the source later does not change the buffer
    src = np.ones(4, np.int64)
    iv = device.allocator.import_array(src)
    src[:] = 5
    np.testing.assert_array_equal(iv.to_numpy(), np.ones(4, np.int64))
    # non-contiguous input is imported in C order
    t = np.arange(6, dtype=np.int16).reshape(2, 3).T
    np.testing.assert_array_equal(device.allocator.import_array(t).to_numpy(), t)


def test_buffer_view_on_a_range(device):
    buf = device.allocator.allocate_buffer(128)
    buf.write(np.arange(32, dtype=np.int32))
    v = fg.BufferView(buf, (2, 3), np.int32, offset=16)
    np.testing.assert_array_equal(v.to_numpy(), np.arange(4, 10, dtype=np.int32).reshape(2, 3))
    s = fg.BufferView(buf, (), np.int32, offset=124)
    assert s.to_numpy().shape == () and int(s.to_numpy()) == 31
    e = fg.BufferView(buf, (0, 5), np.float64)
    assert e.nbytes == 0 and e.to_numpy().shape == (0, 5)
    zv = device.allocator.allocate_view((0,), np.float32)
    assert zv.buffer.size == 0 and zv.to_numpy().shape == (0,)


def test_buffer_view_errors(device):
    buf = device.allocator.allocate_buffer(64)
    with pytest.raises(fg.OutOfRange) as e:
        fg.BufferView(buf, (5, 4), np.float32)
    assert _names_range(str(e.value), 0, 80, 64)
    with pytest.raises(fg.OutOfRange) as e:
        fg.BufferView(buf, (4,), np.float32, offset=56)
    assert _names_range(str(e.value), 56, 72, 64)
    with pytest.raises(fg.InvalidArgument, match="negative"):
        fg.BufferView(buf, (-1, 4), np.float32)


def test_zero_size_buffer_in_commands(device):
    empty = device.allocator.allocate_buffer(0)
    other = device.allocator.allocate_buffer(16)
    cb = device.create_command_buffer()
    cb.fill(empty, 0, 0, 0xFF)
    cb.fill(empty, 0, None, 0xFF)
    cb.copy(other, 0, empty, 0, 0)
    cb.update(b"", empty, 0)
    with pytest.raises(fg.OutOfRange):
        cb.fill(empty, 0, 4, 0)
    with pytest.raises(fg.OutOfRange):
        cb.copy(other, 0, empty, 0, 4)
    cb.end()
    run_one(device, lambda c: None)
    s = device.create_semaphore(0)
    device.queue_execute([cb], signal=[(s, 1)])
    s.wait(1, timeout=10)
    assert not other.read().any()
    assert_device_works(device)
