"""Collection from a GPU device: its dispatches timed by the GPU, into the same DeviceCapture.

A GPU has no worker threads to trace; its driver times each dispatch with timestamp queries
(hal_gpu/vulkan/timestamps.py: `enable_timestamps`, `timestamp_events`) and notes each
submission's host time and command buffers. The capture has one lane, the GPU queue; its events
have the CPU trace's layout (one row per dispatch, its workgroups as `end - first`), so the
per-dispatch table, the call breakdown (host, launch = submit -> first dispatch on the GPU,
kernels, gaps, completion) and the Chrome trace are computed by the same code as for a CPU
device. What a GPU capture cannot have: per-thread CPU accounting, steals, parks.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from fibergrid.profile.collect import Call, DeviceCapture, Submission
from fibergrid.profile.naming import ProgramInfo, describe_command_buffers
from hal.command_buffer import lookup

QUEUE_LANE = "gpu queue"
MAX_DESCRIBED = 10_000  # command buffers described at lowering, remembered per device


class AttachedQueue:
    """One traced GPU device: timestamps on, every command buffer described as it is lowered
    (a one-shot command buffer may be gone by capture time)."""

    def __init__(self, device: Any, label: str, capacity: int) -> None:
        self.device = device
        self.label = label
        device.enable_timestamps(capacity)
        self._described: dict[int, ProgramInfo] = {}
        lower = device.lower_command_buffer

        def observed_lower(command_buffer: Any) -> Any:
            lowered = lower(command_buffer)
            if len(self._described) < MAX_DESCRIBED:
                self._described[command_buffer.id] = describe_command_buffers([command_buffer])
            return lowered

        device.lower_command_buffer = observed_lower
        self.reset()

    def reset(self) -> None:
        self.start_ns = time.monotonic_ns()

    def _program(self, ids: tuple[int, ...]) -> ProgramInfo | None:
        """The submission's commands: described anew where its command buffers are alive (kernel
        names registered since count), else as described when lowered."""
        live = [lookup(i) for i in ids]
        if all(cb is not None for cb in live):
            return describe_command_buffers(live)
        known = [self._described.get(i) for i in ids]
        if len(known) == 1 or any(k is None for k in known):
            return known[0] if len(known) == 1 else None
        commands, regions = [], []
        for info in known:
            regions += [(a + len(commands), b + len(commands)) for a, b in info.regions]
            commands += list(info.commands)
        return ProgramInfo(tuple(commands), tuple(regions))

    def capture(self, calls: list[Call] | None = None) -> DeviceCapture:
        events, submitted = self.device.timestamp_events()
        end = time.monotonic_ns()
        events = np.sort(events[events["start_ns"] >= self.start_ns], order="start_ns")
        keys: dict[tuple[int, ...], int] = {}
        programs: dict[int, ProgramInfo] = {}
        submissions: dict[int, Submission] = {}
        for serial, (submit_ns, thread, ids) in submitted.items():
            if submit_ns < self.start_ns:
                continue
            if ids not in keys:
                keys[ids] = len(keys)
                info = self._program(ids)
                if info is not None:
                    programs[keys[ids]] = info
            submissions[serial] = Submission(serial, submit_ns, keys[ids], thread)
        dropped = self.device.timestamps.dropped if self.device.timestamps is not None else 0
        return DeviceCapture(self.label, self.device.driver, 1, self.start_ns, end, events, dropped, [], [], {},
                             submissions, programs, [], list(calls or []), True, (QUEUE_LANE,))

    def detach(self) -> None:
        self.device.__dict__.pop("lower_command_buffer", None)
        if not self.device.closed:
            self.device.disable_timestamps()
