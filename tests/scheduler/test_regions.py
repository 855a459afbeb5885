"""Barriers split a command buffer into regions; region r+1 starts only when every tile of
region r is done. Fills and copies are split into 64 KiB tiles that workers run."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from scheduler import GridProgram
from scheduler import layout as L
from tests.scheduler.kernels import WAIT, chain_step, record_ids, run, write_count


@pytest.fixture(scope="module", params=[1, 2, 4], ids=lambda w: f"{w}w")
def dev(request):
    d = fg.create_device("local-task", workers=request.param)
    yield d
    d.close()


def chain_buffers(dev, steps, width):
    data = np.zeros((steps + 1) * width, np.int64)
    data[:width] = 100
    return dev.allocator.import_array(data), dev.allocator.import_array(np.zeros(steps + 1, np.int64))


@pytest.mark.parametrize("groups", [1, 3, 64])
def test_barriers_order_a_dependent_chain(dev, groups):
    """Each region reads what the previous one wrote; the last row is exact only if every region
    ran after its predecessor finished."""
    steps, width = 60, 64
    data, tickets = chain_buffers(dev, steps, width)
    cb = dev.create_command_buffer()
    for k in range(1, steps + 1):
        cb.dispatch(chain_step, "chain_step", (groups,), [np.uint32(k), np.uint32(width)], [data, tickets])
        cb.execution_barrier()
    cb.end()
    before = dev.scheduler.counters()
    run(dev, [cb])
    rows = data.to_numpy().reshape(steps + 1, width)
    assert (rows == 100 + np.arange(steps + 1)[:, None]).all()
    assert (tickets.to_numpy()[1:] == np.arange(1, steps + 1)).all()
    after = dev.scheduler.counters()
    assert after["regions"] - before["regions"] == steps
    assert after["workgroups"] - before["workgroups"] == steps * groups


def test_many_regions_in_one_submission(dev):
    """Hundreds of regions of alternating widths, each dependent on the previous one."""
    steps, width = 400, 16
    data, tickets = chain_buffers(dev, steps, width)
    cb = dev.create_command_buffer()
    total = 0
    for k in range(1, steps + 1):
        groups = (1, 2, 16, 5)[k % 4]
        total += groups
        cb.dispatch(chain_step, "chain_step", (groups,), [np.uint32(k), np.uint32(width)], [data, tickets])
        cb.execution_barrier()
    cb.end()
    before = dev.scheduler.counters()
    run(dev, [cb])
    assert (data.to_numpy().reshape(steps + 1, width)[-1] == 100 + steps).all()
    after = dev.scheduler.counters()
    assert after["regions"] - before["regions"] == steps
    assert after["workgroups"] - before["workgroups"] == total


def test_several_command_buffers_run_in_order(dev):
    """The command buffers of one submission run one after another."""
    steps, width = 12, 8
    data, tickets = chain_buffers(dev, steps, width)
    cbs = []
    for k in range(1, steps + 1):
        cb = dev.create_command_buffer()
        cb.dispatch(chain_step, "chain_step", (2,), [np.uint32(k), np.uint32(width)], [data, tickets])
        cb.end()
        cbs.append(cb)
    run(dev, cbs)
    assert (data.to_numpy().reshape(steps + 1, width)[-1] == 100 + steps).all()


def test_empty_regions_are_skipped(dev):
    """A grid program with empty regions (no commands) around and between real ones."""
    steps, width = 3, 4
    data, tickets = chain_buffers(dev, steps, width)
    cb = dev.create_command_buffer()
    for k in range(1, steps + 1):
        cb.dispatch(chain_step, "chain_step", (2,), [np.uint32(k), np.uint32(width)], [data, tickets])
        cb.execution_barrier()
    cb.end()
    prog = cb.lowered.program
    regions = [(0, 0), (0, 0)]
    for first, end in prog.regions[:, :2]:
        regions += [(first, end), (end, end), (end, end)]
    program = GridProgram(prog.commands, np.array(regions, np.int64))
    sem = dev.create_semaphore(0)
    dev.scheduler.submit(program, [], [(sem.index, 1)], keepalive=(cb, sem))
    sem.wait(1, timeout=WAIT)
    assert (data.to_numpy().reshape(steps + 1, width)[-1] == 100 + steps).all()


def test_empty_submissions_signal(dev):
    """No command buffer, and a command buffer with no commands: the signal still happens."""
    s = dev.create_semaphore(0)
    dev.queue_barrier(signal=[(s, 1)])
    s.wait(1, timeout=WAIT)
    cb = dev.create_command_buffer()
    cb.execution_barrier()
    cb.end()
    dev.queue_execute([cb], wait=[(s, 1)], signal=[(s, 2)])
    s.wait(2, timeout=WAIT)
    program = GridProgram(np.zeros((0, L.CMD_WORDS), np.int64), np.array([(0, 0)] * 5, np.int64))
    dev.scheduler.submit(program, [(s.index, 2)], [(s.index, 3)])
    s.wait(3, timeout=WAIT)


def test_indirect_count_written_by_an_earlier_region(dev):
    """dispatch_indirect reads its count when its region starts: after the region that wrote it.
    A zero count makes an empty region, which is skipped."""
    counts = dev.allocator.import_array(np.array([5, 3, 2, 0, 1, 1], np.uint32))
    count_buf = dev.allocator.import_array(np.zeros(3, np.uint32))
    zero_buf = dev.allocator.import_array(np.zeros(3, np.uint32))
    n = 5 * 3 * 2
    ids = dev.allocator.import_array(np.full(n, -1, np.int32))
    hits = dev.allocator.import_array(np.zeros(n, np.int32))
    who = dev.allocator.import_array(np.full(n, -1, np.int32))
    cb = dev.create_command_buffer()
    cb.dispatch(write_count, "write_count", (1,), [], [(counts.buffer, 0, 12), count_buf])
    cb.execution_barrier()
    cb.dispatch(write_count, "write_count", (1,), [], [(counts.buffer, 12, 12), zero_buf])
    cb.execution_barrier()
    cb.dispatch_indirect(record_ids, "record_ids", zero_buf, [], [ids, hits, who])  # 0 x 1 x 1
    cb.execution_barrier()
    cb.dispatch_indirect(record_ids, "record_ids", count_buf, [], [ids, hits, who])
    cb.end()
    before = dev.scheduler.counters()
    run(dev, [cb])
    assert (hits.to_numpy() == 1).all()
    assert (ids.to_numpy() == np.arange(n)).all()
    assert dev.scheduler.counters()["workgroups"] - before["workgroups"] == 2 + n


# --- fills and copies --------------------------------------------------------------------------------

TILE = L.TRANSFER_TILE_BYTES


def tiles(length):
    return -(-length // TILE)


@pytest.mark.parametrize(
    "offset,length,pattern,plen",
    [
        (3, 3 * TILE + 12345, 0xA5, 1),
        (0, 1, 0x7F, 1),
        (TILE - 1, TILE + 2, 0x11, 1),
        (2, 2 * 200_003, 0xBEEF, 2),
        (4, 4 * 100_003, 0xDEADBEEF, 4),
        (8, 4 * TILE, 0x01020304, 4),
        (0, 4 * (5 * TILE // 4 + 1), 0x80FF0001, 4),
    ],
)
def test_large_fill_at_odd_sizes_and_offsets(dev, offset, length, pattern, plen):
    size = offset + length + 37
    rng = np.random.default_rng(offset + length)
    init = rng.integers(0, 256, size, dtype=np.uint8)
    buf = dev.allocate_buffer(size)
    buf.write(init)
    cb = dev.create_command_buffer()
    cb.fill(buf, offset, length, pattern, plen)
    cb.end()
    before = dev.scheduler.counters()
    run(dev, [cb])
    got = buf.read()
    want = init.copy()
    want[offset : offset + length] = np.tile(np.frombuffer(int(pattern).to_bytes(plen, "little"), np.uint8), length // plen)
    assert (got[:offset] == init[:offset]).all(), "fill wrote before its range"
    assert (got[offset + length :] == init[offset + length :]).all(), "fill wrote past its range"
    assert (got == want).all()
    # Each 64 KiB tile is one unit of work run by a worker.
    assert dev.scheduler.counters()["workgroups"] - before["workgroups"] == tiles(length)


@pytest.mark.parametrize(
    "src_off,dst_off,length",
    [(1, 7, 3 * TILE + 5), (0, 0, 8 * TILE), (TILE - 3, 5, 2 * TILE + 1), (13, 0, 1), (0, 3, 700_001)],
)
def test_large_copy_at_odd_sizes_and_offsets(dev, src_off, dst_off, length):
    rng = np.random.default_rng(length)
    src_data = rng.integers(0, 256, src_off + length + 11, dtype=np.uint8)
    dst_init = rng.integers(0, 256, dst_off + length + 19, dtype=np.uint8)
    src = dev.allocate_buffer(src_data.size)
    dst = dev.allocate_buffer(dst_init.size)
    src.write(src_data)
    dst.write(dst_init)
    cb = dev.create_command_buffer()
    cb.copy(src, src_off, dst, dst_off, length)
    cb.end()
    before = dev.scheduler.counters()
    run(dev, [cb])
    want = dst_init.copy()
    want[dst_off : dst_off + length] = src_data[src_off : src_off + length]
    assert (dst.read() == want).all()
    assert (src.read() == src_data).all()
    assert dev.scheduler.counters()["workgroups"] - before["workgroups"] == tiles(length)


def test_fill_then_copy_then_dispatch_are_ordered_by_barriers(dev):
    """fill A; barrier; copy A -> B; barrier; update B's head; barrier; copy B -> C: each step
    sees the previous one's bytes, over many tiles."""
    n = 5 * TILE + 4 * 7
    a, b, c = (dev.allocate_buffer(n) for _ in range(3))
    c.write(np.zeros(n, np.uint8))
    cb = dev.create_command_buffer()
    cb.fill(a, 0, n, 0x5A5A5A5A, 4)
    cb.execution_barrier()
    cb.copy(a, 0, b, 0, n)
    cb.execution_barrier()
    cb.update(np.arange(64, dtype=np.uint8), b, 4)
    cb.execution_barrier()
    cb.copy(b, 0, c, 0, n)
    cb.end()
    run(dev, [cb])
    want = np.full(n, 0x5A, np.uint8)
    want[4:68] = np.arange(64, dtype=np.uint8)
    assert (c.read() == want).all()


def test_transfer_tiles_run_on_the_workers(dev):
    """A large fill is split into tiles that the workers (not the host) run: the trace shows
    every tile once, on worker ids in range."""
    n = 16 * TILE + 12
    buf = dev.allocate_buffer(n)
    sched = dev.scheduler
    dev.wait_idle(timeout=WAIT)
    sched.enable_tracing(capacity=4096)
    try:
        cb = dev.create_command_buffer()
        cb.fill(buf, 0, n, 0xC3, 1)
        cb.end()
        run(dev, [cb])
        ev = sched.trace_events()
    finally:
        sched.disable_tracing()
    assert (buf.read() == 0xC3).all()
    covered = np.zeros(tiles(n), np.int32)
    for e in ev:
        covered[e["first"] : e["end"]] += 1
    assert (covered == 1).all()
    assert ((ev["worker"] >= 0) & (ev["worker"] < dev.participants)).all()
