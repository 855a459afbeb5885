"""The host side of the scheduler: the arena, the worker threads, submissions and semaphores.

Python runs here once per submission or semaphore operation, never per workgroup or per
command: the workers stay in `worker_loop` (native, GIL released) for their whole life.
With `workers=0` there are no threads: the submitting thread drains the work inline (local-sync).
"""

from __future__ import annotations

import collections
import itertools
import ctypes
import os
import threading
import time
import warnings
import weakref
from dataclasses import dataclass

import numpy as np

from common.memory import aligned_bytes
from common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, ResourceExhausted
from scheduler import layout as L
from scheduler.native import futex_wake, make_timespec
from scheduler.topology import detect, pin_current_thread
from scheduler.worker import host_fail, host_help, host_join, host_signal, host_submit, host_wait, worker_loop


class GridProgram:
    """A lowered command buffer: `commands` is int64 [n, CMD_WORDS], `regions` int64
    [r, REGION_WORDS] (first and end command; the rest is the wake policy's measured work).

    It also owns the scratch where a submission resolves tile counts (indirect dispatches) and
    their prefix sums, so submitting it allocates nothing. A program submitted again while a
    submission of it is still in flight (Vulkan's SIMULTANEOUS_USE) runs on a private copy of
    that scratch and of its indirect dispatches' states (`for_submission`)."""

    def __init__(self, commands: np.ndarray, regions: np.ndarray) -> None:
        self.commands = np.ascontiguousarray(commands, dtype=np.int64).reshape(-1, L.CMD_WORDS)
        regions = np.asarray(regions, dtype=np.int64)
        regions = regions.reshape(len(regions), regions.shape[1] if regions.ndim == 2 else 2)
        self.regions = np.zeros((len(regions), L.REGION_WORDS), dtype=np.int64)
        self.regions[:, : regions.shape[1]] = regions
        self.tiles = np.zeros(2 * max(1, len(self.commands)), dtype=np.int64)
        self.addresses = (self.commands.ctypes.data, len(self.commands), self.regions.ctypes.data, len(self.regions), self.tiles.ctypes.data)
        self.in_flight: tuple[int, int] = (-1, -1)  # (slot, serial) of its latest submission
        self._keep: list[np.ndarray] = []
        for first, end in self.regions[:, : 2]:
            total = int(self.commands[first:end, L.C_TILES].sum()) if end > first else 0
            if total > L.CLAIM_MASK:
                raise ResourceExhausted(f"a region of {total} workgroups and transfer tiles exceeds the scheduler's {L.CLAIM_MASK} per region")

    def for_submission(self) -> "GridProgram":
        """A copy that can run beside this program's submission in flight: own scratch, own
        states for the indirect dispatches (the only state a submission writes)."""
        commands = self.commands.copy()
        copy = GridProgram(commands, self.regions)
        copy.regions = self.regions  # share what the wake policy learns
        for row in np.flatnonzero(commands[:, L.C_INDIRECT] != 0):
            state = aligned_bytes(L.DISPATCH_STATE_BYTES)
            ctypes.memmove(state.ctypes.data, int(commands[row, L.C_STATE]), L.DISPATCH_STATE_BYTES)
            commands[row, L.C_STATE] = state.ctypes.data
            copy._keep.append(state)
        copy.addresses = (commands.ctypes.data, len(commands), self.regions.ctypes.data, len(self.regions), copy.tiles.ctypes.data)
        return copy

    @staticmethod
    def concatenate(programs: list["GridProgram"]) -> "GridProgram":
        """Several command buffers of one submission run one after another: one program whose
        regions are theirs in order (a region never spans two command buffers)."""
        if len(programs) == 1:
            return programs[0]
        if not programs:
            return GridProgram(np.zeros((0, L.CMD_WORDS), np.int64), np.zeros((0, 2), np.int64))
        offsets = np.cumsum([0] + [len(p.commands) for p in programs[:-1]])
        return GridProgram(np.concatenate([p.commands for p in programs]), np.concatenate([p.regions[:, :2] + off for p, off in zip(programs, offsets)]))


@dataclass(frozen=True)
class SemaphoreFailure:
    status: int
    program: int  # command buffer id (-1 when failed from the host)
    command: int
    workgroup: tuple[int, int, int]


ADAPTIVE_HOST_SPIN_NS = 50_000


class Scheduler:
    """One arena, `workers` threads in the native worker loop (0: run inline on the caller).

    `wake_cost_us`: the wake policy's price of waking a parked worker (None: measure it, starting
    from 50 us); a region gets another participant only while that shortens it by more.
    `spin_us` / `busy_spin_us`: how long a participant with nothing to run spins before parking
    when no submission runs / while one runs (its next region comes within microseconds, and a
    parked worker takes a wake to get back)."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        pin: bool = False,
        max_submissions: int = L.MAX_SLOT_CHUNKS * L.SLOT_CHUNK,
        max_semaphores: int = 4096,
        spin_us: float = 20.0,
        busy_spin_us: float = 100.0,
        host_spin_us: float | None = None,
        wake_cost_us: float | None = None,
        local_memory_size: int = 1 << 20,
    ) -> None:
        topology = detect()
        if workers is None:
            workers = topology.default_workers
        if not isinstance(workers, int) or workers < 0 or workers > 1024:
            raise InvalidArgument(f"workers={workers!r}: expected an int in [0, 1024]")
        if not isinstance(max_submissions, int) or not 1 <= max_submissions <= L.MAX_SLOT_CHUNKS * L.SLOT_CHUNK:
            raise InvalidArgument(f"max_submissions={max_submissions!r}: expected an int in [1, {L.MAX_SLOT_CHUNKS * L.SLOT_CHUNK}]")
        self.inline = workers == 0
        # Participants: the worker threads, then the host (whichever host thread waits and helps;
        # on local-sync the host is the only one).
        self.workers = workers
        self.participants = workers + 1
        self.host = workers
        self.local_memory_size = int(local_memory_size)
        self._max_slots = max_submissions
        self._sems = max_semaphores
        offsets = L.table_offsets(self.participants, self._sems)
        self.arena = aligned_bytes(8 * L.arena_words(self.participants, self._sems)).view(np.int64)
        self.a = self.arena.ctypes.data
        self.arena[L.H_WORKERS] = self.participants
        self.arena[L.H_THREADS] = workers
        self.arena[L.H_SLOT_CAP] = L.MAX_SLOT_CHUNKS * L.SLOT_CHUNK
        self.arena[L.H_SEM_CAP] = self._sems
        self.arena[L.H_SPIN_NS] = int(spin_us * 1000)
        self.arena[L.H_BUSY_SPIN_NS] = int(max(spin_us, busy_spin_us) * 1000)
        self.arena[L.H_WAKE_MEASURE] = wake_cost_us is None
        self.arena[L.H_WAKE_COST_NS] = int((50.0 if wake_cost_us is None else wake_cost_us) * 1000)
        # How long a host wait spins (GIL released) before sleeping in the futex, when it has
        # nothing to help with. None: ADAPTIVE_HOST_SPIN_NS while fewer participants run than
        # the device has workers (a core is idle, and a futex sleep and wake would cost a
        # submission of one tiny dispatch 20-30 us), none when every worker runs (a spinning
        # host would take a core from them).
        self._host_spin_ns = None if host_spin_us is None else int(host_spin_us * 1000)
        for header_word, offset in offsets.items():
            self.arena[header_word] = offset
        cells = L.ready_cells(int(self.arena[L.H_SLOT_CAP]))
        self.arena[L.H_READY_CAP] = cells
        ready = self.arena[L.H_READY]
        self.arena[ready : ready + L.READY_CELL_WORDS * cells : L.READY_CELL_WORDS] = np.arange(cells)
        # Per-participant WorkgroupState (one cache line each) and local memory.
        self._wgstate = aligned_bytes(64 * self.participants)
        self._local = aligned_bytes(max(64, self.local_memory_size) * self.participants)
        for w in range(self.participants):
            st = self._wgstate[64 * w : 64 * w + 32].view(np.uint32)
            st[3] = w
            st[4:6] = np.array([self._local.ctypes.data + w * max(64, self.local_memory_size)], np.uint64).view(np.uint32)
            st[6] = self.local_memory_size
        self.arena[L.H_WGSTATE_ADDR] = self._wgstate.ctypes.data
        self._trace = np.zeros(0, dtype=np.int64)
        self._lock = threading.Lock()  # slots, serials and semaphore allocation
        self._drain_lock = threading.Lock()
        # Slots come in chunks, allocated when every slot in use is still in flight.
        self._chunks: list[np.ndarray] = []
        # Per chunk, its slots' (semaphore, value) pairs, flat: [slot, waits | signals,
        # MAX_TIMEPOINTS, 2], with the array's address.
        self._timepoints: list[tuple[np.ndarray, int]] = []
        self._free_slots: list[int] = []
        self._in_use: collections.deque[int] = collections.deque()  # submitted slots, oldest first
        self._slot_keepalive: dict[int, tuple] = {}
        self._free_sems = list(range(self._sems - 1, -1, -1))
        self._serials = itertools.count(1)  # atomic under the GIL: calls take serials unlocked
        self._reserved: set[int] = set()  # slots kept for ReservedCalls
        self._unreserved: collections.deque[int] = collections.deque()  # given back, not yet in use
        self._closed = False
        self.host_errors: dict[int, BaseException] = {}  # error id -> what semaphore.fail() was given
        self.threads: list[threading.Thread] = []
        for w in range(workers):
            cpu = topology.cpus[w % len(topology.cpus)] if pin else None
            t = threading.Thread(target=self._run_worker, args=(w, cpu), name=f"fibergrid-worker-{w}", daemon=True)
            t.start()
            self.threads.append(t)
        _live_schedulers.add(self)

    def _run_worker(self, w: int, cpu: int | None) -> None:
        if cpu is not None:
            pin_current_thread(cpu)
        worker_loop(self.a, w, False)

    # --- submissions -------------------------------------------------------------------------------

    def submit(self, program: GridProgram, waits: list[tuple[int, int]], signals: list[tuple[int, int]], keepalive: object = None) -> int:
        """Queues the program to run once every wait (semaphore, value) is met, then raise every
        signal semaphore to its value. Returns at once, with the submission's serial.
        `keepalive` is held until the submission completes (what the program points into)."""
        return self._submit(program, waits, signals, keepalive, False)[1]

    def _submit(self, program: GridProgram, waits: list[tuple[int, int]], signals: list[tuple[int, int]], keepalive: object, direct: bool,
                timeout: float | None = None) -> tuple[int, int]:
        """(slot, serial). `direct`: the caller is the host participant (host_join) and runs the
        slot next (host_help). `timeout`: a loop in the program stops going round (failing the
        submission) that many seconds from now."""
        if len(waits) > L.MAX_TIMEPOINTS or len(signals) > L.MAX_TIMEPOINTS:
            raise InvalidArgument(f"submit: {len(waits)} waits and {len(signals)} signals; at most {L.MAX_TIMEPOINTS} of each")
        with self._lock:
            self._check_open()
            if self._busy(program):
                program = program.for_submission()
            s = self._take_slot()
            serial = next(self._serials)
            program.in_flight = (s, serial)
            self._slot_keepalive[s] = (program, signals, keepalive)
            self._set_deadline(s, timeout)
            # Timepoints go through flat views at precomputed addresses: numpy's 2-D indexing
            # and .ctypes cost microseconds here, on every model call.
            flat, base = self._timepoints[s >> L.SLOT_CHUNK_SHIFT]
            row = (s & (L.SLOT_CHUNK - 1)) * 4 * L.MAX_TIMEPOINTS
            for i, (m, v) in enumerate(waits):
                flat[row + 2 * i] = m
                flat[row + 2 * i + 1] = v
            row += 2 * L.MAX_TIMEPOINTS
            for i, (m, v) in enumerate(signals):
                flat[row + 2 * i] = m
                flat[row + 2 * i + 1] = v
            waits_addr = base + 8 * (row - 2 * L.MAX_TIMEPOINTS)
            host_submit(self.a, s, *program.addresses, waits_addr, len(waits), base + 8 * row, len(signals), serial, direct)
        if not direct:
            self._drain()
        return s, serial

    def settle(self, program: GridProgram, patience_s: float = 0.001) -> bool:
        """True once no submission of `program` is in flight, waiting up to `patience_s` for one
        that is finishing: a waiter sees its semaphore signalled just before the completing
        participant marks the slot done. (A racy read is safe: a slot's serial changes only when
        the host reuses the slot, after its submission completed.)"""
        if not self._busy(program):
            return True
        deadline = time.monotonic() + patience_s
        while time.monotonic() < deadline:
            if not self._busy(program):
                return True
        return False

    def _busy(self, program: GridProgram) -> bool:
        s, serial = program.in_flight
        if s < 0:
            return False
        row = self._chunks[s >> L.SLOT_CHUNK_SHIFT]
        i = s & (L.SLOT_CHUNK - 1)
        return row.item(i, L.S_SERIAL) == serial and row.item(i, L.S_STATE) not in (L.DONE, L.FAILED)

    def _take_slot(self) -> int:
        """The oldest submitted slot if it completed, else a free one (lowest index first): the
        set of slots in use stays small, and with it the range the workers scan (H_SLOT_HIGH).
        A new chunk of slots when every slot is in flight."""
        self._take_unreserved()
        if self._in_use and self._slot_done(self._in_use[0]):
            s = self._in_use.popleft()
        else:
            if not self._free_slots:
                self._recycle()
            if not self._free_slots:
                self._add_chunk()
            s = self._free_slots.pop()
        self._slot_keepalive.pop(s, None)
        self._in_use.append(s)
        if s >= self.arena[L.H_SLOT_HIGH]:
            self.arena[L.H_SLOT_HIGH] = s + 1
        return s

    def _recycle(self) -> None:
        """Moves every completed slot in use to the free list."""
        done = [s for s in self._in_use if self._slot_done(s)]
        for s in done:
            self._in_use.remove(s)
        self._free_slots.extend(sorted(done, reverse=True))

    def _add_chunk(self) -> None:
        first = len(self._chunks) * L.SLOT_CHUNK
        if first >= self._max_slots:
            raise ResourceExhausted(f"scheduler: {self._max_slots} submissions already in flight (max_submissions)")
        chunk = aligned_bytes(8 * L.SLOT_WORDS * L.SLOT_CHUNK).view(np.int64).reshape(L.SLOT_CHUNK, L.SLOT_WORDS)
        chunk[:, L.S_RETIRED] = 1
        self._chunks.append(chunk)
        timepoints = aligned_bytes(8 * L.SLOT_CHUNK * 4 * L.MAX_TIMEPOINTS).view(np.int64)
        self._timepoints.append((timepoints, timepoints.ctypes.data))
        # Publish the chunk before any of its slot indices can reach a worker.
        self.arena[self.arena[L.H_SLOT_CHUNKS] + len(self._chunks) - 1] = chunk.ctypes.data
        last = min(first + L.SLOT_CHUNK, self._max_slots)
        self._free_slots.extend(range(last - 1, first - 1, -1))

    def _set_deadline(self, s: int, timeout: float | None) -> None:
        """The slot's S_DEADLINE_NS, read by jumps that go back (scheduler/executor.py)."""
        deadline = 0 if timeout is None else time.monotonic_ns() + max(1, int(timeout * 1e9))
        self._chunks[s >> L.SLOT_CHUNK_SHIFT][s & (L.SLOT_CHUNK - 1), L.S_DEADLINE_NS] = deadline

    def _slot_word(self, s: int, w: int) -> int:
        return self._chunks[s >> L.SLOT_CHUNK_SHIFT].item(s & (L.SLOT_CHUNK - 1), w)

    def _slot_done(self, s: int) -> bool:
        """The slot's submission completed and its completer is done with it: reusable."""
        return self._slot_word(s, L.S_RETIRED) == 1 and self._slot_word(s, L.S_STATE) in (L.DONE, L.FAILED)

    def _slot_states(self) -> np.ndarray:
        """Per slot, its state; a completed slot whose completer is still signalling counts as
        READY (its semaphores have not all moved yet)."""
        if not self._chunks:
            return np.zeros(0, np.int64)
        return np.concatenate([np.where(c[:, L.S_RETIRED] == 1, c[:, L.S_STATE], L.READY) for c in self._chunks])

    def _drain(self) -> None:
        """Inline mode: run whatever became ready on this thread."""
        if self.inline:
            with self._drain_lock:
                worker_loop(self.a, self.host, True)

    def reserve(self, program: GridProgram, signal: int) -> tuple[int, int]:
        """A slot kept for repeated calls of `program` that each signal semaphore `signal`
        (a model call's lane), and the address its signal's value goes to: its program and
        signal list are written once, so a call is one native call (ReservedCall). Give it
        back with `unreserve`."""
        with self._lock:
            self._check_open()
            self._take_unreserved()
            if not self._free_slots:
                self._recycle()
            if not self._free_slots:
                self._add_chunk()
            s = self._free_slots.pop()
            if s >= self.arena[L.H_SLOT_HIGH]:
                self.arena[L.H_SLOT_HIGH] = s + 1
            flat, base = self._timepoints[s >> L.SLOT_CHUNK_SHIFT]
            signals = (s & (L.SLOT_CHUNK - 1)) * 4 * L.MAX_TIMEPOINTS + 2 * L.MAX_TIMEPOINTS
            flat[signals] = signal
            self._slot_keepalive[s] = (program, [(signal, 0)], None)  # see ReservedCall: not the caller's objects
            chunk = self._chunks[s >> L.SLOT_CHUNK_SHIFT][s & (L.SLOT_CHUNK - 1)]
            commands, n_cmds, regions, n_regions, tiles = program.addresses
            chunk[[L.S_PROGRAM, L.S_N_CMDS, L.S_REGIONS, L.S_N_REGIONS, L.S_TILES]] = commands, n_cmds, regions, n_regions, tiles
            chunk[[L.S_WAITS, L.S_N_WAITS, L.S_SIGNALS, L.S_N_SIGNALS]] = base, 0, base + 8 * signals, 1
            self._reserved.add(s)
            return s, base + 8 * (signals + 1)  # where the signal's value goes

    def unreserve(self, s: int) -> None:
        """Gives a reserved slot back (reused once its last call completed). Takes no lock, so
        that it may run from a finalizer: the garbage collector runs those wherever it is, even
        on a thread inside this scheduler's lock (a submission). The slot is queued, and joins
        the slots in use at the next one taken."""
        self._unreserved.append(s)

    def _take_unreserved(self) -> None:
        """(under the lock) Slots given back since: in use until their last call completed."""
        while self._unreserved:
            s = self._unreserved.popleft()
            if s in self._reserved:
                self._reserved.discard(s)
                self._in_use.append(s)

    def keep_reserved(self, s: int, keepalive: object) -> None:
        """Reserved slot s holds `keepalive` (a call that timed out in flight points into it)
        until the slot is reused or shut down; None: nothing again."""
        with self._lock:
            program, signals, _ = self._slot_keepalive[s]
            self._slot_keepalive[s] = (program, signals, keepalive)

    def submit_and_wait(self, program: GridProgram, signal: tuple[int, int], keepalive: object = None, timeout: float | None = None) -> bool:
        """A submission with no waits whose caller waits for it at once: the fast path of a
        model call. On local-task the calling thread becomes the host participant and runs the
        submission itself; workers join only where the wake policy says they pay for their
        wake. Returns as wait_semaphore does."""
        m, value = signal
        if not self.inline and host_join(self.a):
            try:
                s, _ = self._submit(program, [], [signal], keepalive, True, timeout)
            except BaseException:
                host_help(self.a, -1, m, value)  # leaves the host participant role
                raise
            r = host_help(self.a, s, m, value)
            if r != 0:
                return r == 1
        else:
            self._submit(program, [], [signal], keepalive, False, timeout)
        return self.wait_semaphore(m, value, timeout)

    # --- semaphores ----------------------------------------------------------------------------------

    def create_semaphore(self, initial: int) -> int:
        with self._lock:
            self._check_open()
            if not self._free_sems:
                raise ResourceExhausted(f"scheduler: all {self._sems} semaphores in use (max_semaphores)")
            m = self._free_sems.pop()
            row = self._sem_row(m)
            row[:] = 0
            row[L.M_PAYLOAD] = initial
            return m

    def release_semaphore(self, m: int) -> None:
        # No lock: this runs from __del__, possibly on a thread inside submit() (list.append is
        # atomic under the GIL).
        self._free_sems.append(m)

    def _sem_row(self, m: int) -> np.ndarray:
        base = self.arena[L.H_SEMS] + m * L.SEM_WORDS
        return self.arena[base : base + L.SEM_WORDS]

    def semaphore_value(self, m: int) -> int:
        return int(self._sem_row(m)[L.M_PAYLOAD])

    def semaphore_failure(self, m: int) -> SemaphoreFailure | None:
        row = self._sem_row(m)
        if row[L.M_STATE] != L.SEM_FAILED:
            return None
        wg = int(row[L.M_FAIL_WG])
        mask = (1 << L.WG_PACK_BITS) - 1
        return SemaphoreFailure(int(row[L.M_FAIL_STATUS]), int(row[L.M_FAIL_PROGRAM]), int(row[L.M_FAIL_CMD]), (wg & mask, (wg >> L.WG_PACK_BITS) & mask, wg >> (2 * L.WG_PACK_BITS)))

    def signal_semaphore(self, m: int, value: int) -> None:
        with self._lock:
            host_signal(self.a, m, value)
        self._drain()

    def fail_semaphore(self, m: int, error: BaseException) -> None:
        with self._lock:
            error_id = len(self.host_errors)
            self.host_errors[error_id] = error
            host_fail(self.a, m, L.STATUS_HOST_FAILED, error_id)
        self._drain()

    def wait_semaphore(self, m: int, value: int, timeout: float | None) -> bool:
        """True when the payload reached `value`, False when the semaphore failed. Raises
        DeadlineExceeded when `timeout` seconds pass first. On local-task the waiting thread
        helps (as the host participant) while there is work it may run, and sleeps otherwise."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            spun = False
            if not self.inline and host_join(self.a):
                r = host_help(self.a, -1, m, value)
                if r != 0:
                    return r == 1
                spun = True
            spin = self._host_spin_ns
            if spin is None:
                spin = ADAPTIVE_HOST_SPIN_NS if self.arena[L.H_ACTIVE] < self.workers and not spun else 0
            remaining = 3600.0 if deadline is None else min(3600.0, deadline - time.monotonic())
            ts = make_timespec(max(0.0, remaining))
            r = host_wait(self.a, m, value, spin if remaining > 0 else 0, ctypes.addressof(ts))
            if r == 1:
                return True
            if r == -1:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded(f"semaphore did not reach {value} within {timeout} s (it is at {self.semaphore_value(m)})")

    def in_flight(self) -> int:
        """Submissions not yet complete (parked on semaphores or running)."""
        states = self._slot_states()
        return int(np.count_nonzero((states == L.PENDING) | (states == L.READY) | (states == L.RESERVED)))

    # --- observability -------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Totals over the participants (workers and the host): workgroups run, steals, parks,
        spin rounds, regions, submissions, wakes and their latency, time parked, busy, spinning."""
        out = {name: 0 for name in L.COUNTER_NAMES}
        for w in range(self.participants):
            base = L.HEADER_WORDS + w * L.WORKER_WORDS + L.W_WORKGROUPS
            for i, name in enumerate(L.COUNTER_NAMES):
                out[name] += int(self.arena[base + i])
        return out

    def wake_cost_ns(self) -> int:
        """The wake policy's current price of a wake (measured, unless configured)."""
        return int(self.arena[L.H_WAKE_COST_NS])

    def per_worker_counters(self) -> list[dict[str, int]]:
        """One dict per participant: the worker threads in order, then the host participant."""
        return [
            {name: int(self.arena[L.HEADER_WORDS + w * L.WORKER_WORDS + L.W_WORKGROUPS + i]) for i, name in enumerate(L.COUNTER_NAMES)}
            for w in range(self.participants)
        ]

    def enable_tracing(self, capacity: int = 1 << 16) -> None:
        """Preallocates one ring of `capacity` events per worker and turns recording on.
        Call while idle: the rings must not move under running workers."""
        self.arena[L.H_TRACE] = 0
        self._trace = np.zeros(self.participants * capacity * L.TRACE_WORDS, dtype=np.int64)
        for w in range(self.participants):
            self.arena[L.HEADER_WORDS + w * L.WORKER_WORDS + L.W_TRACE_COUNT] = 0
        self.arena[L.H_TRACE_ADDR] = self._trace.ctypes.data
        self.arena[L.H_TRACE_CAP] = capacity
        self.arena[L.H_TRACE] = 1

    def disable_tracing(self) -> None:
        self.arena[L.H_TRACE] = 0

    def trace_events(self) -> np.ndarray:
        """Recorded events as a structured array (worker, serial, command, first, end, start_ns,
        end_ns), oldest first per worker; read it once the traced work has completed."""
        cap = int(self.arena[L.H_TRACE_CAP])
        dtype = np.dtype([("worker", "i8"), ("serial", "i8"), ("command", "i8"), ("first", "i8"), ("end", "i8"), ("start_ns", "i8"), ("end_ns", "i8")])
        if cap == 0:
            return np.zeros(0, dtype)
        rings = self._trace.reshape(self.participants, cap, L.TRACE_WORDS)
        parts = []
        for w in range(self.participants):
            n = int(self.arena[L.HEADER_WORDS + w * L.WORKER_WORDS + L.W_TRACE_COUNT])
            idx = np.arange(max(0, n - cap), n) % cap
            ev = rings[w, idx]
            out = np.zeros(len(idx), dtype)
            out["worker"] = w
            out["serial"], out["command"], out["first"], out["end"] = ev[:, L.T_SERIAL], ev[:, L.T_CMD], ev[:, L.T_FIRST], ev[:, L.T_END]
            out["start_ns"], out["end_ns"] = ev[:, L.T_START_NS], ev[:, L.T_END_NS]
            parts.append(out)
        return np.concatenate(parts)

    # --- lifetime --------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition("scheduler is shut down")

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stops the workers (each finishes the kernel it is in) and fails the semaphores of
        every submission that did not complete, so no waiter hangs. Then drops what the
        submissions kept alive.

        A kernel that never returns (a runaway loop) would make this wait forever, and with it
        interpreter exit. So the wait is bounded: `timeout` seconds (None: SHUTDOWN_TIMEOUT_S,
        `$FIBERGRID_SHUTDOWN_TIMEOUT`). Past it a warning names the workers still running; their
        memory (the arena, local memory, every buffer a submission holds) is leaked on purpose,
        so they keep running on valid memory until the process ends, and False is returned."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            self.arena[L.H_SHUTDOWN] = 1
            self.arena[L.H_WAKE] += 1
            futex_wake(self.a + 8 * L.H_WAKE, 1 << 30)
        timeout = shutdown_timeout() if timeout is None else timeout
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        running = [t.name for t in self.threads if t.is_alive()]
        if running:
            # Never freed, not even by module teardown at exit: the running kernels read this memory.
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(self))
            warnings.warn(f"fibergrid: {', '.join(running)} still running a kernel {timeout:g} s after shutdown began "
                          f"(a kernel that does not return?); leaving it running until the process exits "
                          f"($FIBERGRID_SHUTDOWN_TIMEOUT sets the wait)", RuntimeWarning, stacklevel=2)
        states = self._slot_states()
        for s in np.flatnonzero((states == L.PENDING) | (states == L.READY)):
            signals = self._slot_keepalive[int(s)][1]
            for m, _ in signals:
                host_fail(self.a, int(m), L.STATUS_ABORTED, -1)
        if not running:
            self._slot_keepalive.clear()  # breaks the cycles through reserved slots' owners
        _live_schedulers.discard(self)
        return not running


_live_schedulers: "weakref.WeakSet[Scheduler]" = weakref.WeakSet()

SHUTDOWN_TIMEOUT_S = 10.0


def shutdown_timeout() -> float:
    """How long shutdown waits for running kernels: `$FIBERGRID_SHUTDOWN_TIMEOUT` seconds, else
    SHUTDOWN_TIMEOUT_S."""
    try:
        return float(os.environ.get("FIBERGRID_SHUTDOWN_TIMEOUT") or SHUTDOWN_TIMEOUT_S)
    except ValueError:
        return SHUTDOWN_TIMEOUT_S


def _shutdown_all() -> None:
    for sched in list(_live_schedulers):
        sched.shutdown()


# Before the interpreter tears down modules (and frees the arrays the workers read), stop every
# worker. threading's atexit hook runs before module teardown and before non-daemon joins.
threading._register_atexit(_shutdown_all)  # type: ignore[attr-defined]
