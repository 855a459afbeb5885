"""Adapter choice and registration as `webgpu` where wgpu-py finds an adapter.

The probe runs once per process and never raises: no `wgpu` package, no native library or no
adapter all mean "not available", and `fg.create_device("webgpu")` then raises Unavailable
naming the reason.
"""

from __future__ import annotations

import functools

from common.errors import Unavailable
from hal_gpu.registry import GpuDriver

NAME = "webgpu"
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



def _device_class() -> type:
    from hal_gpu.webgpu.device import WebGPUDevice  # noqa: PLC0415 - device code loads with the driver

    return WebGPUDevice


DRIVER = GpuDriver(NAME, adapters, adapter_name, _device_class, "wgpu found no adapter on this machine", noun="adapter")
available, register = DRIVER.available, DRIVER.register
register()
