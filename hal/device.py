"""The device: allocator, executables, command buffers, semaphores and the queue.

A driver subclasses Device and supplies: `lower_command_buffer`, `create_semaphore`,
`check_executable` and `_submit`. Everything the model promises about validation lives here,
so every driver behaves alike.
"""

from __future__ import annotations

import abc
import functools
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from hal.allocator import Allocator, HostAllocator
from hal.buffer import Buffer
from hal.command_buffer import CommandBuffer, CommandBufferMode
from common.errors import FailedPrecondition, InvalidArgument, Unavailable
from hal.executable import EntryPoint, Executable, ExecutableCache
from hal.semaphore import Semaphore, payload

Timepoints = Iterable[tuple[Semaphore, int]]


@dataclass(frozen=True)
class _Loaded:
    """A variant loaded on a device, and the executable it came from (kept alive)."""

    executable: Executable
    source: Executable


@dataclass(frozen=True)
class DeviceLimits:
    max_workgroup_count: int = (1 << 21) - 1  # per dimension
    local_memory_size: int = 256 * 1024  # per workgroup
    max_update_size: int = 64 * 1024  # bytes of host data one update command may carry
    max_workgroup_size: tuple[int, int, int] = (1 << 16, 1 << 16, 1 << 16)  # invocations per dim
    max_workgroup_invocations: int = 1 << 30
    max_constant_bytes: int = 4 * 256  # push-constant bytes (constants are 32-bit words)
    binding_offset_alignment: int = 1  # bytes; bindings also need their element size
    fill_pattern_sizes: tuple[int, ...] = (1, 2, 4)


class Device(abc.ABC):
    driver: str = ""
    formats: tuple[str, ...] = ()  # executable formats the device loads
    branches: bool = False  # command buffers may `jump` (control flow evaluated on the device)
    allocator_class: type[Allocator] = HostAllocator  # a driver's own memory: its allocator

    def __init__(self, limits: DeviceLimits) -> None:
        self.limits = limits
        self.allocator = self.allocator_class(self)
        self.executable_cache = ExecutableCache()
        self.closed = False

    def __repr__(self) -> str:
        return f"<Device {self.driver}>"

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- objects ---------------------------------------------------------------------------------

    def allocate_buffer(self, size: int, *args, **kwargs) -> Buffer:
        return self.allocator.allocate_buffer(size, *args, **kwargs)

    def create_command_buffer(self, mode: CommandBufferMode | str = CommandBufferMode.ONE_SHOT) -> CommandBuffer:
        self._check_open()
        try:
            mode = CommandBufferMode(mode)
        except ValueError:
            raise InvalidArgument(f"command buffer mode {mode!r}: expected one of {[m.value for m in CommandBufferMode]}") from None
        return CommandBuffer(self, mode)

    def check_executable(self, executable: Executable) -> Executable:
        """The form of `executable` this device runs (itself, or a variant loaded once);
        Unavailable when it has no format the device loads."""
        return self.executable_for(executable)

    def executable_for(self, executable: Executable) -> Executable:
        if executable.format in self.formats:
            return executable
        for fmt in self.formats:
            variant = executable.variants.get(fmt)
            if variant is not None:
                # Keyed by identity; the value keeps the source alive so its id is not reused.
                key = ("variant", id(executable), fmt)
                # A variant's data may be a callable that compiles it: only devices that load
                # the format pay for the compile.
                return self.executable_cache.get_or_create(key, lambda: self._load_variant(executable, fmt, variant)).executable
        raise Unavailable(f"{self.driver}: cannot load executable format '{executable.format}' "
                          f"(it has {list(executable.formats)}; {self.driver} loads {list(self.formats)}): "
                          f"compile it for this device (fibergrid compile --target ...)")

    def _load_variant(self, executable: Executable, fmt: str, variant) -> "_Loaded":
        loaded = self.create_executable(fmt, variant.data() if callable(variant.data) else variant.data, variant.entry_points)
        loaded.origin = executable
        return _Loaded(loaded, executable)

    def create_executable(self, format: str, data, entry_points: Sequence[EntryPoint]) -> Executable:
        """Loads code of `format` (the driver's: native code, SPIR-V bytes, ...) with the given
        entry points; Unavailable for a format the device does not load."""
        self._check_open()
        if format not in self.formats:
            raise Unavailable(f"{self.driver}: cannot load executable format '{format}' (supported: {list(self.formats)})")
        return self._load_executable(format, data, tuple(entry_points))

    def _load_executable(self, format: str, data, entry_points: tuple[EntryPoint, ...]) -> Executable:
        """The driver's loader (CPU drivers: entry points already hold native addresses and
        `data` keeps that code alive)."""
        return Executable(entry_points, format, keepalive=data)

    @abc.abstractmethod
    def create_semaphore(self, initial_value: int = 0) -> Semaphore: ...

    @abc.abstractmethod
    def lower_command_buffer(self, command_buffer: CommandBuffer) -> object:
        """The driver's executable form of an ended command buffer."""

    # --- queue -------------------------------------------------------------------------------------

    def queue_execute(self, command_buffers: Sequence[CommandBuffer] | CommandBuffer, wait: Timepoints = (), signal: Timepoints = ()) -> None:
        """Runs the command buffers, in order, once every wait timepoint is reached; then
        signals every signal timepoint. Returns at once (local-sync: after running, if it could)."""
        self._check_open()
        command_buffers = [command_buffers] if isinstance(command_buffers, CommandBuffer) else list(command_buffers)
        for cb in command_buffers:
            if not isinstance(cb, CommandBuffer) or cb.device is not self:
                raise InvalidArgument(f"queue_execute: {cb!r} was not created by {self!r}")
            if not cb.ended:
                raise FailedPrecondition(f"queue_execute: {cb!r} has not ended")
            if cb.mode is CommandBufferMode.ONE_SHOT and cb.submitted:
                raise FailedPrecondition(f"queue_execute: one-shot {cb!r} was already submitted")
            if cb.mode is CommandBufferMode.ONE_SHOT and sum(c is cb for c in command_buffers) > 1:
                raise FailedPrecondition(f"queue_execute: one-shot {cb!r} is listed more than once in one submission")
        wait, signal = self._timepoints(wait, "wait"), self._timepoints(signal, "signal")
        for cb in command_buffers:
            cb.submitted += 1
        self._submit(list(command_buffers), wait, signal)

    def execute_and_wait(self, command_buffer: CommandBuffer, semaphore: Semaphore, value: int, timeout: float | None = None) -> None:
        """Runs an ended reusable command buffer, signalling `semaphore` to `value`, and waits for
        it: a model call's fast path, validated once when its caller prepared it (same device,
        ended, reusable). CPU drivers run it on the calling thread where that is fastest."""
        self.queue_execute([command_buffer], signal=[(semaphore, value)])
        semaphore.wait(value, timeout)

    def prepare_call(self, command_buffer: CommandBuffer, semaphore: Semaphore, timeout: float | None = None) -> Callable[[int], object]:
        """`call(value)` does what execute_and_wait(command_buffer, semaphore, value, timeout)
        does (its return value means nothing), with the lookups and checks it repeats done once
        (CPU drivers). The caller makes calls one at a time and submits the command buffer
        nowhere else while one runs (a model's lane owns its command buffer)."""
        return functools.partial(self.execute_and_wait, command_buffer, semaphore, timeout=timeout)

    def rebind(self, command_buffer: CommandBuffer, buffer: Buffer, array: np.ndarray | None) -> bool:
        """Points every dispatch binding of `buffer` in an ended command buffer, not in flight, at
        the memory of host `array` (IREE's binding tables, for host memory), until rebound again
        (None: back to the buffer's own memory): True when the driver can use the array in place
        (CPU drivers: element-aligned, C-contiguous, at least the buffer's size), False when the
        caller must copy through the buffer instead. The caller keeps `array` alive while
        submissions use it."""
        return False

    def queue_barrier(self, wait: Timepoints = (), signal: Timepoints = ()) -> None:
        """Signals once the waits are reached: orders later submissions after earlier ones."""
        self.queue_execute([], wait, signal)

    def queue_fill(self, target: Buffer, offset: int, length: int | None, pattern, pattern_length: int | None = None, wait: Timepoints = (), signal: Timepoints = ()) -> None:
        cb = self.create_command_buffer()
        cb.fill(target, offset, length, pattern, pattern_length)
        cb.end()
        self.queue_execute([cb], wait, signal)

    def queue_copy(self, source: Buffer, source_offset: int, target: Buffer, target_offset: int, length: int, wait: Timepoints = (), signal: Timepoints = ()) -> None:
        cb = self.create_command_buffer()
        cb.copy(source, source_offset, target, target_offset, length)
        cb.end()
        self.queue_execute([cb], wait, signal)

    def queue_host_call(self, fn: Callable[[], object], wait: Timepoints = (), signal: Timepoints = ()) -> None:
        """Runs `fn()` on a host thread once every wait is reached, then signals; if `fn` raises
        (or a wait fails) the signal semaphores fail with that error. Returns at once. The waits
        park as a submission (no worker blocks); only the host thread that will run `fn` sleeps,
        in a futex with the GIL released."""
        if not callable(fn):
            raise InvalidArgument(f"queue_host_call: {fn!r} is not callable")
        signal = self._timepoints(signal, "signal")
        gate = self.create_semaphore(0)
        self.queue_barrier(wait, [(gate, 1)])

        def step() -> None:
            try:
                gate.wait(1)
                fn()
                for sem, value in signal:
                    sem.signal(value)
            except BaseException as e:  # noqa: BLE001 - any failure travels on through the semaphores
                for sem, _ in signal:
                    sem.fail(e)

        threading.Thread(target=step, name="fibergrid-host-call", daemon=True).start()

    def _timepoints(self, points: Timepoints, what: str) -> list[tuple[Semaphore, int]]:
        out = []
        for p in points:
            try:
                sem, value = p
            except (TypeError, ValueError):
                raise InvalidArgument(f"queue_execute: {what} entry {p!r} is not a (semaphore, value) pair") from None
            if not isinstance(sem, Semaphore) or sem.device is not self:
                raise InvalidArgument(f"queue_execute: {what} semaphore {sem!r} does not belong to {self!r}")
            out.append((sem, payload(value, f"queue_execute: {what} value")))
        return out

    @abc.abstractmethod
    def _submit(self, command_buffers: list[CommandBuffer], wait: list[tuple[Semaphore, int]], signal: list[tuple[Semaphore, int]]) -> None: ...

    def wait_idle(self, timeout: float | None = None) -> None:
        """Waits for every submission made so far."""

    # --- lifetime ------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise FailedPrecondition(f"{self!r} is closed")

    def close(self) -> None:
        self.closed = True
