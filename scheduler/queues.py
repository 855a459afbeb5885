"""The two queues work travels through: a Chase-Lev deque per participant (the owner pushes and
pops at the bottom, idle workers steal from the top) and one ready queue (any thread pushes a
submission that became runnable; any participant takes it).

Entries are slot indices. A deque entry is a *shard*: an extra invitation to help run the slot's
current region. Shards are optional (a stale one costs one failed claim), so a full deque drops
them. The ready queue carries the one invitation a submission cannot do without (the one that
starts it when nobody is already running it), so it never refuses: each slot has at most one
entry in it (the slot's S_QUEUED flag), and it has a cell for every slot.
"""

from __future__ import annotations

from numba import njit

from scheduler import layout as L
from scheduler.native import cas, cpu_relax, load, store

EMPTY = -1


@njit(inline="always")
def _deque(a: int, w: int) -> int:
    return a + 8 * (load(a + 8 * L.H_DEQUES) + w * L.DEQUE_CAP)


@njit(inline="always")
def _ends(a: int, w: int) -> int:
    return a + 8 * (L.HEADER_WORDS + w * L.WORKER_WORDS)


@njit(nogil=True, cache=True)
def deque_push(a: int, w: int, value: int) -> bool:
    """Owner only. Returns False (dropping the shard) when the deque is full."""
    ends = _ends(a, w)
    b = load(ends + 8 * L.W_BOTTOM)
    if b - load(ends + 8 * L.W_TOP) >= L.DEQUE_CAP:
        return False
    store(_deque(a, w) + 8 * (b & (L.DEQUE_CAP - 1)), value)
    store(ends + 8 * L.W_BOTTOM, b + 1)
    return True


@njit(nogil=True, cache=True)
def deque_pop(a: int, w: int) -> int:
    """Owner only: the newest entry, or EMPTY."""
    ends = _ends(a, w)
    b = load(ends + 8 * L.W_BOTTOM) - 1
    store(ends + 8 * L.W_BOTTOM, b)
    t = load(ends + 8 * L.W_TOP)
    if t > b:
        store(ends + 8 * L.W_BOTTOM, b + 1)
        return EMPTY
    value = load(_deque(a, w) + 8 * (b & (L.DEQUE_CAP - 1)))
    if t == b:  # last entry: race the stealers for it
        if cas(ends + 8 * L.W_TOP, t, t + 1) != t:
            value = EMPTY
        store(ends + 8 * L.W_BOTTOM, b + 1)
    return value


@njit(nogil=True, cache=True)
def deque_steal(a: int, victim: int) -> int:
    """Any worker: the oldest entry of `victim`'s deque, or EMPTY."""
    ends = _ends(a, victim)
    t = load(ends + 8 * L.W_TOP)
    if t >= load(ends + 8 * L.W_BOTTOM):
        return EMPTY
    value = load(_deque(a, victim) + 8 * (t & (L.DEQUE_CAP - 1)))
    if cas(ends + 8 * L.W_TOP, t, t + 1) != t:
        return EMPTY
    return value


@njit(nogil=True, cache=True)
def deque_size(a: int, w: int) -> int:
    ends = _ends(a, w)
    return load(ends + 8 * L.W_BOTTOM) - load(ends + 8 * L.W_TOP)


@njit(inline="always")
def slot_addr(a: int, s: int) -> int:
    """Address of slot s (slots live in chunks: one more load than a flat table)."""
    chunk = load(a + 8 * (load(a + 8 * L.H_SLOT_CHUNKS) + (s >> L.SLOT_CHUNK_SHIFT)))
    return chunk + 8 * L.SLOT_WORDS * (s & (L.SLOT_CHUNK - 1))


@njit(nogil=True, cache=True)
def ready_push(a: int, s: int) -> None:
    """Any thread: makes slot s visible to every participant. A no-op while an entry for s is
    queued: its taker clears S_QUEUED before reading the slot's claim word, so it sees whatever
    region was published before this call."""
    if cas(slot_addr(a, s) + 8 * L.S_QUEUED, 0, 1) != 0:
        return
    mask = load(a + 8 * L.H_READY_CAP) - 1
    cells = a + 8 * load(a + 8 * L.H_READY)
    while True:
        pos = load(a + 8 * L.H_READY_TAIL)
        cell = cells + 8 * L.READY_CELL_WORDS * (pos & mask)
        seq = load(cell)
        if seq == pos:
            if cas(a + 8 * L.H_READY_TAIL, pos, pos + 1) == pos:
                store(cell + 8, s)
                store(cell, pos + 1)
                return
        elif seq < pos:
            # The cell's last taker has claimed it but not yet released it (the queue cannot be
            # full: it has a cell per slot and a slot queues at most once).
            cpu_relax()


@njit(nogil=True, cache=True)
def ready_take(a: int) -> int:
    """Any participant: the oldest ready slot, or EMPTY."""
    mask = load(a + 8 * L.H_READY_CAP) - 1
    cells = a + 8 * load(a + 8 * L.H_READY)
    while True:
        pos = load(a + 8 * L.H_READY_HEAD)
        cell = cells + 8 * L.READY_CELL_WORDS * (pos & mask)
        seq = load(cell)
        if seq == pos + 1:
            if cas(a + 8 * L.H_READY_HEAD, pos, pos + 1) == pos:
                s = load(cell + 8)
                store(cell, pos + mask + 1)
                store(slot_addr(a, s) + 8 * L.S_QUEUED, 0)
                return s
        elif seq < pos + 1:
            return EMPTY


@njit(nogil=True, cache=True)
def ready_size(a: int) -> int:
    return load(a + 8 * L.H_READY_TAIL) - load(a + 8 * L.H_READY_HEAD)
