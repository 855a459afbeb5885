"""The two queues work travels through: a Chase-Lev deque per worker (the owner pushes and pops
at the bottom, idle workers steal from the top) and one injection queue (the host pushes
submissions under its submit lock; any worker takes them).

Entries are slot indices. A deque entry is a *shard*: an invitation to help run the slot's current
region. A stale shard (the region finished meanwhile) costs one failed claim, so capacity
overflow simply drops the invitation instead of blocking.
"""

from __future__ import annotations

from numba import njit

from scheduler import layout as L
from scheduler.native import cas, load, store

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


@njit(nogil=True, cache=True)
def inject(a: int, value: int) -> bool:
    """Single producer (the host, under its submit lock). False when the queue is full."""
    head = load(a + 8 * L.H_INJ_HEAD)
    tail = load(a + 8 * L.H_INJ_TAIL)
    if tail - head >= L.INJ_CAP:
        return False
    store(a + 8 * (load(a + 8 * L.H_INJ) + (tail & (L.INJ_CAP - 1))), value)
    store(a + 8 * L.H_INJ_TAIL, tail + 1)
    return True


@njit(nogil=True, cache=True)
def take_injected(a: int) -> int:
    """Any consumer: the oldest injected entry, or EMPTY."""
    while True:
        head = load(a + 8 * L.H_INJ_HEAD)
        if head >= load(a + 8 * L.H_INJ_TAIL):
            return EMPTY
        value = load(a + 8 * (load(a + 8 * L.H_INJ) + (head & (L.INJ_CAP - 1))))
        if cas(a + 8 * L.H_INJ_HEAD, head, head + 1) == head:
            return value
