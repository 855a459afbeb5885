"""Executables: named entry points with their dispatch metadata, and a content-keyed cache.

An executable is what a driver dispatches. On the CPU drivers every entry point is a native
function with the kernel ABI of `hal.abi`; the executable holds whatever keeps that code alive
(a numba cfunc, an llvmlite engine) for as long as any command buffer references it. A GPU
driver's executable holds its pipelines.

One program may come in several formats (IREE's executable variants): an executable may carry
`variants`, the same entry points' code in other formats, and a device given an executable it
cannot run itself loads the variant in a format it supports (`Device.executable_for`), once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from common.errors import InvalidArgument

MAX_BINDINGS = 64
MAX_CONSTANTS = 256

# Format tag every CPU driver in this process loads: native code for the host's ISA, ABI `hal.abi`.
CPU_NATIVE_FORMAT = "cpu-native"


@dataclass(frozen=True)
class EntryPoint:
    """One kernel of an executable.

    binding_dtypes: element type a kernel expects in each binding (None when untyped); drivers
    use it only for messages and views. constant_types: numpy scalar type of each 32-bit
    constant word, so hosts can pass Python floats and ints.
    """

    name: str
    function: int
    workgroup_size: tuple[int, int, int]
    binding_count: int
    constant_count: int
    binding_dtypes: tuple[np.dtype | None, ...] = ()
    constant_types: tuple[np.dtype, ...] = ()
    local_memory_size: int = 0

    def __post_init__(self) -> None:
        if len(self.workgroup_size) != 3 or any(int(s) < 1 for s in self.workgroup_size):
            raise InvalidArgument(f"entry point '{self.name}': workgroup_size {self.workgroup_size} must be 3 positive ints")
        if not 0 <= self.binding_count <= MAX_BINDINGS:
            raise InvalidArgument(f"entry point '{self.name}': binding_count {self.binding_count} not in [0, {MAX_BINDINGS}]")
        if not 0 <= self.constant_count <= MAX_CONSTANTS:
            raise InvalidArgument(f"entry point '{self.name}': constant_count {self.constant_count} not in [0, {MAX_CONSTANTS}]")
        if not self.constant_types:
            object.__setattr__(self, "constant_types", (np.dtype(np.uint32),) * self.constant_count)
        if len(self.constant_types) != self.constant_count:
            raise InvalidArgument(f"entry point '{self.name}': {len(self.constant_types)} constant types for {self.constant_count} constants")

    def encode_constants(self, constants: Sequence[Any]) -> np.ndarray:
        """Packs host values into the kernel's 32-bit constant words, by each word's declared type."""
        words = np.zeros(self.constant_count, dtype=np.uint32)
        for i, (value, dtype) in enumerate(zip(constants, self.constant_types)):
            try:
                words[i : i + 1] = np.array([value], dtype=dtype).view(np.uint32)
            except (TypeError, ValueError, OverflowError) as e:
                raise InvalidArgument(f"dispatch '{self.name}': constant {i} = {value!r} is not a valid {dtype}: {e}") from None
        return words


@dataclass(frozen=True)
class Variant:
    """An executable's code in another format: the driver's `data` (SPIR-V bytes, ...) and the
    entry points as that format has them (workgroup sizes may differ from the CPU's)."""

    data: Any = field(repr=False)
    entry_points: tuple[EntryPoint, ...]


@dataclass(eq=False)
class Executable:
    """A set of entry points in one format, plus what keeps their code alive, plus the same
    program in other formats (`variants`, format -> Variant)."""

    entry_points: tuple[EntryPoint, ...]
    format: str = CPU_NATIVE_FORMAT
    keepalive: Any = field(default=None, repr=False)
    variants: dict[str, Variant] = field(default_factory=dict, repr=False)
    # The executable this one is a loaded variant of (Device.executable_for): what is known
    # about the program (its kernels' source names, for the profiler) is keyed on that one.
    origin: "Executable | None" = field(default=None, repr=False)

    @property
    def formats(self) -> tuple[str, ...]:
        """Every format this executable can be loaded in."""
        return (self.format, *self.variants)

    def __post_init__(self) -> None:
        self._by_name = {e.name: e for e in self.entry_points}
        if len(self._by_name) != len(self.entry_points):
            raise InvalidArgument(f"executable has duplicate entry point names: {[e.name for e in self.entry_points]}")

    def entry(self, name: str | int) -> EntryPoint:
        if isinstance(name, int):
            if not 0 <= name < len(self.entry_points):
                raise InvalidArgument(f"executable has no entry point #{name} (it has {len(self.entry_points)})")
            return self.entry_points[name]
        try:
            return self._by_name[name]
        except KeyError:
            raise InvalidArgument(f"executable has no entry point '{name}' (it has {sorted(self._by_name)})") from None


class ExecutableCache:
    """Content-keyed executables: preparing the same kernels twice costs one compile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Any, Executable] = {}

    def get_or_create(self, key: Any, create: Callable[[], Executable]) -> Executable:
        with self._lock:
            exe = self._entries.get(key)
        if exe is None:
            exe = create()
            with self._lock:
                exe = self._entries.setdefault(key, exe)
        return exe

    def __len__(self) -> int:
        return len(self._entries)
