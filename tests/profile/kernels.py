"""Kernels and command buffers the profiler tests trace, each defined once."""

from __future__ import annotations

import numpy as np

import fibergrid as fg
from fibergrid.profile.collect import DeviceCapture, Recorder


@fg.kernel(workgroup_size=1, bindings=(np.float32,), constants=(np.uint32,))
def burn(wg, out, n):
    """A compute-bound workgroup: n dependent multiply-adds, its result stored so it is kept."""
    acc = np.float32(0)
    for _ in range(n):
        acc = acc * np.float32(0.999) + np.float32(1.0)
    out[wg.id[0] % out.shape[0]] = acc


def record(device, grids: list[tuple[int, int]], barriers: bool = True):
    """A reusable command buffer of burn dispatches: (workgroups, iterations) each, with a
    barrier between them unless `barriers` is False."""
    out = device.allocator.allocate_view((64,), np.float32)
    cb = device.create_command_buffer("reusable")
    for i, (workgroups, iterations) in enumerate(grids):
        if i and barriers:
            cb.execution_barrier()
        cb.dispatch(burn, 0, (workgroups, 1, 1), [iterations], [out])
    cb.end()
    return cb, out


def profile_calls(device, cb, calls: int, warmups: int = 1, host_timing: bool = True) -> DeviceCapture:
    """`warmups` untraced submissions (the scheduler's wake policy learns a region's work from
    its first runs), then `calls` traced submit-and-wait calls."""
    sem = device.create_semaphore(0)
    rec = Recorder(host_timing=host_timing)
    rec.attach(device, label="test")
    for i in range(1, warmups + 1):
        device.queue_execute([cb], signal=[(sem, i)])
        sem.wait(i, 60)
    rec.reset()
    for i in range(warmups + 1, warmups + calls + 1):
        with rec.call():
            device.queue_execute([cb], signal=[(sem, i)])
            sem.wait(i, 60)
    capture, = rec.capture()
    rec.detach()
    return capture
