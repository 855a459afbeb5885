"""`fg.load(source, device=None)`: a compiled module as a Python object.

    mod = fg.load("model.fgx", device="local-task")     # or a .mlir path, or StableHLO text
    y = mod(x)                                            # runs @main; numpy in, numpy out
    z = mod.other(x) ; z = mod["other"](x)                # the module's other public functions

StableHLO goes through the on-disk compile cache (compiler/cache.py), so only the first load of a
model pays for parsing and LLVM. A function with dynamic leading dims (a batch) is compiled once for
every size (compiler/dynamic.py: `function.dynamic`); a call at a new size only sizes buffers and
records a command buffer (a shape that recurs may get code of its own: `specialize_after`). One whose
code needs more than the dim's value (`function.dynamic_fallback` says why), or a call on a GPU
driver, is compiled once per input-shape signature (again through the cache), unless the .fgx
carries that one already.

The per-call cost is what a small model feels, so everything that can be done once per shape
signature is: the buffers are allocated, the constants uploaded and ONE reusable command buffer
recorded when a signature is first called. A call then only checks its arguments, copies them
into the input buffers, submits, waits and copies the results out; from its third call a
signature takes the quick call (fibergrid/quick_call.py), those steps and nothing else. A
reusable command buffer runs one submission at a time, so a call owns a lane (buffers and a
command buffer) while it runs; calls of one signature from several threads wait for the lane (or
`submit` adds lanes), calls of different signatures (or different modules) run concurrently.

Control flow (the host program's jumps, compiler/host_program.py): on a device whose command
buffers can jump (`Device.branches`: the CPU drivers) the whole program, loops and branches
included, is still that one command buffer, and the scheduler evaluates the jumps between
regions: a loop of data-dependent trip count costs no host round trip per iteration. Elsewhere
(vulkan) the program is cut at its jumps into straight-line blocks, one reusable command buffer
each, submitted back to back on the lane's timeline; the host waits and reads the predicate (a
host-visible scalar) only at a conditional jump (`_Blocks`).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import operator
import os
import threading
import time
from typing import Any, NamedTuple, Sequence

import numpy as np

from compiler import executable
from compiler.cache import CACHE
from compiler.errors import NeedsInputValues
from compiler.executable import Program, format_shape
from compiler.host_program import DispatchRecord, JumpRecord, Step, has_jumps
from compiler.pipeline import CompiledFunction, Progress, Shapes, parse
from hal.buffer import BufferUsage
from hal.command_buffer import CommandBuffer
from hal.device import Device
from hal.executable import CPU_NATIVE_FORMAT
from hal.semaphore import Semaphore
from fibergrid.quick_call import QUICK_AFTER, QuickCall
from common.errors import DeadlineExceeded, Error, InvalidArgument


def _record(device: Device, compiled: CompiledFunction, steps: Sequence[Step], views: dict[int, Any]) -> CommandBuffer:
    """One reusable command buffer running `steps` (jumps as `jump`s to labels: the device must
    have `branches` if there are any)."""
    cb = device.create_command_buffer("reusable")
    labels = {s.target: cb.label() for s in steps if isinstance(s, JumpRecord)}
    for i, step in enumerate(steps):
        if i in labels:
            cb.bind_label(labels[i])
        if isinstance(step, JumpRecord):
            cb.jump(labels[step.target], views[step.predicate] if step.predicate >= 0 else None, step.equals)
            continue
        if step.barrier_before:
            cb.execution_barrier()
        if isinstance(step, DispatchRecord):
            cb.dispatch(compiled.executable, step.entry, step.workgroup_count, compiled.constants_for(step.entry),
                        [views[t] for t in step.tensors])
        else:
            source, target = views[step.source], views[step.target]
            cb.copy(source.buffer, source.offset, target.buffer, target.offset, target.nbytes)
    if len(steps) in labels:
        cb.bind_label(labels[len(steps)])
    cb.end()
    return cb


class _Blocks:
    """A program with jumps on a device whose command buffers cannot jump: its straight-line
    blocks (cut before every jump target and after every jump), each a reusable command buffer,
    run by the host. Blocks are submitted back to back on the lane's timeline without waiting;
    the host waits only at a conditional jump, to read its predicate. (Counting the exit of a
    loop whose trip count is known instead, submitting its iterations without waiting, was
    slower on lavapipe: 930-1260 us a step against 690 us with a wait and a read per step, the
    driver's cost growing with the submissions queued.)"""

    def __init__(self, device: Device, compiled: CompiledFunction, program: Sequence[Step], views: dict[int, Any]) -> None:
        jumps = [i for i, s in enumerate(program) if isinstance(s, JumpRecord)]
        cuts = sorted({0, *(program[i].target for i in jumps), *(i + 1 for i in jumps)} - {len(program)})
        self.blocks: dict[int, tuple[CommandBuffer | None, JumpRecord | None, int]] = {}
        for start, end in zip(cuts, cuts[1:] + [len(program)]):
            body = list(program[start:end])
            jump = body.pop() if body and isinstance(body[-1], JumpRecord) else None
            self.blocks[start] = (_record(device, compiled, body, views) if body else None, jump, end)
        self.length = len(program)
        # Host views of the predicates (their buffers are host-visible: see _Lane).
        self.predicates = {s.predicate: views[s.predicate].buffer.view(views[s.predicate].dtype, (1,))
                           for s in program if isinstance(s, JumpRecord) and s.predicate >= 0}

    def run(self, device: Device, semaphore: Semaphore, value: int, timeout: float) -> int:
        """Runs the program from the timeline's `value`; returns the value it ends at."""
        deadline = time.monotonic() + timeout
        pc = 0
        while pc < self.length:
            cb, jump, pc = self.blocks[pc]
            if cb is not None:
                device.queue_execute([cb], wait=[(semaphore, value)], signal=[(semaphore, value + 1)])
                value += 1
            if jump is None:
                continue
            if jump.predicate >= 0:
                semaphore.wait(value, max(0.0, deadline - time.monotonic()))
                if int(self.predicates[jump.predicate][0]) != jump.equals:
                    continue
            pc = jump.target
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"the program's control flow did not finish within {timeout} s")
        semaphore.wait(value, max(0.0, deadline - time.monotonic()))
        return value


class _Lane:
    """One set of buffers and one reusable command buffer for a shape signature (or, for a
    program with jumps on a device without `branches`, one per straight-line block): a call in
    flight owns a lane. Synchronous calls use lane 0; `submit` adds lanes so calls pipeline."""

    def __init__(self, compiled: CompiledFunction, device: Device, constants: dict[int, Any], timeout: float) -> None:
        alloc = device.allocator
        program = compiled.program_for(device.formats)
        host = {t for t, _ in compiled.results} | {t.id for t in compiled.tensors if t.kind == "input"}
        host |= {s.predicate for s in program if isinstance(s, JumpRecord) and s.predicate >= 0}
        # Only inputs and results need host access; temporaries may live where the device is
        # fastest (a GPU's device-local memory).
        views = {t.id: constants[t.id] if t.kind == "constant" else
                 alloc.allocate_view(t.shape, t.dtype, BufferUsage.DEFAULT if t.id in host else DEVICE_ONLY)
                 for t in compiled.tensors}
        kinds = {t.id: t.kind for t in compiled.tensors}
        self.command_buffer = None  # the program as one command buffer, where the device runs it so
        self.blocks = None  # else its blocks, run by the host
        if has_jumps(program) and not device.branches:
            self.blocks = _Blocks(device, compiled, program, views)
        elif program:
            self.command_buffer = _record(device, compiled, program, views)
        # What a call does with each input and result is decided here, once (a numpy attribute
        # read costs ~1 us on a call whose kernel just swept the caches). Per input: its index,
        # its buffer, a host view of it (a call copies through it with no HAL checks) and whether
        # the caller's array may be bound in place (ZERO_COPY_BYTES and up, where the driver can).
        bindable = self.command_buffer is not None
        self.inputs = []
        for t in compiled.tensors:
            if t.kind == "input":
                view = views[t.id].buffer.view(t.dtype, t.shape)
                self.inputs.append((t.input_index, views[t.id].buffer, view, bindable and view.nbytes >= ZERO_COPY_BYTES))
        # Per result: its buffer, a host view in the result's shape, and whether it may be written
        # in place into memory the caller then owns (large enough, and written by a dispatch: a
        # result that is an input, a constant or another result's tensor is copied).
        seen: set[int] = set()
        self.results = []
        for t, shape in compiled.results:
            buffer = views[t].buffer
            view = buffer.view(views[t].dtype, shape)
            self.results.append((buffer, view, bindable and kinds[t] == "temp" and t not in seen and view.nbytes >= ZERO_COPY_BYTES))
            seen.add(t)
        # (dtype, shape) per result, for checking `out` arrays
        self.result_types = [(view.dtype, view.shape) for _, view, _ in self.results]
        self.semaphore = device.create_semaphore(0)
        self.submissions = 0
        # A synchronous call runs the command buffer through this (the lane owns both).
        self.call = device.prepare_call(self.command_buffer, self.semaphore, timeout) if self.command_buffer is not None else None
        self.rebound: set[int] = set()  # ids of the buffers whose bindings point at caller memory

    def bind(self, device: Device, buffer, array: np.ndarray | None) -> bool:
        """Points the buffer's bindings at `array` (None: back at the buffer), skipping the
        driver call when nothing changes; False when the driver cannot use `array` in place."""
        if array is None:
            if id(buffer) in self.rebound:
                device.rebind(self.command_buffer, buffer, None)
                self.rebound.discard(id(buffer))
            return True
        if not device.rebind(self.command_buffer, buffer, array):
            self.bind(device, buffer, None)
            return False
        self.rebound.add(id(buffer))
        return True


class _Prepared:
    """One shape signature of a function made ready to run on a device: constants uploaded,
    lanes (buffers + one reusable command buffer) recorded on first use.

    A call binds aligned numpy inputs in place where the driver can (`Device.rebind`, CPU
    drivers) and copies the others; results come back as arrays over memory the caller then owns
    (each call points the result buffers at fresh memory: no copy out), or into caller-provided
    `out` arrays (ONNX Runtime's io-binding)."""

    def __init__(self, compiled: CompiledFunction, device: Device, timeout: float,
                 constants: dict[int, Any] | None = None) -> None:
        self.compiled = compiled
        self._device = device
        self._timeout = timeout
        if compiled.kernels:  # a program of copies alone (a loop that never runs) needs none
            device.check_executable(compiled.executable)
        # (the sizes of a dynamic function share one upload of its constants)
        self._constants = _upload_constants(compiled, device) if constants is None else constants
        self._lanes = [_Lane(compiled, device, self._constants, timeout)]
        self._free = [self._lanes[0]]
        self._lock = threading.Lock()
        self._lane_freed = threading.Condition(self._lock)
        self._waiting = 0  # threads in _acquire's locked part (see there)
        self._in_flight: collections.deque[CallFuture] = collections.deque()  # submitted, uncollected
        # Calls left before the shape gets code of its own (code for every size, with
        # `fg.load(..., specialize_after=N)`); None: never.
        self.countdown: int | None = None
        self.runs = 0  # synchronous calls through `run`, up to QUICK_AFTER
        self.quick: QuickCall | None = None  # its common case in a few steps, once it recurs

    def _acquire(self, grow: bool) -> _Lane:
        """A free lane. Synchronous calls wait for one; `submit` adds lanes up to MAX_LANES, then
        completes the oldest call in flight (its future keeps the results) to free its lane.
        A free lane is taken without the lock (list.pop is atomic under the GIL); a waiter
        counts itself in `_waiting` before it looks, so a release that sees no waiter needs
        no lock either (Condition.notify alone was ~2 us of a call after a kernel swept the
        caches)."""
        try:
            return self._free.pop()
        except IndexError:
            pass
        while True:
            with self._lock:
                self._waiting += 1
                try:
                    if self._free:
                        return self._free.pop()
                    if grow and len(self._lanes) < MAX_LANES:
                        lane = _Lane(self.compiled, self._device, self._constants, self._timeout)
                        self._lanes.append(lane)
                        return lane
                    oldest = self._in_flight[0] if grow and self._in_flight else None
                    if oldest is None and not self._lane_freed.wait(self._timeout):
                        raise DeadlineExceeded(f"@{self.compiled.name}: no call finished within {self._timeout} s")
                finally:
                    self._waiting -= 1
            if oldest is not None:
                oldest._complete()

    def _release(self, lane: _Lane, future: "CallFuture | None" = None) -> None:
        if future is not None:
            with self._lock:
                if future in self._in_flight:
                    self._in_flight.remove(future)
        self._free.append(lane)
        if self._waiting:
            with self._lock:
                self._lane_freed.notify()

    def _bind(self, lane: _Lane, arrays: list[np.ndarray], out: Sequence[np.ndarray] | None) -> list[np.ndarray | None]:
        """Binds the inputs (in place, or copied into the lane's buffers) and the results'
        memory; per result, the array the run writes in place, or None (copy it out after).
        In place only from ZERO_COPY_BYTES up, `out` arrays too: below, a copy costs less than
        pointing the bindings elsewhere (a 64-byte `out` bound in place cost 7 us a call)."""
        device, rebound = self._device, lane.rebound
        for index, buffer, view, bindable in lane.inputs:
            a = arrays[index]
            if not bindable or not lane.bind(device, buffer, a):
                if id(buffer) in rebound:
                    lane.bind(device, buffer, None)
                np.copyto(view, a)
        targets: list[np.ndarray | None] = []
        for i, (buffer, view, in_place) in enumerate(lane.results):
            target = None
            if in_place:
                target = out[i] if out is not None else np.empty_like(view)
                if not lane.bind(device, buffer, target):
                    target = None
            elif id(buffer) in rebound:
                lane.bind(device, buffer, None)
            targets.append(target)
        return targets

    def _collect(self, lane: _Lane, targets: list[np.ndarray | None], out: Sequence[np.ndarray] | None) -> tuple[np.ndarray, ...]:
        if out is None:  # (a loop: a generator is a frame more)
            results = []
            for (_, view, _), target in zip(lane.results, targets):
                results.append(view.copy() if target is None else target)
            return tuple(results)
        for (_, view, _), target, o in zip(lane.results, targets, out):
            if target is None:
                np.copyto(o, view)
        return tuple(out)

    def _replace(self, lane: _Lane, future: "CallFuture | None" = None) -> None:
        """A lane whose call failed or timed out (its semaphore failed, or its command buffer may
        still be in flight) is dropped; the next call gets a fresh one. Its semaphore is failed,
        so a device-side loop of it still running stops at its next iteration."""
        try:
            lane.semaphore.fail(DeadlineExceeded(f"@{self.compiled.name}: the call was abandoned"))
        except Error:
            pass
        fresh = _Lane(self.compiled, self._device, self._constants, self._timeout)
        with self._lock:
            self._lanes[self._lanes.index(lane)] = fresh
            if self.quick is not None and self.quick.lane is lane:
                self.quick, self.runs = None, 0
        self._release(fresh, future)

    def run(self, arrays: list[np.ndarray], out: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
        if self.countdown is not None:
            self.countdown -= 1
        elif self.runs < QUICK_AFTER:
            self.runs += 1
            if self.runs == QUICK_AFTER:
                self.quick = QuickCall.of(self)
        lane = self._acquire(grow=False)
        try:
            targets = self._bind(lane, arrays, out)
            if lane.command_buffer is not None:
                lane.submissions += 1
                lane.call(lane.submissions)
            elif lane.blocks is not None:
                lane.submissions = lane.blocks.run(self._device, lane.semaphore, lane.submissions, self._timeout)
            results = self._collect(lane, targets, out)
        except BaseException:
            self._replace(lane)
            raise
        self._release(lane)
        return results

    def submit(self, arrays: list[np.ndarray], out: Sequence[np.ndarray] | None = None) -> "CallFuture":
        """Starts a call and returns at once; calls of one signature pipeline over up to
        MAX_LANES lanes (each with its own buffers), waiting for a lane when all are busy."""
        if self.countdown is not None:
            self.countdown -= 1
        lane = self._acquire(grow=True)
        try:
            targets = self._bind(lane, arrays, out)
            if lane.command_buffer is not None:
                lane.submissions += 1
                self._device.queue_execute([lane.command_buffer], signal=[(lane.semaphore, lane.submissions)])
            elif lane.blocks is not None:  # the host runs the control flow: the call completes here
                lane.submissions = lane.blocks.run(self._device, lane.semaphore, lane.submissions, self._timeout)
        except BaseException:
            self._replace(lane)
            raise
        future = CallFuture(self, lane, lane.submissions, targets, out, arrays)
        with self._lock:
            self._in_flight.append(future)
        return future


class CallFuture:
    """A call in flight (`function.submit(...)`): `result(timeout)` waits and returns what the
    call would have. The arrays it was given stay referenced until then (they may be bound in
    place)."""

    def __init__(self, prepared: _Prepared, lane: _Lane, value: int, targets: list, out, arrays: list) -> None:
        self._prepared, self._lane, self._value = prepared, lane, value
        self._targets, self._out, self._arrays = targets, out, arrays
        self._result: tuple[np.ndarray, ...] | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def done(self) -> bool:
        """True once the call completed (or failed)."""
        if self._result is not None or self._error is not None or self._lane.command_buffer is None:
            return True
        try:
            return self._lane.semaphore.query() >= self._value
        except Error:
            return True

    def _complete(self, timeout: float | None = None) -> None:
        """Waits for the call, keeps its results (or failure) and frees its lane; idempotent."""
        with self._lock:
            if self._result is not None or self._error is not None:
                return
            lane = self._lane
            try:
                if lane.command_buffer is not None:
                    lane.semaphore.wait(self._value, self._prepared._timeout if timeout is None else timeout)
                self._result = self._prepared._collect(lane, self._targets, self._out)
            except DeadlineExceeded:
                raise  # still in flight: the lane stays taken, result() may be called again
            except Error as e:
                self._error = e
            self._arrays = []
            if self._error is None:
                self._prepared._release(lane, self)
            else:
                self._prepared._replace(lane, self)

    def result(self, timeout: float | None = None) -> np.ndarray | tuple[np.ndarray, ...]:
        self._complete(timeout)
        if self._error is not None:
            raise self._error
        return self._result[0] if len(self._result) == 1 else self._result


class TensorInfo(NamedTuple):
    """A named input or result: `shape` has ints, symbolic dim names (str) or None (unknown)."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype


_MISSING = object()
_SHAPE = operator.attrgetter("shape")  # (map with it: a generator is a frame more per call)

DEVICE_ONLY = BufferUsage.TRANSFER | BufferUsage.DISPATCH_STORAGE  # no host mapping
MAX_LANES = 4  # calls of one signature in flight at once through `submit`
# Input-shape signatures of one function kept ready (buffers, command buffers): a server seeing
# ever new batch sizes must not grow without bound; one dropped is prepared again (its code
# comes back from the compile cache) if it recurs.
MAX_SIGNATURES = 32
ZERO_COPY_BYTES = 64 * 1024  # arrays this large are bound in place (measured: below, copying wins)
# An input whose contents the code is compiled for (FunctionEntry.value_inputs: a shape, axes,
# k...) is keyed by its bytes; a larger one would mean a compile per call of data, not a shape.
MAX_VALUE_ELEMENTS = 4096


def _upload_constants(compiled: CompiledFunction, device: Device) -> dict[int, Any]:
    """The function's constants as device buffer views, by tensor id. Weights go to device
    memory where there is any (through a staging copy on a GPU); a constant that is also a
    result stays host-visible."""
    results = {t for t, _ in compiled.results}
    return {t.id: device.allocator.import_array(t.value, BufferUsage.DEFAULT if t.id in results else DEVICE_ONLY)
            for t in compiled.tensors if t.kind == "constant"}


def _as_array(arg: Any, dtype: np.dtype, what: str) -> np.ndarray:
    """Arrays keep their dtype (a wrong one is an error, never a silent cast); Python scalars and
    lists take the declared one, as they carry no dtype of their own."""
    if isinstance(arg, (bool, int, float, list, tuple)):
        try:
            return np.asarray(arg, dtype=dtype)
        except (TypeError, ValueError, OverflowError) as e:
            raise InvalidArgument(f"{what}: cannot convert {type(arg).__name__} to {dtype}: {e}") from None
    return np.asarray(arg)


class Function:
    """One public function of a loaded module; call it with numpy arrays."""

    def __init__(self, module: "Module", entry: executable.FunctionEntry) -> None:
        self.name = entry.name
        self.signature = entry.signature
        # Per argument, its shape when every dim is static (None otherwise), its rank and the
        # (axis, size) pairs it declares: what the common case (an ndarray of the declared
        # dtype) needs checked; symbolic dims (None) match any size.
        self._fixed = [(tuple(shape) if None not in shape else None, len(shape),
                        tuple((k, d) for k, d in enumerate(shape) if d is not None)) for shape, _ in self.signature]
        self._module = module
        self._entry = entry
        # Signature -> prepared code: the input shapes, and where inputs' contents decide the
        # code (value inputs), (shapes, those contents' bytes).
        self._prepared: dict[Any, _Prepared] = {}
        self._lock = threading.Lock()
        self._value_at = self._value_positions(entry.value_inputs)
        # The inputs whose dim 0 is the dynamic dim, and the constants every size shares, when
        # calls run the code compiled once for every size (`dynamic`).
        self._dynamic_inputs = [i for i, (shape, _) in enumerate(self.signature) if shape and shape[0] is None]
        self._dynamic_constants: dict[int, Any] | None = None
        self._quick: QuickCall | None = None  # the last signature called that has one

    def __repr__(self) -> str:
        args = ", ".join(format_shape(s, d) for s, d in self.signature)
        return f"<fibergrid function @{self.name}({args})>"

    @property
    def compiled(self) -> CompiledFunction:
        """The compiled function of a static signature (for inspection: program, executable)."""
        if self._entry.is_dynamic:
            raise InvalidArgument(f"@{self.name} has dynamic dims: it has no code of one static signature")
        return next(iter(self._entry.specializations.values()))

    @property
    def dynamic(self) -> bool:
        """True when calls run code compiled once for every size of the function's dynamic dim
        (compiler/dynamic.py; a call's shapes only size its buffers and grids); False for a
        static function and for one compiled per input-shape signature (`dynamic_fallback`)."""
        return self._entry.dynamic is not None and self.dynamic_fallback == ""

    @property
    def dynamic_fallback(self) -> str:
        """Why a function with dynamic (or unknown: a SavedModel's) dims is compiled per
        input-shape signature ("" when it is not, or has none)."""
        entry = self._entry
        if entry.dynamic is None:
            if entry.dynamic_fallback or not entry.is_dynamic:
                return entry.dynamic_fallback
            return "its inputs' contents decide shapes" if entry.value_inputs else "compiled without the code for every size"
        if CPU_NATIVE_FORMAT not in self._module.device.formats:
            return f"the {self._module.device.driver} driver runs no code of run-time size (CPU drivers only)"
        return ""

    def _dim(self, arrays: list[np.ndarray]) -> int | None:
        """This call's dynamic dim when it runs the code compiled for every size: the one size
        (>= 1) all dynamic inputs have. Inputs that disagree take the per-shape path, whose
        shape checks (jax.export's assertions) say what is wrong."""
        if self._entry.dynamic is None or self._value_at or CPU_NATIVE_FORMAT not in self._module.device.formats:
            return None
        dims = {arrays[i].shape[0] for i in self._dynamic_inputs}
        return dims.pop() if len(dims) == 1 and 1 <= min(dims) < 1 << 31 else None  # (a 32-bit push constant)

    def _arrays(self, args: tuple[Any, ...]) -> tuple[list[np.ndarray], tuple[tuple[int, ...], ...]]:
        """The arguments as arrays of the declared dtypes and shapes, and those shapes (read once:
        a numpy attribute read costs ~1 us on a call whose kernel just swept the caches)."""
        if len(args) != len(self.signature):
            raise InvalidArgument(f"{self.name}: takes {len(self.signature)} arguments, got {len(args)}")
        arrays = list(args)
        shapes = []
        for i, (arg, (shape, dtype), (static, rank, fixed)) in enumerate(zip(args, self.signature, self._fixed)):
            # The common case in a few attribute reads: an ndarray of the declared dtype and shape
            # (a static one compared whole: no generator frame, which a cold call pays ~2 us for).
            if type(arg) is np.ndarray and arg.dtype is dtype:
                got = arg.shape
                if got == static if static is not None else len(got) == rank and all(got[k] == d for k, d in fixed):
                    shapes.append(got)
                    continue
            a = _as_array(arg, dtype, f"{self.name}: argument {i}")
            if a.dtype != dtype or a.ndim != len(shape) or any(d is not None and d != s for d, s in zip(shape, a.shape)):
                named = f" ('{self._entry.inputs[i][0]}')" if self._entry.inputs else ""
                raise InvalidArgument(f"{self.name}: argument {i}{named}: expected {format_shape(shape, dtype)}, "
                                      f"got {format_shape(a.shape, a.dtype)}")
            arrays[i] = a
            shapes.append(a.shape)
        return arrays, tuple(shapes)

    def _value_positions(self, names: Sequence[str]) -> tuple[int, ...]:
        inputs = [n for n, _, _ in self._entry.inputs]
        return tuple(inputs.index(n) for n in names)

    def _key(self, arrays: list[np.ndarray], shapes: tuple[tuple[int, ...], ...] | None = None) -> Any:
        shapes = shapes or tuple(map(_SHAPE, arrays))
        return (shapes, tuple(arrays[i].tobytes() for i in self._value_at)) if self._value_at else shapes

    def _prepare(self, arrays: list[np.ndarray]) -> _Prepared:
        with self._lock:
            key = self._key(arrays)
            prepared = self._prepared.get(key)
            if prepared is None:
                shapes = tuple(a.shape for a in arrays)
                device = self._module.device
                # An exact specialization first (compiled ahead of time: `--specialize`), then the
                # code for every size, then a compile for these shapes.
                compiled = self._entry.specializations.get(shapes) if not self._value_at else None
                constants = None
                if compiled is None and (dim := self._dim(arrays)) is not None:
                    if self._dynamic_constants is None:
                        self._dynamic_constants = _upload_constants(self._entry.dynamic, device)
                    compiled, constants = self._entry.dynamic.at(dim), self._dynamic_constants
                compiled = compiled or self._compile(shapes, arrays)
                key = self._key(arrays)  # compiling may have found more value inputs
                while len(self._prepared) >= MAX_SIGNATURES:  # the oldest goes (a call on it finishes)
                    del self._prepared[next(iter(self._prepared))]
                prepared = self._prepared[key] = _Prepared(compiled, device, self._module.timeout, constants)
                if constants is not None:
                    prepared.countdown = self._module.specialize_after
            return prepared

    def _recurring(self, prepared: _Prepared, arrays: list[np.ndarray]) -> _Prepared:
        """The fast path for a shape that recurs (`fg.load(..., specialize_after=N)`): after N
        calls through the code for every size, code compiled for this shape (through the cache)
        replaces it, in the same bounded table of signatures. The call that compiles waits for
        it (so do this function's other new signatures); a compile that fails, or a program with
        no source (a SavedModel's), leaves the code for every size serving."""
        with self._lock:
            prepared.countdown = None  # tried once, whatever happens
            key = self._key(arrays)
            if self._prepared.get(key) is not prepared:
                return self._prepared.get(key) or prepared
            try:
                compiled = self._module._specialize(self.name, tuple(a.shape for a in arrays))
            except Error:
                return prepared
            fast = self._prepared[key] = _Prepared(compiled, self._module.device, self._module.timeout)
            return fast

    def _compile(self, shapes: Shapes, arrays: list[np.ndarray]) -> CompiledFunction:
        """This call's code, compiled for its shapes and the contents of its value inputs. A
        conversion that needs the contents of more inputs names them (NeedsInputValues): they
        become value inputs of the function, and it compiles again."""
        while True:
            values = {self._entry.inputs[i][0]: arrays[i] for i in self._value_at}
            for name, value in values.items():
                if value.size > MAX_VALUE_ELEMENTS:
                    raise InvalidArgument(f"{self.name}: the code is compiled per contents of input '{name}', which has "
                                          f"{value.size} elements (at most {MAX_VALUE_ELEMENTS}): its values decide shapes")
            try:
                return self._module._specialize(self.name, shapes, values)
            except NeedsInputValues as e:
                new = [n for n in e.inputs if n not in values]
                if not new or not self._entry.inputs:
                    raise
                self._entry.value_inputs = tuple(self._entry.value_inputs) + tuple(new)
                self._value_at = self._value_positions(self._entry.value_inputs)
                self._quick = None  # keyed by shapes alone: not for this function any more

    def _outputs(self, prepared: _Prepared, out: Any) -> list[np.ndarray] | None:
        """`out`: one array per result (a bare array for a single result), each of exactly the
        result's shape and dtype and writeable."""
        if out is None:
            return None
        outs = [out] if isinstance(out, np.ndarray) else list(out)
        types = prepared._lanes[0].result_types
        if len(outs) != len(types):
            raise InvalidArgument(f"{self.name}: out= has {len(outs)} arrays for {len(types)} results")
        for i, (o, (dtype, shape)) in enumerate(zip(outs, types)):
            if not isinstance(o, np.ndarray) or o.shape != shape or (o.dtype is not dtype and o.dtype != dtype) or not o.flags.writeable:
                got = format_shape(o.shape, o.dtype) if isinstance(o, np.ndarray) else type(o).__name__
                raise InvalidArgument(f"{self.name}: out[{i}]: expected a writeable {format_shape(shape, dtype)} array, got {got}")
        return outs

    @property
    def has_names(self) -> bool:
        """True when the source names the inputs and results (ONNX), so they can be given and
        read by name."""
        return bool(self._entry.inputs)

    @property
    def inputs(self) -> list[TensorInfo]:
        """Name, declared shape (a symbolic dim by its name, an unknown one None) and dtype per
        argument, as ONNX Runtime's `get_inputs()`; positional functions get `arg0`, `arg1`..."""
        if self._entry.inputs:
            return [TensorInfo(n, s, d) for n, s, d in self._entry.inputs]
        return [TensorInfo(f"arg{i}", s, d) for i, (s, d) in enumerate(self.signature)]

    @property
    def outputs(self) -> list[TensorInfo]:
        """Name, declared shape and dtype per result (named where the source names them)."""
        if self._entry.outputs:
            return [TensorInfo(n, s, d) for n, s, d in self._entry.outputs]
        raise InvalidArgument(f"@{self.name}: its results are positional (StableHLO has no result names)")

    def _by_name(self, args: tuple[Any, ...], named: dict[str, Any]) -> tuple[Any, ...]:
        """Positional arguments followed by those given by input name, in signature order."""
        names = [i.name for i in self.inputs]
        merged: list[Any] = list(args) + [_MISSING] * (len(names) - len(args))
        for key, value in named.items():
            if key not in names:
                raise InvalidArgument(f"{self.name}: no input named '{key}' (inputs: {', '.join(names)})")
            k = names.index(key)
            if k < len(args):
                raise InvalidArgument(f"{self.name}: input '{key}' given both by position and by name")
            merged[k] = value
        missing = [n for n, v in zip(names, merged) if v is _MISSING]
        if missing:
            raise InvalidArgument(f"{self.name}: missing input(s) {', '.join(repr(n) for n in missing)}")
        return tuple(merged)

    def named(self, *args: Any, **inputs: Any) -> dict[str, np.ndarray]:
        """Runs the function and returns its results by output name (ONNX output names)."""
        results = self(*args, **inputs)
        results = results if isinstance(results, tuple) else (results,)
        return dict(zip((o.name for o in self.outputs), results))

    def __call__(self, *args: Any, out: Any = None, **inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """Runs the function: numpy in, numpy out. Results are new arrays the caller owns (no
        copy where the driver writes them in place), or the given `out` arrays. Inputs may be
        given by name (ONNX input names) as keyword arguments."""
        return self.call(args, out, inputs)

    def call(self, args: tuple[Any, ...], out: Any = None, inputs: dict[str, Any] | None = None) -> np.ndarray | tuple[np.ndarray, ...]:
        """`function(*args, out=out, **inputs)` with its arguments as they are: what a caller that
        forwards them (`Module.__call__`) calls, without unpacking and packing them again (a
        forwarded call took ~5 us more than a direct one right after a kernel swept the caches).
        A signature that recurs takes its quick call (fibergrid/quick_call.py) where it can."""
        quick = self._quick
        if quick is not None and not inputs:
            results = quick(args, out)
            if results is not None:
                return results
        prepared, arrays = self._prepared_for(args, inputs)
        results = prepared.run(arrays, None if out is None else self._outputs(prepared, out))
        if prepared.quick is not None and not self._value_at:
            self._quick = prepared.quick
        return results[0] if len(results) == 1 else results

    def _prepared_for(self, args: tuple[Any, ...], inputs: dict[str, Any] | None) -> tuple[_Prepared, list[np.ndarray]]:
        """The prepared code of this call's signature, and its arguments as checked arrays."""
        if inputs:
            args = self._by_name(args, inputs)
        arrays, shapes = self._arrays(args)
        prepared = self._prepared.get(self._key(arrays, shapes)) or self._prepare(arrays)
        if prepared.countdown is not None and prepared.countdown <= 0:
            prepared = self._recurring(prepared, arrays)
        return prepared, arrays

    def submit(self, *args: Any, out: Any = None, **inputs: Any) -> CallFuture:
        """Starts the call and returns a future at once (`.result(timeout)`, `.done()`), so calls
        pipeline: the next call's inputs are bound while this one runs."""
        prepared, arrays = self._prepared_for(args, inputs)
        return prepared.submit(arrays, self._outputs(prepared, out))


class Module:
    """A compiled program bound to a device. `module(...)` runs @main; other public functions
    are attributes (`module.name`) or items (`module["name"]`)."""

    def __init__(self, program: Program, device: Device, *, timeout: float, progress: Progress, origin: str,
                 specialize_after: int | None = None) -> None:
        self.program = program
        self.device = device
        self.timeout = timeout
        self.specialize_after = specialize_after
        self.origin = origin
        self._progress = progress
        self._parsed = None
        self._parse_lock = threading.Lock()
        self.functions = {name: Function(self, entry) for name, entry in program.functions.items()}
        self._main = self.functions.get("main")  # (module(...) in one frame fewer)

    def __repr__(self) -> str:
        return f"<fibergrid module {self.origin} on {self.device!r}: {', '.join(self.functions)}>"

    def __getitem__(self, name: str) -> Function:
        try:
            return self.functions[name]
        except KeyError:
            raise InvalidArgument(f"{self.origin}: no public function '{name}' (has: {', '.join(self.functions)})") from None

    def __getattr__(self, name: str) -> Function:
        functions = self.__dict__.get("functions", {})
        if name in functions:
            return functions[name]
        raise AttributeError(f"fibergrid module has no attribute or public function '{name}'")

    def __call__(self, *args: Any, out: Any = None, **inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        return (self._main or self["main"]).call(args, out, inputs)

    @property
    def inputs(self) -> list[TensorInfo]:
        """@main's inputs: name, shape (symbolic dims by name), dtype (`InferenceSession.get_inputs()`)."""
        return self["main"].inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        """@main's outputs: name, shape (symbolic dims by name), dtype."""
        return self["main"].outputs

    def named(self, *args: Any, **inputs: Any) -> dict[str, np.ndarray]:
        """@main's results by output name."""
        return self["main"].named(*args, **inputs)

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, Any]) -> list[np.ndarray]:
        """ONNX Runtime's `InferenceSession.run`: inputs by name, the named outputs (None: all) in order."""
        results = self["main"].named(**input_feed)
        if output_names is None:
            return list(results.values())
        for name in output_names:
            if name not in results:
                raise InvalidArgument(f"{self.origin}: no output named '{name}' (outputs: {', '.join(results)})")
        return [results[name] for name in output_names]

    @property
    def compiled(self) -> CompiledFunction:
        """@main's compiled function (static signatures)."""
        return self["main"].compiled

    def _specialize(self, name: str, shapes: Shapes, values: dict[str, np.ndarray] | None = None) -> CompiledFunction:
        """Compile `name` for `shapes` (and the contents of its value inputs) from the program's
        source, through the disk cache."""
        source = self.program.source
        if source is None:
            raise InvalidArgument(f"{self.origin}: @{name} has no code for input shapes {shapes} and no source to compile")

        def build() -> Program:
            with self._parse_lock:  # parse once per module: a large model takes seconds
                if self._parsed is None:
                    self._parsed = parse(source, self._progress)
            program = executable.build(source, [name], {name: [shapes]}, self._progress, module=self._parsed,
                                       values=values, dynamic=False)
            return dataclasses.replace(program, source=None)  # the module keeps it once, not per entry

        digest = ""
        if values:
            h = hashlib.sha256()
            for n in sorted(values):
                h.update(n.encode() + b"\0" + str(values[n].dtype).encode() + b"\0" + np.ascontiguousarray(values[n]).tobytes())
            digest = h.hexdigest()
        compiled = CACHE.get_or_build(source, [name], shapes, build, values=digest).functions[name].specializations[shapes]
        if values and compiled.values is None:  # loaded from the cache, which keeps code, not inputs
            object.__setattr__(compiled, "values", {n: v.copy() for n, v in values.items()})
        return compiled

    def close(self) -> None:
        """Frees the module's buffers and command buffers now (they also go with the module).
        The device is not closed: it is the caller's, or the process's shared default device."""
        for function in self.functions.values():
            with function._lock:
                function._prepared.clear()
                function._dynamic_constants = None

    def __enter__(self) -> "Module":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_program(source: str | os.PathLike | bytes, progress: Progress) -> tuple[Program, str]:
    """(program, origin) for an .fgx path, a .mlir or .onnx path, a SavedModel directory, StableHLO
    text or a serialized ONNX model (bytes)."""
    if isinstance(source, str) and "{" in source:  # MLIR text, not a path
        return _compile_text(source, progress), "<StableHLO text>"
    if isinstance(source, (bytes, bytearray)):
        return _compile_text(bytes(source), progress), "<ONNX model>"
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidArgument(f"fg.load: source must be an .fgx, .mlir or .onnx path, StableHLO text or ONNX bytes, "
                              f"got {type(source).__name__}")
    path = os.fspath(source)
    if os.path.isdir(path):  # a TF2 SavedModel: compiled through TensorFlow (needed here only)
        from compiler.frontends.savedmodel import compile_saved_model
        return compile_saved_model(path, progress=progress), path
    if path.endswith(".onnx"):
        from compiler.frontends.onnx.model import read_source  # imported late: needs the onnx package
        return _compile_text(read_source(path), progress), path
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InvalidArgument(f"cannot read '{path}': {e.strerror or e}") from None
    if data.startswith(executable.MAGIC[:4]) or path.endswith(".fgx"):
        return executable.from_bytes(data, path), path
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InvalidArgument(f"{path}: neither an .fgx file nor StableHLO text") from None
    return _compile_text(text, progress), path


def _compile_text(text: str | bytes, progress: Progress) -> Program:
    return CACHE.get_or_build(text, None, None, lambda: executable.build(text, progress=progress))


def load(source: str | os.PathLike, device: Device | str | None = None, *, timeout: float = 60.0,
         progress: bool = False, specialize_after: int | None = None) -> Module:
    """Load an .fgx file, or compile a StableHLO module (a .mlir path or its text), for `device`
    (a Device; a driver name or None: that driver's shared default device, `fg.default_device`).
    Calls wait at most `timeout` seconds. Compile stages that take over a second are reported on
    stderr; `progress=True` reports every stage. `specialize_after=N`: a shape called N times
    through the code compiled for every size of a dynamic dim gets code of its own (a compile,
    at its next call), which may run faster (the default, None: never)."""
    if specialize_after is not None and (not isinstance(specialize_after, int) or specialize_after < 1):
        raise InvalidArgument(f"fg.load: specialize_after must be a positive number of calls or None, got {specialize_after!r}")
    prog = Progress(threshold=0.0) if progress else Progress()
    program, origin = _read_program(source, prog)
    if not isinstance(device, Device):
        if device is not None and not isinstance(device, str):
            raise InvalidArgument(f"fg.load: device must be a Device, a driver name or None, got {type(device).__name__}")
        from fibergrid import default_device  # imported late: fibergrid imports this module
        device = default_device(device)
    return Module(program, device, timeout=timeout, progress=prog, origin=origin, specialize_after=specialize_after)
