"""`fg.load(source, device=None)`: a compiled module as a Python object.

    mod = fg.load("model.fgx", device="local-task")     # or a .mlir path, or StableHLO text
    y = mod(x)                                            # runs @main; numpy in, numpy out
    z = mod.other(x) ; z = mod["other"](x)                # the module's other public functions

StableHLO goes through the on-disk compile cache (compiler/cache.py), so only the first load of a
model pays for parsing and LLVM. A function with dynamic dims is compiled once per input-shape
signature it is called with (again through the cache), unless the .fgx carries that one already.

The per-call cost is what a small model feels, so everything that can be done once per shape
signature is: the buffers are allocated, the constants uploaded and ONE reusable command buffer
recorded when a signature is first called. A call then only checks its arguments, copies them
into the input buffers, submits, waits and copies the results out. A reusable command buffer
runs one submission at a time, so calls of one signature are serialised by a lock; calls of
different signatures (or different modules) run concurrently.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any

import numpy as np

from compiler import executable
from compiler.cache import CACHE
from compiler.executable import Program, format_shape
from compiler.pipeline import CompiledFunction, Progress, Shapes, parse
from hal.device import Device
from hal.errors import Error, InvalidArgument, Unimplemented


class _Prepared:
    """One shape signature of a function made ready to run on a device: buffers allocated,
    constants uploaded, the host program recorded into one reusable command buffer."""

    def __init__(self, compiled: CompiledFunction, device: Device, timeout: float) -> None:
        self.compiled = compiled
        self._device = device
        self._timeout = timeout
        device.check_executable(compiled.executable)
        alloc = device.allocator
        views = {t.id: alloc.import_array(t.value) if t.kind == "constant" else alloc.allocate_view(t.shape, t.dtype)
                 for t in compiled.tensors}
        # Host views of the buffers, made once: a call copies through them with no HAL checks.
        self._inputs = [(t.input_index, views[t.id].buffer.view(t.dtype, t.shape))
                        for t in compiled.tensors if t.kind == "input"]
        self._results = [views[t].buffer.view(views[t].dtype, shape) for t, shape in compiled.results]
        self._command_buffer = None
        if compiled.program:
            cb = device.create_command_buffer("reusable")
            for rec in compiled.program:
                if rec.barrier_before:
                    cb.execution_barrier()
                cb.dispatch(compiled.executable, rec.entry, rec.workgroup_count, [], [views[t] for t in rec.tensors])
            cb.end()
            self._command_buffer = cb
        self._semaphore = device.create_semaphore(0)
        self._submissions = 0
        self._lock = threading.Lock()

    def run(self, arrays: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        with self._lock:
            for index, view in self._inputs:
                np.copyto(view, arrays[index])
            if self._command_buffer is not None:
                self._submissions += 1
                self._device.queue_execute([self._command_buffer], signal=[(self._semaphore, self._submissions)])
                self._semaphore.wait(self._submissions, self._timeout)
            return tuple(view.copy() for view in self._results)


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
        self._module = module
        self._entry = entry
        self._prepared: dict[Shapes, _Prepared] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        args = ", ".join(format_shape(s, d) for s, d in self.signature)
        return f"<fibergrid function @{self.name}({args})>"

    @property
    def compiled(self) -> CompiledFunction:
        """The compiled function of a static signature (for inspection: program, executable)."""
        if self._entry.is_dynamic:
            raise InvalidArgument(f"@{self.name} has dynamic dims: it is compiled per call signature")
        return next(iter(self._entry.specializations.values()))

    def _arrays(self, args: tuple[Any, ...]) -> list[np.ndarray]:
        if len(args) != len(self.signature):
            raise InvalidArgument(f"{self.name}: takes {len(self.signature)} arguments, got {len(args)}")
        arrays = []
        for i, (arg, (shape, dtype)) in enumerate(zip(args, self.signature)):
            a = _as_array(arg, dtype, f"{self.name}: argument {i}")
            if a.dtype != dtype or a.ndim != len(shape) or any(d is not None and d != s for d, s in zip(shape, a.shape)):
                raise InvalidArgument(f"{self.name}: argument {i}: expected {format_shape(shape, dtype)}, "
                                      f"got {format_shape(a.shape, a.dtype)}")
            arrays.append(a)
        return arrays

    def _prepare(self, shapes: Shapes) -> _Prepared:
        with self._lock:
            prepared = self._prepared.get(shapes)
            if prepared is None:
                compiled = self._entry.specializations.get(shapes) or self._module._specialize(self.name, shapes)
                prepared = self._prepared[shapes] = _Prepared(compiled, self._module.device, self._module.timeout)
            return prepared

    def __call__(self, *args: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        arrays = self._arrays(args)
        shapes = tuple(a.shape for a in arrays)
        prepared = self._prepared.get(shapes) or self._prepare(shapes)
        try:
            results = prepared.run(arrays)
        except Error:
            # A failed or timed-out submission may leave the command buffer in flight or its
            # semaphore failed: the next call of this signature starts from fresh state.
            with self._lock:
                if self._prepared.get(shapes) is prepared:
                    del self._prepared[shapes]
            raise
        return results[0] if len(results) == 1 else results


class Module:
    """A compiled program bound to a device. `module(...)` runs @main; other public functions
    are attributes (`module.name`) or items (`module["name"]`)."""

    def __init__(self, program: Program, device: Device, *, owns_device: bool, timeout: float,
                 progress: Progress, origin: str) -> None:
        self.program = program
        self.device = device
        self.timeout = timeout
        self.origin = origin
        self._owns_device = owns_device
        self._progress = progress
        self._parsed = None
        self._parse_lock = threading.Lock()
        self.functions = {name: Function(self, entry) for name, entry in program.functions.items()}

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

    def __call__(self, *args: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        return self["main"](*args)

    @property
    def compiled(self) -> CompiledFunction:
        """@main's compiled function (static signatures)."""
        return self["main"].compiled

    def _specialize(self, name: str, shapes: Shapes) -> CompiledFunction:
        """Compile `name` for `shapes` from the program's source, through the disk cache."""
        source = self.program.source
        if source is None:
            raise InvalidArgument(f"{self.origin}: @{name} has no code for input shapes {shapes} and no source to compile")

        def build() -> Program:
            with self._parse_lock:  # parse once per module: a large model takes seconds
                if self._parsed is None:
                    self._parsed = parse(source, self._progress)
            program = executable.build(source, [name], {name: [shapes]}, self._progress, module=self._parsed)
            return dataclasses.replace(program, source=None)  # the module keeps it once, not per entry

        return CACHE.get_or_build(source, [name], shapes, build).functions[name].specializations[shapes]

    def close(self) -> None:
        """Closes the device if `load` created it."""
        if self._owns_device:
            self.device.close()

    def __enter__(self) -> "Module":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_program(source: str | os.PathLike, progress: Progress) -> tuple[Program, str]:
    """(program, origin) for an .fgx path, a .mlir path or StableHLO text."""
    if isinstance(source, str) and "{" in source:  # MLIR text, not a path
        return _compile_text(source, progress), "<StableHLO text>"
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidArgument(f"fg.load: source must be an .fgx or .mlir path or StableHLO text, got {type(source).__name__}")
    path = os.fspath(source)
    if path.endswith(".onnx"):
        raise Unimplemented(f"{path}: ONNX models are not supported yet; export StableHLO (e.g. with jax) instead")
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


def _compile_text(text: str, progress: Progress) -> Program:
    return CACHE.get_or_build(text, None, None, lambda: executable.build(text, progress=progress))


def load(source: str | os.PathLike, device: Device | str | None = None, *, timeout: float = 60.0,
         progress: bool = False) -> Module:
    """Load an .fgx file, or compile a StableHLO module (a .mlir path or its text), for `device`
    (a Device, a driver name, or None for the default driver; a device created here is closed by
    `Module.close`). Calls wait at most `timeout` seconds. Compile stages that take over a second
    are reported on stderr; `progress=True` reports every stage."""
    prog = Progress(threshold=0.0) if progress else Progress()
    program, origin = _read_program(source, prog)
    owns = not isinstance(device, Device)
    if owns:
        from fibergrid import create_device  # it picks the default driver; imported late (cycle)
        device = create_device(device)
    return Module(program, device, owns_device=owns, timeout=timeout, progress=prog, origin=origin)
