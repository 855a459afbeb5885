"""The WebGPU device: a GPUDevice and its queue, with hal's queue semantics kept on the host.

`queue_execute` returns at once. A submission is held on the host until every semaphore it
waits on has reached its value (semaphore.py: a value reached is known to have succeeded;
hal_gpu/host_queue.py says why it is held), then
encoded and handed to the GPU queue in one GPUQueue.submit. The device's completion thread
waits for the GPU to finish each submission in turn (WebGPU's queue runs them in order), copies
back the MAPPING buffers it may have written and the dispatch states of kernels that may fail,
and then signals its semaphores, or fails them with the kernel's status. A submission split into
segments (command_buffer.py) is a chain of such steps linked by internal semaphores, as on the
Vulkan driver.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from common.errors import Aborted, DeadlineExceeded, Unavailable
from hal.command_buffer import CommandBuffer
from hal.device import Device, DeviceLimits
from hal.executable import EntryPoint, Executable
from hal.semaphore import Semaphore
from hal.spirv_abi import FORMAT
from hal_gpu.host_queue import HostQueue
from hal_gpu.webgpu import builtins, command_buffer, executable
from hal_gpu.webgpu.allocator import WebGPUAllocator
from hal_gpu.webgpu.driver import adapter_name, wgpu
from hal_gpu.webgpu.semaphore import WebGPUSemaphore

# Features the Vulkan target's kernels may need (f64, i64, f16, i16 values); taken where offered.
_FEATURES = ("shader-f64", "shader-int64", "shader-f16", "shader-i16")
# Limits taken at the adapter's maximum rather than WebGPU's defaults.
_LIMITS = ("max-storage-buffers-per-shader-stage", "max-storage-buffer-binding-size", "max-buffer-size",
           "max-compute-workgroup-storage-size", "max-compute-invocations-per-workgroup", "max-compute-workgroup-size-x",
           "max-compute-workgroup-size-y", "max-compute-workgroup-size-z", "max-compute-workgroups-per-dimension",
           "max-bindings-per-bind-group")


@dataclass
class _InFlight:
    steps: list  # (lowered command buffer, segment)
    signals: list
    promise: object  # resolves when the GPU finished the submission
    staging: object  # GPUBuffer the results were copied into
    readbacks: list  # (WebGPUBuffer, or (lowered, segment) for its states; offset in staging, bytes)


class WebGPUDevice(Device):
    driver = "webgpu"
    formats = (FORMAT,)
    allocator_class = WebGPUAllocator

    def __init__(self, adapter, **_options) -> None:
        self.wgpu = wgpu()
        self.name = adapter_name(adapter)
        lim = adapter.limits
        try:
            self.handle = adapter.request_device_sync(required_features=[f for f in _FEATURES if f in adapter.features],
                                                      required_limits={k: lim[k] for k in _LIMITS if k in lim})
        except Exception as e:  # noqa: BLE001 - wgpu reports a refused device as its own error
            raise Unavailable(f"webgpu: requestDevice on {self.name} failed: {e}") from None
        self.queue = self.handle.queue
        self.max_buffer_size = lim["max-buffer-size"]
        self.max_binding_size = lim["max-storage-buffer-binding-size"]
        self.max_bindings = lim["max-storage-buffers-per-shader-stage"]
        self.storage_alignment = lim["min-storage-buffer-offset-alignment"]
        limits = DeviceLimits(
            max_workgroup_count=lim["max-compute-workgroups-per-dimension"],
            local_memory_size=lim["max-compute-workgroup-storage-size"],
            max_update_size=64 * 1024,
            max_workgroup_size=(lim["max-compute-workgroup-size-x"], lim["max-compute-workgroup-size-y"], lim["max-compute-workgroup-size-z"]),
            max_workgroup_invocations=lim["max-compute-invocations-per-workgroup"],
            max_constant_bytes=self.max_binding_size,  # constants travel in the dispatch state (hal/spirv_abi.py)
            binding_offset_alignment=1,
            fill_pattern_sizes=(1, 2, 4),
        )
        self._lock = threading.RLock()  # the wgpu objects, the held and in-flight lists, every semaphore
        self._changed = threading.Condition(self._lock)  # a semaphore moved or failed, work finished
        super().__init__(limits)
        self._held = HostQueue(lambda s, x: s.value >= x, lambda held: self._gpu_submit(held.work, held.signals), changed=self._changed)
        self._in_flight: deque[_InFlight] = deque()
        self._staging: dict[int, list] = {}  # free read-back buffers by size
        self._builtins: dict[str, object] = {}
        self._marker = self.handle.create_buffer(size=4, usage=self.wgpu.BufferUsage.COPY_SRC)
        self._stopping = False
        self._thread = threading.Thread(target=self._complete, name="fibergrid-webgpu", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<Device webgpu {self.name}>"

    # --- objects ---------------------------------------------------------------------------

    def create_semaphore(self, initial_value: int = 0) -> Semaphore:
        self._check_open()
        return WebGPUSemaphore(self, initial_value)

    def _load_executable(self, format: str, data, entry_points: tuple[EntryPoint, ...]) -> Executable:
        return executable.load(self, format, data, entry_points)

    def builtin(self, name: str):
        """The compute pipeline of built-in kernel `name` (builtins.py), made once."""
        with self._lock:
            if name not in self._builtins:
                source = builtins.INDIRECT_CHECK if name == "fg_indirect_check" else builtins.BYTES
                module = self.handle.create_shader_module(code=source)
                self._builtins[name] = self.handle.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": name})
            return self._builtins[name]

    def lower_command_buffer(self, cb: CommandBuffer):
        self._check_open()
        return command_buffer.lower(self, cb)

    # --- queue ------------------------------------------------------------------------------

    def _submit(self, command_buffers, wait, signal) -> None:
        """Holds the submission as a chain of steps, one per run of segments that ends with one
        that may fail (command_buffer.py), linked by internal semaphores."""
        steps, step = [], []
        for cb in command_buffers:
            for j, fails in enumerate(cb.lowered.may_fail):
                step.append((cb.lowered, j))
                if fails:
                    steps.append(step)
                    step = []
        if step or not steps:
            steps.append(step)
        with self._lock:
            link = None
            if len(steps) > 1:
                link = WebGPUSemaphore(self, 0)
                link.internal = True
            last = len(steps) - 1
            for i, seg in enumerate(steps):
                self._held.hold(seg, wait if i == 0 else [(link, i)], signal if i == last else [(link, i + 1)])
            self._held.pump()

    def _gpu_submit(self, steps: list, signal: list) -> None:
        """Uploads the host copies of the MAPPING buffers the steps use, encodes them, copies what
        must come back into a read-back buffer and submits; the completion thread takes it from
        there."""
        try:
            mapped, written, states = {}, {}, []
            for lowered, segment in steps:
                mapped.update(lowered.mapped[segment])
                written.update(lowered.written[segment])
                if segment == 0 and lowered.reset:
                    self.queue.write_buffer(lowered.state, 0, lowered.state_words)
                if lowered.may_fail[segment]:
                    states.append((lowered, segment))
            for buffer in mapped.values():
                if not buffer.writers:  # else the GPU's copy is the newer: work on the GPU writes it
                    self.queue.write_buffer(buffer.handle, 0, buffer.host)
            encoder = self.handle.create_command_encoder()
            for lowered, segment in steps:
                lowered.encode(encoder, segment)
            readbacks, size = [], 0
            for item in list(written.values()) + states:
                nbytes = item.padded if not isinstance(item, tuple) else 4 * len(item[0].state_words)
                readbacks.append((item, size, nbytes))
                size += nbytes
            staging = self._take_staging(max(size, 4))
            for item, offset, nbytes in readbacks:
                encoder.copy_buffer_to_buffer(item.handle if not isinstance(item, tuple) else item[0].state, 0, staging, offset, nbytes)
            if not readbacks:  # still a copy to map: mapping it is how the host learns the GPU finished
                encoder.copy_buffer_to_buffer(self._marker, 0, staging, 0, 4)
            self.queue.submit([encoder.finish()])
            # (queue.onSubmittedWorkDone would do for a submission with nothing to read back,
            # but wgpu-py 0.32's binding of it does not match wgpu-native's callback signature.)
            promise = staging.map_async("READ", 0, staging.size)
        except Exception as e:  # noqa: BLE001 - a submission wgpu refuses fails its semaphores, on any thread
            self._held.fail(signal, Aborted(f"webgpu: {self.name}: the submission failed: {executable.reason(e)}"))
            return
        for item, _, _ in readbacks:
            if not isinstance(item, tuple):
                item.writers += 1
        self._in_flight.append(_InFlight(steps, signal, promise, staging, readbacks))
        self._changed.notify_all()

    def _take_staging(self, size: int):
        size = 1 << max(8, (size - 1).bit_length())  # sizes in powers of two, so buffers are reused
        free = self._staging.setdefault(size, [])
        if free:
            return free.pop()
        flags = self.wgpu.BufferUsage
        return self.handle.create_buffer(size=size, usage=flags.MAP_READ | flags.COPY_DST)

    def _complete(self) -> None:
        """The completion thread: waits for the oldest submission on the GPU, then retires it."""
        while True:
            with self._lock:
                self._changed.wait_for(lambda: self._in_flight or self._stopping)
                if not self._in_flight:
                    return
                item = self._in_flight[0]
            error = None
            try:
                item.promise.sync_wait()
            except Exception as e:  # noqa: BLE001 - a lost device fails the submission
                error = Aborted(f"webgpu: {self.name}: {e}")
            with self._lock:
                self._in_flight.popleft()
                self._retire(item, error)
                self._held.pump()
                self._changed.notify_all()

    def _retire(self, item: _InFlight, error: BaseException | None) -> None:
        for target, _, _ in item.readbacks:
            if not isinstance(target, tuple):
                target.writers -= 1
        if error is None:
            data = np.frombuffer(item.staging.read_mapped(copy=False), np.uint8)
            for target, offset, nbytes in item.readbacks:
                if isinstance(target, tuple):
                    lowered, segment = target
                    for index, name, status, workgroup in lowered.failures(segment, data[offset: offset + nbytes].view(np.uint32)):
                        if error is not None:
                            break
                        where = f"command {index} of its command buffer"
                        error = Aborted(f"dispatch_indirect '{name}' ({where}): workgroup count {workgroup} read from its buffer is out "
                                        f"of range (limit {self.limits.max_workgroup_count})" if status is None else
                                        f"kernel '{name}' returned status {status} at workgroup {workgroup} ({where})")
                else:
                    target.host[:] = data[offset: offset + nbytes]
            item.staging.unmap()
            self._staging[item.staging.size].append(item.staging)  # (a failed map is not reused)
        if error is not None:
            self._held.fail(item.signals, error)
            return
        for s, x in item.signals:
            s.value = max(s.value, x)

    def wait_idle(self, timeout: float | None = None) -> None:
        with self._lock:
            if not self._changed.wait_for(lambda: not self._held and not self._in_flight, timeout):
                raise DeadlineExceeded(f"{self!r}: {len(self._held) + len(self._in_flight)} submissions still in flight after {timeout} s")

    def close(self) -> None:
        if self.closed:
            return
        with self._lock:
            # Held work will never run: it fails, and so does work on the GPU, which finishes
            # (bounded) before the device goes. Waiters of values not reached then fail
            # (semaphore.py), so none is left hanging.
            shutdown = Aborted(f"the device shut down with the submission in flight ({self!r} closed)")
            self._held.fail_all(shutdown)
            for item in self._in_flight:
                self._held.fail(item.signals, shutdown)
            self._changed.wait_for(lambda: not self._in_flight, timeout=10.0)
            self._stopping = True
            super().close()
            self._changed.notify_all()
        self._thread.join(timeout=10.0)
        self.handle.destroy()
