"""Command buffers: recorded once, validated at record time, lowered by the driver at `end()`.

Commands between two `execution_barrier()`s may run in any order or at once; a barrier orders
everything before it ahead of everything after it (Vulkan's compute-to-compute barrier, IREE's
execution barrier). On a device with `branches` (the CPU drivers), `jump(label, predicate,
equals)` goes to a `label()` bound elsewhere in the same command buffer, always or when the
scalar in `predicate` equals `equals`, read when everything before the jump has completed:
control flow whose trip count depends on data runs without returning to the host (CUDA graphs'
conditional nodes, Vulkan's proposed device-generated commands, do the same). A jump and a label
are barriers. Every check happens while recording, in the spirit of Vulkan's validation
layers, so a recorded command buffer cannot fail validation when it runs.
"""

from __future__ import annotations

import enum
import itertools
import weakref
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np

from hal.buffer import Buffer, BufferUsage, BufferView
from common.errors import FailedPrecondition, InvalidArgument, OutOfRange, ResourceExhausted, Unavailable, Unimplemented
from hal.executable import EntryPoint, Executable


class CommandBufferMode(enum.Enum):
    ONE_SHOT = "one-shot"  # submitted once
    REUSABLE = "reusable"  # submitted any number of times (one submission at a time)


@dataclass(frozen=True)
class Binding:
    """A resolved buffer range bound to one dispatch binding slot."""

    buffer: Buffer
    offset: int
    length: int


BindingLike = Union[Buffer, BufferView, tuple]


@dataclass(frozen=True)
class Dispatch:
    executable: Executable
    entry: EntryPoint
    workgroup_count: tuple[int, int, int]
    constants: np.ndarray  # uint32 words
    bindings: tuple[Binding, ...]
    indirect: Binding | None = None  # uint32[3] read when the dispatch's region starts


@dataclass(frozen=True)
class Fill:
    target: Binding
    pattern: int
    pattern_length: int


@dataclass(frozen=True)
class Copy:
    source: Binding
    target: Binding


@dataclass(frozen=True)
class Update:
    data: bytes
    target: Binding


class Barrier:
    """Marks the end of a region."""


class Label:
    """A position in one command buffer that jumps go to; bound once with `bind_label`."""

    def __init__(self, owner: int) -> None:
        self.owner = owner  # the command buffer's id
        self.position: int | None = None  # index into `commands` of the first command after it

    def __repr__(self) -> str:
        return f"Label(@{self.position})" if self.position is not None else "Label(unbound)"


@dataclass(frozen=True)
class Jump:
    target: Label
    predicate: Binding | None  # a 1-, 2-, 4- or 8-byte integer; None: always
    equals: int


Command = Union[Dispatch, Fill, Copy, Update, Barrier, Jump]

_ids = itertools.count(1)
_registry: "weakref.WeakValueDictionary[int, CommandBuffer]" = weakref.WeakValueDictionary()


def lookup(command_buffer_id: int) -> "CommandBuffer | None":
    """The live command buffer with this id (for naming kernels in errors and traces)."""
    return _registry.get(command_buffer_id)


class CommandBuffer:
    """Records commands for one device. `end()` hands them to the driver to lower."""

    def __init__(self, device, mode: CommandBufferMode = CommandBufferMode.ONE_SHOT) -> None:
        self.device = device
        self.mode = CommandBufferMode(mode)
        self.id = next(_ids)
        self.commands: list[Command] = []
        self.ended = False
        self.submitted = 0
        self.lowered: Any = None  # the driver's form, set at end()
        _registry[self.id] = self

    def __repr__(self) -> str:
        return f"CommandBuffer(#{self.id}, {self.mode.value}, {len(self.commands)} commands)"

    # --- recording -----------------------------------------------------------------------------

    def _recording(self, what: str) -> None:
        if self.ended:
            raise FailedPrecondition(f"{what}: {self!r} has ended; record into a new command buffer")

    def dispatch(
        self,
        executable: Executable,
        entry: str | int,
        workgroup_count: Sequence[int] | int,
        constants: Sequence[Any] = (),
        bindings: Sequence[BindingLike] = (),
    ) -> None:
        self._recording("dispatch")
        executable, ep = self._entry(executable, entry)
        count = _grid(workgroup_count, ep.name)
        limit = self.device.limits.max_workgroup_count
        for d, c in enumerate(count):
            if c < 1:
                raise InvalidArgument(f"dispatch '{ep.name}': workgroup_count[{d}] = {c} must be >= 1 (count {count})")
            if c > limit:
                raise OutOfRange(f"dispatch '{ep.name}': workgroup_count[{d}] = {c} exceeds the device limit {limit}")
        self.commands.append(Dispatch(executable, ep, count, self._constants(ep, constants), self._bindings(ep, bindings)))

    def dispatch_indirect(
        self,
        executable: Executable,
        entry: str | int,
        workgroup_count: BindingLike,
        constants: Sequence[Any] = (),
        bindings: Sequence[BindingLike] = (),
    ) -> None:
        """Like dispatch, with the workgroup count read as uint32[3] from `workgroup_count`
        when the dispatch's region starts (after every earlier region completed). A count of 0
        in any dimension skips the dispatch; one over the device limit fails the submission."""
        self._recording("dispatch_indirect")
        executable, ep = self._entry(executable, entry)
        source = resolve_binding(workgroup_count, f"dispatch_indirect '{ep.name}': workgroup count", length=12)
        if source.offset % 4:
            raise InvalidArgument(f"dispatch_indirect '{ep.name}': workgroup count offset {source.offset} is not 4-byte aligned")
        self.commands.append(Dispatch(executable, ep, (0, 0, 0), self._constants(ep, constants), self._bindings(ep, bindings), indirect=source))

    def fill(self, target: Buffer, offset: int, length: int | None, pattern: Any, pattern_length: int | None = None) -> None:
        """Repeats a 1-, 2- or 4-byte pattern over [offset, offset+length); offset and length
        must be multiples of the pattern length (Vulkan's vkCmdFillBuffer uses 4)."""
        self._recording("fill")
        if isinstance(pattern, np.generic):
            pattern_length = pattern_length or pattern.dtype.itemsize
            pattern = int(np.frombuffer(pattern.tobytes(), dtype=np.dtype(f"u{pattern.dtype.itemsize}"))[0])
        pattern_length = pattern_length or 4
        if pattern_length not in self.device.limits.fill_pattern_sizes:
            raise InvalidArgument(f"fill: pattern_length {pattern_length} must be one of {self.device.limits.fill_pattern_sizes}")
        if not isinstance(pattern, (int, np.integer)) or not 0 <= int(pattern) < (1 << (8 * pattern_length)):
            raise InvalidArgument(f"fill: pattern {pattern!r} does not fit in {pattern_length} bytes")
        target.require(BufferUsage.TRANSFER, "fill")
        offset, length = target.check_range(offset, length, "fill")
        if offset % pattern_length or length % pattern_length:
            raise InvalidArgument(f"fill: offset {offset} and length {length} must be multiples of pattern_length {pattern_length}")
        self.commands.append(Fill(Binding(target, offset, length), int(pattern), pattern_length))

    def copy(self, source: Buffer, source_offset: int, target: Buffer, target_offset: int, length: int) -> None:
        self._recording("copy")
        source.require(BufferUsage.TRANSFER, "copy source")
        target.require(BufferUsage.TRANSFER, "copy target")
        so, length = source.check_range(source_offset, length, "copy source")
        to, _ = target.check_range(target_offset, length, "copy target")
        if source is target and so < to + length and to < so + length:
            raise InvalidArgument(f"copy: source [{so}, {so + length}) and target [{to}, {to + length}) overlap in {source!r}")
        self.commands.append(Copy(Binding(source, so, length), Binding(target, to, length)))

    def update(self, data: Any, target: Buffer, offset: int = 0) -> None:
        """Copies small host data into the command buffer now; it lands in `target` when run."""
        self._recording("update")
        raw = np.ascontiguousarray(data).tobytes() if not isinstance(data, (bytes, bytearray, memoryview)) else bytes(data)
        if len(raw) > self.device.limits.max_update_size:
            raise ResourceExhausted(f"update: {len(raw)} bytes exceeds the {self.device.limits.max_update_size}-byte limit; use a staging buffer and copy")
        target.require(BufferUsage.TRANSFER, "update")
        offset, length = target.check_range(offset, len(raw), "update")
        self.commands.append(Update(raw, Binding(target, offset, length)))

    def execution_barrier(self) -> None:
        self._recording("execution_barrier")
        if self.commands and not isinstance(self.commands[-1], Barrier):
            self.commands.append(Barrier())

    def label(self) -> Label:
        """A new label of this command buffer, to bind once and jump to any number of times."""
        self._recording("label")
        return Label(self.id)

    def bind_label(self, label: Label) -> None:
        """Jumps to `label` continue with the commands recorded after this (a barrier first)."""
        self._recording("bind_label")
        self._own(label, "bind_label")
        if label.position is not None:
            raise InvalidArgument(f"bind_label: {label!r} is already bound")
        self.execution_barrier()
        label.position = len(self.commands)

    def jump(self, label: Label, predicate: BindingLike | None = None, equals: int = 0) -> None:
        """Continue at `label`: always, or when the integer in `predicate` (1, 2, 4 or 8 bytes,
        compared in that width) equals `equals`. Everything before the jump completes first."""
        self._recording("jump")
        if not self.device.branches:
            raise Unimplemented(f"jump: {self.device!r} cannot branch inside a command buffer "
                                f"(evaluate the control flow on the host between command buffers)")
        self._own(label, "jump")
        p = None
        if predicate is not None:
            p = resolve_binding(predicate, "jump predicate")
            if p.length not in (1, 2, 4, 8) or p.offset % p.length:
                raise InvalidArgument(f"jump: the predicate must be 1, 2, 4 or 8 bytes at an offset that is a multiple "
                                      f"of its size, got {p.length} bytes at offset {p.offset}")
        if not isinstance(equals, (int, np.integer)) or not -(1 << 63) <= int(equals) < (1 << 63):
            raise InvalidArgument(f"jump: equals={equals!r} is not a 64-bit integer")
        self.execution_barrier()
        self.commands.append(Jump(label, p, int(equals)))
        self.commands.append(Barrier())

    def _own(self, label: Label, what: str) -> None:
        if not isinstance(label, Label) or label.owner != self.id:
            raise InvalidArgument(f"{what}: {label!r} is not a label of {self!r}")

    def end(self) -> None:
        self._recording("end")
        for c in self.commands:
            if isinstance(c, Jump) and c.target.position is None:
                raise InvalidArgument(f"end: {self!r} jumps to a label that was never bound")
        while self.commands and isinstance(self.commands[-1], Barrier):
            self.commands.pop()
        self.lowered = self.device.lower_command_buffer(self)
        self.ended = True

    def regions(self) -> list[list[Command]]:
        """The commands split at barriers."""
        out: list[list[Command]] = [[]]
        for c in self.commands:
            if isinstance(c, Barrier):
                out.append([])
            else:
                out[-1].append(c)
        return [r for r in out if r]

    def command(self, index: int) -> Command | None:
        """The index-th non-barrier command, as drivers number them in errors."""
        real = [c for c in self.commands if not isinstance(c, Barrier)]
        return real[index] if 0 <= index < len(real) else None

    # --- validation helpers --------------------------------------------------------------------

    def _entry(self, executable: Executable, entry: str | int) -> tuple[Executable, EntryPoint]:
        """The device's form of `executable` (a variant in its format, if needed) and the entry."""
        if not isinstance(executable, Executable):
            raise InvalidArgument(f"dispatch: {executable!r} is not an Executable")
        declared = executable.entry(entry)
        try:
            executable = self.device.executable_for(executable)
        except Unavailable:
            self._check_entry(declared)  # needs beyond the device say more than its format does
            raise
        ep = executable.entry(entry)
        self._check_entry(ep)  # the device's form (a variant lays workgroups out its own way)
        return executable, ep

    def _check_entry(self, ep: EntryPoint) -> None:
        limits = self.device.limits
        if ep.local_memory_size > limits.local_memory_size:
            raise ResourceExhausted(f"dispatch '{ep.name}': needs {ep.local_memory_size} bytes of local memory; the device has {limits.local_memory_size}")
        if any(s > m for s, m in zip(ep.workgroup_size, limits.max_workgroup_size)) or ep.workgroup_size[0] * ep.workgroup_size[1] * ep.workgroup_size[2] > limits.max_workgroup_invocations:
            raise OutOfRange(f"dispatch '{ep.name}': workgroup size {ep.workgroup_size} exceeds the device's {limits.max_workgroup_size} / {limits.max_workgroup_invocations} invocations")

    @staticmethod
    def _constants(ep: EntryPoint, constants: Sequence[Any]) -> np.ndarray:
        constants = list(np.asarray(constants).reshape(-1)) if isinstance(constants, np.ndarray) else list(constants)
        if len(constants) != ep.constant_count:
            raise InvalidArgument(f"dispatch '{ep.name}': {len(constants)} constants given, the entry point takes {ep.constant_count}")
        return ep.encode_constants(constants)

    @staticmethod
    def _bindings(ep: EntryPoint, bindings: Sequence[BindingLike]) -> tuple[Binding, ...]:
        if len(bindings) != ep.binding_count:
            raise InvalidArgument(f"dispatch '{ep.name}': {len(bindings)} bindings given, the entry point takes {ep.binding_count}")
        out = []
        for i, b in enumerate(bindings):
            what = f"dispatch '{ep.name}': binding {i}"
            r = resolve_binding(b, what)
            r.buffer.require(BufferUsage.DISPATCH_STORAGE, what)
            dtype = ep.binding_dtypes[i] if i < len(ep.binding_dtypes) else None
            if dtype is not None and r.offset % dtype.itemsize:
                raise InvalidArgument(f"{what}: offset {r.offset} is not a multiple of its {dtype} element size")
            out.append(r)
        return tuple(out)


def resolve_binding(b: BindingLike, what: str, length: int | None = None) -> Binding:
    """Buffer, BufferView, (buffer, offset) or (buffer, offset, length) -> a checked Binding."""
    if isinstance(b, BufferView):
        buffer, offset, size = b.buffer, b.offset, b.nbytes
    elif isinstance(b, Buffer):
        buffer, offset, size = b, 0, None
    elif isinstance(b, tuple) and 2 <= len(b) <= 3 and isinstance(b[0], Buffer):
        buffer, offset, size = b[0], b[1], (b[2] if len(b) == 3 else None)
    else:
        raise InvalidArgument(f"{what}: {b!r} is not a Buffer, BufferView or (buffer, offset[, length])")
    if length is not None:
        size = length
    offset, size = buffer.check_range(offset, size, what)
    return Binding(buffer, offset, size)


def _grid(count: Sequence[int] | int, name: str) -> tuple[int, int, int]:
    if isinstance(count, (int, np.integer)):
        count = (int(count),)
    try:
        dims = [int(c) for c in count]
    except (TypeError, ValueError):
        raise InvalidArgument(f"dispatch '{name}': workgroup_count {count!r} must be 1 to 3 ints") from None
    if not 1 <= len(dims) <= 3:
        raise InvalidArgument(f"dispatch '{name}': workgroup_count {count!r} must be 1 to 3 ints")
    return tuple(dims + [1] * (3 - len(dims)))  # type: ignore[return-value]
