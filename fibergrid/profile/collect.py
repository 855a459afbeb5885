"""Collection: what a profile is made of, gathered from a running CPU device.

The scheduler already records one trace event per workgroup reservation into per-worker rings
and keeps per-worker counters (scheduler.Scheduler.enable_tracing / trace_events /
per_worker_counters). What it does not know is the host side: when a submission was made, when
a host wait returned, which dispatch a command index is, and how much CPU each worker thread
actually got. A `Recorder` adds exactly that, from Python, once per submission and once per host
wait (never per workgroup), by wrapping two methods of the device's own Scheduler instance:

- `submit` -> the submission's serial, its host timestamp and its program (to name commands);
- `wait_semaphore` -> when a host wait began and returned, on which thread.

Per-thread CPU time comes from /proc/self/task/TID/schedstat (ns: on-CPU time, time runnable
but waiting for a core) and .../status (voluntary switches = parks and sleeps), which the
kernel keeps anyway; psutil's tick-granular thread times are the fallback. All timestamps are
CLOCK_MONOTONIC ns, the clock the native trace uses (`time.monotonic_ns()`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fibergrid.profile.matching import live_programs, match, program_shape
from fibergrid.profile.naming import ProgramInfo, describe_program

DEFAULT_CAPACITY = 1 << 17  # events per worker ring: 8 MiB a worker, ~130k reservations
MAX_DESCRIBED = 10_000  # distinct programs remembered per device (a program making one-shot
# command buffers in a loop records the same few shapes: they are deduplicated)


@dataclass(frozen=True)
class ThreadTimes:
    """CPU accounting of one OS thread at one instant (ns and counts since the thread began)."""

    on_cpu_ns: int
    runnable_ns: int  # ready to run but waiting for a core (-1: unknown)
    voluntary: int  # voluntary context switches: futex parks, sleeps (-1: unknown)
    involuntary: int  # preemptions (-1: unknown)

    def __sub__(self, other: "ThreadTimes") -> "ThreadTimes":
        def d(a: int, b: int) -> int:
            return a - b if a >= 0 and b >= 0 else -1
        return ThreadTimes(d(self.on_cpu_ns, other.on_cpu_ns), d(self.runnable_ns, other.runnable_ns),
                           d(self.voluntary, other.voluntary), d(self.involuntary, other.involuntary))


def thread_times(tid: int) -> ThreadTimes | None:
    """The kernel's accounting of thread `tid` of this process; None if it has exited."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            on_cpu, runnable, _ = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        on_cpu = runnable = -1
    voluntary = involuntary = -1
    try:
        with open(f"/proc/self/task/{tid}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary = int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary = int(line.split()[1])
    except (OSError, ValueError):
        pass
    if on_cpu < 0:
        import psutil

        for t in psutil.Process().threads():
            if t.id == tid:
                on_cpu = int((t.user_time + t.system_time) * 1e9)
                break
        else:
            return None
    return ThreadTimes(on_cpu, runnable, voluntary, involuntary)


@dataclass
class Submission:
    serial: int
    submit_ns: int  # host clock just before the scheduler took it (-1: not timed, see matching.py)
    program: int  # key into DeviceCapture.programs
    thread: int  # native id of the submitting thread (-1: not recorded)


@dataclass
class HostWait:
    thread: int
    start_ns: int
    end_ns: int


@dataclass
class Call:
    """One call the profiler made itself (the CLI path): host start and end."""

    start_ns: int
    end_ns: int


@dataclass
class DeviceCapture:
    """Everything recorded for one device over one profiling window."""

    label: str
    driver: str
    workers: int  # worker threads (0: local-sync, the submitting thread runs the work)
    start_ns: int
    end_ns: int
    events: np.ndarray  # Scheduler.trace_events() rows inside the window
    dropped_events: int  # overwritten in the rings (the window outgrew the capacity)
    counters: list[dict[str, int]]  # per worker slot, deltas over the window
    worker_threads: list[ThreadTimes | None]  # per worker thread, deltas over the window
    host_threads: dict[int, ThreadTimes]  # per submitting/waiting thread, deltas
    submissions: dict[int, Submission]
    programs: dict[int, ProgramInfo]
    waits: list[HostWait]
    calls: list[Call] = field(default_factory=list)
    host_timing: bool = False  # submissions and host waits timed from Python (else only calls)
    lane_names: tuple[str, ...] = ()  # where the lanes are not worker threads (a GPU queue: gpu.py)

    @property
    def wall_ns(self) -> int:
        return max(1, self.end_ns - self.start_ns)


class _Attached:
    """One traced device: its trace rings on, and with `host_timing` the wrappers installed on
    its Scheduler and what they recorded."""

    def __init__(self, device: Any, label: str, capacity: int, host_timing: bool) -> None:
        self.device = device
        self.label = label
        self.scheduler = device.scheduler
        self.lock = threading.Lock()
        self.submissions: dict[int, tuple[int, int, int]] = {}  # serial -> (submit ns, program, thread)
        self.programs: dict[int, ProgramInfo] = {}
        self._program_keys: dict[int, tuple[int, object]] = {}  # id(GridProgram) -> (key, program)
        self.waits: list[tuple[int, int, int]] = []  # (thread, start ns, end ns)
        self.host_tids: set[int] = {threading.get_native_id()}
        self.scheduler.enable_tracing(capacity)
        self.capacity = capacity
        self._wrapped: list[str] = []
        if host_timing:
            self._install()
        # Every command buffer ended from now on is described once (not per call), so a
        # submission can be named after its program is gone (matching.py).
        self._ended: dict[tuple, ProgramInfo] = {}
        lower = device.lower_command_buffer

        def observed_lower(command_buffer: Any) -> Any:
            lowered = lower(command_buffer)
            program = getattr(lowered, "program", None)
            if program is not None and len(self._ended) < MAX_DESCRIBED:
                info = describe_program(program)
                self._ended.setdefault((program_shape(program), tuple(c.name for c in info.commands)), info)
            return lowered

        device.lower_command_buffer = observed_lower
        self.reset()

    # The Scheduler methods wrapped. Every submission enters through one of SUBMIT_METHODS: the
    # internal `_submit` where the scheduler has one (else `submit`), which fast paths such as
    # submit_and_wait share, and `call`, the one-native-call path of a reserved slot (which also
    # waits). Host waits go through WAIT_METHODS. A wrapper finds the program among the
    # arguments and the serial in the result (an int, or (slot, serial)), else in the
    # program's `in_flight` (slot, serial), so it survives the scheduler growing new paths that
    # keep those conventions; a path it cannot read is skipped, never broken.
    SUBMIT_METHODS = (("_submit", "submit"), ("call",))
    WAIT_METHODS = ("wait_semaphore", "submit_and_wait", "call")

    def _install(self) -> None:
        sched = self.scheduler
        # The hot path of a profiled call: plain tuples appended under the GIL (dict and list
        # updates are atomic there), turned into dataclasses only at capture().
        submissions, waits, now, tid_of = self.submissions, self.waits, time.monotonic_ns, threading.get_native_id

        def serial_of(out: Any, program: Any) -> int | None:
            if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], int):
                return out[1]
            if isinstance(out, int) and not isinstance(out, bool):
                return out
            in_flight = getattr(program, "in_flight", None)
            return in_flight[1] if isinstance(in_flight, tuple) and len(in_flight) == 2 else None

        def traced_submit(submit: Callable[..., Any], waits_too: bool) -> Callable[..., Any]:
            def traced(*args: Any, **kwargs: Any) -> Any:
                program = next((a for a in args if hasattr(a, "commands") and hasattr(a, "regions")), None)
                t = now()
                try:
                    out = submit(*args, **kwargs)
                finally:
                    if waits_too:
                        waits.append((tid_of(), t, now()))
                serial = serial_of(out, program)
                if serial is not None and program is not None:
                    known = self._program_keys.get(id(program))
                    key = known[0] if known is not None and known[1] is program else self._program_key(program)
                    submissions[serial] = (t, key, tid_of())
                return out
            return traced

        def traced_wait(wait: Callable[..., Any]) -> Callable[..., Any]:
            def traced(*args: Any, **kwargs: Any) -> Any:
                t = now()
                try:
                    return wait(*args, **kwargs)
                finally:
                    waits.append((tid_of(), t, now()))
            return traced

        for choices in self.SUBMIT_METHODS:
            name = next((n for n in choices if callable(getattr(sched, n, None))), None)
            if name is not None:
                setattr(sched, name, traced_submit(getattr(sched, name), name in self.WAIT_METHODS))
                self._wrapped.append(name)
        for name in self.WAIT_METHODS:
            if name not in self._wrapped and callable(getattr(sched, name, None)):
                setattr(sched, name, traced_wait(getattr(sched, name)))
                self._wrapped.append(name)

    def _program_key(self, program) -> int:
        """Programs are described at their first submit (a reusable command buffer is one
        program for life; a one-shot one may be gone by capture time) and again at capture."""
        key = len(self._program_keys)
        self._program_keys[id(program)] = (key, program)
        self.programs[key] = describe_program(program)
        return key

    def _described_again(self) -> dict[int, ProgramInfo]:
        """Every program described anew where its command buffers still exist: kernels whose
        names were registered after their first submit (a function with dynamic dims compiles
        at its first call) get them."""
        out = dict(self.programs)
        for key, program in list(self._program_keys.values()):
            fresh = describe_program(program)
            if key in out and all(c.entry or c.kind != "dispatch" for c in fresh.commands):
                out[key] = fresh
        return out

    def reset(self) -> None:
        """Starts a new window: counters, thread times and host records from now on."""
        with self.lock:
            self.start_ns = time.monotonic_ns()
            self.counters0 = self.scheduler.per_worker_counters()
            self.threads0 = [thread_times(t.native_id) for t in self.scheduler.threads]
            self.host_tids |= {tid for _, _, tid in self.submissions.values()} | {w[0] for w in self.waits}
            self.host0 = {tid: thread_times(tid) for tid in self.host_tids}
            self.submissions.clear()
            self.waits.clear()
            self.programs.clear()  # described again at their next submit: names may be new
            self._program_keys.clear()

    def capture(self, calls: list[Call] | None = None) -> DeviceCapture:
        """The window from the last reset to now. Read once the traced work has completed."""
        with self.lock:
            end = time.monotonic_ns()
            counters = self.scheduler.per_worker_counters()
            deltas = [{k: c[k] - c0.get(k, 0) for k in c} for c, c0 in zip(counters, self.counters0)]
            threads = []
            for t, t0 in zip(self.scheduler.threads, self.threads0):
                now = thread_times(t.native_id)
                threads.append(now - t0 if now is not None and t0 is not None else None)
            submissions = {serial: Submission(serial, t, key, tid) for serial, (t, key, tid) in list(self.submissions.items())}
            waits = [HostWait(*w) for w in list(self.waits)]
            tids = self.host_tids | {s.thread for s in submissions.values()} | {w.thread for w in waits}
            host = {}
            for tid in tids:
                now, before = thread_times(tid), self.host0.get(tid)
                if now is not None:
                    host[tid] = now - before if before is not None else now
            events = self.scheduler.trace_events()
            events = events[events["start_ns"] >= self.start_ns]
            unknown = events[~np.isin(events["serial"], list(submissions))]
            if len(unknown):  # not recorded from the host: matched by shape (matching.py)
                # Live programs first (described now: names registered since they ended count),
                # then the descriptions of programs already gone.
                candidates = [(program_shape(p), p) for p in live_programs(self.device)]
                candidates += [(shape, info) for (shape, _), info in self._ended.items()]
                keys: dict[int, int] = {}
                matched = match(unknown, candidates)
                for serial in np.unique(unknown["serial"]).tolist():
                    found, key = matched.get(serial), -1
                    if isinstance(found, ProgramInfo):
                        if id(found) not in keys:
                            keys[id(found)] = len(self._program_keys) + len(keys) + 1_000_000
                            self.programs[keys[id(found)]] = found
                        key = keys[id(found)]
                    elif found is not None:
                        known = self._program_keys.get(id(found))
                        key = known[0] if known is not None and known[1] is found else self._program_key(found)
                    submissions[serial] = Submission(serial, -1, key, -1)
            recorded = sum(d["trace_events"] for d in deltas)
            return DeviceCapture(
                self.label, self.device.driver, self.scheduler.workers, self.start_ns, end,
                np.sort(events, order="start_ns"), max(0, recorded - len(events)), deltas, threads, host,
                submissions, self._described_again(), waits, list(calls or []), bool(self._wrapped))

    def detach(self) -> None:
        sched = self.scheduler
        for name in self._wrapped:
            sched.__dict__.pop(name, None)
        self.device.__dict__.pop("lower_command_buffer", None)
        sched.disable_tracing()


class Recorder:
    """Traces any number of devices; `capture()` returns one DeviceCapture per device. CPU
    devices are traced from their scheduler's rings, GPU devices from timestamp queries (gpu.py).

    By default nothing runs per call (the workers write the trace rings; programs are matched
    to submissions at capture). `host_timing` also times each submission and host wait from
    Python, splitting a call's host time from its launch and completion latency, for 2-5 us a
    call.

        rec = Recorder(); rec.attach(device)
        with rec.call(): module(x)          # optional: marks host call boundaries
        captures = rec.capture()

    Attach while the device is idle (the trace rings are allocated then)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, host_timing: bool = False) -> None:
        self.capacity = capacity
        self.host_timing = host_timing
        self.devices: list[Any] = []  # _Attached (CPU) and gpu.AttachedQueue
        self.calls: list[Call] = []

    def attach(self, device: Any, label: str | None = None) -> None:
        """Start tracing `device` (a CPU device, or a GPU device with timestamps; others are
        skipped with no error: nothing to read). Kernels are named from
        `naming.register_sources` where someone registered them."""
        if any(a.device is device for a in self.devices):
            return
        label = label or f"{device.driver}#{len(self.devices)}"
        if hasattr(device, "scheduler"):
            self.devices.append(_Attached(device, label, self.capacity, self.host_timing))
        elif hasattr(device, "enable_timestamps"):
            from fibergrid.profile.gpu import AttachedQueue  # gpu.py builds on this module's types

            self.devices.append(AttachedQueue(device, label, self.capacity))

    def reset(self) -> None:
        """Forget everything recorded so far (e.g. a warm-up call)."""
        self.calls.clear()
        for a in self.devices:
            a.reset()

    def call(self) -> "_CallTimer":
        return _CallTimer(self.calls)

    def capture(self) -> list[DeviceCapture]:
        return [a.capture(self.calls) for a in self.devices if not a.device.closed]

    def take(self, device: Any) -> DeviceCapture | None:
        """Capture one device now and stop tracing it (before it closes)."""
        for a in self.devices:
            if a.device is device:
                self.devices.remove(a)
                cap = a.capture(self.calls)
                a.detach()
                return cap
        return None

    def detach(self) -> None:
        for a in self.devices:
            a.detach()
        self.devices.clear()


class _CallTimer:
    def __init__(self, calls: list[Call]) -> None:
        self.calls = calls

    def __enter__(self) -> None:
        self.start = time.monotonic_ns()

    def __exit__(self, *exc) -> None:
        self.calls.append(Call(self.start, time.monotonic_ns()))
