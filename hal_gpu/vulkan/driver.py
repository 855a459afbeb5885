"""Instance, physical-device choice, and registration as `vulkan` where a device exists.

The probe runs once per process and never raises: no `vulkan` package, no loader
(libvulkan.so.1), no ICD or no device with a compute queue all mean "not available", and
`fg.create_device("vulkan")` then raises Unavailable naming the reason.
"""

from __future__ import annotations

import atexit
import functools
import threading
import weakref

from hal.driver import register_driver
from common.errors import InvalidArgument, Unavailable

NAME = "vulkan"
_lock = threading.Lock()
# Preference when choosing a device: discrete GPUs first, the CPU (lavapipe) last.
_TYPE_RANK = {2: 0, 1: 1, 3: 2, 4: 3, 0: 4}  # VK_PHYSICAL_DEVICE_TYPE_*: discrete, integrated, virtual, cpu, other


def vk():
    """The `vulkan` module; Unavailable when it or the loader is missing."""
    try:
        import vulkan  # noqa: PLC0415 - optional dependency, imported on first use
    except ImportError as e:
        raise Unavailable(f"vulkan: the 'vulkan' Python package is not installed ({e}); pip install 'fibergrid[vulkan]'") from None
    except OSError as e:  # cffi could not dlopen libvulkan
        raise Unavailable(f"vulkan: the Vulkan loader (libvulkan.so.1) is not installed: {e}") from None
    return vulkan


@functools.cache
def instance():
    """The process's VkInstance (Vulkan 1.3), created once."""
    v = vk()
    app = v.VkApplicationInfo(sType=v.VK_STRUCTURE_TYPE_APPLICATION_INFO, pApplicationName="fibergrid", applicationVersion=1,
                              pEngineName="fibergrid", engineVersion=1, apiVersion=v.VK_MAKE_VERSION(1, 3, 0))
    try:
        return v.vkCreateInstance(v.VkInstanceCreateInfo(sType=v.VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, pApplicationInfo=app), None)
    except v.VkException as e:
        raise Unavailable(f"vulkan: vkCreateInstance failed: {type(e).__name__}") from None


def physical_devices() -> list:
    """Physical devices with Vulkan >= 1.2 and a compute queue, best first."""
    v = vk()
    found = []
    for p in v.vkEnumeratePhysicalDevices(instance()):
        props = v.vkGetPhysicalDeviceProperties(p)
        if props.apiVersion < v.VK_MAKE_VERSION(1, 2, 0):
            continue
        if compute_queue_family(p) is None:
            continue
        found.append((_TYPE_RANK.get(props.deviceType, 5), len(found), p))
    return [p for _, _, p in sorted(found, key=lambda t: t[:2])]


def compute_queue_family(physical) -> int | None:
    """A queue family with compute (compute-only preferred: it does not share with graphics)."""
    v = vk()
    families = v.vkGetPhysicalDeviceQueueFamilyProperties(physical)
    best = None
    for i, f in enumerate(families):
        if f.queueFlags & v.VK_QUEUE_COMPUTE_BIT:
            if not f.queueFlags & v.VK_QUEUE_GRAPHICS_BIT:
                return i
            best = i if best is None else best
    return best


def device_name(physical) -> str:
    name = vk().vkGetPhysicalDeviceProperties(physical).deviceName
    return name if isinstance(name, str) else vk().ffi.string(name).decode()


def choose(device: int | str | None = None):
    """The physical device for option `device`: an index into the best-first list, a substring
    of the name, or None for the best."""
    devices = physical_devices()
    if not devices:
        raise Unavailable("vulkan: no Vulkan 1.2 device with a compute queue on this machine")
    if device is None:
        return devices[0]
    if isinstance(device, int):
        if not 0 <= device < len(devices):
            raise InvalidArgument(f"vulkan: device index {device} out of range ({len(devices)} devices: {[device_name(p) for p in devices]})")
        return devices[device]
    for p in devices:
        if str(device).lower() in device_name(p).lower():
            return p
    raise InvalidArgument(f"vulkan: no device named like {device!r} (have {[device_name(p) for p in devices]})")


@functools.cache
def available() -> bool:
    try:
        return bool(physical_devices())
    except Exception:  # noqa: BLE001 - a probe never raises: anything wrong means unavailable
        return False


_live: "weakref.WeakSet" = weakref.WeakSet()


def create(device: int | str | None = None, **options):
    from hal_gpu.vulkan.device import VulkanDevice  # noqa: PLC0415 - device code loads with the driver

    with _lock:
        dev = VulkanDevice(choose(device), **options)
        _live.add(dev)
        return dev


@atexit.register
def _close_live_devices() -> None:
    """An interpreter that exits with GPU work in flight closes its devices first: parked work
    fails, running work finishes, then the device goes; freeing buffers or the device under
    running work (as finalizers at exit would) crashes the driver."""
    for dev in list(_live):
        try:
            dev.close()
        except Exception:  # noqa: BLE001 - exit carries on whatever one device does
            pass


def register() -> None:
    register_driver(NAME, create, available)


register()
