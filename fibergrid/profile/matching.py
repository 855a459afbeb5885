"""Which program a submission ran, from its trace events alone.

A trace event says (serial, command index, workgroup range) and nothing of the program. Recording
each submission's program from Python costs 2-5 us a call (measured: bench.profile_overhead), more
than the whole budget of a 15 us model call, so by default nothing runs per call: every program
is described once, when its command buffer ends (collect.py observes the device's
lower_command_buffer), and at capture time each serial's events are matched against those
descriptions, and the device's live command buffers, by shape. A program's shape is its per-command tile counts (the C_TILES word; an indirect dispatch
matches any count; a jump, -2, marks a program with control flow, whose commands may run any
whole number of times); a submission's is the workgroups its events ran per command. Programs of the
same shape are one compiled function's lanes or signatures whose commands share names, so picking
any of them names the commands right; a submission of several command buffers at once (their
programs concatenated) matches none and keeps command indices as names, unless host timing
recorded it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal import command_buffer as hal_cb
from scheduler import layout as L

Shape = tuple[int, ...]  # per command: tiles it ran (-1: any, an indirect dispatch; -2: a jump)


def program_shape(program: Any) -> Shape:
    commands = program.commands
    tiles = commands[:, L.C_TILES].copy()
    tiles[commands[:, L.C_INDIRECT] != 0] = -1
    tiles[commands[:, L.C_OP] == L.OP_JUMP] = -2
    return tuple(int(t) for t in tiles)


def live_programs(device: Any) -> list[Any]:
    """The lowered programs of the device's command buffers that still exist."""
    out = []
    for cb in list(hal_cb._registry.values()):  # noqa: SLF001 — read-only walk of the live set
        lowered = getattr(cb, "lowered", None)
        program = getattr(lowered, "program", None)
        if cb.device is device and program is not None and len(program.commands):
            out.append(program)
    return out


def submission_shapes(events: np.ndarray) -> dict[int, dict[int, int]]:
    """serial -> {command: workgroups run} from the events."""
    if not len(events):
        return {}
    e = events[np.lexsort((events["command"], events["serial"]))]
    change = np.flatnonzero((np.diff(e["serial"]) != 0) | (np.diff(e["command"]) != 0)) + 1
    idx = np.concatenate([[0], change])
    totals = np.add.reduceat(e["end"] - e["first"], idx)
    out: dict[int, dict[int, int]] = {}
    for i, total in zip(idx, totals):
        out.setdefault(int(e["serial"][i]), {})[int(e["command"][i])] = int(total)
    return out


def _fits(shape: Shape, ran: dict[int, int]) -> bool:
    if max(ran) >= len(shape):
        return False
    looping = -2 in shape  # loops and branches: a command runs 0, 1 or more times
    for c, tiles in enumerate(shape):
        got = ran.get(c, 0)
        if tiles == -2 and got:
            return False
        if tiles >= 0 and got != tiles and not (looping and tiles > 0 and got % tiles == 0):
            return False
    return True


def match(events: np.ndarray, candidates: list[tuple[Shape, Any]]) -> dict[int, Any]:
    """serial -> the candidate (a program shape and what to answer for it) whose shape its
    events fit, for every serial that fits one shape."""
    shapes: dict[Shape, Any] = {}
    for shape, payload in candidates:
        shapes.setdefault(shape, payload)
    out: dict[int, Any] = {}
    memo: dict[tuple[tuple[int, int], ...], Any] = {}
    for serial, ran in submission_shapes(events).items():
        key = tuple(sorted(ran.items()))
        if key not in memo:
            fits = [payload for shape, payload in shapes.items() if _fits(shape, ran)]
            memo[key] = fits[0] if len(fits) == 1 else None
        if memo[key] is not None:
            out[serial] = memo[key]
    return out
