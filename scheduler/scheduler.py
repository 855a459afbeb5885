"""The host side of the scheduler: the arena, the worker threads, submissions and semaphores.

Python runs here once per submission or semaphore operation, never per workgroup or per
command: the workers stay in `worker_loop` (native, GIL released) for their whole life.
With `workers=0` there are no threads: the submitting thread drains the work inline (local-sync).
"""

from __future__ import annotations

import collections
import ctypes
import threading
import time
import weakref
from dataclasses import dataclass

import numpy as np

from hal.buffer import aligned_bytes
from hal.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, ResourceExhausted
from scheduler import layout as L
from scheduler.native import futex_wake, make_timespec
from scheduler.topology import detect, pin_current_thread
from scheduler.worker import host_fail, host_signal, host_submit, host_wait, worker_loop


class GridProgram:
    """A lowered command buffer: `commands` is int64 [n, CMD_WORDS], `regions` int64 [r, 2].

    It also owns the scratch where a submission resolves tile counts (indirect dispatches) and
    their prefix sums, so submitting it allocates nothing: like a Vulkan command buffer without
    SIMULTANEOUS_USE, one program runs one submission at a time."""

    def __init__(self, commands: np.ndarray, regions: np.ndarray) -> None:
        self.commands = np.ascontiguousarray(commands, dtype=np.int64).reshape(-1, L.CMD_WORDS)
        self.regions = np.ascontiguousarray(regions, dtype=np.int64).reshape(-1, 2)
        self.tiles = np.zeros(2 * max(1, len(self.commands)), dtype=np.int64)
        self.addresses = (self.commands.ctypes.data, len(self.commands), self.regions.ctypes.data, len(self.regions), self.tiles.ctypes.data)

    @staticmethod
    def concatenate(programs: list["GridProgram"]) -> "GridProgram":
        """Several command buffers of one submission run one after another: one program whose
        regions are theirs in order (a region never spans two command buffers)."""
        if len(programs) == 1:
            return programs[0]
        if not programs:
            return GridProgram(np.zeros((0, L.CMD_WORDS), np.int64), np.zeros((0, 2), np.int64))
        offsets = np.cumsum([0] + [len(p.commands) for p in programs[:-1]])
        return GridProgram(np.concatenate([p.commands for p in programs]), np.concatenate([p.regions + off for p, off in zip(programs, offsets)]))


@dataclass(frozen=True)
class SemaphoreFailure:
    status: int
    program: int  # command buffer id (-1 when failed from the host)
    command: int
    workgroup: tuple[int, int, int]


class Scheduler:
    """One arena, `workers` threads in the native worker loop (0: run inline on the caller)."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        pin: bool = False,
        max_submissions: int = 1024,
        max_semaphores: int = 4096,
        spin_us: float = 20.0,
        host_spin_us: float = 0.0,
        local_memory_size: int = 256 * 1024,
    ) -> None:
        topology = detect()
        if workers is None:
            workers = topology.default_workers
        if not isinstance(workers, int) or workers < 0 or workers > 1024:
            raise InvalidArgument(f"workers={workers!r}: expected an int in [0, 1024]")
        self.threads_count = workers
        self.inline = workers == 0
        self.workers = max(1, workers)
        self.local_memory_size = int(local_memory_size)
        self._slots = max_submissions
        self._sems = max_semaphores
        offsets = L.table_offsets(self.workers, self._slots)
        self.arena = np.zeros(L.arena_words(self.workers, self._slots, self._sems), dtype=np.int64)
        self.a = self.arena.ctypes.data
        self.arena[L.H_WORKERS] = self.workers
        self.arena[L.H_SLOT_CAP] = self._slots
        self.arena[L.H_SEM_CAP] = self._sems
        self.arena[L.H_SPIN_NS] = int(spin_us * 1000)
        # How long a host wait spins (GIL released) before sleeping in the futex. Measured on the
        # 2-core machines: 0 is best (an MLP call: 150 us at 0, 190 us at 20-200) because a
        # spinning host takes a core from the workers; tiny submissions lose nothing (11 us
        # back to back either way). Raise it where the host has a core of its own.
        self._host_spin_ns = int(host_spin_us * 1000)
        for header_word, offset in offsets.items():
            self.arena[header_word] = offset
        # Per-worker WorkgroupState (one cache line each) and local memory.
        self._wgstate = aligned_bytes(64 * self.workers)
        self._local = aligned_bytes(max(64, self.local_memory_size) * self.workers)
        for w in range(self.workers):
            st = self._wgstate[64 * w : 64 * w + 32].view(np.uint32)
            st[3] = w
            st[4:6] = np.array([self._local.ctypes.data + w * max(64, self.local_memory_size)], np.uint64).view(np.uint32)
            st[6] = self.local_memory_size
        self.arena[L.H_WGSTATE_ADDR] = self._wgstate.ctypes.data
        self._trace = np.zeros(0, dtype=np.int64)
        self._lock = threading.Lock()  # the host is the injection queue's single producer
        self._drain_lock = threading.Lock()
        self._free_slots = list(range(self._slots - 1, -1, -1))
        self._in_use: collections.deque[int] = collections.deque()  # submitted slots, oldest first
        self._slot_keepalive: dict[int, tuple] = {}
        # Per-slot (semaphore, value) pairs: [slot, waits | signals, MAX_TIMEPOINTS, 2].
        self._timepoints = np.zeros((self._slots, 2, L.MAX_TIMEPOINTS, 2), dtype=np.int64)
        self._timepoints_flat = self._timepoints.reshape(-1)
        self._timepoints_addr = self._timepoints.ctypes.data
        self._timepoints_stride = self._timepoints[0].nbytes
        self._free_sems = list(range(self._sems - 1, -1, -1))
        self._serial = 0
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
        if len(waits) > L.MAX_TIMEPOINTS or len(signals) > L.MAX_TIMEPOINTS:
            raise InvalidArgument(f"submit: {len(waits)} waits and {len(signals)} signals; at most {L.MAX_TIMEPOINTS} of each")
        with self._lock:
            self._check_open()
            s = self._take_slot()
            self._serial += 1
            self._slot_keepalive[s] = (program, signals, keepalive)
            flat = self._timepoints_flat
            base = s * 4 * L.MAX_TIMEPOINTS
            for i, (m, v) in enumerate(waits):
                flat[base + 2 * i], flat[base + 2 * i + 1] = m, v
            base += 2 * L.MAX_TIMEPOINTS
            for i, (m, v) in enumerate(signals):
                flat[base + 2 * i], flat[base + 2 * i + 1] = m, v
            addr = self._timepoints_addr + s * self._timepoints_stride
            host_submit(self.a, s, *program.addresses, addr, len(waits), addr + self._timepoints_stride // 2, len(signals), self._serial)
            serial = self._serial
        self._drain()
        return serial

    def _take_slot(self) -> int:
        """The oldest submitted slot if it completed, else a free one (lowest index first): the
        set of slots in use stays small, and with it the range the workers scan (H_SLOT_HIGH)."""
        if self._in_use and self._slot_done(self._in_use[0]):
            s = self._in_use.popleft()
        else:
            if not self._free_slots:
                done = [s for s in self._in_use if self._slot_done(s)]
                for s in done:
                    self._in_use.remove(s)
                self._free_slots.extend(sorted(done, reverse=True))
            if not self._free_slots:
                raise ResourceExhausted(f"scheduler: {self._slots} submissions already in flight (max_submissions)")
            s = self._free_slots.pop()
        self._slot_keepalive.pop(s, None)
        self._in_use.append(s)
        if s >= self.arena[L.H_SLOT_HIGH]:
            self.arena[L.H_SLOT_HIGH] = s + 1
        return s

    def _slot_done(self, s: int) -> bool:
        return self.arena[self.arena[L.H_SLOTS] + s * L.SLOT_WORDS + L.S_STATE] in (L.DONE, L.FAILED)

    def _drain(self) -> None:
        """Inline mode: run whatever became ready on this thread."""
        if self.inline:
            with self._drain_lock:
                worker_loop(self.a, 0, True)

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
        DeadlineExceeded when `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        spin = self._host_spin_ns
        while True:
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
        states = self.arena[self.arena[L.H_SLOTS] + L.S_STATE :: L.SLOT_WORDS][: self._slots]
        return int(np.count_nonzero((states == L.PENDING) | (states == L.READY) | (states == L.RESERVED)))

    # --- observability -------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Totals over the workers: workgroups run, steals, parks, spin rounds, regions, submissions."""
        out = {name: 0 for name in L.COUNTER_NAMES}
        for w in range(self.workers):
            base = L.HEADER_WORDS + w * L.WORKER_WORDS + L.W_WORKGROUPS
            for i, name in enumerate(L.COUNTER_NAMES):
                out[name] += int(self.arena[base + i])
        return out

    def per_worker_counters(self) -> list[dict[str, int]]:
        return [
            {name: int(self.arena[L.HEADER_WORDS + w * L.WORKER_WORDS + L.W_WORKGROUPS + i]) for i, name in enumerate(L.COUNTER_NAMES)}
            for w in range(self.workers)
        ]

    def enable_tracing(self, capacity: int = 1 << 16) -> None:
        """Preallocates one ring of `capacity` events per worker and turns recording on.
        Call while idle: the rings must not move under running workers."""
        self.arena[L.H_TRACE] = 0
        self._trace = np.zeros(self.workers * capacity * L.TRACE_WORDS, dtype=np.int64)
        for w in range(self.workers):
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
        rings = self._trace.reshape(self.workers, cap, L.TRACE_WORDS)
        parts = []
        for w in range(self.workers):
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

    def shutdown(self) -> None:
        """Stops the workers (each finishes the kernel it is in) and fails the semaphores of
        every submission that did not complete, so no waiter hangs."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.arena[L.H_SHUTDOWN] = 1
            self.arena[L.H_WAKE] += 1
            futex_wake(self.a + 8 * L.H_WAKE, 1 << 30)
        for t in self.threads:
            t.join()
        states = self.arena[self.arena[L.H_SLOTS] + L.S_STATE :: L.SLOT_WORDS][: self._slots]
        for s in np.flatnonzero((states == L.PENDING) | (states == L.READY)):
            signals = self._slot_keepalive[int(s)][1]
            for m, _ in signals:
                host_fail(self.a, int(m), L.STATUS_ABORTED, -1)
        _live_schedulers.discard(self)


_live_schedulers: "weakref.WeakSet[Scheduler]" = weakref.WeakSet()


def _shutdown_all() -> None:
    for sched in list(_live_schedulers):
        sched.shutdown()


# Before the interpreter tears down modules (and frees the arrays the workers read), stop every
# worker. threading's atexit hook runs before module teardown and before non-daemon joins.
threading._register_atexit(_shutdown_all)  # type: ignore[attr-defined]
