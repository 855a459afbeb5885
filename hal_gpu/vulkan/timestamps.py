"""GPU timestamps per dispatch (timestamp queries), for the profiler.

With timestamps on (`VulkanDevice.enable_timestamps`), every command buffer lowered from then
on carries a query pool of two queries per dispatch: written before the dispatch at the top of
the pipe (when the queue reaches it) and after it at the bottom (when its last invocation is
done), and reset at the start of the segment that holds them, so a reusable command buffer
measures every run. When a submission retires, the device reads the queries of the segments it
ran (`read`) into trace events of the scheduler's layout (worker, serial, command, first, end,
start_ns, end_ns): one row per dispatch, `worker` 0 (the queue), `serial` the HAL submission,
`command` its index among the submission's non-barrier commands, `end - first` its workgroups
(0 for an indirect dispatch: the count is only known on the GPU). Each submission is noted too
(`submitted`: host time, thread, command buffer ids), so the profiler can name the commands and
split a call into host, launch and GPU time as it does from a CPU device's trace rings.

Clocks: GPU ticks times `timestampPeriod` are ns on the GPU's own clock. `Timestamps` maps them
to the host's CLOCK_MONOTONIC with one offset measured at enable time: a one-timestamp
submission bracketed by host clock reads, the narrowest of a few (the offset's error is half
that bracket, printed as `calibration_ns`). Dispatches of one barrier region may overlap on the
GPU, so their spans may overlap too, as CPU workgroups of one region do. A command buffer
submitted again while a run of it is still in flight shares its queries: the later results win.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from common.errors import Unavailable

EVENT_DTYPE = np.dtype([("worker", "i8"), ("serial", "i8"), ("command", "i8"), ("first", "i8"), ("end", "i8"),
                        ("start_ns", "i8"), ("end_ns", "i8")])
_CALIBRATION_TRIES = 5


@dataclass
class QuerySlots:
    """A lowered command buffer's query pool: dispatch k owns queries 2k (start) and 2k+1 (end);
    `segments[j]` is the range of dispatch numbers recorded in segment j."""

    pool: object
    segments: list[range]
    workgroups: list[int]


class Timestamps:
    """One device's timestamp recorder: the clock mapping and the events read so far."""

    def __init__(self, device, capacity: int) -> None:
        v = device.vk
        bits = v.vkGetPhysicalDeviceQueueFamilyProperties(device.physical)[device.family].timestampValidBits
        self.period = float(device.properties.limits.timestampPeriod)
        if not bits or self.period <= 0:
            raise Unavailable(f"vulkan: {device.name} has no timestamps on its compute queue")
        self.mask = (1 << bits) - 1 if bits < 64 else (1 << 64) - 1
        self.capacity = capacity
        self.rows: list[tuple[int, int, int, int, int, int, int]] = []
        self.submissions: dict[int, tuple[int, int, tuple[int, ...]]] = {}  # serial -> (submit ns, thread, command buffer ids)
        self.dropped = 0
        self.offset_ns, self.calibration_ns = self._calibrate(device)

    def submitted(self, serial: int, command_buffer_ids: tuple[int, ...]) -> None:
        if len(self.submissions) < self.capacity:
            self.submissions[serial] = (time.monotonic_ns(), threading.get_native_id(), command_buffer_ids)

    def ns(self, ticks: int) -> int:
        """A GPU timestamp as host CLOCK_MONOTONIC ns."""
        return int((ticks & self.mask) * self.period) + self.offset_ns

    def _calibrate(self, device) -> tuple[int, int]:
        v, h = device.vk, device.handle
        pool = create_pool(device, 1)
        with device._lock:
            cb = v.vkAllocateCommandBuffers(h, v.VkCommandBufferAllocateInfo(
                sType=v.VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, commandPool=device.command_pool,
                level=v.VK_COMMAND_BUFFER_LEVEL_PRIMARY, commandBufferCount=1))[0]
        fence = v.vkCreateFence(h, v.VkFenceCreateInfo(sType=v.VK_STRUCTURE_TYPE_FENCE_CREATE_INFO), None)
        try:
            v.vkBeginCommandBuffer(cb, v.VkCommandBufferBeginInfo(sType=v.VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO))
            v.vkCmdResetQueryPool(cb, pool, 0, 1)
            v.vkCmdWriteTimestamp(cb, v.VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, pool, 0)
            v.vkEndCommandBuffer(cb)
            best = None
            for _ in range(_CALIBRATION_TRIES):
                v.vkResetFences(h, 1, [fence])
                before = time.monotonic_ns()
                with device._lock:
                    v.vkQueueSubmit(device.queue, 1, [v.VkSubmitInfo(sType=v.VK_STRUCTURE_TYPE_SUBMIT_INFO,
                                                                     commandBufferCount=1, pCommandBuffers=[cb])], fence)
                v.vkWaitForFences(h, 1, [fence], v.VK_TRUE, 10**9)
                after = time.monotonic_ns()
                ticks = _results(v, h, pool, 0, 1)[0][0]
                width = after - before
                if best is None or width < best[1]:
                    best = ((before + after) // 2 - int((ticks & self.mask) * self.period), width)
            return best[0], best[1] // 2
        finally:
            v.vkDestroyFence(h, fence, None)
            with device._lock:
                v.vkFreeCommandBuffers(h, device.command_pool, 1, [cb])
            v.vkDestroyQueryPool(h, pool, None)

    def read(self, device, slots: QuerySlots, segment: int, serial: int, commands: list[int]) -> None:
        """The queries of `segment` of a retired submission, as events; `commands[k]` is
        dispatch k's command index in the submission. Dispatches that did not run (an earlier
        failure skipped them) have no results and leave no event."""
        numbers = slots.segments[segment]
        if not len(numbers):
            return
        v = device.vk
        first = numbers.start
        values = _results(v, device.handle, slots.pool, 2 * first, 2 * len(numbers))
        for k in numbers:
            (start, start_ok), (end, end_ok) = values[2 * (k - first)], values[2 * (k - first) + 1]
            if not (start_ok and end_ok):
                continue
            if len(self.rows) >= self.capacity:
                self.dropped += 1
                continue
            t0, t1 = self.ns(start), self.ns(end)
            self.rows.append((0, serial, commands[k], 0, slots.workgroups[k], t0, max(t0, t1)))

    def events(self) -> np.ndarray:
        return np.array(self.rows, dtype=EVENT_DTYPE) if self.rows else np.zeros(0, EVENT_DTYPE)


def create_pool(device, count: int):
    v = device.vk
    return v.vkCreateQueryPool(device.handle, v.VkQueryPoolCreateInfo(
        sType=v.VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO, queryType=v.VK_QUERY_TYPE_TIMESTAMP, queryCount=count), None)


def _results(v, handle, pool, first: int, count: int) -> list[tuple[int, bool]]:
    """(value, available) of `count` queries: 64-bit values, each followed by its availability."""
    data = v.ffi.new("uint64_t[]", 2 * count)
    try:
        v.vkGetQueryPoolResults(handle, pool, first, count, v.ffi.sizeof(data), data, 16,
                                v.VK_QUERY_RESULT_64_BIT | v.VK_QUERY_RESULT_WITH_AVAILABILITY_BIT)
    except v.VkNotReady:
        pass  # some are unavailable: their availability words say which
    return [(int(data[2 * i]), bool(data[2 * i + 1])) for i in range(count)]


def workgroups_of(dispatch) -> int:
    return 0 if dispatch.indirect is not None else math.prod(int(c) for c in dispatch.workgroup_count)
