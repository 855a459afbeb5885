"""Instance, physical-device choice, and registration as `vulkan` where a device exists.

The probe runs once per process and never raises: no `vulkan` package, no loader
(libvulkan.so.1), no ICD or no device with a compute queue all mean "not available", and
`fg.create_device("vulkan")` then raises Unavailable naming the reason.
"""

from __future__ import annotations

import functools

from hal_gpu.registry import GpuDriver
from common.errors import Unavailable

NAME = "vulkan"
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



def _device_class() -> type:
    from hal_gpu.vulkan.device import VulkanDevice  # noqa: PLC0415 - device code loads with the driver

    return VulkanDevice


DRIVER = GpuDriver(NAME, physical_devices, device_name, _device_class, "no Vulkan 1.2 device with a compute queue on this machine")
available, register = DRIVER.available, DRIVER.register
register()
