"""`fg.load(source, device=None)`: a compiled model as a Python callable.

    mod = fg.load(jax.jit(f).lower(x).as_text(), device="local-task")
    y = mod(x)

The callable is the host program's runtime (compiler/pipeline.py): per call it checks the
arguments, uploads them, allocates the temporaries, records ONE command buffer (the dispatches,
with a barrier wherever the compiler said a dispatch depends on an earlier one), submits it,
waits with a timeout and reads the results back. Constants are uploaded once, at load.
No Python runs between dispatches: the whole call is one submission.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from compiler.pipeline import CompiledFunction, compile_module
from hal.device import Device
from hal.errors import InvalidArgument


def _source_text(source: str | os.PathLike) -> str:
    """MLIR text as given, or read from a .mlir path."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and source.endswith(".mlir")
                                           and "\n" not in source):
        try:
            with open(source, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise InvalidArgument(f"fg.load: cannot read '{os.fspath(source)}': {e.strerror}") from None
    if isinstance(source, str):
        return source
    raise InvalidArgument(f"fg.load: source must be MLIR text or a .mlir path, got {type(source).__name__}")


class LoadedModule:
    """A compiled function bound to a device; call it with numpy arrays."""

    def __init__(self, compiled: CompiledFunction, device: Device, timeout: float) -> None:
        self.compiled = compiled
        self.device = device
        self.timeout = timeout
        device.check_executable(compiled.executable)
        self._constants = {t.id: device.allocator.import_array(t.value)
                           for t in compiled.tensors if t.kind == "constant"}

    def _check(self, args: tuple[Any, ...]) -> list[np.ndarray]:
        c = self.compiled
        if len(args) != len(c.inputs):
            raise InvalidArgument(f"@{c.name} takes {len(c.inputs)} arguments, got {len(args)}")
        arrays = []
        for i, (arg, (shape, dtype)) in enumerate(zip(args, c.inputs)):
            a = np.asarray(arg)
            if a.shape != shape or a.dtype != dtype:
                raise InvalidArgument(f"@{c.name} argument {i}: expected {shape} {dtype}, got {a.shape} {a.dtype}")
            arrays.append(a)
        return arrays

    def __call__(self, *args: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        arrays = self._check(args)
        alloc = self.device.allocator
        views = dict(self._constants)
        for t in self.compiled.tensors:
            if t.kind == "input":
                views[t.id] = alloc.import_array(arrays[t.input_index])
            elif t.kind == "temp":
                views[t.id] = alloc.allocate_view(t.shape, t.dtype)
        if self.compiled.program:
            cb = self.device.create_command_buffer()
            for rec in self.compiled.program:
                if rec.barrier_before:
                    cb.execution_barrier()
                cb.dispatch(self.compiled.executable, rec.entry, rec.workgroup_count, [],
                            [views[t] for t in rec.tensors])
            cb.end()
            done = self.device.create_semaphore(0)
            self.device.queue_execute([cb], signal=[(done, 1)])
            done.wait(1, self.timeout)
        results = tuple(views[t].to_numpy().reshape(shape) for t, shape in self.compiled.results)
        return results[0] if len(results) == 1 else results


def load(source: str | os.PathLike, device: Device | str | None = None, *, function: str = "main",
         timeout: float = 60.0) -> LoadedModule:
    """Compile `function` of a StableHLO module (text or .mlir path) for `device` (a Device, a
    driver name, or None for the default driver); calls wait at most `timeout` seconds."""
    if not isinstance(device, Device):
        from fibergrid import create_device  # it picks the default driver; imported late (cycle)
        device = create_device(device)
    return LoadedModule(compile_module(_source_text(source), function), device, timeout)
