"""Kernels shared by the scheduler tests (compiled once per process: the executable cache is
keyed by source). Every kernel linearises its workgroup id the same way:
lin = x + cx * (y + cy * z)."""

from __future__ import annotations

import threading

import numpy as np

import fibergrid as fg

WAIT = 10.0  # seconds: every wait in these tests has a timeout, so a bug fails instead of hanging


@fg.kernel(workgroup_size=1, bindings=(np.int32, np.int32, np.int32))
def record_ids(wg, ids, hits, who):
    """Each workgroup writes its linear id into its own slot, counts its runs, notes its worker."""
    lin = wg.id[0] + wg.count[0] * (wg.id[1] + wg.count[1] * wg.id[2])
    ids[lin] = lin
    hits[lin] += 1
    who[lin] = wg.worker_id


@fg.kernel(workgroup_size=1, bindings=(np.int64, np.int32), constants=(np.uint32, np.uint32))
def spin(wg, out, who, heavy_every, iters):
    """Uneven work: every `heavy_every`-th workgroup spins `iters` rounds, the others a few."""
    lin = wg.id[0] + wg.count[0] * (wg.id[1] + wg.count[1] * wg.id[2])
    n = iters if lin % heavy_every == 0 else 4
    x = lin + 1
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    out[lin] = x
    who[lin] = wg.worker_id


@fg.kernel(workgroup_size=1, bindings=(np.int64, np.int64), constants=(np.uint32, np.uint32))
def chain_step(wg, data, tickets, k, width):
    """Row k of `data` (rows of `width`) becomes row k-1 plus one; workgroup 0 also takes the next
    ticket (tickets[0] is the counter, tickets[k] the ticket of step k). Run out of order, a row
    reads zeros from its predecessor and the final values are wrong."""
    lin = wg.id[0] + wg.count[0] * (wg.id[1] + wg.count[1] * wg.id[2])
    for i in range(lin, width, wg.count[0]):
        data[k * width + i] = data[(k - 1) * width + i] + 1
    if lin == 0:
        tickets[0] += 1
        tickets[k] = tickets[0]


@fg.kernel(workgroup_size=1, bindings=(np.int32,), constants=(np.uint32,))
def fail_at(wg, out, bad):
    """Fails (status 7) at workgroup `bad`; the others mark their slot."""
    lin = wg.id[0] + wg.count[0] * (wg.id[1] + wg.count[1] * wg.id[2])
    if lin == bad:
        return 7
    out[lin] = 1
    return 0


@fg.kernel(workgroup_size=1, bindings=(np.int32,))
def out_of_bounds(wg, out):
    """Raises IndexError (boundscheck) in every workgroup."""
    out[out.shape[0] + wg.id[0]] = 1


@fg.kernel(workgroup_size=1, bindings=(np.uint32, np.uint32))
def write_count(wg, src, count):
    """count[0..3] = src[0..3]: an indirect workgroup count computed on the device."""
    for d in range(3):
        count[d] = src[d]


def linear_ids(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape))


def dispatch_ids(dev, shape):
    """A command buffer running record_ids over `shape`; returns (cb, ids, hits, who) views."""
    n = linear_ids(shape)
    ids = dev.allocator.import_array(np.full(n, -1, np.int32))
    hits = dev.allocator.import_array(np.zeros(n, np.int32))
    who = dev.allocator.import_array(np.full(n, -1, np.int32))
    cb = dev.create_command_buffer()
    cb.dispatch(record_ids, "record_ids", shape, [], [ids, hits, who])
    cb.end()
    return cb, ids, hits, who


def run(dev, cbs, wait=(), timeout: float = WAIT):
    """Submits and waits for completion on a fresh semaphore."""
    s = dev.create_semaphore(0)
    dev.queue_execute(cbs, wait=wait, signal=[(s, 1)])
    s.wait(1, timeout=timeout)
    return s


def blocked_waiter(semaphore, value: int) -> tuple[threading.Thread, list]:
    """A started thread blocked in semaphore.wait(value); its list gets "returned" or the
    exception the wait raised."""
    got: list = []

    def wait() -> None:
        try:
            semaphore.wait(value, timeout=WAIT)
            got.append("returned")
        except BaseException as e:  # noqa: BLE001
            got.append(e)

    thread = threading.Thread(target=wait)
    thread.start()
    return thread, got


def fibergrid_threads() -> set[threading.Thread]:
    """The live threads fibergrid started (its workers): what a test may count. The process's
    total also counts other tests' thread pools, which start and end on their own schedule."""
    return {t for t in threading.enumerate() if t.name.startswith("fibergrid") and t.is_alive()}
