"""The worker loop and the host's entry points into the native scheduler.

Worker states (marl's, minus fibers: a parked submission is a continuation in its slot, not a
stack):

    RUNNING  -- help_slot: claiming and running reservations of a slot's region
       |  no shard in its deque, nothing ready, nothing to steal
    SPINNING -- polls the queues with `pause`, counted in H_SPINNING (a publisher invites it with
       |        a shard instead of a wake), for H_BUSY_SPIN_NS while a submission runs (its next
       |        region comes within microseconds) or H_SPIN_NS after the last completed, and only while
       |        the running participants and the spinners fit the cores (cores_free)
       |  still nothing
    PARKED   -- registered in H_SLEEPERS, futex-waits on H_WAKE; whoever publishes work bumps
                H_WAKE and wakes only as many as the wake policy grants (executor.helpers_to_wake),
                and makes no syscall when nobody sleeps.

Where a participant looks for work, in order: its own deque (newest shard first), the ready queue
(submissions that became runnable), then the other deques (oldest shard first: a steal).

The caller helps (marl lets the main thread join; TBB's master thread joins its arena): a host
thread that waits for a semaphore becomes the *host participant* (index H_WORKERS - 1, one host
thread at a time), runs work until its semaphore is reached, and sleeps only when nothing is left
to run. A device with N workers runs at most N participants at once (H_ACTIVE), the host
included, so the host's help never oversubscribes the cores. When it runs out of work it spins
like a worker, without its token, for the rest of its call (the region being finished elsewhere
publishes the next one), with the first claim on a core: idle workers yield to it.
"""

from __future__ import annotations

from numba import njit

from scheduler import layout as L
from scheduler.executor import bump, fail_sem, help_slot, scan_pending, sem_addr, sem_reached, share, signal_sem, slot_addr, try_release, wake_workers, word
from scheduler.native import cas, cpu_relax, fetch_add, futex_wait, load, load_i64, now_ns, store
from scheduler.queues import EMPTY, deque_pop, deque_push, deque_size, deque_steal, ready_push, ready_size, ready_take


@njit(nogil=True, cache=True)
def _steal(a: int, w: int, participants: int) -> int:
    for i in range(1, participants):
        s = deque_steal(a, (w + i) % participants)
        if s != EMPTY:
            return s
    return EMPTY


@njit(nogil=True, cache=True)
def _work_visible(a: int, participants: int) -> bool:
    """Work a parked worker could take now: queued, and a participant token free for it."""
    if load(a + 8 * L.H_ACTIVE) >= load_i64(a + 8 * L.H_THREADS):
        return False
    if ready_size(a) > 0:
        return True
    for v in range(participants):
        if deque_size(a, v) > 0:
            return True
    return False


@njit(nogil=True, cache=True)
def find_work(a: int, w: int) -> int:
    """A slot to help, or EMPTY: own deque, then the ready queue, then a steal. A slot from
    the ready queue comes back as -2 - slot: its taker invites more participants (`join`)."""
    participants = load_i64(a + 8 * L.H_WORKERS)
    s = deque_pop(a, w)
    if s != EMPTY:
        return s
    s = ready_take(a)
    if s != EMPTY:
        return -2 - s
    if participants > 1:
        s = _steal(a, w, participants)
        if s != EMPTY:
            bump(a, w, L.W_STEALS, 1)
    return s


@njit(nogil=True, cache=True)
def join(a: int, found: int, w: int) -> int:
    """The slot of find_work's answer; the taker of a ready entry shares the rest of its region
    (it counts itself in H_ACTIVE first, so the wake policy sees it)."""
    if found >= 0:
        return found
    s = -2 - found
    slot = slot_addr(a, s)
    share(a, s, w, load(slot + 8 * L.S_TOTAL) - (load(slot + 8 * L.S_CLAIM) & L.CLAIM_MASK), 1)
    return s


MAX_WAKE_COST_NS = 1_000_000


@njit(nogil=True, cache=True)
def _park(a: int, w: int, participants: int) -> None:
    bump(a, w, L.W_PARKS, 1)  # parks attempted
    epoch = load(word(a, L.H_WAKE))
    fetch_add(word(a, L.H_SLEEPERS), 1)
    # Re-check after registering: a publisher either sees us in H_SLEEPERS or bumped H_WAKE
    # before we read it (then futex_wait returns at once).
    t0 = now_ns()
    if not _work_visible(a, participants) and load(word(a, L.H_SHUTDOWN)) == 0:
        if futex_wait(word(a, L.H_WAKE), epoch, 0) == 0:  # woken (not a spurious return)
            fetch_add(word(a, L.H_WAKING), -1)
    fetch_add(word(a, L.H_SLEEPERS), -1)
    t1 = now_ns()
    bump(a, w, L.W_PARKED_NS, t1 - t0)
    issued = load(word(a, L.H_WAKE_T0))
    if load(word(a, L.H_WAKE)) != epoch and t0 < issued <= t1:
        latency = t1 - issued  # the wake policy's price of a wake, as this machine charges it
        bump(a, w, L.W_WAKES, 1)
        bump(a, w, L.W_WAKE_NS, latency)
        if load(word(a, L.H_WAKE_MEASURE)) != 0:
            # A sample counts at most MAX_WAKE_COST_NS and at most twice the estimate: a long
            # wait is for a core other processes hold (which the host's own run of the region
            # would wait for too), not the price of a wake, and an estimate that one such sample
            # could raise a lot would stop the wakes, and with them the samples that bring it
            # down again (seen: one 2 ms sample, then a whole BERT run on the host alone). Many
            # slow wakes in a row still raise it, 12 % a sample.
            cost = load(word(a, L.H_WAKE_COST_NS))
            sample = min(latency, MAX_WAKE_COST_NS, 2 * cost)
            store(word(a, L.H_WAKE_COST_NS), (7 * cost + sample) // 8)


@njit(nogil=True, cache=True)
def keep_spinning(a: int, idle_since: int, now: int) -> bool:
    """Whether an idle participant (idle since `idle_since`) spins on rather than park: for
    H_BUSY_SPIN_NS while submissions run (a call's next region is usually published within a
    few us, and a parked worker costs a 15-100 us wake to get back), and after the last one
    completed for H_SPIN_NS, or for H_BUSY_SPIN_NS where submissions come back to back (the
    device's quiet spells average under half that, H_QUIET_GAP_NS): the next call finds its
    worker still there even after an unusually long pause, while a device called now and
    then, or idle, burns ~no CPU. Counted from the completion, not from when this participant
    ran dry, which at a region's tail may be a whole workgroup earlier. (2-worker synchronous
    calls back to back, bench.scheduling's kernel, quiet spells ~6-10 us on average: 0.2-0.3
    parks and wakes a worker a call spinning H_SPIN_NS, 20 us, 0.07 spinning 100 us.)"""
    busy_spin = load_i64(a + 8 * L.H_BUSY_SPIN_NS)
    if load(a + 8 * L.H_RUNNING) > 0:
        return now - idle_since < busy_spin
    back_to_back = 2 * load_i64(a + 8 * L.H_QUIET_GAP_NS) < busy_spin
    budget = busy_spin if back_to_back else load_i64(a + 8 * L.H_SPIN_NS)
    return now - max(idle_since, load_i64(a + 8 * L.H_QUIET_SINCE_NS)) < budget


@njit(nogil=True, cache=True)
def cores_free(a: int) -> bool:
    """Whether a spinning participant (counted in H_SPINNING) may go on spinning: the running
    participants and the spinners fit the device's H_THREADS cores. Beyond that a spinner could
    take no work it finds (no token) and would only take CPU time from a participant (a woken
    worker that lost the token race, or a third spinner beside a busy pair, left at once)."""
    return load(a + 8 * L.H_ACTIVE) + load(a + 8 * L.H_SPINNING) <= load_i64(a + 8 * L.H_THREADS)


@njit(nogil=True, cache=True)
def take_token(a: int) -> bool:
    """One of the device's H_THREADS participant tokens (H_ACTIVE counts those taken): a device
    with N workers never runs more than N participants at once, the helping host included."""
    threads = load_i64(a + 8 * L.H_THREADS)
    while True:
        active = load(a + 8 * L.H_ACTIVE)
        if active >= threads:
            return False
        if cas(a + 8 * L.H_ACTIVE, active, active + 1) == active:
            return True


@njit(nogil=True, cache=True)
def give_token(a: int, participants: int) -> None:
    """Returns a token; work still queued then gets a parked worker, which may now run it."""
    fetch_add(a + 8 * L.H_ACTIVE, -1)
    invite_for_left_work(a, participants)


@njit(nogil=True, cache=True)
def invite_for_left_work(a: int, participants: int) -> None:
    """A participant leaving: work it leaves visible gets a parked worker woken for it."""
    if _work_visible(a, participants):
        wake_workers(a, 1)


@njit(nogil=True, cache=True)
def run_slot(a: int, s: int, w: int, stop_m: int, stop_value: int) -> None:
    """One help session, counted in H_ACTIVE and in the participant's busy time."""
    t0 = now_ns()
    help_slot(a, s, w, stop_m, stop_value)
    bump(a, w, L.W_BUSY_NS, now_ns() - t0)


@njit(nogil=True, cache=True)
def worker_loop(a: int, w: int, drain: bool) -> None:
    """Runs until shutdown; with `drain`, returns as soon as no work is visible (the host runs
    the loop inline this way on local-sync)."""
    participants = load_i64(a + 8 * L.H_WORKERS)
    idle_since = 0
    while load(word(a, L.H_SHUTDOWN)) == 0:
        found = find_work(a, w)
        if found != EMPTY and not drain and not take_token(a):
            # The device already runs as many participants as it has workers (the helping host
            # among them): hand the work back and park; whoever gives a token back wakes a
            # worker if work is left, and a spinning host finds it itself.
            _hand_back(a, w, found)
            _stop_spinning(a, w, idle_since)
            _park(a, w, participants)
            idle_since = 0
            continue
        if found != EMPTY:
            _stop_spinning(a, w, idle_since)
            if drain:
                fetch_add(a + 8 * L.H_ACTIVE, 1)
            run_slot(a, join(a, found, w), w, -1, 0)
            give_token(a, participants)
            idle_since = 0
            continue
        if drain:
            return
        now = now_ns()
        if idle_since == 0:
            idle_since = now
            fetch_add(a + 8 * L.H_SPINNING, 1)
        if keep_spinning(a, idle_since, now) and cores_free(a):
            bump(a, w, L.W_SPINS, 1)
            cpu_relax()
            continue
        _stop_spinning(a, w, idle_since)
        _park(a, w, participants)
        idle_since = 0


@njit(nogil=True, cache=True)
def _hand_back(a: int, w: int, found: int) -> None:
    """Puts back what find_work gave a participant that got no token: a ready entry on the ready
    queue, a shard on its own deque. A shard is only an invitation (the region runs anyway), but
    dropping it could leave a region to one participant for its whole length: the invited worker
    lost the token race to the host, which then gave its token up to spin and found nothing."""
    if found < EMPTY:
        ready_push(a, -2 - found)
    else:
        deque_push(a, w, found)


@njit(nogil=True, cache=True)
def _stop_spinning(a: int, w: int, idle_since: int) -> None:
    """Leaves the SPINNING state (if in it, since `idle_since`): counted out of H_SPINNING."""
    if idle_since != 0:
        fetch_add(a + 8 * L.H_SPINNING, -1)
        bump(a, w, L.W_SPIN_NS, now_ns() - idle_since)


# --- host entry points (called from Python with the GIL released, under the submit lock) ----------


@njit(nogil=True, cache=True)
def host_submit(a: int, s: int, commands: int, n_cmds: int, regions: int, n_regions: int, tiles: int, waits: int, n_waits: int, signals: int, n_signals: int, serial: int, direct: bool) -> None:
    """Fills slot s and parks it, then starts it at once if its waits are met. Parking first
    closes the race with a concurrent signal: exactly one of this call and the signaller's scan
    wins the slot's CAS. `direct`: the caller is the host participant and runs the slot next
    (host_help), so it is neither queued nor counted on a worker to start it."""
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
    store(slot + 8 * L.S_RETIRED, 0)
    store(slot + 8 * L.S_STATE, L.PENDING)
    fetch_add(a + 8 * L.H_PENDING, 1)
    h = load_i64(a + 8 * L.H_WORKERS) - 1 if direct else -1
    if try_release(a, s, h, direct):  # it had nothing to run: its signals may release others
        scan_pending(a, h)


@njit(nogil=True, cache=True)
def host_join(a: int) -> bool:
    """Makes the calling host thread the host participant, if no other host thread is and the
    device is not already running as many participants as it has workers."""
    if cas(word(a, L.H_HOST), 0, 1) != 0:
        return False
    if take_token(a):
        return True
    store(word(a, L.H_HOST), 0)
    return False


@njit(nogil=True, cache=True)
def _host_spin(a: int, h: int, m: int, value: int) -> int:
    """The host participant's SPINNING state: polls for work and for its semaphore, as an idle
    worker does (keep_spinning). A region's last tiles usually run on another participant, whose
    finish publishes the next region a moment later: a host that left at once would miss the
    rest of the call (a worker woken in its place) and then need a futex wake itself at the end.
    It spins without its participant token (counted in H_SPINNING instead), so the wake policy
    invites it to what is published meanwhile; returns work with the token taken again, or EMPTY
    without it. It has the first claim on a core: an idle worker yields to it (cores_free), as the
    host is the one that must see the semaphore move."""
    fetch_add(a + 8 * L.H_ACTIVE, -1)
    fetch_add(a + 8 * L.H_SPINNING, 1)
    t0 = now_ns()
    found = EMPTY
    while not sem_reached(a, m, value) and keep_spinning(a, t0, now_ns()):
        found = find_work(a, h)
        if found != EMPTY:
            break
        bump(a, h, L.W_SPINS, 1)
        cpu_relax()
    _stop_spinning(a, h, t0)
    if found != EMPTY and not take_token(a):  # a worker took the token first
        _hand_back(a, h, found)
        found = EMPTY
    return found


@njit(nogil=True, cache=True)
def host_help(a: int, first: int, m: int, value: int) -> int:
    """The host participant (after host_join) runs work until semaphore m reaches `value`: slot
    `first` (>= 0: a submission it just made with `direct`), then whatever it finds, spinning for
    more when it runs out (keep_spinning). Returns 1 when the value is reached, -1 when the
    semaphore failed, 0 when nothing is left to run (the caller then sleeps). Leaves the host
    participant role: anything it leaves visible gets a worker woken for it."""
    participants = load_i64(a + 8 * L.H_WORKERS)
    h = participants - 1
    holding = True  # its participant token
    if first >= 0:
        run_slot(a, first, h, m, value)
    while not sem_reached(a, m, value):
        found = find_work(a, h)
        if found == EMPTY:
            found = _host_spin(a, h, m, value)
            if found == EMPTY:
                holding = False
                break
        run_slot(a, join(a, found, h), h, m, value)
    store(word(a, L.H_HOST), 0)
    if holding:
        give_token(a, participants)
    else:  # (its spin gave the token back)
        invite_for_left_work(a, participants)
    sem = sem_addr(a, m)
    if load(sem + 8 * L.M_STATE) == L.SEM_FAILED:
        return -1
    return 1 if load(sem + 8 * L.M_PAYLOAD) >= value else 0


BUSY = 2  # host_call: the program is in flight, or the scheduler shut down (the caller takes the general path)


@njit(nogil=True, cache=True)
def host_call(a: int, s: int, value_addr: int, value: int, serial: int, m: int, timeout_ns: int,
              last_slot: int, last_serial: int) -> int:
    """Runs reserved slot s again (a prepared call: its program and its one signal, semaphore
    m, are already in place) with the signal value `value`, in one native call: on local-task
    the caller joins as the host participant and runs it (returns as host_help does; 0 when it
    could not join: the caller waits), on local-sync the caller (holding the drain lock) runs
    everything ready. BUSY, doing nothing, while the program's last submission (serial
    `last_serial` on slot `last_slot`, -1: none) is still in flight. A loop in the program stops
    going round `timeout_ns` from now (0: never). (The checks and the deadline are here, not in
    Python: numpy indexing costs microseconds on a call whose kernel just swept the caches.)
    BUSY too once the scheduler is shut down: the general path says so."""
    if load(word(a, L.H_SHUTDOWN)) != 0:
        return BUSY
    if last_slot >= 0:
        last = slot_addr(a, last_slot)
        if load(last + 8 * L.S_SERIAL) == last_serial and load(last + 8 * L.S_STATE) != L.DONE \
                and load(last + 8 * L.S_STATE) != L.FAILED:
            return BUSY
    slot = slot_addr(a, s)
    while load(slot + 8 * L.S_RETIRED) == 0:  # the last call's completer may still be signalling
        cpu_relax()
    store(value_addr, value)
    store(slot + 8 * L.S_ERROR, 0)
    store(slot + 8 * L.S_DEADLINE_NS, now_ns() + timeout_ns if timeout_ns > 0 else 0)
    store(slot + 8 * L.S_SERIAL, serial)
    store(slot + 8 * L.S_RETIRED, 0)
    store(slot + 8 * L.S_STATE, L.PENDING)
    fetch_add(a + 8 * L.H_PENDING, 1)
    if load_i64(a + 8 * L.H_THREADS) == 0:
        h = load_i64(a + 8 * L.H_WORKERS) - 1
        if try_release(a, s, -1, False):
            scan_pending(a, -1)
        worker_loop(a, h, True)
        return 1 if sem_reached(a, m, value) and load(sem_addr(a, m) + 8 * L.M_STATE) == L.SEM_OK else 0
    if host_join(a):
        h = load_i64(a + 8 * L.H_WORKERS) - 1
        if try_release(a, s, h, True):
            scan_pending(a, h)
        return host_help(a, s, m, value)
    if try_release(a, s, -1, False):
        scan_pending(a, -1)
    return 0


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



