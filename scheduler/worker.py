"""The worker loop and the host's entry points into the native scheduler.

Worker states (marl's, minus fibers: a parked submission is a continuation in its slot, not a
stack):

    RUNNING  -- help_slot: claiming and running reservations of a slot's region
       |  no shard in its deque, nothing injected, nothing to steal
    SPINNING -- polls the queues with `pause` for H_SPIN_NS
       |  still nothing
    PARKED   -- registered in H_SLEEPERS, futex-waits on H_WAKE; whoever publishes work bumps
                H_WAKE and wakes only as many as the work needs, and makes no syscall when
                nobody sleeps.

Where a worker looks for work, in order: its own deque (newest shard first), the injection queue
(submissions from the host), then the other workers' deques (oldest shard first: a steal).
"""

from __future__ import annotations

from numba import njit

from scheduler import layout as L
from scheduler.executor import bump, fail_sem, help_slot, scan_pending, sem_addr, share, signal_sem, slot_addr, try_release, word
from scheduler.native import cpu_relax, fetch_add, futex_wait, load, load_i64, now_ns, store
from scheduler.queues import EMPTY, deque_pop, deque_size, deque_steal, take_injected


@njit(nogil=True, cache=True)
def _steal(a: int, w: int, workers: int) -> int:
    for i in range(1, workers):
        s = deque_steal(a, (w + i) % workers)
        if s != EMPTY:
            return s
    return EMPTY


@njit(nogil=True, cache=True)
def _work_visible(a: int, workers: int) -> bool:
    if load(a + 8 * L.H_INJ_HEAD) < load(a + 8 * L.H_INJ_TAIL):
        return True
    for v in range(workers):
        if deque_size(a, v) > 0:
            return True
    return False


@njit(nogil=True, cache=True)
def _park(a: int, w: int, workers: int) -> None:
    bump(a, w, L.W_PARKS, 1)  # parks attempted
    epoch = load(word(a, L.H_WAKE))
    fetch_add(word(a, L.H_SLEEPERS), 1)
    # Re-check after registering: a publisher either sees us in H_SLEEPERS or bumped H_WAKE
    # before we read it (then futex_wait returns at once).
    if not _work_visible(a, workers) and load(word(a, L.H_SHUTDOWN)) == 0:
        futex_wait(word(a, L.H_WAKE), epoch, 0)
    fetch_add(word(a, L.H_SLEEPERS), -1)


@njit(nogil=True, cache=True)
def worker_loop(a: int, w: int, drain: bool) -> None:
    """Runs until shutdown; with `drain`, returns as soon as no work is visible (the host runs
    the loop inline this way on local-sync)."""
    workers = load_i64(a + 8 * L.H_WORKERS)
    idle_since = 0
    while load(word(a, L.H_SHUTDOWN)) == 0:
        s = deque_pop(a, w)
        if s == EMPTY:
            s = take_injected(a)
            if s != EMPTY:
                slot = slot_addr(a, s)
                share(a, s, w, load(slot + 8 * L.S_TOTAL) - (load(slot + 8 * L.S_CLAIM) & L.CLAIM_MASK), 1)
        if s == EMPTY and workers > 1:
            s = _steal(a, w, workers)
            if s != EMPTY:
                bump(a, w, L.W_STEALS, 1)
        if s != EMPTY:
            help_slot(a, s, w)
            idle_since = 0
            continue
        if drain:
            return
        now = now_ns()
        if idle_since == 0:
            idle_since = now
        if now - idle_since < load_i64(a + 8 * L.H_SPIN_NS):
            bump(a, w, L.W_SPINS, 1)
            cpu_relax()
            continue
        _park(a, w, workers)
        idle_since = 0


# --- host entry points (called from Python with the GIL released, under the submit lock) ----------


@njit(nogil=True, cache=True)
def host_submit(a: int, s: int, commands: int, n_cmds: int, regions: int, n_regions: int, tiles: int, waits: int, n_waits: int, signals: int, n_signals: int, serial: int) -> None:
    """Fills slot s and parks it, then starts it at once if its waits are met. Parking first
    closes the race with a concurrent signal: exactly one of this call and the signaller's scan
    wins the slot's CAS."""
    slot = slot_addr(a, s)
    store(slot + 8 * L.S_PROGRAM, commands)
    store(slot + 8 * L.S_N_CMDS, n_cmds)
    store(slot + 8 * L.S_REGIONS, regions)
    store(slot + 8 * L.S_N_REGIONS, n_regions)
    store(slot + 8 * L.S_TILES, tiles)
    store(slot + 8 * L.S_WAITS, waits)
    store(slot + 8 * L.S_N_WAITS, n_waits)
    store(slot + 8 * L.S_SIGNALS, signals)
    store(slot + 8 * L.S_N_SIGNALS, n_signals)
    store(slot + 8 * L.S_ERROR, 0)
    store(slot + 8 * L.S_SERIAL, serial)
    store(slot + 8 * L.S_STATE, L.PENDING)
    fetch_add(a + 8 * L.H_PENDING, 1)
    if try_release(a, s, -1):  # it had nothing to run: its signals may release others
        scan_pending(a, -1)


@njit(nogil=True, cache=True)
def host_signal(a: int, m: int, value: int) -> None:
    signal_sem(a, m, value)
    scan_pending(a, -1)


@njit(nogil=True, cache=True)
def host_fail(a: int, m: int, status: int, error_id: int) -> None:
    """Fails from the host; `error_id` names the host's error object (kept in Python)."""
    fail_sem(a, m, status, -1, error_id, 0)
    scan_pending(a, -1)


@njit(nogil=True, cache=True)
def host_wait(a: int, m: int, value: int, spin_ns: int, timespec_addr: int) -> int:
    """Waits until the payload reaches `value` (1), the semaphore fails (-1) or one futex sleep
    of the given timeout ends (0: the caller re-checks its deadline and calls again)."""
    sem = sem_addr(a, m)
    t0 = now_ns()
    while True:
        epoch = load(sem + 8 * L.M_EPOCH)
        if load(sem + 8 * L.M_STATE) == L.SEM_FAILED:
            return -1
        if load(sem + 8 * L.M_PAYLOAD) >= value:
            return 1
        if now_ns() - t0 < spin_ns:
            cpu_relax()
            continue
        fetch_add(sem + 8 * L.M_WAITERS, 1)
        futex_wait(sem + 8 * L.M_EPOCH, epoch, timespec_addr)
        fetch_add(sem + 8 * L.M_WAITERS, -1)
        if load(sem + 8 * L.M_STATE) == L.SEM_FAILED:
            return -1
        return 1 if load(sem + 8 * L.M_PAYLOAD) >= value else 0



