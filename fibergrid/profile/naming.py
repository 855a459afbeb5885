"""Naming the commands of a submitted program: what a trace event's command index was.

A trace event carries (submission serial, command index in the submitted program). The program's
command rows carry the command buffer id and the index inside it (scheduler/layout.py C_PROGRAM,
C_INDEX), and `hal.command_buffer.lookup(id)` finds the recorded command: its entry point,
workgroup count and bindings. That gives every dispatch its entry name ("main_dispatch_3_matmul")
and its bytes; what a user wants is the model's own name for it (the StableHLO ops it came from),
which only the compiler knows. Whoever knows it (the CLI, the `fg.load` hook of a profiling
session) registers it per executable with `register_sources`; entries without one keep their
entry name.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any

from hal.command_buffer import Barrier, Copy, Dispatch, Fill, Jump, Update, lookup
from scheduler import layout as L


@dataclass(frozen=True)
class KernelSource:
    """Where an entry point came from: a display label, the source ops and the work it does."""

    label: str  # e.g. "dot_general+add+maximum @12 (jit(f)/dot_general)"
    ops: tuple[str, ...] = ()  # "dot_general@12:10" per op fused into the kernel
    flops: int | None = None  # per dispatch, where the kernel IR tells
    kind: str = ""  # the region's kind: matmul, conv, elementwise, reduction, sort


@dataclass(frozen=True)
class CommandInfo:
    """One command of a submitted program, as the profile shows it."""

    name: str  # the display name: the source label, else the entry name, else "fill"/"copy"
    entry: str  # entry point name ("" for transfers)
    kind: str  # dispatch kind (matmul, elementwise...) or "fill", "copy"
    tiles: int  # workgroups (dispatch) or 64 KiB tiles (transfers) per run, as recorded
    workgroup_count: tuple[int, int, int]
    bytes: int  # bytes read + written per run (binding lengths; 2x length for a copy)
    flops: int | None
    region: int  # index of its barrier region in the program
    source: KernelSource | None = None


@dataclass(frozen=True)
class ProgramInfo:
    commands: tuple[CommandInfo, ...]
    regions: tuple[tuple[int, int], ...]


_sources: "weakref.WeakKeyDictionary[Any, dict[str, KernelSource]]" = weakref.WeakKeyDictionary()


def register_sources(executable: Any, sources: dict[str, KernelSource]) -> None:
    """Names for the entry points of `executable` (a hal Executable), used by later profiles."""
    _sources.setdefault(executable, {}).update(sources)


def sources_of(executable: Any) -> dict[str, KernelSource]:
    """The names registered for `executable`, or for the one it was loaded from (a GPU
    device loads a variant of the executable the compiler made: hal Executable.origin)."""
    try:
        found = _sources.get(executable)
    except TypeError:  # not weak-referenceable
        return {}
    origin = getattr(executable, "origin", None)
    if found is None:
        return sources_of(origin) if origin is not None else {}
    return found


def _kind_of(entry: str) -> str:
    """The compiler names entries FUNCTION_dispatch_N_KIND; hand-written kernels have no kind."""
    head, sep, kind = entry.rpartition("_")
    return kind if sep and "_dispatch_" in entry else "kernel"


def _describe(cmd: Any, row: Any, region: int) -> CommandInfo:
    tiles = int(row[L.C_TILES])
    if cmd is not None:
        return _describe_recorded(cmd, tiles, region)
    op = int(row[L.C_OP])
    kind = {L.OP_DISPATCH: "dispatch", L.OP_FILL: "fill", L.OP_COPY: "copy", L.OP_JUMP: "jump"}.get(op, "command")
    return CommandInfo(f"{kind} #{int(row[L.C_INDEX])}", "", kind, tiles, (tiles, 1, 1), 0, None, region)


def _describe_recorded(cmd: Any, tiles: int, region: int) -> CommandInfo:
    """A recorded command; `tiles`: its work items as the device splits them (0: the
    workgroups of a dispatch)."""
    if isinstance(cmd, Dispatch):
        entry = cmd.entry.name
        source = sources_of(cmd.executable).get(entry)
        count = tuple(int(c) for c in cmd.workgroup_count)
        return CommandInfo(source.label if source else entry, entry, (source.kind if source and source.kind else _kind_of(entry)),
                           tiles or math.prod(count), count, sum(b.length for b in cmd.bindings),
                           source.flops if source else None, region, source)
    if isinstance(cmd, Fill):
        return CommandInfo("fill", "", "fill", tiles, (tiles, 1, 1), cmd.target.length, None, region)
    if isinstance(cmd, (Copy, Update)):
        kind = "copy" if isinstance(cmd, Copy) else "update"
        return CommandInfo(kind, "", kind, tiles, (tiles, 1, 1), 2 * cmd.target.length, None, region)
    if isinstance(cmd, Jump):  # control flow: runs no tiles, so no event ever names it
        return CommandInfo("jump", "", "jump", 0, (0, 1, 1), 0 if cmd.predicate is None else cmd.predicate.length, None, region)
    raise TypeError(f"not a recorded command: {cmd!r}")


def describe_program(program: Any) -> ProgramInfo:
    """A scheduler GridProgram's commands, named (call while its command buffers are alive)."""
    rows = program.commands
    region_of = [0] * len(rows)
    regions = tuple((int(r[0]), int(r[1])) for r in program.regions)  # first, end (then scheduler data)
    for r, (a, b) in enumerate(regions):
        for c in range(a, b):
            region_of[c] = r
    commands, recorded = [], {}
    for c, row in enumerate(rows):
        cb_id, index = int(row[L.C_PROGRAM]), int(row[L.C_INDEX])
        if cb_id not in recorded:  # CommandBuffer.command() rebuilds its list per call
            cb = lookup(cb_id)
            recorded[cb_id] = [x for x in cb.commands if not isinstance(x, Barrier)] if cb is not None else []
        cmd = recorded[cb_id][index] if index < len(recorded[cb_id]) else None
        commands.append(_describe(cmd, row, region_of[c]))
    return ProgramInfo(tuple(commands), regions)


def describe_command_buffers(command_buffers: Any) -> ProgramInfo:
    """The commands of one GPU submission (hal CommandBuffers, in order), named: a GPU queue
    runs recorded commands, not a scheduler program, so they are read from the recording.
    Command indices count non-barrier commands across the submission, as GPU trace events do
    (hal_gpu/vulkan/timestamps.py); a barrier, and each command buffer's start, opens a region."""
    commands: list[CommandInfo] = []
    regions: list[tuple[int, int]] = []
    start = 0
    for cb in command_buffers:
        for cmd in list(cb.commands) + [Barrier()]:
            if isinstance(cmd, Barrier):
                if len(commands) > start:
                    regions.append((start, len(commands)))
                    start = len(commands)
                continue
            commands.append(_describe_recorded(cmd, 0 if isinstance(cmd, Dispatch) else 1, len(regions)))
    return ProgramInfo(tuple(commands), tuple(regions))
