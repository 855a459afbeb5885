"""The CUDA device: one stream, and the queue's submissions in steps.

`queue_execute` returns at once. A submission is a list of *steps* (each one or more graph
launches, command_buffer.py says where steps end) followed by an event; a step goes to the stream
only once every semaphore it waits on is known to have succeeded (its payload is reached: the
host applies payloads only after retiring the work that signals them, semaphore.py), and the
next step of a submission only once the previous one retired with its kernels' status words
clear: until then it is held on the host (hal_gpu/host_queue.py says why). Whoever waits (a host
`wait`, `query`, `signal`, `wait_idle`) drives the queue, on its own thread: no thread hand-off
sits between a submission and its signal.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

from common.errors import Aborted, DeadlineExceeded
from hal.command_buffer import CommandBuffer
from hal.device import Device, DeviceLimits
from hal.executable import EntryPoint, Executable
from hal.ptx_abi import FORMAT
from hal.semaphore import Semaphore
from hal_gpu.cuda import command_buffer, executable
from hal_gpu.cuda.allocator import CudaAllocator
from hal_gpu.cuda.driver import check, context, cu, device_name, make_current
from hal_gpu.cuda.semaphore import CudaSemaphore
from hal_gpu.host_queue import Held, HostQueue

_NOT_READY = 600  # CUDA_ERROR_NOT_READY
_SPIN_S = 0.002  # a waiter polls its event this long before it sleeps between polls
_SLICE_S = 0.005  # sleeping waiters wake this often to notice failures and deadlines


def _steps(command_buffers: list[tuple[CommandBuffer, command_buffer.LoweredCommandBuffer]]) -> list:
    """The steps of a submission: its command buffers' parts, a step ending after every part
    that may fail and before every part with an indirect dispatch (command_buffer.py)."""
    steps, step = [], []
    for cb, lowered in command_buffers:
        for part in lowered.parts:
            if part.indirect and step:  # its counts are read once what precedes it retired
                steps.append(step)
                step = []
            step.append((cb, part))
            if part.may_fail:  # its status must be seen before what follows runs
                steps.append(step)
                step = []
    if step or not steps:
        steps.append(step)
    return steps


@dataclass
class _Submission:
    steps: list  # per step: [(command buffer, part)]
    signals: list
    next: int = 0  # the step to launch next
    event: object = None  # recorded after the step in flight


class CudaDevice(Device):
    driver = "cuda"
    formats = (FORMAT,)
    allocator_class = CudaAllocator

    def __init__(self, dev, **_options) -> None:
        d = cu()
        self.cu_device = dev
        self.name = device_name(dev)
        self.context = context(dev)
        make_current(self.context)

        def attr(name: str) -> int:
            return check(d.cuDeviceGetAttribute(getattr(d.CUdevice_attribute, f"CU_DEVICE_ATTRIBUTE_{name}"), dev), name)

        self.total_memory = int(check(d.cuDeviceTotalMem(dev), "cuDeviceTotalMem"))
        super().__init__(DeviceLimits(
            max_workgroup_count=min(attr("MAX_GRID_DIM_X"), attr("MAX_GRID_DIM_Y"), attr("MAX_GRID_DIM_Z")),
            local_memory_size=attr("MAX_SHARED_MEMORY_PER_BLOCK"),  # static shared memory (48 KiB)
            max_update_size=64 * 1024,
            max_workgroup_size=(attr("MAX_BLOCK_DIM_X"), attr("MAX_BLOCK_DIM_Y"), attr("MAX_BLOCK_DIM_Z")),
            max_workgroup_invocations=attr("MAX_THREADS_PER_BLOCK"),
            binding_offset_alignment=1,
            fill_pattern_sizes=(1, 2, 4),
        ))
        self.stream = check(d.cuStreamCreate(int(d.CUstream_flags.CU_STREAM_NON_BLOCKING)), "cuStreamCreate")
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # a host signal, a failure or a retirement
        self._held = HostQueue(lambda s, x: s.value >= x, self._launch, self._retire_completed, self._changed)  # work: _Submission
        self._pending: list[_Submission] = []  # a step on the stream, in stream order
        self._events: list = []
        self._semaphores: "weakref.WeakSet[CudaSemaphore]" = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"<Device cuda {self.name}>"

    def enter(self) -> None:
        """Makes the device's context current on the calling thread (FailedPrecondition once closed)."""
        self._check_open()
        make_current(self.context)

    # --- objects -------------------------------------------------------------------------------

    def create_semaphore(self, initial_value: int = 0) -> Semaphore:
        self._check_open()
        return CudaSemaphore(self, initial_value)

    def _load_executable(self, format: str, data, entry_points: tuple[EntryPoint, ...]) -> Executable:
        return executable.load(self, format, data, entry_points)

    def lower_command_buffer(self, cb: CommandBuffer):
        self._check_open()
        lowered = command_buffer.lower(self, cb)
        lowered.steps = _steps([(cb, lowered)])  # a submission of this one command buffer
        return lowered

    # --- queue ---------------------------------------------------------------------------------

    def execute_and_wait(self, command_buffer: CommandBuffer, semaphore: Semaphore, value: int, timeout: float | None = None) -> None:
        """A model call's fast path: validated when its caller prepared it, so straight to the
        queue, then a wait on this thread."""
        command_buffer.submitted += 1
        self._submit([command_buffer], [], [(semaphore, value)])
        self.wait_for(semaphore, value, timeout)

    def _submit(self, command_buffers, wait, signal) -> None:
        self.enter()
        steps = command_buffers[0].lowered.steps if len(command_buffers) == 1 else _steps([(cb, cb.lowered) for cb in command_buffers])
        with self._lock:
            self._held.hold(_Submission(steps, list(signal)), wait, signal)
            self._held.pump()

    def _launch(self, held: Held) -> bool:
        """Puts the submission's next step on the stream; True when it finished at once (a step
        that failed before running)."""
        d, sub = cu(), held.work
        for cb, part in sub.steps[sub.next]:
            error = command_buffer.prepare(self, cb, part) if part.indirect else None
            if error is not None:
                self._held.fail(sub.signals, Aborted(error))
                return True
            if part.exec is not None:
                check(d.cuGraphLaunch(part.exec, self.stream), "cuGraphLaunch")
        sub.event = self._events.pop() if self._events else check(d.cuEventCreate(int(d.CUevent_flags.CU_EVENT_DISABLE_TIMING)), "cuEventCreate")
        check(d.cuEventRecord(sub.event, self.stream), "cuEventRecord")
        self._pending.append(sub)
        return False

    def _retire_completed(self) -> bool:
        d = cu()
        retired = False
        while self._pending:
            sub = self._pending[0]
            err = d.cuEventQuery(sub.event)[0]
            if err == _NOT_READY:
                break
            check((err,), "a submission's event")
            self._pending.pop(0)
            self._retire(sub)
            retired = True
        return retired

    def _retire(self, sub: _Submission) -> None:
        self._events.append(sub.event)
        sub.event = None
        errors = []
        for cb, part in sub.steps[sub.next]:
            failures = cb.lowered.failures(part) if part.may_fail else []
            for number, status, workgroup in failures:
                index, name = cb.lowered.dispatches[number]
                errors.append(Aborted(f"kernel '{name}' returned status {status} at workgroup {workgroup} "
                                      f"(command {index} of command buffer #{cb.id})"))
            if failures:
                cb.lowered.clear(self)
        if errors:
            self._held.fail(sub.signals, errors[0])
            return
        sub.next += 1
        if sub.next < len(sub.steps):
            self._held.hold(sub, [], sub.signals)  # no waits left: the pump launches it
            return
        for s, x in sub.signals:
            if s.failure is None and x > s.value:
                s.value = x
        self._changed.notify_all()

    def poll(self) -> None:
        """Retires finished work and launches what that releases."""
        with self._lock:
            if not self.closed:
                self.enter()
                self._held.pump()

    def wait_for(self, sem: CudaSemaphore, value: int, timeout: float | None) -> None:
        """Blocks until `sem` reaches `value` (Aborted if it fails, DeadlineExceeded after
        `timeout` seconds)."""
        def reached() -> bool:
            if self.closed and sem.failure is None and sem.value < value:
                raise Aborted(f"{sem!r}: {self!r} is closed")
            sem._raise_if_failed()
            return sem.value >= value

        self._drive(reached, timeout, lambda: f"{sem!r}: payload {sem.value} did not reach {value} within {timeout} s")

    def wait_idle(self, timeout: float | None = None) -> None:
        self._drive(lambda: not self._pending and not self._held, timeout,
                    lambda: f"{self!r}: {len(self._pending) + len(self._held)} submissions still in flight after {timeout} s")

    def _drive(self, done, timeout: float | None, late) -> None:
        """Runs the queue on the calling thread until `done()`: the oldest step on the stream is
        waited for (spinning first: a small step finishes in microseconds) and retired, and what
        that releases launched; with nothing on the stream, the caller sleeps until a host
        signal. DeadlineExceeded with `late()` after `timeout` seconds."""
        d = cu()
        deadline = None if timeout is None else time.monotonic() + timeout
        spin_until = time.monotonic() + _SPIN_S
        while True:
            with self._lock:
                if not self.closed:
                    self.enter()
                    self._held.pump()
                if done():
                    return
                event = self._pending[0].event if self._pending else None
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise DeadlineExceeded(late())
                if event is None:
                    self._changed.wait(_SLICE_S if deadline is None else max(0.0, min(_SLICE_S, deadline - now)))
                    continue
            if deadline is None:
                check(d.cuEventSynchronize(event), "cuEventSynchronize")
            elif time.monotonic() > spin_until:
                time.sleep(0.0002)
            else:  # spin on the event alone
                while d.cuEventQuery(event)[0] == _NOT_READY and time.monotonic() < spin_until:
                    pass

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            make_current(self.context)
            shutdown = Aborted(f"the device shut down with the submission in flight ({self!r} closed)")
            self._held.fail_all(shutdown)
            for sub in self._pending:
                self._held.fail(sub.signals, shutdown)
            self._pending = []
            d = cu()
            d.cuStreamSynchronize(self.stream)
            for sem in list(self._semaphores):
                if sem.failure is None:
                    sem.failure = Aborted(f"{self!r} is closed")
            for event in self._events:
                d.cuEventDestroy(event)
            d.cuStreamDestroy(self.stream)
            super().close()
            self._changed.notify_all()
