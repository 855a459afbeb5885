"""Adapter choice and registration as `webgpu` where wgpu-py finds an adapter.

The probe runs once per process and never raises: no `wgpu` package, no native library or no
adapter all mean "not available", and `fg.create_device("webgpu")` then raises Unavailable
naming the reason.
"""

from __future__ import annotations

import atexit
import functools
import threading
import weakref

from common.errors import InvalidArgument, Unavailable
from hal.driver import register_driver

NAME = "webgpu"
_lock = threading.Lock()
# Preference: discrete GPUs first, the CPU (lavapipe) last.
_TYPE_RANK = {"DiscreteGPU": 0, "IntegratedGPU": 1, "Unknown": 2, "CPU": 3}
# wgpu's backends with all of WebGPU's compute: its OpenGL backend is a "downlevel" one (fewer
# storage buffers per shader, no compute on older GL), where the driver would fail, not run.
_BACKENDS = ("Vulkan", "Metal", "D3D12")


def wgpu():
    """The `wgpu` module; Unavailable when it or its native library is missing."""
    try:
        import wgpu  # noqa: PLC0415 - optional dependency, imported on first use
    except ImportError as e:
        raise Unavailable(f"webgpu: the 'wgpu' Python package is not installed ({e}); pip install 'fibergrid[webgpu]'") from None
    except OSError as e:  # cffi could not load wgpu-native
        raise Unavailable(f"webgpu: wgpu-native could not be loaded: {e}") from None
    return wgpu


@functools.cache
def adapters() -> tuple:
    """Adapters on this machine with a full WebGPU backend, best first (enumerated once: an
    adapter serves many devices)."""
    found = [a for a in wgpu().gpu.enumerate_adapters_sync() if a.info.get("backend_type") in _BACKENDS]
    return tuple(sorted(found, key=lambda a: _TYPE_RANK.get(a.info.get("adapter_type"), 2)))


def adapter_name(adapter) -> str:
    return adapter.summary


def choose(device: int | str | None = None):
    """The adapter for option `device`: an index into the best-first list, a substring of its
    summary ("NVIDIA H200 ... via Vulkan"), or None for the best."""
    found = adapters()
    if not found:
        raise Unavailable("webgpu: wgpu found no adapter on this machine")
    if device is None:
        return found[0]
    if isinstance(device, int):
        if not 0 <= device < len(found):
            raise InvalidArgument(f"webgpu: adapter index {device} out of range ({len(found)} adapters: {[adapter_name(a) for a in found]})")
        return found[device]
    for a in found:
        if str(device).lower() in adapter_name(a).lower():
            return a
    raise InvalidArgument(f"webgpu: no adapter named like {device!r} (have {[adapter_name(a) for a in found]})")


@functools.cache
def available() -> bool:
    try:
        return bool(adapters())
    except Exception:  # noqa: BLE001 - a probe never raises: anything wrong means unavailable
        return False


_live: "weakref.WeakSet" = weakref.WeakSet()


def create(device: int | str | None = None, **options):
    from hal_gpu.webgpu.device import WebGPUDevice  # noqa: PLC0415 - device code loads with the driver

    with _lock:
        dev = WebGPUDevice(choose(device), **options)
        _live.add(dev)
        return dev


@atexit.register
def _close_live_devices() -> None:
    """Devices close before the interpreter's finalizers run: held work fails, work on the GPU
    finishes, then the device goes."""
    for dev in list(_live):
        try:
            dev.close()
        except Exception:  # noqa: BLE001 - exit carries on whatever one device does
            pass


def register() -> None:
    register_driver(NAME, create, available)


register()
