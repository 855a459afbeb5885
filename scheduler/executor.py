"""The native executor: how a worker runs the tiles of a grid program, finishes regions and
submissions, and signals semaphores. Compiled with numba (nogil); no Python runs here.

Protocol for one submission slot (see layout.py for the words):
- A region is published by storing S_TOTAL and S_REMAINING, then the claim word
  (generation << 40 | 0). Any worker claims a reservation [next, next+n) with a CAS on the claim
  word; the generation makes a worker preempted while looking at an older region (or an older
  submission in a recycled slot) fail its CAS instead of claiming tiles that are not its own.
- Before touching the region's metadata the finisher of the previous region stores
  (generation+1, CLOSED), so nobody can pair the old claim word with the new S_TOTAL.
- A worker reads program memory only after a successful claim: tiles it claimed are unfinished,
  so the submission is alive and the host still holds the program's arrays.
- Every tile run (or skipped after a failure) is subtracted from S_REMAINING; the worker that
  brings it to zero releases the next region, or completes the submission: it signals (or fails)
  the semaphores and readies the parked submissions they unblock.
"""

from __future__ import annotations

from numba import njit

from scheduler import layout as L
from scheduler.queues import deque_push, ready_push, slot_addr
from scheduler.native import (
    cpu_relax,
    call_kernel,
    cas,
    now_ns,
    fetch_add,
    futex_wake,
    load,
    load_i64,
    load_u32,
    memcpy,
    store,
    store_i64,
    store_u8,
    store_u32,
)

CLOSED = L.CLAIM_MASK
MAX_RESERVATION = 64  # workgroups per claim: a few ns of CAS spread over up to 64 kernels


@njit(inline="always")
def word(a: int, i: int) -> int:
    """Address of arena word i."""
    return a + 8 * i


@njit(inline="always")
def sem_addr(a: int, m: int) -> int:
    return word(a, load_i64(word(a, L.H_SEMS)) + m * L.SEM_WORDS)


@njit(inline="always")
def worker_addr(a: int, w: int) -> int:
    return word(a, L.HEADER_WORDS + w * L.WORKER_WORDS)


@njit(inline="always")
def cmd_addr(slot: int, c: int) -> int:
    return load(slot + 8 * L.S_PROGRAM) + 8 * L.CMD_WORDS * c


# --- waking --------------------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def wake_workers(a: int, count: int) -> None:
    """Publishes 'there is work' and wakes up to `count` parked workers; no syscall when none
    sleeps or `count` is 0 (FUTEX_WAKE of 0 wakes one: the kernel checks the count after each
    wake; every publish whose spinners covered it woke a parked worker that found no token)."""
    fetch_add(word(a, L.H_WAKE), 1)
    if count > 0 and load(word(a, L.H_SLEEPERS)) > 0:
        store(word(a, L.H_WAKE_T0), now_ns())
        woken = futex_wake(word(a, L.H_WAKE), count)
        if woken > 0:  # each decrements it when it runs again: see worker._park
            fetch_add(word(a, L.H_WAKING), woken)


# --- regions ---------------------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def begin_region(a: int, slot: int, r: int) -> int:
    """Publishes region r of the slot's program; returns its tile count (0: nothing to run).

    Indirect workgroup counts are read here, when every earlier region is complete."""
    gen = (load(slot + 8 * L.S_CLAIM) >> L.CLAIM_SHIFT) + 1
    store(slot + 8 * L.S_CLAIM, (gen << L.CLAIM_SHIFT) | CLOSED)
    row = load(slot + 8 * L.S_REGIONS) + 8 * L.REGION_WORDS * r
    first = load_i64(row + 8 * L.R_FIRST)
    end = load_i64(row + 8 * L.R_END)
    tiles = load(slot + 8 * L.S_TILES)
    n_cmds = load(slot + 8 * L.S_N_CMDS)
    total = 0
    for c in range(first, end):
        cmd = cmd_addr(slot, c)
        n = load_i64(cmd + 8 * L.C_TILES)
        indirect = load_i64(cmd + 8 * L.C_INDIRECT)
        if indirect != 0:
            limit = load_i64(cmd + 8 * L.C_MAX_COUNT)
            n = 1
            state = load_i64(cmd + 8 * L.C_STATE)
            for d in range(3):
                count = load_u32(indirect + 4 * d)
                if count > limit:
                    record_failure(slot, L.STATUS_INDIRECT_RANGE, cmd, count, 0, 0)
                    count = 0
                store_u32(cmd + 8 * (L.C_COUNT + d), count)
                store_u32(state + L.DISPATCH_STATE_WORKGROUP_COUNT + 4 * d, count)
                n *= count
        store(tiles + 8 * c, n)
        store(tiles + 8 * (n_cmds + c), total)  # first tile of command c within the region
        total += n
    if total > L.CLAIM_MASK:  # only indirect counts get here: static ones are checked at end()
        record_failure(slot, L.STATUS_INDIRECT_RANGE, cmd_addr(slot, first), total, 0, 0)
    if load(slot + 8 * L.S_ERROR) != 0:
        total = 0
    store(slot + 8 * L.S_LEARN, 1 if load_i64(row + 8 * L.R_SAMPLES) < L.LEARN_SAMPLES else 0)
    store(slot + 8 * L.S_WORK_NS, 0)
    workers = load_i64(a + 8 * L.H_WORKERS)
    store(slot + 8 * L.S_RESERVATION, max(1, min(MAX_RESERVATION, total // (8 * workers))))
    store(slot + 8 * L.S_REGION, r)
    store(slot + 8 * L.S_TOTAL, total)
    store(slot + 8 * L.S_REMAINING, total)
    store(slot + 8 * L.S_CLAIM, ((gen + 1) << L.CLAIM_SHIFT) | 0)
    return total


@njit(nogil=True, cache=True)
def record_failure(slot: int, status: int, cmd: int, x: int, y: int, z: int) -> None:
    """Keeps the first failure of a submission; later tiles of it are skipped."""
    if cas(slot + 8 * L.S_ERROR, 0, status) == 0:
        store(slot + 8 * L.S_FAIL_PROGRAM, load_i64(cmd + 8 * L.C_PROGRAM))
        store(slot + 8 * L.S_FAIL_CMD, load_i64(cmd + 8 * L.C_INDEX))
        store(slot + 8 * L.S_FAIL_WG, x | (y << L.WG_PACK_BITS) | (z << (2 * L.WG_PACK_BITS)))


# --- tiles ---------------------------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def run_dispatch(slot: int, cmd: int, first: int, count: int, ws: int) -> None:
    """Runs workgroups [first, first+count) of one dispatch; walks the 3-D id without dividing per tile."""
    fn = load_i64(cmd + 8 * L.C_FN)
    state = load_i64(cmd + 8 * L.C_STATE)
    cx = load_i64(cmd + 8 * L.C_COUNT)
    cy = load_i64(cmd + 8 * (L.C_COUNT + 1))
    x = first % cx
    rest = first // cx
    y = rest % cy
    z = rest // cy
    store_u32(ws + 4, y)
    store_u32(ws + 8, z)
    for _ in range(count):
        store_u32(ws, x)
        rc = call_kernel(fn, state, ws)
        if rc != 0:
            record_failure(slot, rc, cmd, x, y, z)
            return
        x += 1
        if x == cx:
            x = 0
            y += 1
            if y == cy:
                y = 0
                z += 1
            store_u32(ws + 4, y)
            store_u32(ws + 8, z)


@njit(nogil=True, cache=True)
def run_transfer(cmd: int, first: int, count: int) -> None:
    """Runs tiles [first, first+count) of a fill or a copy."""
    dst = load_i64(cmd + 8 * L.C_FN)
    length = load_i64(cmd + 8 * L.C_COUNT)
    begin = first * L.TRANSFER_TILE_BYTES
    end = min(length, (first + count) * L.TRANSFER_TILE_BYTES)
    if load_i64(cmd + 8 * L.C_OP) == L.OP_COPY:
        src = load_i64(cmd + 8 * L.C_STATE)
        memcpy(dst + begin, src + begin, end - begin)
    else:
        _fill(dst + begin, load_i64(cmd + 8 * L.C_STATE), load_i64(cmd + 8 * L.C_PATTERN_LEN), end - begin)


@njit(inline="always")
def _fill(dst: int, pattern: int, pattern_len: int, n: int) -> None:
    # Widen the pattern to 8 bytes; offsets and lengths are multiples of pattern_len (checked at
    # record time) and tiles are 64 KiB, so the pattern's phase is the same at every tile start.
    p = pattern & ((1 << (8 * pattern_len)) - 1) if pattern_len < 8 else pattern
    width = pattern_len
    while width < 8:
        p |= p << (8 * width)
        width *= 2
    i = 0
    while i + 8 <= n:
        store_i64(dst + i, p)
        i += 8
    while i < n:
        store_u8(dst + i, (p >> (8 * (i % 8))) & 0xFF)
        i += 1


@njit(nogil=True, cache=True)
def run_tiles(a: int, slot: int, first: int, count: int, w: int) -> None:
    """Runs region tiles [first, first+count), which may span several commands."""
    row = load(slot + 8 * L.S_REGIONS) + 8 * L.REGION_WORDS * load(slot + 8 * L.S_REGION)
    c = load_i64(row + 8 * L.R_FIRST)
    end_cmd = load_i64(row + 8 * L.R_END)
    tiles = load(slot + 8 * L.S_TILES)
    n_cmds = load(slot + 8 * L.S_N_CMDS)
    ws = load_i64(a + 8 * L.H_WGSTATE_ADDR) + 64 * w
    tracing = load(a + 8 * L.H_TRACE) != 0
    end = first + count
    while c < end_cmd and first < end:
        start = load(tiles + 8 * (n_cmds + c))
        n = load(tiles + 8 * c)
        if first < start + n:
            lo = first - start
            hi = min(end - start, n)
            cmd = cmd_addr(slot, c)
            t0 = now_ns() if tracing else 0
            if load(slot + 8 * L.S_ERROR) == 0:
                if load_i64(cmd + 8 * L.C_OP) == L.OP_DISPATCH:
                    run_dispatch(slot, cmd, lo, hi - lo, ws)
                else:
                    run_transfer(cmd, lo, hi - lo)
            if tracing:
                trace_event(a, w, load(slot + 8 * L.S_SERIAL), c, lo, hi, t0, now_ns())
            first = start + hi
        c += 1


@njit(nogil=True, cache=True)
def trace_event(a: int, w: int, serial: int, c: int, lo: int, hi: int, t0: int, t1: int) -> None:
    """Appends one event to worker w's ring (overwriting the oldest when full)."""
    counters = worker_addr(a, w)
    n = load(counters + 8 * L.W_TRACE_COUNT)
    cap = load_i64(a + 8 * L.H_TRACE_CAP)
    e = load_i64(a + 8 * L.H_TRACE_ADDR) + 8 * L.TRACE_WORDS * (w * cap + n % cap)
    store_i64(e + 8 * L.T_SERIAL, serial)
    store_i64(e + 8 * L.T_CMD, c)
    store_i64(e + 8 * L.T_FIRST, lo)
    store_i64(e + 8 * L.T_END, hi)
    store_i64(e + 8 * L.T_START_NS, t0)
    store_i64(e + 8 * L.T_END_NS, t1)
    store(counters + 8 * L.W_TRACE_COUNT, n + 1)


@njit(inline="always")
def bump(a: int, w: int, counter: int, n: int) -> None:
    """Adds to one of worker w's own counters (only w writes them: no atomic RMW needed)."""
    addr = worker_addr(a, w) + 8 * counter
    store(addr, load(addr) + n)


# --- claiming -------------------------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def sem_reached(a: int, m: int, value: int) -> bool:
    """The host participant's stop condition: the semaphore it waits for reached `value` or failed."""
    sem = sem_addr(a, m)
    return load(sem + 8 * L.M_PAYLOAD) >= value or load(sem + 8 * L.M_STATE) != L.SEM_OK


@njit(nogil=True, cache=True)
def help_slot(a: int, s: int, w: int, stop_m: int, stop_value: int) -> None:
    """Claims and runs reservations of the slot's current region until none is left; whoever
    finishes a region releases the next one and keeps going. With `stop_m` >= 0 (the host
    participant) it also returns between reservations once semaphore stop_m reaches
    `stop_value`, re-queuing the slot so that a worker finishes what is left."""
    slot = slot_addr(a, s)
    while load(word(a, L.H_SHUTDOWN)) == 0:
        claim = load(slot + 8 * L.S_CLAIM)
        first = claim & L.CLAIM_MASK
        total = load(slot + 8 * L.S_TOTAL)
        if first >= total:
            return
        if stop_m >= 0 and sem_reached(a, stop_m, stop_value):
            ready_push(a, s)
            wake_workers(a, 1)
            return
        # Guided self-scheduling: reservations shrink toward the end of the region (never above
        # a fair share of what is left), so the last claims are small and no participant is
        # left alone with a large tail while the others idle.
        n = max(1, min(load(slot + 8 * L.S_RESERVATION), (total - first) // (2 * load_i64(a + 8 * L.H_WORKERS))))
        if cas(slot + 8 * L.S_CLAIM, claim, claim + n) != claim:
            continue
        learn = load(slot + 8 * L.S_LEARN) != 0
        t0 = now_ns() if learn else 0
        run_tiles(a, slot, first, n, w)
        if learn:
            fetch_add(slot + 8 * L.S_WORK_NS, now_ns() - t0)
        bump(a, w, L.W_WORKGROUPS, n)
        if fetch_add(slot + 8 * L.S_REMAINING, -n) == n:
            bump(a, w, L.W_REGIONS, 1)
            if learn:
                row = load(slot + 8 * L.S_REGIONS) + 8 * L.REGION_WORDS * load(slot + 8 * L.S_REGION)
                work = load(slot + 8 * L.S_WORK_NS)
                samples = load_i64(row + 8 * L.R_SAMPLES)
                if samples > 0:  # the least of the timed runs: interference only ever adds time
                    work = min(work, load_i64(row + 8 * L.R_WORK_NS))
                store_i64(row + 8 * L.R_WORK_NS, work)
                store_i64(row + 8 * L.R_SAMPLES, samples + 1)
            if advance(a, s, w, 1, False):
                scan_pending(a, w)


@njit(nogil=True, cache=True)
def advance(a: int, s: int, w: int, present: int, queue: bool) -> bool:
    """Publishes the slot's next non-empty region (False) or completes the submission (True:
    semaphores moved, parked submissions may be released). `present`: participants that will
    run the region without an invitation (the finisher of the previous region); `queue`: put
    the slot on the ready queue, because nobody is certain to run it otherwise."""
    slot = slot_addr(a, s)
    r = load(slot + 8 * L.S_REGION) + 1
    n_regions = load(slot + 8 * L.S_N_REGIONS)
    while r < n_regions and load(slot + 8 * L.S_ERROR) == 0:
        row = load(slot + 8 * L.S_REGIONS) + 8 * L.REGION_WORDS * r
        cmd = cmd_addr(slot, load_i64(row + 8 * L.R_FIRST))
        if load_i64(row + 8 * L.R_END) > load_i64(row + 8 * L.R_FIRST) and load_i64(cmd + 8 * L.C_OP) == L.OP_JUMP:
            r = jump(a, slot, cmd, r)
            continue
        total = begin_region(a, slot, r)
        if total > 0:
            if queue:
                ready_push(a, s)
            share(a, s, w, total, present)
            return False
        r += 1
    complete(a, s, w)
    return True


@njit(nogil=True, cache=True)
def jump(a: int, slot: int, cmd: int, r: int) -> int:
    """The region after JUMP region r: its target when the predicate (a 1-, 2-, 4- or 8-byte
    integer, read in place now that every earlier region is complete) equals the command's value,
    or when it has none; r + 1 otherwise. A backward jump (a loop going round again) first checks
    that the device is not shutting down, that no semaphore the submission signals has failed
    (the host gave up on it) and that the submission's deadline (the waiting call's timeout) has
    not passed: a loop that never ends fails its submission instead of holding a participant."""
    predicate = load_i64(cmd + 8 * L.C_FN)
    if predicate != 0:
        width = load_i64(cmd + 8 * L.C_COUNT)
        if width == 8:
            value = load_i64(predicate)
            expected = load_i64(cmd + 8 * L.C_STATE)
        else:
            shift = 8 * (predicate & 3)  # a narrow value is read within its aligned 4-byte word
            mask = (1 << (8 * width)) - 1
            value = (load_u32(predicate - (predicate & 3)) >> shift) & mask
            expected = load_i64(cmd + 8 * L.C_STATE) & mask
        if value != expected:
            return r + 1
    delta = load_i64(cmd + 8 * L.C_JUMP_DELTA)
    if delta <= 0:
        deadline = load(slot + 8 * L.S_DEADLINE_NS)
        if cancelled(a, slot):
            record_failure(slot, L.STATUS_CANCELLED, cmd, 0, 0, 0)
        elif deadline != 0 and now_ns() > deadline:
            record_failure(slot, L.STATUS_DEADLINE, cmd, 0, 0, 0)
    return r + delta


@njit(nogil=True, cache=True)
def cancelled(a: int, slot: int) -> bool:
    """The device shuts down, or a semaphore the submission signals failed."""
    if load(word(a, L.H_SHUTDOWN)) != 0:
        return True
    signals = load(slot + 8 * L.S_SIGNALS)
    for i in range(load(slot + 8 * L.S_N_SIGNALS)):
        if load(sem_addr(a, load_i64(signals + 16 * i)) + 8 * L.M_STATE) != L.SEM_OK:
            return True
    return False


@njit(nogil=True, cache=True)
def helpers_to_wake(a: int, slot: int, total: int, present: int) -> int:
    """The wake policy: how many more participants the region just published should get.

    A wake costs the waker little but the woken worker a vCPU wake (15-100 us on our VMs: the
    measured or configured H_WAKE_COST_NS), so a region gets k more participants only while the
    k-th one still shortens it by more than a wake costs: work/(p+k-1) - work/(p+k) > cost, with
    `work` the region's measured work (its first runs are timed) and p the participants already
    there. A region never timed counts as large. Never more participants than the region has
    reservations or the device has workers, and at least one when nobody is present."""
    reservation = load(slot + 8 * L.S_RESERVATION)
    threads = load_i64(a + 8 * L.H_THREADS)
    useful = min(load_i64(a + 8 * L.H_WORKERS), (total + reservation - 1) // reservation) - present
    limit = min(useful, threads - max(0, load(a + 8 * L.H_ACTIVE)))
    if limit <= 0:
        return 1 if present == 0 and threads > 0 else 0
    row = load(slot + 8 * L.S_REGIONS) + 8 * L.REGION_WORDS * load(slot + 8 * L.S_REGION)
    if load_i64(row + 8 * L.R_SAMPLES) == 0:
        return limit
    work = load_i64(row + 8 * L.R_WORK_NS)
    cost = load(a + 8 * L.H_WAKE_COST_NS)
    p = max(1, present)
    k = 0
    while k < limit and work // (p + k) - work // (p + k + 1) > cost:
        k += 1
    return max(k, 1 if present == 0 else 0)


@njit(nogil=True, cache=True)
def share(a: int, s: int, w: int, total: int, present: int) -> None:
    """Invites the participants the wake policy grants the region: shards on w's deque, which
    idle workers steal (w < 0, the host outside a help session: the ready entry is the
    invitation, and its taker shares further). Wakes parked workers only when some sleep, and
    only as many as are not already on their way: a worker woken for this region (counted in
    H_WAKING) or spinning for work (H_SPINNING) needs a shard to steal, not another wake."""
    k = helpers_to_wake(a, slot_addr(a, s), total, present)
    if k <= 0:
        return
    if w < 0:
        wake_workers(a, k)
        return
    for _ in range(k):
        deque_push(a, w, s)
    on_the_way = max(0, load(a + 8 * L.H_WAKING)) + max(0, load(a + 8 * L.H_SPINNING))
    wake_workers(a, k - min(k, on_the_way))


@njit(nogil=True, cache=True)
def start(a: int, s: int, w: int, direct: bool) -> bool:
    """A submission whose waits are met: publish its first non-empty region, or complete it
    at once (True) when it has nothing to run. `direct`: the caller runs it next itself."""
    slot = slot_addr(a, s)
    store(slot + 8 * L.S_STATE, L.READY)
    store(slot + 8 * L.S_REGION, -1)
    if direct:
        return advance(a, s, w, 1, False)
    return advance(a, s, w, 1 if w >= 0 else 0, True)


@njit(nogil=True, cache=True)
def complete(a: int, s: int, w: int) -> None:
    """Signals the submission's semaphores, or fails them with its first failure. The slot is
    marked done first (its program is free again once a waiter sees a signal: the host may rebind
    or resubmit it at once) and retired last (only then may the host reuse the slot, whose
    signal list this reads)."""
    slot = slot_addr(a, s)
    error = load(slot + 8 * L.S_ERROR)
    store(slot + 8 * L.S_STATE, L.DONE if error == 0 else L.FAILED)
    if fetch_add(a + 8 * L.H_RUNNING, -1) == 1:  # before the signals: a waiter they release sees it
        store(a + 8 * L.H_QUIET_SINCE_NS, now_ns())
    signals = load(slot + 8 * L.S_SIGNALS)
    for i in range(load(slot + 8 * L.S_N_SIGNALS)):
        m = load_i64(signals + 16 * i)
        if error == 0:
            signal_sem(a, m, load_i64(signals + 16 * i + 8))
        else:
            fail_sem(a, m, error, load(slot + 8 * L.S_FAIL_PROGRAM), load(slot + 8 * L.S_FAIL_CMD), load(slot + 8 * L.S_FAIL_WG))
    if w >= 0:
        bump(a, w, L.W_SUBMISSIONS, 1)
    store(slot + 8 * L.S_RETIRED, 1)


# --- semaphores ---------------------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _wake_sem_waiters(sem: int) -> None:
    fetch_add(sem + 8 * L.M_EPOCH, 1)
    if load(sem + 8 * L.M_WAITERS) > 0:
        futex_wake(sem + 8 * L.M_EPOCH, 0x7FFFFFFF)


@njit(nogil=True, cache=True)
def signal_sem(a: int, m: int, value: int) -> None:
    """Raises the payload to `value` (timelines only move forward) and wakes host waiters."""
    sem = sem_addr(a, m)
    while True:
        payload = load(sem + 8 * L.M_PAYLOAD)
        if value <= payload or cas(sem + 8 * L.M_PAYLOAD, payload, value) == payload:
            break
    _wake_sem_waiters(sem)


@njit(nogil=True, cache=True)
def fail_sem(a: int, m: int, status: int, program: int, cmd: int, wg: int) -> None:
    """Fails the semaphore with the first failure's details; waiters see it, never a hang."""
    sem = sem_addr(a, m)
    if cas(sem + 8 * L.M_STATE, L.SEM_OK, L.SEM_FAILING) == L.SEM_OK:
        store(sem + 8 * L.M_FAIL_STATUS, status)
        store(sem + 8 * L.M_FAIL_PROGRAM, program)
        store(sem + 8 * L.M_FAIL_CMD, cmd)
        store(sem + 8 * L.M_FAIL_WG, wg)
        store(sem + 8 * L.M_STATE, L.SEM_FAILED)
    _wake_sem_waiters(sem)


@njit(nogil=True, cache=True)
def waits_state(a: int, slot: int) -> int:
    """-1: a waited semaphore failed (returns its index as -2 - m); 0: not yet; 1: all met."""
    waits = load(slot + 8 * L.S_WAITS)
    for i in range(load(slot + 8 * L.S_N_WAITS)):
        m = load_i64(waits + 16 * i)
        sem = sem_addr(a, m)
        if load(sem + 8 * L.M_STATE) != L.SEM_OK:
            return -2 - m
        if load(sem + 8 * L.M_PAYLOAD) < load_i64(waits + 16 * i + 8):
            return 0
    return 1


MAX_QUIET_GAP_NS = 1_000_000  # a longer quiet spell counts as this long (and the first one does)


@njit(nogil=True, cache=True)
def _learn_quiet_gap(a: int) -> None:
    """The device goes busy again: fold how long it was quiet into H_QUIET_GAP_NS (a quarter a
    sample), which sets how long idle participants spin when it next goes quiet (keep_spinning).
    (Racy between participants releasing at once: an estimate, read only as a hint.)"""
    gap = min(now_ns() - load(a + 8 * L.H_QUIET_SINCE_NS), MAX_QUIET_GAP_NS)
    store(a + 8 * L.H_QUIET_GAP_NS, (3 * load(a + 8 * L.H_QUIET_GAP_NS) + gap) // 4)


@njit(nogil=True, cache=True)
def try_release(a: int, s: int, w: int, direct: bool) -> bool:
    """Moves a parked submission on if its waits are met (start) or one failed (fail it).
    The CAS on its state makes exactly one of the host and the workers do it. True when it
    completed (its semaphores moved)."""
    slot = slot_addr(a, s)
    state = waits_state(a, slot)
    if state == 0 or cas(slot + 8 * L.S_STATE, L.PENDING, L.RESERVED) != L.PENDING:
        return False
    fetch_add(a + 8 * L.H_PENDING, -1)
    if fetch_add(a + 8 * L.H_RUNNING, 1) == 0:
        _learn_quiet_gap(a)
    if state == 1:
        return start(a, s, w, direct)
    else:
        sem = sem_addr(a, -2 - state)
        while load(sem + 8 * L.M_STATE) != L.SEM_FAILED:  # the failer is still writing details
            cpu_relax()
        store(slot + 8 * L.S_FAIL_PROGRAM, load(sem + 8 * L.M_FAIL_PROGRAM))
        store(slot + 8 * L.S_FAIL_CMD, load(sem + 8 * L.M_FAIL_CMD))
        store(slot + 8 * L.S_FAIL_WG, load(sem + 8 * L.M_FAIL_WG))
        store(slot + 8 * L.S_ERROR, load(sem + 8 * L.M_FAIL_STATUS))
        complete(a, s, w)
        return True


@njit(nogil=True, cache=True)
def scan_pending(a: int, w: int) -> None:
    """After semaphores moved: release every parked submission they unblock (or fail)."""
    moved = True
    while moved and load(a + 8 * L.H_PENDING) > 0:
        moved = False
        for s in range(load(a + 8 * L.H_SLOT_HIGH)):
            if load(slot_addr(a, s) + 8 * L.S_STATE) == L.PENDING and try_release(a, s, w, False):
                moved = True
