"""The Vulkan device: a logical device with one compute queue.

Submissions go to the queue with their waits and signals as timeline-semaphore operations
(Vulkan 1.2 core); `queue_execute` returns at once, and a submission whose waits are not yet known
to have succeeded is held on the host until they are (hal_gpu/host_queue.py says why). The driver knows a submission finished when its
signal semaphores reached their values (one that signals nothing carries a fence): then it reads
the kernels' status words and fails the submission's semaphores if one is non-zero
(hal_gpu/vulkan/semaphore.py), and with timestamps on, the dispatches' GPU times (timestamps.py).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

import numpy as np

from hal.command_buffer import Barrier, CommandBuffer
from hal.device import Device, DeviceLimits
from common.errors import Aborted, DeadlineExceeded, ResourceExhausted, Unavailable
from hal.executable import EntryPoint, Executable
from hal.semaphore import Semaphore
from hal.spirv_abi import FORMAT
from hal_gpu.host_queue import Held, HostQueue, fail_signals, wait_failure
from hal_gpu.vulkan import command_buffer, executable, timestamps
from hal_gpu.vulkan.allocator import VulkanAllocator
from hal_gpu.vulkan.driver import compute_queue_family, device_name, vk
from hal_gpu.vulkan.semaphore import VulkanSemaphore



@dataclass
class _Submission:
    fence: object  # None when it signals semaphores (those say when it is done)
    command_buffers: list
    waits: list
    signals: list
    segments: list  # (command buffer, handle, first segment of it) as queued
    origin: "_Origin"


@dataclass(frozen=True)
class _Origin:
    """The HAL submission (queue_execute) a queued step belongs to: its serial and, with
    timestamps on, each command buffer's first command index in it (trace events count commands
    across the submission, as the CPU scheduler's do)."""

    serial: int
    first_command: dict


class VulkanDevice(Device):
    driver = "vulkan"
    formats = (FORMAT,)
    allocator_class = VulkanAllocator

    def __init__(self, physical, **_options) -> None:
        self.vk = v = vk()
        self.physical = physical
        self.handle = None
        self.properties = v.vkGetPhysicalDeviceProperties(physical)
        self.memory_properties = v.vkGetPhysicalDeviceMemoryProperties(physical)
        self.name = device_name(physical)
        lim = self.properties.limits
        heaps = [self.memory_properties.memoryHeaps[i].size for i in range(self.memory_properties.memoryHeapCount)]
        self.max_allocation_size = max(heaps)
        limits = DeviceLimits(
            max_workgroup_count=min(lim.maxComputeWorkGroupCount[0], lim.maxComputeWorkGroupCount[1], lim.maxComputeWorkGroupCount[2]),
            local_memory_size=lim.maxComputeSharedMemorySize,
            max_update_size=64 * 1024,
            max_workgroup_size=tuple(lim.maxComputeWorkGroupSize[i] for i in range(3)),
            max_workgroup_invocations=lim.maxComputeWorkGroupInvocations,
            max_constant_bytes=lim.maxStorageBufferRange,
            binding_offset_alignment=1,
            fill_pattern_sizes=(1, 2, 4),
        )
        self.family = compute_queue_family(physical)
        features = v.vkGetPhysicalDeviceFeatures(physical)
        f11 = v.VkPhysicalDeviceVulkan11Features(sType=v.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES)
        f12 = v.VkPhysicalDeviceVulkan12Features(sType=v.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, pNext=f11)
        v.vkGetPhysicalDeviceFeatures2(physical, v.VkPhysicalDeviceFeatures2(sType=v.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, pNext=f12))
        if not f12.timelineSemaphore:
            raise Unavailable(f"vulkan: {self.name} has no timeline semaphores (Vulkan 1.2)")
        want11 = v.VkPhysicalDeviceVulkan11Features(sType=v.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                                                    storageBuffer16BitAccess=f11.storageBuffer16BitAccess)
        want12 = v.VkPhysicalDeviceVulkan12Features(sType=v.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, pNext=want11,
                                                    timelineSemaphore=1, storageBuffer8BitAccess=f12.storageBuffer8BitAccess,
                                                    shaderInt8=f12.shaderInt8, shaderFloat16=f12.shaderFloat16)
        base = v.VkPhysicalDeviceFeatures(shaderInt64=features.shaderInt64, shaderFloat64=features.shaderFloat64,
                                          shaderInt16=features.shaderInt16, robustBufferAccess=features.robustBufferAccess)
        queue_info = v.VkDeviceQueueCreateInfo(sType=v.VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, queueFamilyIndex=self.family,
                                               queueCount=1, pQueuePriorities=[1.0])
        try:
            self.handle = v.vkCreateDevice(physical, v.VkDeviceCreateInfo(
                sType=v.VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, pNext=want12, queueCreateInfoCount=1, pQueueCreateInfos=[queue_info],
                pEnabledFeatures=base), None)
        except v.VkException as e:
            raise Unavailable(f"vulkan: vkCreateDevice on {self.name} failed: {type(e).__name__}") from None
        super().__init__(limits)
        self.queue = v.vkGetDeviceQueue(self.handle, self.family, 0)
        self.command_pool = v.vkCreateCommandPool(self.handle, v.VkCommandPoolCreateInfo(
            sType=v.VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO, queueFamilyIndex=self.family,
            flags=v.VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT), None)
        self._lock = threading.RLock()  # the queue and the command pool need external sync
        self._users = 0  # threads inside a Vulkan call on this device outside the lock (waits)
        self._idle = threading.Condition(self._lock)
        self._pending: list[_Submission] = []
        self._held = HostQueue(self._known, self._launch, self._retire_completed)  # work: (segments, _Origin)
        self._fences: list = []
        self._semaphores = _WeakSet()
        self._serial = 0  # HAL submissions so far
        self.timestamps: timestamps.Timestamps | None = None

    def __repr__(self) -> str:
        return f"<Device vulkan {self.name}>"

    @contextlib.contextmanager
    def using(self):
        """Marks a Vulkan call made outside the lock (a blocking wait), so `close` does not
        destroy the device under it; Aborted once the device is closed."""
        with self._lock:
            if self.closed or self.handle is None:
                raise Aborted(f"{self!r} is closed")
            self._users += 1
        try:
            yield self.handle
        finally:
            with self._lock:
                self._users -= 1
                self._idle.notify_all()

    # --- objects ---------------------------------------------------------------------------

    def create_semaphore(self, initial_value: int = 0) -> Semaphore:
        self._check_open()
        return VulkanSemaphore(self, initial_value)

    def _load_executable(self, format: str, data, entry_points: tuple[EntryPoint, ...]) -> Executable:
        return executable.load(self, format, data, entry_points)

    def builtin_executable(self) -> Executable:
        """The driver's built-in kernels (builtins.py), loaded once."""
        from hal_gpu.vulkan import builtins

        return self.executable_cache.get_or_create(
            ("builtins", FORMAT), lambda: self.create_executable(FORMAT, builtins.INDIRECT_CHECK, (builtins.INDIRECT_CHECK_ENTRY,)))

    def lower_command_buffer(self, cb: CommandBuffer):
        self._check_open()
        return command_buffer.lower(self, cb)

    # --- timestamps (the profiler) -----------------------------------------------------------

    def enable_timestamps(self, capacity: int = 1 << 17) -> None:
        """Time every dispatch of command buffers lowered from now on (timestamps.py); keeps
        at most `capacity` events until `disable_timestamps`. Unavailable without GPU timestamps."""
        self._check_open()
        self.timestamps = timestamps.Timestamps(self, capacity)

    def disable_timestamps(self) -> None:
        self.timestamps = None

    def timestamp_events(self) -> tuple[np.ndarray, dict[int, tuple[int, int, tuple[int, ...]]]]:
        """The dispatches timed so far, as trace events (timestamps.EVENT_DTYPE), and the
        submissions: serial -> (host submit ns, submitting thread, command buffer ids)."""
        with self._lock:
            self._retire_completed()
            if self.timestamps is None:
                return np.zeros(0, timestamps.EVENT_DTYPE), {}
            return self.timestamps.events(), dict(self.timestamps.submissions)

    # --- queue ------------------------------------------------------------------------------

    def _fence(self):
        v = self.vk
        if self._fences:
            fence = self._fences.pop()
            v.vkResetFences(self.handle, 1, [fence])
            return fence
        return v.vkCreateFence(self.handle, v.VkFenceCreateInfo(sType=v.VK_STRUCTURE_TYPE_FENCE_CREATE_INFO), None)

    def _submit(self, command_buffers, wait, signal) -> None:
        """Queues a submission as a chain of steps, each ending after a command-buffer segment
        that may fail (command_buffer.py): each step after the first waits on a private semaphore that the one
        before it signals, so the chain runs step by step and the first failure skips the rest
        (a step is handed to the GPU only once its waits are known to have succeeded: hal_gpu/host_queue.py)."""
        steps, step = [], []
        for cb in command_buffers:
            for j, handle in enumerate(cb.lowered.handles):
                step.append((cb, handle, j == 0))
                if cb.lowered.may_fail[j]:  # a failure there must be seen before what follows runs
                    steps.append(step)
                    step = []
        if step or not steps:
            steps.append(step)
        with self._lock:
            self._serial += 1
            firsts, n = {}, 0
            if self.timestamps is not None:
                for cb in command_buffers:
                    firsts.setdefault(cb.id, n)
                    n += sum(not isinstance(c, Barrier) for c in cb.commands)
                self.timestamps.submitted(self._serial, tuple(cb.id for cb in command_buffers))
            origin = _Origin(self._serial, firsts)
            if len(steps) == 1:
                self._held.hold((steps[0], origin), wait, signal)
            else:
                link = VulkanSemaphore(self, 0)
                link.internal = True
                last = len(steps) - 1
                for i, seg in enumerate(steps):
                    self._held.hold((seg, origin), wait if i == 0 else [(link, i)], signal if i == last else [(link, i + 1)])
            self._held.pump()

    def _known(self, sem, value: int) -> bool:
        """Whether (sem, value) is reached and every submission on the GPU that signals sem up to
        that value is retired (its kernels' status read): the wait is known to have succeeded."""
        return sem.failure is None and sem._raw() >= value and not any(
            s is sem and x <= value for sub in self._pending for s, x in sub.signals)

    def _launch(self, held: Held) -> None:
        segments, origin = held.work
        self._queue_submit(segments, held.waits, held.signals, origin)

    def _queue_submit(self, segments, wait, signal, origin: _Origin) -> None:
        v = self.vk
        for cb, _, first in segments:
            if first:
                cb.lowered.status.reset()
        # A submission that signals is known done when its signals are reached (Vulkan signals
        # after all its work): only one that signals nothing needs a fence (two calls fewer).
        fence = None if signal else self._fence()
        timeline = v.VkTimelineSemaphoreSubmitInfo(
            sType=v.VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
            waitSemaphoreValueCount=len(wait), pWaitSemaphoreValues=[x for _, x in wait] or None,
            signalSemaphoreValueCount=len(signal), pSignalSemaphoreValues=[x for _, x in signal] or None)
        info = v.VkSubmitInfo(
            sType=v.VK_STRUCTURE_TYPE_SUBMIT_INFO, pNext=timeline,
            waitSemaphoreCount=len(wait), pWaitSemaphores=[s.handle for s, _ in wait] or None,
            pWaitDstStageMask=[v.VK_PIPELINE_STAGE_ALL_COMMANDS_BIT] * len(wait) or None,
            commandBufferCount=len(segments), pCommandBuffers=[h for _, h, _ in segments] or None,
            signalSemaphoreCount=len(signal), pSignalSemaphores=[s.handle for s, _ in signal] or None)
        try:
            v.vkQueueSubmit(self.queue, 1, [info], v.VK_NULL_HANDLE if fence is None else fence)
        except v.VkErrorDeviceLost:
            self._lost("vkQueueSubmit")
        except (v.VkErrorOutOfHostMemory, v.VkErrorOutOfDeviceMemory) as e:
            raise ResourceExhausted(f"vulkan: vkQueueSubmit: {type(e).__name__}") from None
        cbs = []
        for cb, _, _ in segments:
            if not any(c is cb for c in cbs):
                cbs.append(cb)
        self._pending.append(_Submission(fence, cbs, list(wait), list(signal), list(segments), origin))

    def _check_completed(self, seen: tuple[VulkanSemaphore, int] | None = None) -> None:
        """Retires finished submissions (a failed kernel fails their signals) and hands the GPU
        what that released. `seen`: a (semaphore, value) a host waiter just saw reached."""
        with self._lock:
            self._retire_completed(seen)
            self._held.pump()

    def _retire_completed(self, seen: tuple[VulkanSemaphore, int] | None = None) -> bool:
        v = self.vk
        with self._lock:
            still, retired = [], False
            for sub in self._pending:
                if sub.fence is None:
                    done = all((seen is not None and s is seen[0] and x <= seen[1]) or s._raw() >= x for s, x in sub.signals)
                else:
                    try:
                        v.vkGetFenceStatus(self.handle, sub.fence)
                        done = True
                    except v.VkNotReady:
                        done = False
                if done:
                    self._retire(sub)
                    retired = True
                else:
                    still.append(sub)
            self._pending = still
            return retired

    def _retire(self, sub: _Submission) -> None:
        if sub.fence is not None:
            self._fences.append(sub.fence)
        if self.timestamps is not None:
            self._read_timestamps(sub)
        error = None
        for s, _ in sub.waits:
            if s.failure is not None:
                error = wait_failure(s)
        for cb in sub.command_buffers:
            for number, status, workgroup in cb.lowered.status.failed():
                index, name = cb.lowered.dispatches[number]
                where = f"command {index} of command buffer #{cb.id}"
                if status is None:
                    error = error or Aborted(f"dispatch_indirect '{name}' ({where}): workgroup count {workgroup} read from its buffer "
                                             f"is out of range (limit {self.limits.max_workgroup_count})")
                else:
                    error = error or Aborted(f"kernel '{name}' returned status {status} at workgroup {workgroup} ({where})")
        if error is not None:
            fail_signals(sub.signals, error)

    def _read_timestamps(self, sub: _Submission) -> None:
        for cb, handle, _ in sub.segments:
            queries = cb.lowered.queries
            if queries is None:
                continue  # lowered before timestamps were on
            first = sub.origin.first_command.get(cb.id, 0)
            commands = [first + index for index, _ in cb.lowered.dispatches]
            self.timestamps.read(self, queries, cb.lowered.handles.index(handle), sub.origin.serial, commands)

    def _semaphore_failed(self, sem: VulkanSemaphore) -> None:
        """A semaphore failed (`fail()`): held submissions waiting on it fail their signals
        without running (hal_gpu/host_queue.py). Nothing on the GPU waits on it: only known waits go there."""
        with self._lock:
            self._held.pump()

    def _lost(self, where: str):
        raise Aborted(f"vulkan: {self.name}: device lost in {where}")

    def wait_idle(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_completed()
            with self._lock:
                busy = len(self._pending) + len(self._held)
            if not busy:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded(f"{self!r}: {busy} submissions still in flight after {timeout} s")
            time.sleep(0.0002)

    def close(self) -> None:
        if self.closed or self.handle is None:
            super().close()
            return
        v = self.vk
        with self._lock:
            # Work parked on semaphores nobody will signal fails, and its waits are released so
            # the GPU drains; then everything is freed with the device.
            shutdown = Aborted(f"the device shut down with the submission in flight ({self!r} closed)")
            self._held.fail_all(shutdown)
            for sub in list(self._pending):
                fail_signals(sub.signals, shutdown)
                for s, x in sub.waits:
                    if s._raw() < x:
                        v.vkSignalSemaphore(self.handle, v.VkSemaphoreSignalInfo(sType=v.VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO, semaphore=s.handle, value=x))
            v.vkDeviceWaitIdle(self.handle)
            for sem in list(self._semaphores):
                if sem.failure is None:
                    sem.failure = Aborted(f"{self!r} is closed")
            super().close()
            # Host waiters wake every few ms, see the failure and leave.
            self._idle.wait_for(lambda: self._users == 0, timeout=5.0)
            v.vkDestroyDevice(self.handle, None)
            self.handle = None


class _WeakSet:
    """The device's live semaphores (failed on close), without keeping them alive."""

    def __init__(self) -> None:
        import weakref

        self._set = weakref.WeakSet()

    def add(self, item) -> None:
        self._set.add(item)

    def __iter__(self):
        return iter(list(self._set))
