"""Lowering a recorded command buffer into the scheduler's grid program, once, at `end()`.

Everything a worker needs is resolved here into raw addresses: each dispatch gets its
DispatchState (hal/abi.py) with its constants and binding tables; updates get their data copied
into memory the program owns. Replaying the program costs no Python per command.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from hal.abi import DISPATCH_STATE_DTYPE
from common.memory import aligned_bytes
from hal.command_buffer import Barrier, CommandBuffer, Copy, Dispatch, Fill, Jump, Update
from scheduler import GridProgram
from scheduler import layout as L
from scheduler.reserved_call import ReservedCall


@dataclass
class LoweredCommandBuffer:
    program: GridProgram
    keepalive: list  # dispatch states, tables, update data, executables and buffers referenced
    # id(buffer) -> [(binding pointer table, slot, offset)] for every dispatch binding of it, and
    # the buffers that fills, copies or indirect counts use by address (never rebound).
    binding_sites: dict[int, list[tuple[np.ndarray, int, int]]] = field(default_factory=dict)
    fixed_buffers: set[int] = field(default_factory=set)
    # execute_and_wait's calls on a reserved submission slot (for one semaphore), and the lock
    # that keeps two threads from calling through it at once.
    reserved: ReservedCall | None = None
    call_lock: threading.Lock = field(default_factory=threading.Lock)

    def rebind(self, buffer, address: int) -> bool:
        """Points every dispatch binding of `buffer` at `address` (+ the binding's offset)."""
        if id(buffer) in self.fixed_buffers or id(buffer) not in self.binding_sites:
            return False
        for table, slot, offset in self.binding_sites[id(buffer)]:
            table[slot] = address + offset
        return True


def _tiles(length: int) -> int:
    return -(-length // L.TRANSFER_TILE_BYTES)


def _dispatch_state(d: Dispatch, keep: list, sites: dict) -> int:
    state = aligned_bytes(DISPATCH_STATE_DTYPE.itemsize).view(DISPATCH_STATE_DTYPE)
    ptrs = np.array([b.buffer.address + b.offset for b in d.bindings] or [0], dtype=np.uint64)
    for i, b in enumerate(d.bindings):
        sites.setdefault(id(b.buffer), []).append((ptrs, i, b.offset))
    lengths = np.array([b.length for b in d.bindings] or [0], dtype=np.uint64)
    constants = d.constants if len(d.constants) else np.zeros(1, np.uint32)
    state["workgroup_size"] = d.entry.workgroup_size
    state["workgroup_count"] = d.workgroup_count
    state["constant_count"] = d.entry.constant_count
    state["binding_count"] = d.entry.binding_count
    state["constants"] = constants.ctypes.data
    state["binding_ptrs"] = ptrs.ctypes.data
    state["binding_lengths"] = lengths.ctypes.data
    keep += [state, ptrs, lengths, constants, d.executable, [b.buffer for b in d.bindings]]
    return state.ctypes.data


def _regions(cb: CommandBuffer) -> tuple[list[list], dict[int, int]]:
    """The commands split at barriers (a jump is a region of its own), and per label (by id)
    the index of the region it starts."""
    starts: dict[int, list] = {}
    for c in cb.commands:
        if isinstance(c, Jump):
            starts.setdefault(min(c.target.position, len(cb.commands)), []).append(c.target)
    regions: list[list] = [[]]
    at: dict[int, int] = {}
    for position in range(len(cb.commands) + 1):
        for label in starts.get(position, ()):
            if regions[-1]:
                regions.append([])
            at[id(label)] = len(regions) - 1
        if position == len(cb.commands):
            break
        c = cb.commands[position]
        if isinstance(c, Barrier):
            if regions[-1]:
                regions.append([])
        else:
            regions[-1].append(c)
    if not regions[-1]:
        regions.pop()
    return regions, at


def lower(cb: CommandBuffer, max_workgroup_count: int) -> LoweredCommandBuffer:
    rows: list[np.ndarray] = []
    regions: list[tuple[int, int]] = []
    keep: list = []
    sites: dict[int, list] = {}
    fixed: set[int] = set()
    index = 0
    split, label_region = _regions(cb)
    for r, region in enumerate(split):
        first = len(rows)
        for cmd in region:
            row = np.zeros(L.CMD_WORDS, dtype=np.int64)
            row[L.C_INDEX] = index
            row[L.C_PROGRAM] = cb.id
            index += 1
            if isinstance(cmd, Dispatch):
                row[L.C_OP] = L.OP_DISPATCH
                row[L.C_FN] = cmd.entry.function
                row[L.C_STATE] = _dispatch_state(cmd, keep, sites)
                row[L.C_COUNT : L.C_COUNT + 3] = cmd.workgroup_count
                row[L.C_TILES] = int(np.prod(cmd.workgroup_count))
                if cmd.indirect is not None:
                    row[L.C_INDIRECT] = cmd.indirect.buffer.address + cmd.indirect.offset
                    row[L.C_MAX_COUNT] = max_workgroup_count
                    keep.append(cmd.indirect.buffer)
                    fixed.add(id(cmd.indirect.buffer))
            elif isinstance(cmd, Fill):
                row[L.C_OP] = L.OP_FILL
                row[L.C_FN] = cmd.target.buffer.address + cmd.target.offset
                row[L.C_STATE] = cmd.pattern
                row[L.C_COUNT] = cmd.target.length
                row[L.C_PATTERN_LEN] = cmd.pattern_length
                row[L.C_TILES] = _tiles(cmd.target.length)
                keep.append(cmd.target.buffer)
                fixed.add(id(cmd.target.buffer))
            elif isinstance(cmd, (Copy, Update)):
                if isinstance(cmd, Update):
                    data = np.frombuffer(cmd.data, dtype=np.uint8).copy()
                    source = data.ctypes.data
                    keep.append(data)
                else:
                    source = cmd.source.buffer.address + cmd.source.offset
                    keep.append(cmd.source.buffer)
                    fixed.add(id(cmd.source.buffer))
                row[L.C_OP] = L.OP_COPY
                row[L.C_FN] = cmd.target.buffer.address + cmd.target.offset
                row[L.C_STATE] = source
                row[L.C_COUNT] = cmd.target.length
                row[L.C_TILES] = _tiles(cmd.target.length)
                keep.append(cmd.target.buffer)
                fixed.add(id(cmd.target.buffer))
            elif isinstance(cmd, Jump):
                row[L.C_OP] = L.OP_JUMP
                if cmd.predicate is not None:
                    row[L.C_FN] = cmd.predicate.buffer.address + cmd.predicate.offset
                    row[L.C_COUNT] = cmd.predicate.length
                    keep.append(cmd.predicate.buffer)
                    fixed.add(id(cmd.predicate.buffer))
                row[L.C_STATE] = cmd.equals
                row[L.C_JUMP_DELTA] = label_region[id(cmd.target)] - r
            rows.append(row)
        regions.append((first, len(rows)))
    commands = np.array(rows, dtype=np.int64).reshape(-1, L.CMD_WORDS)
    return LoweredCommandBuffer(GridProgram(commands, np.array(regions, dtype=np.int64).reshape(-1, 2)), keep, sites, fixed)
